//! `dropspec watch`'s probe around real traffic (needs root): the routing starting
//! scenario (`dropspec new --kind routing`) drops exactly 3 datagrams in its router;
//! watched, they are counted exactly and each sampled with what the packet said; a
//! namespace not watched shows nothing. Shown as ignored, with the reason, where it
//! cannot run (DROPSPEC_REQUIRE_PRIVILEGED=1 makes that a failure).

use std::path::Path;
use std::time::Duration;

use dropspec::authoring::new::Kind;
use dropspec::runner;
use dropspec::topology::Topology;
use dropspec::watch::{Scope, WatchProbe};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::ignorable_test("watch/counts_and_samples_a_routers_drops", || {
            privileged(|| counts_and_samples(true))
        }),
        Trial::ignorable_test("watch/sees_nothing_outside_its_namespaces", || {
            privileged(|| counts_and_samples(false))
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}

fn privileged(case: impl FnOnce() -> Result<(), String>) -> Result<Completion, Failed> {
    let require = dropspec::policy::Policy::current()
        .map_err(|e| e.to_string())?
        .require_privileged;
    match runner::unavailable_reason() {
        Some(why) if !require => Ok(Completion::ignored_with(why)),
        Some(why) => Err(format!("could not run: {why} (DROPSPEC_REQUIRE_PRIVILEGED=1)").into()),
        None => case().map(|()| Completion::Completed).map_err(Into::into),
    }
}

fn counts_and_samples(watch_the_router: bool) -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario = dropspec::scenario::parse(
        Kind::Routing.template(),
        Path::new("routing.toml"),
        "routing",
        &root.join("fixtures"),
    )
    .map_err(|e| e.to_string())?;
    let topology = Topology::build(&scenario).map_err(|e| e.to_string())?;
    let watched: Vec<u64> = topology
        .hosts()
        .iter()
        .filter(|n| watch_the_router == (n.label() == "router"))
        .map(|n| n.inode())
        .collect();
    let router = topology
        .hosts()
        .iter()
        .find(|n| n.label() == "router")
        .unwrap()
        .inode();
    let mut probe =
        WatchProbe::attach(Scope::Inodes(&watched), 1000).map_err(|e| format!("{e:#}"))?;
    let mut quiet = || 0u64;
    let mut completion = dropspec::completion::Completion::new(topology.hosts(), &mut quiet)
        .map_err(|e| e.to_string())?;
    let mut sockets = dropspec::traffic::Sockets::default();
    dropspec::traffic::run(&scenario, &topology, &mut completion, &mut sockets)
        .map_err(|e| e.to_string())?;
    drop(completion);
    // The live probe's ring buffer is read on a timer: give it one.
    std::thread::sleep(Duration::from_millis(300));
    let no_route = probe.reasons.number("IP_INNOROUTES").unwrap();
    let counts = probe.counts();
    let samples = probe.drain_samples();
    sockets.close(&topology);
    let (expected_counts, expected_samples) = if watch_the_router { (3, 3) } else { (0, 0) };
    let counted: u64 = counts
        .iter()
        .filter(|(k, _)| u64::from(k.netns) == router && k.reason == no_route)
        .map(|(_, v)| v.packets)
        .sum();
    if counted != expected_counts || counts.len() != usize::from(expected_counts > 0) {
        return Err(format!(
            "expected {expected_counts} IP_INNOROUTES drops in the router and nothing else, got {counts:?}"
        ));
    }
    if samples.len() != expected_samples {
        return Err(format!(
            "expected {expected_samples} samples, got {samples:?}"
        ));
    }
    for s in &samples {
        if s.daddr[..4] != [198, 18, 7, 7] || s.dport != 5000 || s.l4proto != 17 || s.has_ports != 1
        {
            return Err(format!(
                "the sample does not say udp to 198.18.7.7:5000: {s:?}"
            ));
        }
    }
    Ok(())
}
