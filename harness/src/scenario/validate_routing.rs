//! Routes, policy rules and address families: the checks serde cannot make, and the
//! build of the model's [`Route`] and [`Rule`].

use std::net::IpAddr;

use super::raw::{self, NumberOrText, Spanned};
use super::routing::{Family, Prefix, Route, RouteKind, Rule, MAIN_TABLE, TABLE_NAMES};
use super::validate::Validator;
use super::ScenarioError;

impl Validator<'_> {
    pub(super) fn route(&self, spec: raw::Route) -> Result<Route, ScenarioError> {
        let kind = match &spec.kind {
            None => RouteKind::Unicast,
            Some(k) => RouteKind::from_name(k.get_ref()).ok_or_else(|| {
                self.at.error(
                    k.span(),
                    format!(
                        "unknown route type `{}`: use {}",
                        k.get_ref(),
                        quoted_list(RouteKind::NAMES)
                    ),
                )
            })?,
        };
        let destination = if spec.to.get_ref() == "default" {
            None
        } else {
            Some(self.prefix(&spec.to)?)
        };
        let via = spec.via.as_ref().map(|v| self.ip(v)).transpose()?;
        let src = spec.src.as_ref().map(|s| self.ip(s)).transpose()?;
        let family = self.family_of(
            spec.family.as_ref(),
            [
                destination.map(|d| (d.addr, spec.to.span())),
                via.zip(spec.via.as_ref().map(Spanned::span)),
                src.zip(spec.src.as_ref().map(Spanned::span)),
            ],
            "route",
        )?;
        if kind == RouteKind::Unicast {
            if via.is_none() && spec.dev.is_none() {
                return Err(self.at.error(
                    spec.to.span(),
                    "a route needs `via` (a gateway address) or `dev` (an interface name), or a `type` such as \"blackhole\"",
                ));
            }
        } else if let Some(span) = spec.via.as_ref().or(spec.dev.as_ref()).map(Spanned::span) {
            return Err(self.at.error(
                span,
                format!(
                    "a {} route sends nothing anywhere: remove `via` and `dev`",
                    kind.as_str()
                ),
            ));
        }
        let table = match &spec.table {
            None => MAIN_TABLE,
            Some(t) => self.table(t)?,
        };
        Ok(Route {
            family,
            kind,
            destination,
            via,
            dev: spec.dev.map(Spanned::into_inner),
            src,
            metric: spec.metric,
            table,
        })
    }

    pub(super) fn rule(
        &self,
        spec: raw::Rule,
        at: &Spanned<String>,
    ) -> Result<Rule, ScenarioError> {
        let from = spec
            .from
            .as_ref()
            .map(|p| self.prefix_or_address(p))
            .transpose()?;
        let to = spec
            .to
            .as_ref()
            .map(|p| self.prefix_or_address(p))
            .transpose()?;
        let family = self.family_of(
            spec.family.as_ref(),
            [
                from.zip(spec.from.as_ref())
                    .map(|(p, s)| (p.addr, s.span())),
                to.zip(spec.to.as_ref()).map(|(p, s)| (p.addr, s.span())),
                None,
            ],
            "rule",
        )?;
        let Some(table) = &spec.table else {
            return Err(self.at.error(
                at.span(),
                format!(
                    "a rule of host `{}` has no `table`: say which table the packets it matches are looked up in, e.g. table = 100",
                    at.get_ref()
                ),
            ));
        };
        let table = self.table(table)?;
        let fwmark = spec.fwmark.as_ref().map(|m| self.fwmark(m)).transpose()?;
        if let Some(p) = spec.priority.as_ref().filter(|p| *p.get_ref() == 0) {
            return Err(self.at.error(
                p.span(),
                "priority 0 is the kernel's own rule for the local table: use 1 or more",
            ));
        }
        Ok(Rule {
            family,
            from,
            to,
            fwmark,
            iif: spec.iif.map(Spanned::into_inner),
            priority: spec.priority.map(Spanned::into_inner),
            table,
        })
    }

    /// The family a route, rule or traffic entry says, from its `family` key and its
    /// addresses, which must agree; IPv4 when nothing says.
    pub(super) fn family_of(
        &self,
        key: Option<&Spanned<String>>,
        addresses: [Option<(IpAddr, std::ops::Range<usize>)>; 3],
        what: &str,
    ) -> Result<Family, ScenarioError> {
        let declared = key
            .map(|k| match k.get_ref().as_str() {
                "ipv4" => Ok(Family::Ipv4),
                "ipv6" => Ok(Family::Ipv6),
                other => Err(self.at.error(
                    k.span(),
                    format!("unknown family `{other}`: use \"ipv4\" or \"ipv6\""),
                )),
            })
            .transpose()?;
        let mut found: Option<(Family, IpAddr)> = declared.map(|f| {
            let placeholder: IpAddr = match f {
                Family::Ipv4 => std::net::Ipv4Addr::UNSPECIFIED.into(),
                Family::Ipv6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            (f, placeholder)
        });
        for (addr, span) in addresses.into_iter().flatten() {
            let family = Family::of(addr);
            match found {
                None => found = Some((family, addr)),
                Some((f, _)) if f == family => {}
                Some((f, first)) => {
                    let said = if first.is_unspecified() {
                        format!("it says `family = \"{}\"`", f.as_str())
                    } else {
                        format!("its {first} is {}", f.as_str())
                    };
                    return Err(self.at.error(
                        span,
                        format!(
                            "{addr} is {}, but {said}: a {what} has one family (write one {what} per family)",
                            family.as_str(),
                        ),
                    ));
                }
            }
        }
        Ok(found.map_or(Family::Ipv4, |(f, _)| f))
    }

    /// An address with a prefix length, of either family, in the test ranges.
    pub(super) fn prefix(&self, text: &Spanned<String>) -> Result<Prefix, ScenarioError> {
        let bad = || {
            self.at.error(
                text.span(),
                format!(
                    "`{}` is not an address with prefix, like \"198.18.2.0/24\" or \"2001:db8:2::/64\" (or \"default\")",
                    text.get_ref()
                ),
            )
        };
        let (addr, len) = text.get_ref().split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let len: u8 = len.parse().map_err(|_| bad())?;
        if len > if addr.is_ipv4() { 32 } else { 128 } {
            return Err(bad());
        }
        self.check_range(addr, text.span())?;
        Ok(Prefix { addr, len })
    }

    /// A prefix, or one address (a /32 or /128), as `ip rule` takes them.
    fn prefix_or_address(&self, text: &Spanned<String>) -> Result<Prefix, ScenarioError> {
        if text.get_ref().contains('/') {
            return self.prefix(text);
        }
        let addr = self.ip(text)?;
        Ok(Prefix {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        })
    }

    /// One address of either family, in the test ranges.
    pub(super) fn ip(&self, text: &Spanned<String>) -> Result<IpAddr, ScenarioError> {
        let addr: IpAddr = text.get_ref().parse().map_err(|_| {
            self.at.error(
                text.span(),
                format!(
                    "`{}` is not an IPv4 or IPv6 address, like \"198.18.0.1\" or \"2001:db8::1\"",
                    text.get_ref()
                ),
            )
        })?;
        self.check_range(addr, text.span())?;
        Ok(addr)
    }

    fn table(&self, table: &Spanned<NumberOrText>) -> Result<u32, ScenarioError> {
        let bad = |what: String| {
            self.at.error(
                table.span(),
                format!(
                    "{what}: use a number from 1 to 4294967295 or {}",
                    quoted_list(&TABLE_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>())
                ),
            )
        };
        match table.get_ref() {
            NumberOrText::Number(n) => u32::try_from(*n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| bad(format!("no table {n}"))),
            NumberOrText::Name(name) => TABLE_NAMES
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, id)| *id)
                .ok_or_else(|| bad(format!("unknown table `{name}`"))),
        }
    }

    fn fwmark(&self, mark: &Spanned<NumberOrText>) -> Result<(u32, u32), ScenarioError> {
        let bad = || {
            self.at.error(
                mark.span(),
                "a fwmark is a number from 0 to 4294967295, in decimal or as \"0x…\", with an optional mask: 16, \"0x10\", \"0x10/0xff\"",
            )
        };
        let number = |text: &str| -> Option<u32> {
            match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => text.parse().ok(),
            }
        };
        match mark.get_ref() {
            NumberOrText::Number(n) => u32::try_from(*n).map(|n| (n, u32::MAX)).map_err(|_| bad()),
            NumberOrText::Name(text) => {
                let (value, mask) = match text.split_once('/') {
                    Some((v, m)) => (number(v), number(m)),
                    None => (number(text), Some(u32::MAX)),
                };
                value.zip(mask).ok_or_else(bad)
            }
        }
    }
}

fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::scenario::{parse, Family, RouteKind, MAIN_TABLE};
    use std::path::Path;

    #[test]
    fn routes_rules_and_traffic_take_either_family() {
        let text = r#"
            description = "routes"
            [hosts.c]
            routes = [
              { to = "default", via = "2001:db8:1::1" },
              { to = "default", family = "ipv6", type = "blackhole", table = 100, metric = 5 },
              { to = "198.18.9.0/24", type = "prohibit", table = "local" },
            ]
            rules = [{ from = "2001:db8:1::2", fwmark = "0x10/0xff", priority = 7, table = 100 }]
            [hosts.r]
            [[links]]
            a = { host = "c", addr = "198.18.1.2/24", addr6 = "2001:db8:1::2/64" }
            b = { host = "r", addr = "198.18.1.1/24", addr6 = "2001:db8:1::1/64" }
            [[traffic]]
            from = "c"
            to = "r"
            family = "ipv6"
            protocol = "icmp"
        "#;
        let s = parse(text, Path::new("s.toml"), "s", Path::new(".")).expect("valid");
        let routes = &s.hosts[0].routes;
        assert_eq!(routes[0].family, Family::Ipv6);
        assert_eq!(routes[0].table, MAIN_TABLE);
        assert_eq!(
            (
                routes[1].family,
                routes[1].kind,
                routes[1].table,
                routes[1].metric
            ),
            (Family::Ipv6, RouteKind::Blackhole, 100, Some(5))
        );
        assert_eq!((routes[2].family, routes[2].table), (Family::Ipv4, 255));
        let rule = &s.hosts[0].rules[0];
        assert_eq!(rule.family, Family::Ipv6);
        assert_eq!(rule.from.map(|p| p.len), Some(128));
        assert_eq!(rule.fwmark, Some((0x10, 0xff)));
        assert_eq!(
            s.traffic[0].destination,
            "2001:db8:1::1".parse::<std::net::IpAddr>().unwrap()
        );
    }
}
