//! The validated scenario: what the rest of the harness reads. It carries no spans and
//! no serde; hosts are referred to by index ([`HostId`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use super::routing::{Route, Rule};
use std::path::PathBuf;

use crate::vocab::Corruption;
pub use crate::vocab::IptablesBackend;

/// A scenario that passed validation. Hosts are referred to by index into `hosts`.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// eBPF programs under test (`[[programs]]`).
    pub programs: Vec<Program>,
    /// Path relative to the scenarios root, without `.toml`: `iptables/input_drop_icmp`.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub hosts: Vec<Host>,
    pub links: Vec<Link>,
    pub faults: Vec<Fault>,
    pub traffic: Vec<Traffic>,
    /// Crafted packets (`[[packets]]`), sent after `traffic`.
    pub packets: Vec<PacketEntry>,
    pub expect: Expectations,
    /// Extra time to keep watching after traffic, for drops the kernel makes late
    /// (neighbour resolution failure, for example). Zero for almost every scenario.
    pub settle_min_ms: u64,
    /// Machine-wide sysctls set for the traffic only (see `global_sysctls`).
    pub global_sysctls: BTreeMap<String, String>,
    /// Names only a kernel can confirm (drop reasons, functions), with where the file
    /// writes them, for `scenario::names::check`.
    pub kernel_names: Vec<KernelName>,
    /// `[[steps]]`, in order. Empty: every fault up front, then every traffic entry, then
    /// every `[[packets]]` entry, as written.
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Whether fault `index` is applied before watching starts: every fault no step applies.
    pub fn applied_up_front(&self, index: usize) -> bool {
        !self
            .steps
            .iter()
            .any(|s| s.action == StepAction::Apply { fault: index })
    }
}

/// One `[[steps]]` entry with its references resolved to indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Where the step is written (1-based line), for messages.
    pub line: usize,
    /// The entry's name as written, for messages (`traffic "before"`, `link r eth1 down`).
    pub label: String,
    pub action: StepAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepAction {
    /// Runs `scenario.traffic[entry]`; `again`: an earlier step ran it, so this run sends
    /// from the same sockets (the same flow) and is held to `expect`.
    Traffic {
        entry: usize,
        again: bool,
        expect: TrafficExpect,
    },
    Packets {
        entry: usize,
    },
    /// Sleeps, then waits for the kernel as after any step.
    Wait {
        ms: u64,
    },
    Apply {
        fault: usize,
    },
    Remove {
        fault: usize,
    },
    /// `ip link set DEV up|down` in the host.
    Link {
        host: HostId,
        dev: String,
        up: bool,
    },
    /// `ip route add|del` in the host, the route as in `hosts.NAME.routes`.
    Route {
        host: HostId,
        route: Route,
        add: bool,
    },
    /// `run = { host, command }`: one allowed program run in the host (the escape hatch).
    Run {
        host: HostId,
        argv: Vec<String>,
    },
    /// Accepts the connections waiting on the listener of `scenario.traffic[traffic]`.
    Accept {
        traffic: usize,
    },
}

/// A drop reason, function or counter name an expectation uses, and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelName {
    pub kind: KernelNameKind,
    pub name: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelNameKind {
    Reason,
    Function,
    /// A counter expectation's name: `TcpExt.ListenOverflows`, `conntrack.drop`.
    Counter,
}

pub type HostId = usize;

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Sets net.ipv4.ip_forward=1 and conf.all.forwarding=1 in this host, and
    /// net.ipv6.conf.all.forwarding=1 when one of its links has IPv6.
    pub forwarding: bool,
    /// Per-namespace sysctls, applied after links exist: `net.ipv4.conf.all.rp_filter` → `1`.
    pub sysctls: BTreeMap<String, String>,
    pub routes: Vec<Route>,
    /// Extra addresses on the host's loopback, e.g. a source that routing does not expect.
    pub addresses: Vec<Cidr>,
    /// The IPv6 ones of `addresses` (IPv6 is turned on for `lo` only when there are some).
    pub addresses6: Vec<Cidr6>,
    /// Policy rules (`ip rule`), added in file order.
    pub rules: Vec<Rule>,
    /// Permanent neighbour entries, the host's own and those written on its link ends.
    pub neighbours: Vec<Neighbour>,
}

/// A permanent neighbour entry on one of the host's interfaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ifname: String,
    pub addr: IpAddr,
    pub lladdr: LinkAddr,
}

/// A neighbour's link-layer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAddr {
    /// The real MAC address of the interface's veth peer (read when the link exists).
    Peer,
    Mac([u8; 6]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A veth pair: one end in each host.
#[derive(Debug, Clone)]
pub struct Link {
    pub ends: [Endpoint; 2],
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: HostId,
    /// Interface name inside the host's namespace.
    pub ifname: String,
    pub addr: Cidr,
    /// IPv6 is off everywhere except on links whose ends both declare `addr6`.
    pub addr6: Option<Cidr6>,
    /// This end's MTU: its own `mtu`, else the link's, else the kernel's default.
    pub mtu: Option<u32>,
    /// The interface's transmit queue length (`ip link set … txqueuelen`), which is also
    /// the default `limit` of a pfifo qdisc on it.
    pub txqueuelen: Option<u32>,
    /// False: the interface is left administratively down (its peer has no carrier).
    pub up: bool,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub host: HostId,
    pub kind: FaultKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// `iptables-restore` input, loaded with the chosen backend.
    Iptables {
        backend: IptablesBackend,
        rules: String,
        /// Where the rules came from, for error messages: the scenario or a fixture file.
        origin: String,
    },
    /// `nft -f` input.
    Nft { ruleset: String, origin: String },
    /// `tc -batch` input: qdiscs and filters, e.g. an ingress filter with `action drop`.
    Tc { commands: String, origin: String },
    /// dropspec's own tc BPF classifier, which drops every IPv4 packet on `dev`.
    TcDrop { dev: String, ingress: bool },
    /// A root or ingress qdisc on one interface (`[[faults]] qdisc = {…}`).
    Qdisc(Qdisc),
    /// The escape hatch: one allowed program with its arguments (`[[faults]] command`),
    /// run inside the host's namespace without a shell.
    Command { argv: Vec<String>, origin: String },
}

/// A qdisc fault, validated: each kind with the keys it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub dev: String,
    pub kind: QdiscKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QdiscKind {
    /// A packet FIFO of `limit` packets (None: the interface's txqueuelen). With a
    /// `rate`, it sits under a tbf of that rate and `burst` bytes, so that it fills.
    Pfifo {
        limit: Option<u32>,
        rate: Option<(String, u32)>,
    },
    /// A token bucket: `rate` as tc writes it, `burst` and `limit` in bytes.
    Tbf {
        rate: String,
        burst: u32,
        limit: u32,
    },
    /// netem with random loss, in percent (as tc writes it: "100%").
    Netem { loss: String, limit: Option<u32> },
    /// The ingress qdisc with one match-all u32 filter whose police action drops what
    /// exceeds `rate` (as tc writes it) with a bucket of `burst` bytes.
    Ingress { police: Police },
}

/// A policer: packets beyond `rate` and a `burst`-byte bucket are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Police {
    pub rate: String,
    pub burst: u32,
}

impl Qdisc {
    /// Where the qdisc sits: `root`, or `ingress` for the ingress qdisc.
    pub fn parent(&self) -> &'static str {
        match self.kind {
            QdiscKind::Ingress { .. } => "ingress",
            _ => "root",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Icmp,
    Udp,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Icmp => "icmp",
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Traffic {
    pub from: HostId,
    /// The host that owns `destination`, when it is one of ours (for the listening socket).
    pub to_host: Option<HostId>,
    /// IPv4 or IPv6; the protocol's IPv6 form (ICMPv6 echo) for an IPv6 destination.
    pub destination: IpAddr,
    pub protocol: Protocol,
    /// Destination port for UDP and TCP.
    pub port: u16,
    pub count: u32,
    /// UDP/TCP: whether a socket listens on `port` at the destination.
    pub listen: bool,
    /// Payload bytes per packet (ICMP and UDP).
    pub payload: usize,
    /// How long each attempt waits for its answer.
    pub timeout_ms: u64,
    /// Source address to bind to (one of the sender's addresses, or any with `ip_freebind`).
    pub source: Option<IpAddr>,
    /// IP TTL (IPv6 hop limit) of the sent packets.
    pub ttl: Option<u8>,
    /// Set DF and refuse to fragment (IP_PMTUDISC_DO).
    pub dont_fragment: bool,
    /// SO_SNDBUF of the sending sockets, in bytes (the kernel doubles it).
    pub sndbuf: Option<u32>,
    /// Options set on the sending sockets before they send or connect (`sockopts`).
    pub sockopts: Vec<SetOption>,
    pub listener: Listener,
    pub expect: TrafficExpect,
}

/// How the listening socket at the destination behaves (UDP and TCP traffic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Reads datagrams / accepts connections while the traffic runs. When false, the
    /// socket just sits there (its queue fills); what it holds is counted afterwards.
    pub reads: bool,
    /// SO_RCVBUF of the listening socket, in bytes (the kernel doubles it).
    pub rcvbuf: Option<u32>,
    /// listen() backlog for TCP.
    pub backlog: u32,
    /// TCP: keep established connections open until all traffic has been sent, so later
    /// entries meet them (conntrack entries, for example).
    pub hold: bool,
    /// TCP: after the traffic, call accept(2) until it fails with EAGAIN, as a
    /// non-blocking server does when woken. Otherwise the listener only accepts what is
    /// ready, and never makes a failing call (which Retina counts as TCP_ACCEPT_BASIC).
    pub accept_until_empty: bool,
    /// TCP: when the listener calls accept(2).
    pub accept: Accept,
    /// Options set on the listening socket before bind(2) and listen(2).
    pub sockopts: Vec<SetOption>,
}

/// When a TCP listener accepts (`accept = …`). An enum so that other moments (on a
/// later step) can join it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Never: connections stay in the accept queue, which fills up.
    Never,
    /// As connections complete, while the traffic runs (the default).
    OnArrival,
    /// Only at the scenario's `accept` steps (`[[steps]]`), never on the entry's own run:
    /// set by the steps' validation, not written as `accept = …`.
    AtSteps,
}

impl Accept {
    pub const NAMES: [&'static str; 2] = ["never", "on_arrival"];

    pub fn parse(name: &str) -> Option<Accept> {
        match name {
            "never" => Some(Accept::Never),
            "on_arrival" => Some(Accept::OnArrival),
            _ => None,
        }
    }
}

/// A socket option by name (`socket_options::OPTIONS`) and the `int` it is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOption {
    pub name: String,
    pub level: i32,
    pub optname: i32,
    pub value: i32,
}

/// Expected outcomes of one traffic entry; `None` means "not asserted".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficExpect {
    /// ICMP echo replies received.
    pub answered: Option<u32>,
    /// UDP datagrams read by the listening socket.
    pub delivered: Option<u32>,
    /// ICMP errors that came back to the sender (UDP and ICMP).
    pub errors: Option<u32>,
    /// TCP attempt outcomes.
    pub connected: Option<u32>,
    pub refused: Option<u32>,
    pub timed_out: Option<u32>,
    pub unreachable: Option<u32>,
    /// ICMP/UDP sends refused by the sender's own kernel.
    pub blocked: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Expectations {
    pub drops: Vec<DropExpect>,
    /// Packets attributed to a cause (see `classify`), per host.
    pub causes: Vec<CauseExpect>,
    /// Deltas of the kernel's own counters, per host.
    pub counters: Vec<CounterExpect>,
    /// Failed calls at Retina's hook points, per host (see `probes::hooks`).
    pub hooks: Vec<HookExpect>,
    /// A drop that no expectation matches fails the scenario (default true).
    pub no_other_drops: bool,
    /// The inline expectations describe kernels from this (major, minor) on; older
    /// kernels are held to their own baseline snapshot only.
    pub since_kernel: Option<(u32, u32)>,
    /// Drops of programs under test, reported or not (see `watchers::datapath`).
    pub datapath: Vec<DatapathExpect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathExpect {
    /// The program's name (`program = "…"` in `[[programs]]`); None: every program.
    pub program: Option<String>,
    pub unreported_drops: Option<u64>,
    pub kernel_drops: Option<u64>,
    pub reported_drops: Option<u64>,
}

/// An eBPF program under test (`[[programs]]`): loaded from `object`, attached to
/// `interface` of `host`, its own drop accounting read after the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub host: HostId,
    pub interface: String,
    pub attach: Attach,
    /// As written: a path relative to the scenario file or to `fixtures/`, or the name of
    /// a fixture dropspec builds (`datapath/conntrack_buggy.bpf.o`).
    pub object: String,
    pub program: String,
    pub prefill: Vec<Prefill>,
    pub metrics: Option<Metrics>,
    pub events: Option<Events>,
    /// The program's drop codes, named by the scenario.
    pub reasons: BTreeMap<u32, String>,
}

/// Where a program under test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attach {
    TcIngress,
    TcEgress,
    /// Native XDP (the driver's; veth has it).
    Xdp,
    /// Generic XDP (in the stack, any device).
    XdpGeneric,
}

impl Attach {
    pub const ALL: [Attach; 4] = [
        Attach::TcIngress,
        Attach::TcEgress,
        Attach::Xdp,
        Attach::XdpGeneric,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Attach::TcIngress => "tc_ingress",
            Attach::TcEgress => "tc_egress",
            Attach::Xdp => "xdp",
            Attach::XdpGeneric => "xdp_generic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefill {
    pub map: String,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    pub map: String,
    pub kind: MetricsKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsKind {
    /// Retina's `retina_dropreason_metrics`: per-CPU hash, key {drop_type u32,
    /// return_val u32}, value {count u64, bytes u64}.
    Retina,
    /// A per-CPU array of u64 counters indexed by drop code.
    PerCpuArray,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    pub map: String,
    pub kind: EventsKind,
    /// Byte offset and value of the record's type: only records of this type are drops.
    pub type_offset: usize,
    pub type_value: u8,
    /// Byte offset and size (1, 2 or 4, host order) of the drop code.
    pub reason_offset: usize,
    pub reason_size: usize,
    /// Where the record carries the dropped packet from its Ethernet header, if it does:
    /// then each report is matched to a packet the kernel saw.
    pub packet_offset: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsKind {
    PerfEventArray,
    RingBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CauseExpect {
    pub host: HostId,
    pub cause: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookExpect {
    pub host: HostId,
    /// Retina's name: `IPTABLE_RULE_DROP`, `IPTABLE_NAT_DROP`, `CONNTRACK_ADD_DROP`,
    /// `TCP_CONNECT_BASIC` or `TCP_ACCEPT_BASIC`.
    pub hook: String,
    /// Only calls that returned this (a negative errno, or 0 for NF_DROP).
    pub ret: Option<i32>,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterExpect {
    pub host: HostId,
    /// `Group.Field` for SNMP counters (`TcpExt.ListenOverflows`), `conntrack.<stat>`.
    pub counter: String,
    pub delta: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropExpect {
    pub host: HostId,
    pub reason: String,
    pub function: Option<String>,
    pub count: u64,
}

/// An IPv6 address with prefix, from 2001:db8::/32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr6 {
    pub addr: Ipv6Addr,
    pub prefix: u8,
}

impl fmt::Display for Cidr6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What follows the IP header of a crafted packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PacketProtocol {
    Udp,
    Tcp,
    /// ICMP echo request over IPv4, ICMPv6 echo request over IPv6.
    Echo,
    /// Any other protocol number: the payload follows the IP header directly.
    Other(u8),
}

impl PacketProtocol {
    /// `udp`, `tcp`, `icmp`, `icmpv6` or the number.
    pub fn name(self, ipv6: bool) -> String {
        match self {
            PacketProtocol::Udp => "udp".into(),
            PacketProtocol::Tcp => "tcp".into(),
            PacketProtocol::Echo if ipv6 => "icmpv6".into(),
            PacketProtocol::Echo => "icmp".into(),
            PacketProtocol::Other(n) => format!("protocol {n}"),
        }
    }
}

/// The application at the destination of crafted UDP or TCP packets. It decides where
/// the kernel drops a datagram with a bad checksum, so a scenario always names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Receiver {
    /// A socket that reads everything with recv(2), never poll(2) or FIONREAD first. For
    /// TCP, one end of an established connection (made with TCP_REPAIR, so no
    /// handshake crosses the wire, with the sender's end in the sender's host).
    Reads,
    /// The same socket, never read.
    NeverReads,
    /// Nothing listens on the port.
    Nobody,
}

impl Receiver {
    pub fn as_str(self) -> &'static str {
        match self {
            Receiver::Reads => "reads",
            Receiver::NeverReads => "never_reads",
            Receiver::Nobody => "none",
        }
    }
}

/// One `[[packets]]` entry: `count` crafted frames from one host to a host it shares a
/// link with, sent as raw Ethernet frames on the sender's end of that link.
#[derive(Debug, Clone)]
pub struct PacketEntry {
    pub from: HostId,
    pub to: HostId,
    /// The sender's and the destination's interfaces on the link they share.
    pub interface: String,
    pub peer_interface: String,
    pub source: IpAddr,
    pub destination: IpAddr,
    pub protocol: PacketProtocol,
    pub source_port: u16,
    /// Destination port (UDP and TCP; 0 otherwise).
    pub port: u16,
    pub count: u32,
    /// Bytes after the transport header.
    pub payload: usize,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// TCP flag bits (`vocab::TCP_*`).
    pub tcp_flags: u8,
    pub corrupt: Corruption,
    pub receiver: Receiver,
    pub timeout_ms: u64,
    /// Empty: each datagram goes out whole. Otherwise the fragments each datagram is
    /// sent as, in this order.
    pub fragments: Vec<Fragment>,
    pub expect: PacketExpect,
}

/// Bytes `offset..offset + length` of a datagram (what follows the IP header), sent as
/// one fragment; beyond the datagram's end the bytes are filler. `more` is the MF flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub offset: u32,
    pub length: u32,
    pub more: bool,
}

/// Expected outcomes of one `[[packets]]` entry; `None` means "not asserted".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PacketExpect {
    /// UDP datagrams, or TCP segments' worth of bytes, read by the receiver.
    pub delivered: Option<u32>,
    /// Echo replies that came back.
    pub answered: Option<u32>,
    /// ICMP or ICMPv6 errors that came back.
    pub errors: Option<u32>,
    /// TCP resets that came back.
    pub resets: Option<u32>,
}
