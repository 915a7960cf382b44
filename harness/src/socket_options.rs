//! The socket options a scenario may set by name (`sockopts = { SO_MARK = 7 }` on a
//! `[[traffic]]` entry's sending sockets, `listener_sockopts` on its listener): one
//! table with each option's level and number (`<sys/socket.h>`, `<netinet/in.h>`,
//! `<netinet/tcp.h>`) and what it changes in the kernel. A leaf: the model validates
//! names and values against it, the runtime sets them with setsockopt(2) as an `int`.
//!
//! Only options whose value is one `int` are here; the ones the harness needs for its
//! own counting (`IP_RECVERR`, `IPV6_RECVERR`) or sets itself from other keys are left
//! out on purpose, and so is `IPV6_V6ONLY`: the harness binds and connects to one
//! IPv6 address, never the wildcard, so it would change nothing. The `IPV6_*` options
//! (level SOL_IPV6) apply to the sockets of an IPv6 entry only; on an IPv4 socket the
//! kernel would refuse them (ENOPROTOOPT), so validation does.
//! README "Socket options" is rendered from the same words (a test keeps them equal).

/// Which sockets an option applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Any IPv4 socket (ICMP ping, UDP, TCP).
    Any,
    /// TCP sockets only.
    Tcp,
    /// Any IPv6 socket (an entry whose destination is IPv6).
    Ipv6,
    /// IPv6 TCP sockets only.
    Ipv6Tcp,
}

impl Applies {
    pub fn needs_tcp(self) -> bool {
        matches!(self, Applies::Tcp | Applies::Ipv6Tcp)
    }

    pub fn needs_ipv6(self) -> bool {
        matches!(self, Applies::Ipv6 | Applies::Ipv6Tcp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOption {
    pub name: &'static str,
    pub level: i32,
    pub optname: i32,
    pub applies: Applies,
    /// Smallest and largest value accepted (the kernel's own range where it has one).
    pub min: i64,
    pub max: i64,
    /// What it changes in the kernel, for the README and error messages.
    pub effect: &'static str,
}

const INT_MAX: i64 = i32::MAX as i64;

const fn opt(
    name: &'static str,
    level: i32,
    optname: i32,
    applies: Applies,
    (min, max): (i64, i64),
    effect: &'static str,
) -> SocketOption {
    SocketOption {
        name,
        level,
        optname,
        applies,
        min,
        max,
        effect,
    }
}

use Applies::{Any, Ipv6, Ipv6Tcp, Tcp};
const SOL_SOCKET: i32 = libc::SOL_SOCKET;
const SOL_IP: i32 = libc::SOL_IP;
const SOL_IPV6: i32 = libc::SOL_IPV6;
const SOL_TCP: i32 = libc::SOL_TCP;
const BOOL: (i64, i64) = (0, 1);

/// Every option a scenario may name, alphabetical within each level.
pub const OPTIONS: &[SocketOption] = &[
    opt("SO_BROADCAST", SOL_SOCKET, libc::SO_BROADCAST, Any, BOOL,
        "allows sending to a broadcast address; without it such a send fails with EACCES"),
    opt("SO_DONTROUTE", SOL_SOCKET, libc::SO_DONTROUTE, Any, BOOL,
        "sends only to directly connected destinations, ignoring gateways (RTO_ONLINK lookups)"),
    opt("SO_KEEPALIVE", SOL_SOCKET, libc::SO_KEEPALIVE, Tcp, BOOL,
        "sends keepalive probes on an idle connection"),
    opt("SO_MARK", SOL_SOCKET, libc::SO_MARK, Any, (0, u32::MAX as i64),
        "sets skb->mark on every packet sent: matched by iptables `-m mark`, nft `meta mark`, `ip rule fwmark`"),
    opt("SO_PRIORITY", SOL_SOCKET, libc::SO_PRIORITY, Any, (0, INT_MAX),
        "sets skb->priority on every packet sent: picks the band of a prio/mqprio qdisc and the VLAN egress QoS"),
    opt("SO_RCVBUF", SOL_SOCKET, libc::SO_RCVBUF, Any, (0, INT_MAX),
        "receive buffer: the kernel doubles the value and caps it at net.core.rmem_max (minimum 2304)"),
    opt("SO_RCVBUFFORCE", SOL_SOCKET, libc::SO_RCVBUFFORCE, Any, (0, INT_MAX),
        "SO_RCVBUF without the net.core.rmem_max cap (needs CAP_NET_ADMIN)"),
    opt("SO_RCVLOWAT", SOL_SOCKET, libc::SO_RCVLOWAT, Any, (0, INT_MAX),
        "bytes that must be queued before a read or poll reports the socket readable"),
    opt("SO_REUSEADDR", SOL_SOCKET, libc::SO_REUSEADDR, Any, BOOL,
        "lets bind(2) reuse a local address still in TIME_WAIT"),
    opt("SO_REUSEPORT", SOL_SOCKET, libc::SO_REUSEPORT, Any, BOOL,
        "lets several sockets bind the same port; the kernel spreads arrivals among them"),
    opt("SO_SNDBUF", SOL_SOCKET, libc::SO_SNDBUF, Any, (0, INT_MAX),
        "send buffer: the kernel doubles the value and caps it at net.core.wmem_max (minimum 4608)"),
    opt("SO_SNDBUFFORCE", SOL_SOCKET, libc::SO_SNDBUFFORCE, Any, (0, INT_MAX),
        "SO_SNDBUF without the net.core.wmem_max cap (needs CAP_NET_ADMIN)"),
    opt("IP_BIND_ADDRESS_NO_PORT", SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, Any, BOOL,
        "defers choosing the source port of a bound socket until connect(2)"),
    opt("IP_FREEBIND", SOL_IP, libc::IP_FREEBIND, Any, BOOL,
        "allows binding an address the host does not have"),
    opt("IP_MTU_DISCOVER", SOL_IP, libc::IP_MTU_DISCOVER, Any, (0, 5),
        "path MTU discovery: 0 never set DF (fragment), 1 want, 2 do (DF set, EMSGSIZE above the path MTU), 3 probe, 4 interface MTU, 5 omit"),
    opt("IP_TOS", SOL_IP, libc::IP_TOS, Any, (0, 255),
        "the TOS/DSCP byte of every packet sent: matched by iptables `-m tos`/`-m dscp`, nft `ip dscp`, `ip rule tos`"),
    opt("IP_TRANSPARENT", SOL_IP, libc::IP_TRANSPARENT, Any, BOOL,
        "allows binding and sending from a non-local address (TPROXY); needs CAP_NET_ADMIN"),
    opt("IP_TTL", SOL_IP, libc::IP_TTL, Any, (1, 255),
        "the TTL of every unicast packet sent (the `ttl` key sets the same)"),
    opt("IPV6_DONTFRAG", SOL_IPV6, libc::IPV6_DONTFRAG, Ipv6, BOOL,
        "a datagram longer than the path MTU fails with EMSGSIZE instead of being fragmented by the sender"),
    opt("IPV6_FREEBIND", SOL_IPV6, libc::IPV6_FREEBIND, Ipv6, BOOL,
        "allows binding an IPv6 address the host does not have (since 4.15)"),
    opt("IPV6_MINHOPCOUNT", SOL_IPV6, libc::IPV6_MINHOPCOUNT, Ipv6Tcp, (0, 255),
        "segments arriving with a smaller hop limit are dropped (TcpExt.TCPMinTTLDrop, reason TCP_MINTTL on 6.12 and later; RFC 5082 GTSM)"),
    opt("IPV6_MTU", SOL_IPV6, libc::IPV6_MTU, Ipv6, (1280, 65535),
        "the largest packet the socket sends: longer datagrams are fragmented at this size (or refused with EMSGSIZE under IPV6_DONTFRAG)"),
    opt("IPV6_MTU_DISCOVER", SOL_IPV6, libc::IPV6_MTU_DISCOVER, Ipv6, (0, 5),
        "path MTU discovery: 0 don't and 1 want (the sender fragments above the path MTU), 2 do (no fragmenting by the sender), 3 probe, 4 interface MTU, 5 omit (the `dont_fragment` key sets 2)"),
    opt("IPV6_TCLASS", SOL_IPV6, libc::IPV6_TCLASS, Ipv6, (-1, 255),
        "the traffic class byte (DSCP and ECN) of every packet sent, -1 the default 0: matched by ip6tables `-m dscp`, nft `ip6 dscp`"),
    opt("IPV6_TRANSPARENT", SOL_IPV6, libc::IPV6_TRANSPARENT, Ipv6, BOOL,
        "allows binding and sending from a non-local IPv6 address (TPROXY); needs CAP_NET_ADMIN"),
    opt("IPV6_UNICAST_HOPS", SOL_IPV6, libc::IPV6_UNICAST_HOPS, Ipv6, (-1, 255),
        "the hop limit of every unicast packet sent, -1 the route's (net.ipv6.conf.*.hop_limit); a router drops a packet whose hop limit runs out (the `ttl` key sets the same)"),
    opt("TCP_DEFER_ACCEPT", SOL_TCP, libc::TCP_DEFER_ACCEPT, Tcp, (0, INT_MAX),
        "listener: seconds during which a handshake's final ACK without data is dropped (TcpExt.TCPDeferAcceptDrop) and the connection stays half-open"),
    opt("TCP_KEEPCNT", SOL_TCP, libc::TCP_KEEPCNT, Tcp, (1, 127),
        "keepalive probes without answer before the connection is dropped"),
    opt("TCP_KEEPIDLE", SOL_TCP, libc::TCP_KEEPIDLE, Tcp, (1, 32767),
        "seconds of idleness before the first keepalive probe"),
    opt("TCP_KEEPINTVL", SOL_TCP, libc::TCP_KEEPINTVL, Tcp, (1, 32767),
        "seconds between keepalive probes"),
    opt("TCP_MAXSEG", SOL_TCP, libc::TCP_MAXSEG, Tcp, (88, 32767),
        "before connect(2) or listen(2): the MSS advertised in the SYN and the largest segment sent"),
    opt("TCP_NODELAY", SOL_TCP, libc::TCP_NODELAY, Tcp, BOOL,
        "turns Nagle's algorithm off: small writes are sent at once"),
    opt("TCP_QUICKACK", SOL_TCP, libc::TCP_QUICKACK, Tcp, BOOL,
        "acknowledges at once instead of delaying ACKs (until the kernel leaves quick-ack mode)"),
    opt("TCP_SYNCNT", SOL_TCP, libc::TCP_SYNCNT, Tcp, (1, 127),
        "SYN retransmissions before connect(2) gives up (net.ipv4.tcp_syn_retries for this socket)"),
    opt("TCP_USER_TIMEOUT", SOL_TCP, libc::TCP_USER_TIMEOUT, Tcp, (0, INT_MAX),
        "milliseconds sent data may stay unacknowledged before the connection is dropped (ETIMEDOUT)"),
    opt("TCP_WINDOW_CLAMP", SOL_TCP, libc::TCP_WINDOW_CLAMP, Tcp, (0, INT_MAX),
        "the largest receive window advertised, in bytes"),
];

/// The option of that exact name (the kernel's, upper case).
pub fn find(name: &str) -> Option<&'static SocketOption> {
    OPTIONS.iter().find(|o| o.name == name)
}

/// The IPv4 option that does on an IPv4 socket what an `IPV6_*` one does on an IPv6
/// socket, where there is one.
pub fn ipv4_counterpart(name: &str) -> Option<&'static str> {
    match name {
        "IPV6_UNICAST_HOPS" => Some("IP_TTL"),
        "IPV6_TCLASS" => Some("IP_TOS"),
        "IPV6_MTU_DISCOVER" => Some("IP_MTU_DISCOVER"),
        "IPV6_FREEBIND" => Some("IP_FREEBIND"),
        "IPV6_TRANSPARENT" => Some("IP_TRANSPARENT"),
        _ => None,
    }
}

/// Every name, for suggestions.
pub fn names() -> Vec<&'static str> {
    OPTIONS.iter().map(|o| o.name).collect()
}

/// The README's table: `| name | level | applies to | what it changes |`.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| option | level | sockets | what it changes in the kernel |\n| --- | --- | --- | --- |\n",
    );
    for o in OPTIONS {
        let level = match o.level {
            SOL_SOCKET => "SOL_SOCKET",
            SOL_IP => "SOL_IP",
            SOL_IPV6 => "SOL_IPV6",
            _ => "SOL_TCP",
        };
        let applies = match o.applies {
            Any => "any",
            Tcp => "tcp",
            Ipv6 => "ipv6",
            Ipv6Tcp => "ipv6 tcp",
        };
        out.push_str(&format!(
            "| `{}` | {level} | {applies} | {} |\n",
            o.name, o.effect
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_sorted_within_a_level() {
        for pair in OPTIONS.windows(2) {
            if pair[0].level == pair[1].level {
                assert!(
                    pair[0].name < pair[1].name,
                    "{} / {}",
                    pair[0].name,
                    pair[1].name
                );
            }
        }
        assert_eq!(find("SO_MARK").unwrap().optname, 36);
        assert_eq!(find("IP_TOS").unwrap().optname, 1);
        assert_eq!(find("TCP_NODELAY").unwrap().level, 6);
        assert_eq!(find("IPV6_UNICAST_HOPS").unwrap().optname, 16);
        assert_eq!(find("IPV6_UNICAST_HOPS").unwrap().level, 41);
        for name in names().into_iter().filter(|n| n.starts_with("IPV6_")) {
            if let Some(v4) = ipv4_counterpart(name) {
                assert!(find(v4).is_some(), "{name} → {v4}");
            }
        }
    }

    #[test]
    fn the_readme_carries_the_table() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        assert!(
            readme.contains(&markdown_table()),
            "README.md must contain the socket option table; paste:\n{}",
            markdown_table()
        );
    }
}
