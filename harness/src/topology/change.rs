//! Changes a `[[steps]]` entry makes to a built topology while the scenario runs: a
//! link taken down or up, a route added or deleted. Each runs iproute2's `ip` inside
//! the host's namespace (like the faults' tools), so it can only ever change that host;
//! what `ip` says on failure is kept for the error.

use std::io;

use super::Topology;
use crate::scenario::{HostId, Route};

/// `ip link set dev DEV up|down` in `host`, then `ip link show` of both ends: a
/// non-dump RTM_GETLINK runs the carrier change's pending "linkwatch" work now (see
/// `sync_link`), so the next step meets the link as it will stay, not a queue that
/// starts only when the worker gets to it.
pub fn set_link(
    topology: &Topology,
    host: HostId,
    dev: &str,
    up: bool,
    peer: Option<(HostId, &str)>,
) -> io::Result<()> {
    let state = if up { "up" } else { "down" };
    ip(topology, host, &["link", "set", "dev", dev, state])?;
    ip(topology, host, &["link", "show", "dev", dev])?;
    if let Some((peer_host, peer_dev)) = peer {
        ip(topology, peer_host, &["link", "show", "dev", peer_dev])?;
    }
    Ok(())
}

/// `ip route add|del ROUTE` in `host`, the route written as `hosts.NAME.routes` takes it.
pub fn change_route(topology: &Topology, host: HostId, route: &Route, add: bool) -> io::Result<()> {
    let words = super::describe(route);
    let mut args = vec!["route", if add { "add" } else { "del" }];
    args.extend(words.split_whitespace());
    ip(topology, host, &args)
}

fn ip(topology: &Topology, host: HostId, args: &[&str]) -> io::Result<()> {
    let netns = topology.host(host);
    let output = netns.command("ip").args(args).env("LC_ALL", "C").output()?;
    if output.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`ip {}` in host `{}` failed ({}): {}",
        args.join(" "),
        netns.label(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    )))
}
