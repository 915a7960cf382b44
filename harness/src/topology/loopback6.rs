//! IPv6 addresses on a host's loopback (`addresses = ["2001:db8:7::9/128"]`).
//!
//! Every host starts with IPv6 off on every interface, `lo` included (`BASE_SYSCTLS`).
//! A host with IPv6 loopback addresses gets it back on `lo` alone
//! (`net.ipv6.conf.lo.disable_ipv6 = 0`, which also gives `lo` its `::1`), and the
//! addresses are added with IFA_F_NODAD, as `ip -6 address add … dev lo nodad` does.
//! `lo` is quiet with IPv6 on: Linux joins no solicited-node group on a loopback device
//! (`addrconf_join_solict`), never reports its all-nodes group, and a NODAD address
//! sends no neighbour solicitation (measured on 6.18 with bpftrace on `skb:kfree_skb`:
//! no drop in 4 s).
//!
//! As for link addresses (see `configure_ipv6`), the local route of a new IPv6 address
//! appears after RTM_NEWADDR is answered, so the build waits until `route get` says
//! local.

use super::netns::Netns;
use super::{add_address_nodad, address_is_local, netlink_error, write_sysctl, LOOPBACK_INDEX};
use super::{TopologyError, IPV6_READY_TIMEOUT};
use crate::scenario::Scenario;
use rtnetlink::Handle;

pub(super) fn add_addresses(
    scenario: &Scenario,
    namespaces: &[Netns],
    handles: &[Handle],
    runtime: &tokio::runtime::Runtime,
) -> Result<(), TopologyError> {
    let started = std::time::Instant::now();
    for (id, host) in scenario.hosts.iter().enumerate() {
        if host.addresses6.is_empty() {
            continue;
        }
        // /proc/sys/net shows the namespace of the task that opens the file.
        namespaces[id].enter_here()?;
        write_sysctl(&host.name, "net.ipv6.conf.lo.disable_ipv6", "0")?;
        for addr in &host.addresses6 {
            runtime
                .block_on(add_address_nodad(&handles[id], LOOPBACK_INDEX, *addr))
                .map_err(|source| {
                    netlink_error(&host.name, format!("adding address {addr} to `lo`"), source)
                })?;
        }
        for addr in &host.addresses6 {
            loop {
                let local = runtime
                    .block_on(address_is_local(&handles[id], addr.addr))
                    .map_err(|source| {
                        let action = format!("asking for the route to {}", addr.addr);
                        netlink_error(&host.name, action, source)
                    })?;
                if local {
                    break;
                }
                if started.elapsed() > IPV6_READY_TIMEOUT {
                    return Err(TopologyError::Ipv6AddressNotReady {
                        host: host.name.clone(),
                        addr: addr.addr.to_string(),
                        waited_ms: IPV6_READY_TIMEOUT.as_millis() as u64,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    Ok(())
}
