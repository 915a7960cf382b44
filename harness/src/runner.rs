//! Runs one scenario from start to finish: watchers prepared → topology → faults →
//! watchers started → traffic → settle → watchers finish (rows) → sockets closed →
//! teardown → report, timing each phase. It knows no watcher by name: it loops over
//! `watchers::REGISTRY`. Settling asks the kernel (`completion`), not the clock.

use std::time::{Duration, Instant};

use crate::completion::Completion;
use crate::crafted::{self, CraftedError};
use crate::faults::{self, FaultError};
use crate::global_sysctls::{self, GlobalSysctlError};
use crate::kernel_features::KernelFeature;
use crate::report::{self, Report, Timings};
use crate::scenario::Scenario;
use crate::steps::{self, StepError};
use crate::topology::{Topology, TopologyError};
use crate::traffic::{self, Sockets, TrafficError};
use crate::watchers::{Observations, WatchError, Watching, REGISTRY};

/// Longest the runner keeps watching after traffic for the kernel to finish with it.
const SETTLE_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This machine cannot run the scenario (privileges, kernel feature, tool): a skip.
    #[error("{0}")]
    Unavailable(String),
    /// This kernel lacks a feature the scenario needs: a skip, unless the policy asks
    /// for no skips and `DROPSPEC_MAY_LACK` does not name the feature.
    #[error("{why}")]
    KernelLacks {
        feature: &'static KernelFeature,
        why: String,
    },
    #[error("setting up the topology: {0}")]
    Topology(#[source] TopologyError),
    #[error("injecting faults: {0}")]
    Faults(#[source] FaultError),
    #[error("watching the kernel: {0}")]
    Watch(#[source] WatchError),
    #[error("sending traffic: {0}")]
    Traffic(#[source] TrafficError),
    #[error("{0}")]
    GlobalSysctl(#[source] GlobalSysctlError),
    #[error("sending crafted packets: {0}")]
    Packets(#[source] CraftedError),
    #[error("running the steps: {0}")]
    Steps(#[source] StepError),
}

impl From<GlobalSysctlError> for RunError {
    fn from(e: GlobalSysctlError) -> Self {
        match e {
            // The machine is too busy for this scenario: not the scenario's fault.
            GlobalSysctlError::NamespaceTooBusy { .. } => RunError::Unavailable(e.to_string()),
            e => RunError::GlobalSysctl(e),
        }
    }
}

impl From<TopologyError> for RunError {
    fn from(e: TopologyError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Topology(e)
        }
    }
}

impl From<WatchError> for RunError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Unavailable(why) => RunError::Unavailable(why),
            e => RunError::Watch(e),
        }
    }
}

impl From<FaultError> for RunError {
    fn from(e: FaultError) -> Self {
        if let Some(feature) = e.lacks() {
            RunError::KernelLacks {
                feature,
                why: e.to_string(),
            }
        } else if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Faults(e)
        }
    }
}

/// Why a scenario cannot run on this machine at all, checked before anything is made.
pub fn unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "privileged scenario: needs root (network namespaces, netfilter and eBPF); run `sudo -E cargo test` or as root in CI"
                .into(),
        );
    }
    None
}

/// Attempts of one scenario when the probe is shown to have missed events.
const ATTEMPTS: usize = 3;

/// Builds the scenario, drives it, watches it and tears it down. A run in which the probe
/// is shown to have missed tracepoint calls (`report::probe_missed`), a watcher says it
/// could not count every call (`WatchError::calls_lost`), or the harness was held off the
/// CPU long enough for SYNs to be retransmitted (`report::harness_interference`), proves
/// nothing, so it is
/// discarded and the scenario run again from scratch, up to [`ATTEMPTS`] times in all;
/// the report lists the discarded attempts (`Report::reruns`), the verdict says so, and if
/// the last attempt missed events too the verdict fails with what was missed.
pub fn run(scenario: &Scenario) -> Result<Report, RunError> {
    let mut reruns = Vec::new();
    loop {
        let started = Instant::now();
        let mut report = match run_with(scenario, |_| {}) {
            Err(RunError::Watch(e)) if e.calls_lost() && reruns.len() + 1 < ATTEMPTS => {
                reruns.push(format!("attempt {}: {e}", reruns.len() + 1));
                continue;
            }
            result => result?,
        };
        let t = &report.timings;
        crate::spans::scenario(
            &scenario.name,
            started,
            [t.setup, t.attach, t.traffic, t.settle, t.teardown],
        );
        let mut missed = report::probe_missed(&report);
        missed.extend(report::harness_interference(scenario, &report));
        if missed.is_empty() || reruns.len() + 1 >= ATTEMPTS {
            report.reruns = reruns;
            return Ok(report);
        }
        reruns.push(format!(
            "attempt {}: {}",
            reruns.len() + 1,
            missed.join("; ")
        ));
    }
}

/// As [`run`], calling `before_teardown` with the scenario's namespaces once the
/// watchers are done and before they are closed: `dropspec run --keep` names them there,
/// so they outlive the run.
pub fn run_with(
    scenario: &Scenario,
    before_teardown: impl FnOnce(&Topology),
) -> Result<Report, RunError> {
    if let Some(why) = unavailable_reason() {
        return Err(RunError::Unavailable(why));
    }
    raise_priority();
    let mut timings = Timings::default();
    // Held for the whole run: a scenario that changes a machine-wide sysctl runs alone.
    let _lock = global_sysctls::lock(!scenario.global_sysctls.is_empty())?;

    // The watchers first: if one cannot load, nothing has been built yet.
    let started = Instant::now();
    for watcher in REGISTRY {
        watcher.prepare()?;
    }
    timings.attach = started.elapsed();

    let started = Instant::now();
    let topology = Topology::build(scenario)?;
    let mut commands = faults::apply(scenario, &topology)?;
    timings.setup = started.elapsed();

    // Watching starts after set-up, so only what the traffic causes is counted.
    let started = Instant::now();
    let watching = REGISTRY
        .iter()
        .map(|watcher| watcher.start(scenario, topology.hosts()))
        .collect::<Result<Vec<_>, _>>()?;
    timings.attach += started.elapsed();

    let inodes: Vec<u64> = topology.hosts().iter().map(|n| n.inode()).collect();
    let changes = scenario
        .global_sysctls
        .iter()
        .map(|(key, value)| global_sysctls::apply(key, value, &inodes))
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    let mut total_drops = || progress(&watching);
    let mut completion = Completion::new(topology.hosts(), &mut total_drops)
        .map_err(|e| RunError::Unavailable(format!("reading the kernel's progress: {e}")))?;
    let mut sockets = Sockets::default();
    let (outcomes, packet_outcomes, unread, step_rows) = if scenario.steps.is_empty() {
        let outcomes = traffic::run(scenario, &topology, &mut completion, &mut sockets)
            .map_err(RunError::Traffic)?;
        let (packet_outcomes, unread) =
            crafted::run(scenario, &topology, &mut completion, &mut sockets)
                .map_err(RunError::Packets)?;
        (outcomes, packet_outcomes, unread, Vec::new())
    } else {
        let checkpoint = || {
            watching
                .iter()
                .try_for_each(|w| w.checkpoint())
                .map_err(|e| e.into())
        };
        let ran = steps::run(
            scenario,
            &topology,
            &mut completion,
            &mut sockets,
            &checkpoint,
        )
        .map_err(RunError::Steps)?;
        commands.extend(ran.commands);
        (ran.traffic, ran.packets, ran.unread, ran.steps)
    };
    timings.traffic = started.elapsed();

    let started = Instant::now();
    // A scenario's own minimum (settle_ms) first, then whatever the kernel still holds,
    // unless the last drain already found it done with everything and nothing was sent
    // since (a second drain would only repeat its rounds).
    if scenario.settle_min_ms > 0 || !completion.is_quiet() {
        std::thread::sleep(Duration::from_millis(scenario.settle_min_ms));
        completion
            .drain(Instant::now() + SETTLE_CAP, "settling", || Ok((0, false)))
            .map_err(|e| RunError::Unavailable(format!("reading the kernel's progress: {e}")))?;
    }
    let capped = std::mem::take(&mut completion.capped);
    drop(completion);
    // Restored as soon as the kernel is done with the traffic: the shortest window.
    let global_sysctls = changes
        .iter()
        .map(|c| (c.key.clone(), c.value.clone(), c.original.clone()))
        .collect();
    drop(changes);
    let mut seen = Observations::default();
    for watch in watching {
        watch.finish(&mut seen)?;
    }
    timings.settle = started.elapsed();

    // Only now, with nothing watching, do the harness's own sockets close.
    let started = Instant::now();
    unread.close(&topology);
    sockets.close(&topology);
    before_teardown(&topology);
    drop(topology);
    timings.teardown = started.elapsed();
    timings.relied_on_window = capped;

    let mut report = Report::new(
        scenario,
        kernel_release(),
        seen,
        outcomes,
        packet_outcomes,
        global_sysctls,
        timings,
    );
    report.steps = step_rows;
    report.commands = commands;
    Ok(report)
}

/// Runs this thread, and the namespace threads it starts, at nice -20. The scenario's
/// counts depend on the harness getting the CPU in time: an unanswered TCP attempt is
/// closed once the kernel is done with its SYN, long before the 1 s retransmission
/// timer, but with four busy loops and two compilers on two cores a nice-0 harness was
/// once held off the CPU past it, and the retransmitted SYNs doubled a drop count.
/// Nice, not a real-time class: the harness's loops are bounded, but a weight this high
/// still leaves other work the CPU. (On Linux this call is per thread.) Without the
/// privilege it stays as it was; a retransmission is then caught by the verdict
/// (`report::harness_interference`).
fn raise_priority() {
    // SAFETY: setpriority reads its integer arguments only.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, -20);
    }
}

fn progress(watching: &[Box<dyn Watching + '_>]) -> u64 {
    watching.iter().filter_map(|w| w.progress()).sum()
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}
