//! Static neighbour entries (`neighbours = [...]` on a host or a link end), added once
//! every link is up and IPv6 is configured, so an entry written in the scenario
//! replaces the one `configure_ipv6` made for an IPv6 link's peer.
//!
//! A permanent entry means the kernel never resolves that address: no ARP request or
//! neighbour solicitation leaves, so a qdisc on the interface meets only the traffic,
//! and a wrong `lladdr` sends frames the peer is not addressed by (it drops them as
//! OTHERHOST in `ip_rcv_core`, measured on 6.18).

use super::{add_permanent_neighbour, first_error, link_mac, netlink_error, Plan};
use crate::scenario::{HostId, LinkAddr, Scenario};
use crate::topology::TopologyError;
use futures::future::join_all;
use rtnetlink::Handle;

pub(super) fn add_static(
    scenario: &Scenario,
    plan: &Plan,
    handles: &[Handle],
    runtime: &tokio::runtime::Runtime,
) -> Result<(), TopologyError> {
    let name = |id: HostId| scenario.hosts[id].name.as_str();
    let requests = scenario.hosts.iter().enumerate().flat_map(|(id, host)| {
        host.neighbours.iter().map(move |n| async move {
            let index = plan
                .index_by_name(id, &n.ifname)
                .expect("validation checked the interface");
            let mac = match n.lladdr {
                LinkAddr::Mac(mac) => mac.to_vec(),
                LinkAddr::Peer => {
                    let (peer_host, peer_index) = peer_of(scenario, plan, id, &n.ifname);
                    link_mac(&handles[peer_host], peer_index)
                        .await
                        .map_err(|source| {
                            let action =
                                format!("reading the MAC address of the peer of `{}`", n.ifname);
                            netlink_error(name(peer_host), action, source)
                        })?
                }
            };
            add_permanent_neighbour(&handles[id], index, n.addr, &mac)
                .await
                .map_err(|source| {
                    let action =
                        format!("adding a permanent neighbour {} on `{}`", n.addr, n.ifname);
                    netlink_error(name(id), action, source)
                })
        })
    });
    runtime.block_on(async { first_error(join_all(requests).await) })
}

/// The host and interface index of the other end of `ifname`'s veth.
fn peer_of(scenario: &Scenario, plan: &Plan, host: HostId, ifname: &str) -> (HostId, u32) {
    for (l, link) in scenario.links.iter().enumerate() {
        for e in 0..2 {
            if link.ends[e].host == host && link.ends[e].ifname == ifname {
                return (link.ends[1 - e].host, plan.index(l, 1 - e));
            }
        }
    }
    unreachable!("validation checked that `{ifname}` is a link end")
}
