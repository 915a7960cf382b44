//! What `dropspec watch` watches: a scenario it builds and drives, named namespaces, or
//! every namespace; and the loop around [`super::stream`].

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{stopped, stream, Namer, NetnsNames, Scope, WatchProbe};
use crate::kernel::kallsyms::Kallsyms;
use crate::scenario::Scenario;
use crate::topology::Topology;

/// Which namespaces.
pub enum Target<'a> {
    /// Build the scenario and send its traffic `rounds` times (0: only keep it up).
    Scenario {
        scenario: &'a Scenario,
        rounds: u32,
    },
    /// /run/netns names (or paths to namespace files).
    Named(Vec<String>),
    All,
}

pub struct Options<'a> {
    pub target: Target<'a>,
    pub duration: Option<Duration>,
    pub samples_per_second: u32,
    pub table_every: Duration,
}

pub fn run(options: Options<'_>, out: &mut dyn Write) -> Result<()> {
    super::stop_on_signals();
    let kallsyms = Kallsyms::from_proc().context("reading /proc/kallsyms")?;
    let mut names = NetnsNames::from_system();
    let header = |out: &mut dyn Write, what: &str| {
        writeln!(
            out,
            "watching {what}: tp_btf/kfree_skb, at most {} sampled drops/s, the table every {}s; Ctrl-C stops",
            options.samples_per_second,
            options.table_every.as_secs_f64()
        )
    };
    match options.target {
        Target::All | Target::Named(_) => {
            let (inodes, title) = match &options.target {
                Target::Named(list) => (
                    Some(
                        list.iter()
                            .map(|n| NetnsNames::inode_of(n))
                            .collect::<Result<Vec<_>>>()?,
                    ),
                    list.join(", "),
                ),
                _ => (None, "every namespace".to_owned()),
            };
            let scope = inodes.as_deref().map_or(Scope::All, Scope::Inodes);
            let mut probe = WatchProbe::attach(scope, options.samples_per_second)?;
            header(out, &title)?;
            let namer = Namer {
                reasons: &probe.reasons.clone(),
                kallsyms: &kallsyms,
                netns: &names,
            };
            stream(
                &mut probe,
                &namer,
                options.duration,
                options.table_every,
                &|| false,
                out,
            )?;
        }
        Target::Scenario { scenario, rounds } => {
            if let Some(why) = crate::runner::unavailable_reason() {
                bail!("{why}");
            }
            crate::cleanup::reap_before_run().context("removing what an earlier run left")?;
            if !scenario.global_sysctls.is_empty() {
                writeln!(out, "note: watch leaves global_sysctls as they are: its drops may differ from a run's")?;
            }
            let topology =
                Topology::build(scenario).context("building the scenario's namespaces")?;
            crate::faults::apply(scenario, &topology).context("injecting the scenario's faults")?;
            let inodes: Vec<u64> = topology.hosts().iter().map(|n| n.inode()).collect();
            for netns in topology.hosts() {
                names.0.insert(netns.inode(), netns.label().to_owned());
            }
            let mut probe = WatchProbe::attach(Scope::Inodes(&inodes), options.samples_per_second)?;
            let hosts: Vec<&str> = topology.hosts().iter().map(|n| n.label()).collect();
            let what = if rounds == 0 {
                format!(
                    "{} (hosts {}; no traffic sent)",
                    scenario.name,
                    hosts.join(", ")
                )
            } else {
                format!(
                    "{} (hosts {}; its traffic {rounds} time(s))",
                    scenario.name,
                    hosts.join(", ")
                )
            };
            header(out, &what)?;
            let reasons = probe.reasons.clone();
            let namer = Namer {
                reasons: &reasons,
                kallsyms: &kallsyms,
                netns: &names,
            };
            let traffic_done = AtomicBool::new(false);
            let finished = AtomicBool::new(false);
            std::thread::scope(|scope| -> Result<()> {
                let sender = scope.spawn(|| -> Result<()> {
                    let result = send_rounds(scenario, &topology, rounds, &finished);
                    traffic_done.store(true, Ordering::Relaxed);
                    result
                });
                // With traffic, stop a second after its last round (late drops such as
                // neighbour timeouts show by then); without, at Ctrl-C or --duration.
                let done_at = std::sync::Mutex::new(None::<std::time::Instant>);
                let until = || {
                    if rounds == 0 || !traffic_done.load(Ordering::Relaxed) {
                        return false;
                    }
                    let mut at = done_at.lock().unwrap();
                    at.get_or_insert_with(std::time::Instant::now).elapsed()
                        >= Duration::from_secs(1)
                };
                let streamed = stream(
                    &mut probe,
                    &namer,
                    options.duration,
                    options.table_every,
                    &until,
                    out,
                );
                finished.store(true, Ordering::Relaxed);
                let sent = sender
                    .join()
                    .map_err(|_| anyhow::anyhow!("the traffic thread panicked"))?;
                streamed?;
                sent
            })?;
        }
    }
    Ok(())
}

/// Sends the scenario's traffic and packets `rounds` times, a second apart.
fn send_rounds(
    scenario: &Scenario,
    topology: &Topology,
    rounds: u32,
    finished: &AtomicBool,
) -> Result<()> {
    for round in 0..rounds {
        if stopped() || finished.load(Ordering::Relaxed) {
            break;
        }
        if round > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        // The live view counts nothing itself: completion waits on the kernel alone.
        let mut quiet = || 0u64;
        let mut completion = crate::completion::Completion::new(topology.hosts(), &mut quiet)
            .context("reading the kernel's progress")?;
        let mut sockets = crate::traffic::Sockets::default();
        crate::traffic::run(scenario, topology, &mut completion, &mut sockets)
            .context("sending the traffic")?;
        let (_, unread) = crate::crafted::run(scenario, topology, &mut completion, &mut sockets)
            .context("sending the packets")?;
        drop(completion);
        unread.close(topology);
        sockets.close(topology);
    }
    Ok(())
}
