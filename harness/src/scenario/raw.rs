//! What serde reads; kept apart so the validated model carries no spans.
//!
//! Every value a person may get wrong is `Spanned`, so the validator can point at it.
//!
//! The editor schema (`schema/dropspec-scenario.schema.json`) is derived from these
//! structs (`JsonSchema`); a span is invisible in the file, so each `Spanned` field tells
//! schemars the plain type it holds (`#[schemars(with = …)]`). `scenario::schema_json`
//! renders it and a test keeps the shipped file equal to it.

use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

pub type Spanned<T> = toml::Spanned<T>;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub description: String,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Host>")]
    pub hosts: BTreeMap<Spanned<String>, Host>,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(default)]
    pub faults: Vec<Fault>,
    #[serde(default)]
    pub traffic: Vec<Traffic>,
    #[serde(default)]
    pub packets: Vec<Packets>,
    #[serde(default)]
    pub expect: Expect,
    #[schemars(with = "Option<u64>")]
    pub settle_ms: Option<Spanned<u64>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SysctlValue>")]
    pub global_sysctls: BTreeMap<Spanned<String>, Spanned<SysctlValue>>,
    #[serde(default)]
    pub programs: Vec<Program>,
    /// `[[steps]]`: the run in order (see `Step`); without it, faults, then traffic, then
    /// packets.
    #[serde(default)]
    #[schemars(with = "Vec<Step>")]
    pub steps: Vec<Spanned<Step>>,
}

/// One `[[steps]]` entry: exactly one of its actions.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Runs the `[[traffic]]` entry of this name (again, from the same sockets, when an
    /// earlier step ran it).
    #[schemars(with = "Option<String>")]
    pub traffic: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub packets: Option<Spanned<String>>,
    #[schemars(with = "Option<u64>")]
    pub wait_ms: Option<Spanned<u64>>,
    /// Applies the `[[faults]]` entry of this name (it is then not applied up front).
    #[schemars(with = "Option<String>")]
    pub apply: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub remove: Option<Spanned<String>>,
    #[schemars(with = "Option<LinkStep>")]
    pub link: Option<Spanned<LinkStep>>,
    #[schemars(with = "Option<RouteStep>")]
    pub route: Option<Spanned<RouteStep>>,
    #[schemars(with = "Option<AcceptStep>")]
    pub accept: Option<Spanned<AcceptStep>>,
    /// The escape hatch as a step: one allowed program run in a host (`validate/command.rs`).
    #[schemars(with = "Option<RunStep>")]
    pub run: Option<Spanned<RunStep>>,
    /// What a later run of a traffic entry must achieve (its first run has the entry's).
    #[schemars(with = "Option<TrafficExpect>")]
    pub expect: Option<Spanned<TrafficExpect>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkStep {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub dev: Spanned<String>,
    #[schemars(with = "String")]
    pub state: Spanned<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteStep {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    pub add: Option<Route>,
    pub del: Option<Route>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunStep {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "Vec<String>")]
    pub command: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptStep {
    #[schemars(with = "String")]
    pub traffic: Spanned<String>,
}

/// `[[programs]]`: an eBPF program under test, attached to one interface of a host.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Program {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub interface: Spanned<String>,
    #[schemars(with = "String")]
    pub attach: Spanned<String>,
    #[schemars(with = "String")]
    pub object: Spanned<String>,
    #[schemars(with = "String")]
    pub program: Spanned<String>,
    #[serde(default)]
    pub prefill: Vec<Prefill>,
    #[schemars(with = "Option<Metrics>")]
    pub metrics: Option<Spanned<Metrics>>,
    #[schemars(with = "Option<Events>")]
    pub events: Option<Spanned<Events>>,
    /// The program's own drop codes, named: `{ 133 = "DROP_POLICY" }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub reasons: BTreeMap<Spanned<String>, String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prefill {
    #[schemars(with = "String")]
    pub map: Spanned<String>,
    #[schemars(with = "MapBytes")]
    pub key: Spanned<MapBytes>,
    #[schemars(with = "MapBytes")]
    pub value: Spanned<MapBytes>,
}

/// A map key or value: `"0x07000000"` (bytes in order), `{ u32 = 7 }`, or a list of
/// such fields laid out one after the other in the host's byte order.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum MapBytes {
    Hex(String),
    Field(MapField),
    Fields(Vec<MapField>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapField {
    pub u8: Option<u8>,
    pub u16: Option<u16>,
    pub u32: Option<u32>,
    pub u64: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub map: String,
    pub kind: String,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub map: String,
    pub kind: String,
    pub type_offset: u32,
    pub type_value: u8,
    pub reason_offset: u32,
    pub reason_size: u32,
    pub packet_offset: Option<u32>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Host {
    #[serde(default)]
    pub forwarding: bool,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, SysctlValue>")]
    pub sysctls: BTreeMap<Spanned<String>, SysctlValue>,
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Extra addresses on the host's loopback (`lo`), IPv4 or IPv6 with a prefix:
    /// "198.18.1.9/32", "2001:db8:7::9/128".
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub addresses: Vec<Spanned<String>>,
    /// Policy rules (`ip rule`), in file order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Static (permanent) neighbour entries, each naming its interface with `dev`.
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
}

/// A permanent neighbour entry: `{ addr = "198.18.0.2", lladdr = "02:00:00:00:00:99" }`.
/// Without `lladdr` it is the real address of the interface's peer.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Neighbour {
    #[schemars(with = "String")]
    pub addr: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub lladdr: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub dev: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SysctlValue {
    Int(i64),
    Text(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub via: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub dev: Option<Spanned<String>>,
    /// "unicast" (default), "blackhole", "unreachable", "prohibit" or "throw".
    #[serde(rename = "type")]
    #[schemars(with = "Option<String>")]
    pub kind: Option<Spanned<String>>,
    pub metric: Option<u32>,
    #[schemars(with = "Option<String>")]
    pub src: Option<Spanned<String>>,
    #[schemars(with = "Option<NumberOrText>")]
    pub table: Option<Spanned<NumberOrText>>,
    /// "ipv4" or "ipv6": needed only where no address says it (`to = "default"`
    /// without `via`).
    #[schemars(with = "Option<String>")]
    pub family: Option<Spanned<String>>,
}

/// A number, or text: a table (`100`, "main"), a mark (`16`, "0x10/0xff").
#[derive(Deserialize, JsonSchema, Clone)]
#[serde(untagged)]
pub enum NumberOrText {
    Number(i64),
    Name(String),
}

/// A policy rule (`ip rule`): which table the packets it matches are looked up in.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[schemars(with = "Option<String>")]
    pub from: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub to: Option<Spanned<String>>,
    /// A mark (`16`, `"0x10"`) or a mark with a mask (`"0x10/0xff"`).
    #[schemars(with = "Option<NumberOrText>")]
    pub fwmark: Option<Spanned<NumberOrText>>,
    #[schemars(with = "Option<String>")]
    pub iif: Option<Spanned<String>>,
    #[schemars(with = "Option<u32>")]
    pub priority: Option<Spanned<u32>>,
    #[schemars(with = "Option<NumberOrText>")]
    pub table: Option<Spanned<NumberOrText>>,
    #[schemars(with = "Option<String>")]
    pub family: Option<Spanned<String>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub a: Endpoint,
    pub b: Endpoint,
    #[schemars(with = "Option<u32>")]
    pub mtu: Option<Spanned<u32>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub addr: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub addr6: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    /// This end's MTU; overrides the link's `mtu`.
    #[schemars(with = "Option<u32>")]
    pub mtu: Option<Spanned<u32>>,
    #[schemars(with = "Option<u32>")]
    pub txqueuelen: Option<Spanned<u32>>,
    /// `false`: the interface stays administratively down.
    pub up: Option<bool>,
    #[serde(default)]
    pub neighbours: Vec<Neighbour>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    pub iptables: Option<String>,
    #[schemars(with = "Option<String>")]
    pub iptables_file: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub backend: Option<Spanned<String>>,
    pub nft: Option<String>,
    #[schemars(with = "Option<String>")]
    pub nft_file: Option<Spanned<String>>,
    pub tc: Option<String>,
    #[schemars(with = "Option<TcDrop>")]
    pub tc_drop: Option<Spanned<TcDrop>>,
    #[schemars(with = "Option<Qdisc>")]
    pub qdisc: Option<Spanned<Qdisc>>,
    /// An escape hatch: one program and its arguments, run inside the host's namespace
    /// (no shell); which programs and arguments are allowed: `validate/command.rs`.
    #[schemars(with = "Option<Vec<String>>")]
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `qdisc = { dev = "eth0", kind = "tbf", rate = "1mbit", burst = 1600, limit = 3000 }`:
/// which keys a kind takes is checked by the validator (`validate/qdisc.rs`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Qdisc {
    pub dev: String,
    pub kind: String,
    pub limit: Option<u32>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub loss: Option<String>,
    /// `kind = "ingress"` only: `police = { rate = "8kbit", burst = 20 }`.
    pub police: Option<Police>,
}

/// An ingress qdisc's policer: what exceeds `rate` with a bucket of `burst` bytes drops.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Police {
    pub rate: String,
    pub burst: u32,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcDrop {
    pub dev: String,
    pub direction: Option<String>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    #[schemars(with = "String")]
    pub protocol: Spanned<String>,
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<u16>>,
    #[schemars(with = "Option<u32>")]
    pub count: Option<Spanned<u32>>,
    pub listen: Option<bool>,
    #[schemars(with = "Option<usize>")]
    pub payload: Option<Spanned<usize>>,
    #[schemars(with = "Option<u64>")]
    pub timeout_ms: Option<Spanned<u64>>,
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    /// "ipv4" or "ipv6": which of a host's addresses `to` means (default: the
    /// family of `to` when it is an address, else ipv4).
    #[schemars(with = "Option<String>")]
    pub family: Option<Spanned<String>>,
    #[schemars(with = "Option<u8>")]
    pub ttl: Option<Spanned<u8>>,
    pub dont_fragment: Option<bool>,
    #[schemars(with = "Option<String>")]
    pub receiver: Option<Spanned<String>>,
    pub rcvbuf: Option<u32>,
    #[schemars(with = "Option<u32>")]
    pub backlog: Option<Spanned<u32>>,
    #[schemars(with = "Option<bool>")]
    pub hold: Option<Spanned<bool>>,
    #[schemars(with = "Option<bool>")]
    pub accept_until_empty: Option<Spanned<bool>>,
    /// TCP: when the listener calls accept(2): "never" or "on_arrival".
    #[schemars(with = "Option<String>")]
    pub accept: Option<Spanned<String>>,
    /// SO_SNDBUF of the sending sockets, in bytes (the kernel doubles it).
    #[schemars(with = "Option<u32>")]
    pub sndbuf: Option<Spanned<u32>>,
    /// Socket options of the sending sockets, by name: `{ SO_MARK = 7, IP_TOS = 0x10 }`.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, i64>")]
    pub sockopts: BTreeMap<Spanned<String>, Spanned<i64>>,
    /// Socket options of the listening socket, by name.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, i64>")]
    pub listener_sockopts: BTreeMap<Spanned<String>, Spanned<i64>>,
    #[schemars(with = "Option<TrafficExpect>")]
    pub expect: Option<Spanned<TrafficExpect>>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficExpect {
    pub answered: Option<u32>,
    pub delivered: Option<u32>,
    pub errors: Option<u32>,
    pub connected: Option<u32>,
    pub refused: Option<u32>,
    pub timed_out: Option<u32>,
    pub unreachable: Option<u32>,
    pub blocked: Option<u32>,
}

#[derive(Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub drops: Vec<DropExpect>,
    #[serde(default)]
    pub allow_other_drops: bool,
    #[schemars(with = "Option<String>")]
    pub since_kernel: Option<Spanned<String>>,
    #[serde(default)]
    pub causes: Vec<CauseExpect>,
    #[serde(default)]
    pub counters: Vec<CounterExpect>,
    #[serde(default)]
    pub hooks: Vec<HookExpect>,
    #[serde(default)]
    pub datapath: Vec<DatapathExpect>,
}

/// `[[expect.datapath]]`: drops of a program under test (all of them without `program`).
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatapathExpect {
    #[schemars(with = "Option<String>")]
    pub program: Option<Spanned<String>>,
    pub unreported_drops: Option<u64>,
    pub kernel_drops: Option<u64>,
    pub reported_drops: Option<u64>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookExpect {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub hook: Spanned<String>,
    pub ret: Option<i32>,
    pub count: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CauseExpect {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub cause: Spanned<String>,
    pub count: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterExpect {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub counter: Spanned<String>,
    pub delta: u64,
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropExpect {
    #[schemars(with = "String")]
    pub host: Spanned<String>,
    #[schemars(with = "String")]
    pub reason: Spanned<String>,
    #[schemars(with = "Option<String>")]
    pub function: Option<Spanned<String>>,
    pub count: u64,
}
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Packets {
    #[schemars(with = "Option<String>")]
    pub name: Option<Spanned<String>>,
    #[schemars(with = "String")]
    pub from: Spanned<String>,
    #[schemars(with = "String")]
    pub to: Spanned<String>,
    #[schemars(with = "Option<u32>")]
    pub ip: Option<Spanned<u32>>,
    #[schemars(with = "Option<String>")]
    pub source: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub destination: Option<Spanned<String>>,
    #[schemars(with = "ProtocolField")]
    pub protocol: Spanned<ProtocolField>,
    #[schemars(with = "Option<u16>")]
    pub port: Option<Spanned<u16>>,
    #[schemars(with = "Option<u16>")]
    pub source_port: Option<Spanned<u16>>,
    #[schemars(with = "Option<u32>")]
    pub count: Option<Spanned<u32>>,
    #[schemars(with = "Option<usize>")]
    pub payload: Option<Spanned<usize>>,
    #[schemars(with = "Option<u32>")]
    pub ttl: Option<Spanned<u32>>,
    #[schemars(with = "Option<String>")]
    pub tcp_flags: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub corrupt: Option<Spanned<String>>,
    #[schemars(with = "Option<String>")]
    pub receiver: Option<Spanned<String>>,
    #[schemars(with = "Option<u64>")]
    pub timeout_ms: Option<Spanned<u64>>,
    /// Split each datagram (transport header and payload) into fragments of this many
    /// bytes (a multiple of 8).
    #[schemars(with = "Option<u32>")]
    pub fragment_size: Option<Spanned<u32>>,
    /// With `fragment_size`: which fragments to send, by index from 0, in this order.
    #[schemars(with = "Option<Vec<u32>>")]
    pub fragments_sent: Option<Spanned<Vec<u32>>>,
    /// Fragments written out: byte ranges of the datagram, overlaps and offsets allowed.
    #[schemars(with = "Option<Vec<RawFragment>>")]
    pub fragments: Option<Spanned<Vec<RawFragment>>>,
    #[schemars(with = "Option<PacketExpect>")]
    pub expect: Option<Spanned<PacketExpect>>,
}

/// One fragment of `fragments`: `{ offset = 0, length = 64 }`; `more` (the MF flag)
/// defaults to whether the fragment ends before the datagram does.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFragment {
    pub offset: u32,
    pub length: u32,
    pub more: Option<bool>,
}

/// `protocol = "udp"` or `protocol = 253`.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ProtocolField {
    Name(String),
    Number(i64),
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PacketExpect {
    pub delivered: Option<u32>,
    pub answered: Option<u32>,
    pub errors: Option<u32>,
    pub resets: Option<u32>,
}
