//! Names the scenario model and the runtime both use: hook points, corruptions, TCP flag
//! bits, iptables backends, cause names and the global sysctls a scenario may change.
//!
//! This is a leaf: it imports nothing from the crate, so the model (`scenario`) can
//! validate a file against these names without pulling in probes, sockets or namespaces,
//! and the runtime modules that act on them re-export them where they always were.

use std::fmt;

/// `DROPSPEC_HOOK_*` in ebpf/hooks.h, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    NfHookSlow,
    NfNatInetFn,
    NfConntrackConfirm,
    TcpV4Connect,
    InetCskAccept,
}

impl HookPoint {
    pub const ALL: [HookPoint; 5] = [
        HookPoint::NfHookSlow,
        HookPoint::NfNatInetFn,
        HookPoint::NfConntrackConfirm,
        HookPoint::TcpV4Connect,
        HookPoint::InetCskAccept,
    ];

    /// The kernel function watched.
    pub fn function(self) -> &'static str {
        match self {
            HookPoint::NfHookSlow => "nf_hook_slow",
            HookPoint::NfNatInetFn => "nf_nat_inet_fn",
            HookPoint::NfConntrackConfirm => "__nf_conntrack_confirm",
            HookPoint::TcpV4Connect => "tcp_v4_connect",
            HookPoint::InetCskAccept => "inet_csk_accept",
        }
    }

    /// What Retina calls a counted failure of this function.
    pub fn retina_name(self) -> &'static str {
        match self {
            HookPoint::NfHookSlow => "IPTABLE_RULE_DROP",
            HookPoint::NfNatInetFn => "IPTABLE_NAT_DROP",
            HookPoint::NfConntrackConfirm => "CONNTRACK_ADD_DROP",
            HookPoint::TcpV4Connect => "TCP_CONNECT_BASIC",
            HookPoint::InetCskAccept => "TCP_ACCEPT_BASIC",
        }
    }

    pub fn from_retina_name(name: &str) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| p.retina_name() == name)
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.retina_name())
    }
}

/// TCP flag bits, in header order.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// What is wrong with a frame on purpose. Everything else about it stays correct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Corruption {
    None,
    /// The IPv4 header checksum is wrong (IPv6 has none).
    IpChecksum,
    /// The TCP, UDP, ICMP or ICMPv6 checksum is wrong.
    Checksum,
    /// The IPv4 header length field says 4 words (16 bytes), below the minimum of 5.
    Ihl,
    /// The IP version nibble disagrees with the EtherType (6 in an IPv4 header, 4 in an
    /// IPv6 one).
    Version,
    /// The frame ends `packets::TRUNCATED_BY` bytes before the length its IP header announces.
    Truncated,
    /// The Ethernet destination is `packets::WRONG_MAC`, a unicast address of no host.
    DstMac,
}

impl Corruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Corruption::None => "none",
            Corruption::IpChecksum => "ip_checksum",
            Corruption::Checksum => "checksum",
            Corruption::Ihl => "ihl",
            Corruption::Version => "version",
            Corruption::Truncated => "truncated",
            Corruption::DstMac => "dst_mac",
        }
    }

    pub fn parse(text: &str) -> Option<Corruption> {
        Some(match text {
            "none" => Corruption::None,
            "ip_checksum" => Corruption::IpChecksum,
            "checksum" => Corruption::Checksum,
            "ihl" => Corruption::Ihl,
            "version" => Corruption::Version,
            "truncated" => Corruption::Truncated,
            "dst_mac" => Corruption::DstMac,
            _ => return None,
        })
    }
}

/// Which iptables a fault's rules are loaded with, and its counters read back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesBackend {
    Nft,
    Legacy,
}

impl IptablesBackend {
    pub fn restore_command(self) -> &'static str {
        match self {
            IptablesBackend::Nft => "iptables-nft-restore",
            IptablesBackend::Legacy => "iptables-legacy-restore",
        }
    }
}

/// Every cause the classifier can name; expectations are checked against this list.
pub const CAUSES: &[&str] = &[
    "rule",
    "conntrack_full",
    "conntrack_clash",
    "nat",
    "checksum",
    "no_socket",
    "routing",
    "rp_filter",
    "neighbour",
    "ttl_expired",
    "too_big",
    "socket_buffer",
    "listen_overflow",
    "header",
    "tc",
    "qdisc",
    "netfilter_unexplained",
    "silent",
    "other",
];

/// The qdisc statistics a `qdisc/<dev>/<stat>` counter may name (tc's JSON names).
pub const QDISC_STATS: &[&str] = &["drops", "overlimits", "requeues", "backlog", "packets"];

/// Interface statistics a `link/<dev>/<stat>` counter can name (`counters/link.rs`).
pub const LINK_STATS: &[&str] = &["tx_dropped", "rx_dropped"];

/// The global-only sysctls a scenario may change.
pub const GLOBAL_SYSCTLS: &[&str] = &["net.netfilter.nf_conntrack_max"];
