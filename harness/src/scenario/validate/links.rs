//! Per-end link settings (`mtu`, `txqueuelen`, `up`) and static neighbour entries, on a
//! host (`dev` names the interface) or on a link end (the end's own interface).

use std::net::IpAddr;

use super::{must, raw, Spanned, Validator};
use crate::scenario::Host;
use crate::scenario::{HostId, Link, LinkAddr, Neighbour, ScenarioError};

/// A neighbour entry waiting for the links: where it was written, and the entry.
pub(super) enum PendingNeighbour {
    /// On a host, naming its interface with `dev`.
    Host(HostId, raw::Neighbour),
    /// On end `end` of link `link`.
    End {
        link: usize,
        end: usize,
        entry: raw::Neighbour,
    },
}

impl Validator<'_> {
    /// An end's MTU: its own `mtu` (checked like the link's), else the link's.
    pub(super) fn end_mtu(
        &self,
        own: &Option<Spanned<u32>>,
        link: &Option<Spanned<u32>>,
    ) -> Result<Option<u32>, ScenarioError> {
        if let Some(mtu) = own {
            if !(68..=65535).contains(mtu.get_ref()) {
                return Err(self.at.error(mtu.span(), must("mtu", mtu.get_ref())));
            }
        }
        Ok(own.as_ref().or(link.as_ref()).map(|m| *m.get_ref()))
    }

    /// Checks every neighbour entry against the links and gives it to its host.
    pub(super) fn neighbours(
        &self,
        pending: Vec<PendingNeighbour>,
        links: &[Link],
        hosts: &mut [Host],
    ) {
        for item in pending {
            let resolved = match item {
                PendingNeighbour::Host(id, entry) => self.host_neighbour(id, entry, links, hosts),
                PendingNeighbour::End { link, end, entry } => {
                    if let Some(dev) = &entry.dev {
                        self.note(self.at.error(
                            dev.span(),
                            "a link end's neighbours are on that end's interface: `dev` is for the neighbours of a host (`[hosts.NAME] neighbours = [...]`)",
                        ));
                        continue;
                    }
                    self.neighbour(&links[link].ends[end], entry)
                }
            };
            if let Some((host, neighbour)) = self.keep(resolved) {
                hosts[host].neighbours.push(neighbour);
            }
        }
    }

    fn host_neighbour(
        &self,
        id: HostId,
        entry: raw::Neighbour,
        links: &[Link],
        hosts: &[Host],
    ) -> Result<(HostId, Neighbour), ScenarioError> {
        let Some(dev) = &entry.dev else {
            return Err(self.at.error(
                entry.addr.span(),
                format!(
                    "a neighbour of host `{}` needs `dev`, the interface it is on (or write it on the link end instead)",
                    hosts[id].name
                ),
            ));
        };
        let end = links
            .iter()
            .flat_map(|l| l.ends.iter())
            .find(|e| e.host == id && &e.ifname == dev.get_ref())
            .ok_or_else(|| {
                self.at.error(
                    dev.span(),
                    format!(
                        "host `{}` has a neighbour on `{}`, but no link gives it an interface of that name",
                        hosts[id].name,
                        dev.get_ref()
                    ),
                )
            })?;
        self.neighbour(end, entry)
    }

    fn neighbour(
        &self,
        end: &crate::scenario::Endpoint,
        entry: raw::Neighbour,
    ) -> Result<(HostId, Neighbour), ScenarioError> {
        let addr: IpAddr = entry.addr.get_ref().parse().map_err(|_| {
            self.at.error(
                entry.addr.span(),
                format!(
                    "neighbour `{}` is not an IPv4 or IPv6 address (no prefix), like \"198.18.0.2\" or \"2001:db8::2\"",
                    entry.addr.get_ref()
                ),
            )
        })?;
        self.check_range(addr, entry.addr.span())?;
        if addr.is_ipv6() && end.addr6.is_none() {
            return Err(self.at.error(
                entry.addr.span(),
                format!(
                    "an IPv6 neighbour on `{}`, whose link has no IPv6: give both ends an `addr6`",
                    end.ifname
                ),
            ));
        }
        let lladdr = match &entry.lladdr {
            None => LinkAddr::Peer,
            Some(text) => LinkAddr::Mac(parse_mac(text.get_ref()).ok_or_else(|| {
                self.at.error(
                    text.span(),
                    format!(
                        "`{}` is not a MAC address like \"02:00:00:00:00:99\" (six hex bytes separated by `:`); leave `lladdr` out for the peer's real address",
                        text.get_ref()
                    ),
                )
            })?),
        };
        Ok((
            end.host,
            Neighbour {
                ifname: end.ifname.clone(),
                addr,
                lladdr,
            },
        ))
    }
}

/// "02:00:00:00:00:99" → bytes.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn macs_are_six_hex_bytes() {
        assert_eq!(parse_mac("02:00:00:00:00:99"), Some([2, 0, 0, 0, 0, 0x99]));
        assert_eq!(parse_mac("02:00:00:00:00"), None);
        assert_eq!(parse_mac("02:00:00:00:00:99:01"), None);
        assert_eq!(parse_mac("02:00:00:00:00:zz"), None);
    }
}
