//! Changes a `[[steps]]` entry makes to a built topology while the scenario runs: a
//! link taken down or up, a route added or deleted. Each runs iproute2's `ip` inside
//! the host's namespace (like the faults' tools), so it can only ever change that host;
//! what `ip` says on failure is kept for the error.

use std::io;
use std::time::{Duration, Instant};

use super::Topology;
use crate::scenario::{Family, HostId, Route};

/// `ip link set dev DEV up|down` in `host`, then waits until the kernel has finished
/// the change on both ends: the carrier change is deferred to the "linkwatch" worker,
/// which sets each end's operstate, swaps its qdisc (noop while the carrier is off) and
/// tells the neighbour tables (a carrier loss flushes them), all in one go under RTNL.
/// So once both ends read back in their final operstate (both UP, or neither: DOWN or
/// LOWERLAYERDOWN), the next step meets the link as it will stay. A
/// non-dump RTM_GETLINK also runs that work at once on kernels that sync it there
/// (`linkwatch_sync_dev`); 6.1 does not, and without the wait a ping can still leave
/// through the old neighbour entry (measured there).
pub fn set_link(
    topology: &Topology,
    host: HostId,
    dev: &str,
    up: bool,
    peer: Option<(HostId, &str)>,
) -> io::Result<()> {
    let state = if up { "up" } else { "down" };
    ip(topology, host, &["link", "set", "dev", dev, state])?;
    let mut ends = vec![(host, dev)];
    ends.extend(peer);
    let deadline = Instant::now() + SETTLE_LINK;
    for (host, dev) in ends {
        wait_operstate(topology, host, dev, up, deadline)
            .map_err(|e| io::Error::other(format!("{e} after `ip link set {state}`")))?;
    }
    Ok(())
}

/// Polls `dev`'s operstate until it is UP (`up`) or settled without carrier (DOWN,
/// LOWERLAYERDOWN: anything but UP and the UNKNOWN of a device linkwatch has not seen).
fn wait_operstate(
    topology: &Topology,
    host: HostId,
    dev: &str,
    up: bool,
    deadline: Instant,
) -> io::Result<()> {
    let want = if up { "UP" } else { "DOWN or LOWERLAYERDOWN" };
    loop {
        let now = operstate(topology, host, dev)?;
        if (up && now == "UP") || (!up && now != "UP" && now != "UNKNOWN") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "`{dev}` in host `{}` is still {now}, not {want}, {} ms",
                topology.host(host).label(),
                SETTLE_LINK.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Longest a link change may take to reach both ends.
const SETTLE_LINK: Duration = Duration::from_secs(3);

/// The operstate `ip -o link show dev DEV` reports (`UP`, `DOWN`, `LOWERLAYERDOWN` …).
fn operstate(topology: &Topology, host: HostId, dev: &str) -> io::Result<String> {
    let text = ip_output(topology, host, &["-o", "link", "show", "dev", dev])?;
    let mut words = text.split_whitespace();
    while let Some(word) = words.next() {
        if word == "state" {
            return Ok(words.next().unwrap_or("UNKNOWN").to_owned());
        }
    }
    Ok("UNKNOWN".to_owned())
}

/// `ip route add|del ROUTE` in `host`, the route written as `hosts.NAME.routes` takes it.
pub fn change_route(topology: &Topology, host: HostId, route: &Route, add: bool) -> io::Result<()> {
    let words = route.to_string();
    let family = match route.family {
        Family::Ipv4 => "-4",
        Family::Ipv6 => "-6",
    };
    let mut args = vec![family, "route", if add { "add" } else { "del" }];
    args.extend(words.split_whitespace());
    ip(topology, host, &args)
}

fn ip(topology: &Topology, host: HostId, args: &[&str]) -> io::Result<()> {
    ip_output(topology, host, args).map(drop)
}

/// Runs `ip ARGS` in `host`; its standard output, or an error with what it said.
fn ip_output(topology: &Topology, host: HostId, args: &[&str]) -> io::Result<String> {
    let netns = topology.host(host);
    let output = crate::forks::output(netns.command("ip").args(args).env("LC_ALL", "C"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(io::Error::other(format!(
        "`ip {}` in host `{}` failed ({}): {}",
        args.join(" "),
        netns.label(),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim_end()
    )))
}
