//! Scenario cost: each scenario run by dropspec (the library's `runner::run`, the same
//! call `dropspec run` and `cargo test` make), by its floor (kernel operations alone)
//! and by the shell way, interleaved within one run so drift hits all three alike.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dropspec::probes::{DropProbe, WatchSlot};
use dropspec::report::{self, Timings};
use dropspec::runner;
use dropspec::scenario::Scenario;
use dropspec::topology::Topology;
use dropspec::{faults, traffic};

use super::floor::{self, FloorTimes};
use super::shell::{self, ShellRun};

/// Every measurement of one scenario.
#[derive(Debug, Default)]
pub struct ScenarioCost {
    pub label: String,
    pub name: String,
    /// `[[packets]]` entries when the scenario has no `[[traffic]]` (then its traffic
    /// phase is those entries alone), else 0.
    pub crafted_entries: usize,
    pub dropspec: Vec<Timings>,
    /// CPU time (user + system, this process and its waited-for children) per run.
    pub dropspec_cpu: Vec<Duration>,
    /// dropspec runs whose report did not meet the scenario's expectations.
    pub dropspec_failed: usize,
    /// `DropProbe::read` of every host's slot right after the traffic.
    pub collect: Vec<Duration>,
    pub floor: Vec<FloorTimes>,
    pub shell: Vec<ShellRun>,
    /// Shell runs in which bpftrace's (machine-wide) counts covered every expected drop.
    pub shell_saw_expected: usize,
    /// Shell runs that failed or hit their time limit (their trap cleaned up), with why.
    pub shell_errors: Vec<String>,
}

pub struct Plan<'a> {
    pub runs: usize,
    pub shell_runs: usize,
    pub work: &'a Path,
}

fn cpu_time() -> Duration {
    let usage = |who| {
        // SAFETY: rusage is plain data filled by getrusage.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut u) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        tv(u.ru_utime) + tv(u.ru_stime)
    };
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// The collect phase alone: the runner's own phases, up to the traffic, then every
/// host's slot read once, timed.
fn collect_once(probe: &'static DropProbe, scenario: &Scenario) -> Result<Duration> {
    let topology = Topology::build(scenario)?;
    faults::apply(scenario, &topology)?;
    let slots = topology
        .hosts()
        .iter()
        .map(|n| probe.watch(n.inode()))
        .collect::<Result<Vec<WatchSlot>, _>>()?;
    let mut total = || -> u64 {
        slots
            .iter()
            .filter_map(|s| s.read().ok())
            .flatten()
            .map(|d| d.packets)
            .sum()
    };
    let mut completion = dropspec::completion::Completion::new(topology.hosts(), &mut total)?;
    let mut sockets = traffic::Sockets::default();
    traffic::run(scenario, &topology, &mut completion, &mut sockets)?;
    drop(completion);
    let started = Instant::now();
    for slot in &slots {
        slot.read()?;
    }
    let elapsed = started.elapsed();
    drop(slots);
    sockets.close(&topology);
    Ok(elapsed)
}

fn shell_saw_expected(run: &ShellRun, scenario: &Scenario, probe: &DropProbe) -> bool {
    // bpftrace counts every namespace's drops: what it saw must at least cover ours.
    let mut needed: std::collections::BTreeMap<u32, u64> = Default::default();
    for e in &scenario.expect.drops {
        match probe.reasons().number(&e.reason) {
            Some(n) => *needed.entry(n).or_default() += e.count,
            None => return false,
        }
    }
    needed
        .iter()
        .all(|(reason, count)| run.drops.get(reason).copied().unwrap_or(0) >= *count)
}

pub fn measure(
    scenarios: &[(String, Scenario)],
    plan: &Plan,
    progress: &dyn Fn(&str),
) -> Result<Vec<ScenarioCost>> {
    let probe = DropProbe::shared().context("loading the drop probe")?;
    let mut costs: Vec<ScenarioCost> = scenarios
        .iter()
        .map(|(label, s)| ScenarioCost {
            label: label.clone(),
            name: s.name.clone(),
            crafted_entries: if s.traffic.is_empty() {
                s.packets.len()
            } else {
                0
            },
            ..ScenarioCost::default()
        })
        .collect();
    // Warm-up, not counted: the first run reads kallsyms and pulls the tools into the
    // page cache.
    for (_, s) in scenarios {
        runner::run(s).with_context(|| format!("running {}", s.name))?;
    }
    let pid = std::process::id();
    for rep in 0..plan.runs {
        progress(&format!("scenario cost: round {}/{}", rep + 1, plan.runs));
        for (i, (_, s)) in scenarios.iter().enumerate() {
            let cost = &mut costs[i];
            // Rotate the order of the ways so none always runs right after another.
            for way in 0..4 {
                match (way + rep) % 4 {
                    0 => {
                        let cpu = cpu_time();
                        let report =
                            runner::run(s).with_context(|| format!("running {}", s.name))?;
                        cost.dropspec_cpu.push(cpu_time() - cpu);
                        if !report::check(s, &report).is_empty() {
                            cost.dropspec_failed += 1;
                        }
                        cost.dropspec.push(report.timings);
                    }
                    1 => cost
                        .floor
                        .push(floor::run(s).with_context(|| format!("floor of {}", s.name))?),
                    2 => cost.collect.push(collect_once(probe, s)?),
                    _ if rep < plan.shell_runs => {
                        // One failed shell run (a tool that hung on a loaded machine)
                        // is reported, not fatal to the whole bench.
                        match shell::run(s, plan.work, &format!("{pid}-{rep}-{i}")) {
                            Ok(run) => {
                                if shell_saw_expected(&run, s, probe) {
                                    cost.shell_saw_expected += 1;
                                }
                                cost.shell.push(run);
                            }
                            Err(e) => {
                                progress(&format!("shell way for {} failed: {e:#}", s.name));
                                cost.shell_errors.push(format!("{e:#}"));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(costs)
}
