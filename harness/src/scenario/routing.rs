//! The validated routes and policy rules of a host, as `ip route` and `ip rule` write
//! them, for either address family.

use std::fmt;
use std::net::IpAddr;

/// An address family, where a scenario must say which one it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    /// As written in a scenario: `ipv4`, `ipv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }
}

/// An address with a prefix length, of either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The route types of `ip route` (RTN_*): what the kernel does with a packet the route
/// matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// Forward through `via` or out of `dev`.
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop and send ICMP host unreachable (ICMPv6 no route); a local sender gets
    /// EHOSTUNREACH.
    Unreachable,
    /// Drop and send ICMP communication administratively prohibited (ICMPv6 the same);
    /// a local sender gets EACCES.
    Prohibit,
    /// Stop looking in this table: the policy rules go on with the next one.
    Throw,
}

impl RouteKind {
    pub const NAMES: &'static [&'static str] =
        &["unicast", "blackhole", "unreachable", "prohibit", "throw"];

    pub fn from_name(name: &str) -> Option<RouteKind> {
        Some(match name {
            "unicast" => RouteKind::Unicast,
            "blackhole" => RouteKind::Blackhole,
            "unreachable" => RouteKind::Unreachable,
            "prohibit" => RouteKind::Prohibit,
            "throw" => RouteKind::Throw,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The kernel's reserved table numbers, by the names `ip` gives them.
pub const TABLE_NAMES: &[(&str, u32)] = &[("main", 254), ("local", 255), ("default", 253)];

/// The main table, where a route without `table` goes.
pub const MAIN_TABLE: u32 = 254;

/// `ip route add [TYPE] TO [via VIA] [dev DEV] [src SRC] [metric N] [table T]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub family: Family,
    pub kind: RouteKind,
    /// `None` is the default route.
    pub destination: Option<Prefix>,
    pub via: Option<IpAddr>,
    /// Interface name in this host; needed for a unicast route without a gateway.
    pub dev: Option<String>,
    /// The preferred source address of packets the host sends along this route.
    pub src: Option<IpAddr>,
    pub metric: Option<u32>,
    pub table: u32,
}

/// `ip rule add [from P] [to P] [fwmark M/MASK] [iif DEV] [priority N] table T`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub family: Family,
    pub from: Option<Prefix>,
    pub to: Option<Prefix>,
    /// Mark and mask (the mask is all ones when not given).
    pub fwmark: Option<(u32, u32)>,
    pub iif: Option<String>,
    pub priority: Option<u32>,
    pub table: u32,
}

impl fmt::Display for Route {
    /// `blackhole 2001:db8:2::/64 table 100`, as `ip route` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind != RouteKind::Unicast {
            write!(f, "{} ", self.kind.as_str())?;
        }
        match self.destination {
            Some(d) => write!(f, "{d}")?,
            None => write!(f, "default")?,
        }
        if let Some(via) = self.via {
            write!(f, " via {via}")?;
        }
        if let Some(dev) = &self.dev {
            write!(f, " dev {dev}")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        if self.table != MAIN_TABLE {
            write!(f, " table {}", table_name(self.table))?;
        }
        Ok(())
    }
}

impl fmt::Display for Rule {
    /// `from 198.18.0.9/32 priority 100 table 100`, as `ip rule` takes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(from) = self.from {
            parts.push(format!("from {from}"));
        }
        if let Some(to) = self.to {
            parts.push(format!("to {to}"));
        }
        if let Some((mark, mask)) = self.fwmark {
            parts.push(format!("fwmark {mark:#x}/{mask:#x}"));
        }
        if let Some(iif) = &self.iif {
            parts.push(format!("iif {iif}"));
        }
        if let Some(priority) = self.priority {
            parts.push(format!("priority {priority}"));
        }
        parts.push(format!("table {}", table_name(self.table)));
        write!(f, "{}", parts.join(" "))
    }
}

fn table_name(table: u32) -> String {
    TABLE_NAMES
        .iter()
        .find(|(_, n)| *n == table)
        .map_or_else(|| table.to_string(), |(name, _)| (*name).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_rules_read_like_ip() {
        let route = Route {
            family: Family::Ipv6,
            kind: RouteKind::Blackhole,
            destination: Some(Prefix {
                addr: "2001:db8:2::".parse().unwrap(),
                len: 64,
            }),
            via: None,
            dev: None,
            src: None,
            metric: Some(5),
            table: 100,
        };
        assert_eq!(
            route.to_string(),
            "blackhole 2001:db8:2::/64 metric 5 table 100"
        );
        let route = Route {
            family: Family::Ipv4,
            kind: RouteKind::Unicast,
            destination: None,
            via: Some("198.18.0.254".parse().unwrap()),
            dev: Some("eth0".into()),
            src: Some("198.18.0.1".parse().unwrap()),
            metric: None,
            table: MAIN_TABLE,
        };
        assert_eq!(
            route.to_string(),
            "default via 198.18.0.254 dev eth0 src 198.18.0.1"
        );
        let rule = Rule {
            family: Family::Ipv4,
            from: Some(Prefix {
                addr: "198.18.1.9".parse().unwrap(),
                len: 32,
            }),
            to: None,
            fwmark: Some((0x10, 0xff)),
            iif: Some("eth0".into()),
            priority: Some(100),
            table: 255,
        };
        assert_eq!(
            rule.to_string(),
            "from 198.18.1.9/32 fwmark 0x10/0xff iif eth0 priority 100 table local"
        );
    }
}
