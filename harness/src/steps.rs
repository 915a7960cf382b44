//! Runs a scenario's `[[steps]]` in order: traffic and crafted entries, waits, and the
//! changes between them (a fault applied or removed, a link down or up, a route added
//! or deleted, a listener accepting).
//!
//! After every step the kernel is drained as after traffic (`completion`: markers
//! through every CPU's backlog, neighbour tables read, until a whole pass changes
//! nothing watched), so each step's drops are complete before the next change is made,
//! and a drop that comes late is counted, never hidden by the next step.
//!
//! Before a step that changes a host's rules (`remove`, `run`, `apply`: any of them may
//! delete a rule or rewrite a chain it declares) the watchers read what the change could
//! take away (`checkpoint`: a removed rule's counters), so the drops that rule made while
//! it existed are still explained by it.

use std::time::{Duration, Instant};

use crate::completion::Completion;
use crate::crafted::{self, PacketOutcome, Unread};
use crate::faults;
use crate::scenario::{Protocol, Scenario, StepAction, TrafficExpect};
use crate::topology::{change, Topology};
use crate::traffic::{self, Sockets, TrafficOutcome};

/// Longest the kernel is waited for after one step (as after the traffic).
const STEP_SETTLE_CAP: Duration = Duration::from_secs(5);

/// What one step did, for the report: the traffic of a later run, the connections an
/// `accept` took.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepRow {
    /// `traffic before`, `apply ct-new-drop`, `link r eth1 down` …
    pub label: String,
    /// A later run of a traffic entry: what it achieved.
    #[serde(default)]
    pub again: Option<(Protocol, TrafficOutcome)>,
    /// An `accept` step: the connections it accepted.
    #[serde(default)]
    pub accepted: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[error("step {number} (line {line}, {label}): {source}")]
pub struct StepError {
    pub number: usize,
    pub line: usize,
    pub label: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Everything the steps produced: one outcome per traffic and packets entry (its first
/// run), a row per step, and the unread UDP receivers of crafted entries.
pub struct Ran {
    pub traffic: Vec<TrafficOutcome>,
    pub packets: Vec<PacketOutcome>,
    pub steps: Vec<StepRow>,
    pub unread: Unread,
    /// What `command` faults applied by steps printed (`faults::apply_one`).
    pub commands: Vec<String>,
}

pub fn run(
    scenario: &Scenario,
    topology: &Topology,
    completion: &mut Completion,
    sockets: &mut Sockets,
    checkpoint: &dyn Fn() -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
) -> Result<Ran, StepError> {
    let mut ran = Ran {
        traffic: vec![TrafficOutcome::default(); scenario.traffic.len()],
        packets: vec![PacketOutcome::default(); scenario.packets.len()],
        steps: Vec::new(),
        unread: Unread::default(),
        commands: Vec::new(),
    };
    for (n, step) in scenario.steps.iter().enumerate() {
        let error = |source: Box<dyn std::error::Error + Send + Sync>| StepError {
            number: n + 1,
            line: step.line,
            label: step.label.clone(),
            source,
        };
        let mut row = StepRow {
            label: step.label.clone(),
            ..StepRow::default()
        };
        if matches!(
            step.action,
            StepAction::Remove { .. } | StepAction::Run { .. } | StepAction::Apply { .. }
        ) {
            checkpoint().map_err(error)?;
        }
        match &step.action {
            StepAction::Traffic {
                entry,
                again: false,
                ..
            } => {
                let spec = &scenario.traffic[*entry];
                ran.traffic[*entry] =
                    traffic::run_one(entry + 1, spec, topology, completion, sockets)
                        .map_err(|e| error(e.into()))?;
            }
            StepAction::Traffic { entry, .. } => {
                let spec = &scenario.traffic[*entry];
                let outcome = traffic::run_again(entry + 1, spec, completion, sockets)
                    .map_err(|e| error(e.into()))?;
                row.again = Some((spec.protocol, outcome));
            }
            StepAction::Packets { entry } => {
                let spec = &scenario.packets[*entry];
                ran.packets[*entry] = crafted::run_one(
                    entry + 1,
                    spec,
                    topology,
                    completion,
                    sockets,
                    &mut ran.unread,
                )
                .map_err(|e| error(e.into()))?;
            }
            StepAction::Wait { ms } => std::thread::sleep(Duration::from_millis(*ms)),
            StepAction::Apply { fault } => {
                let printed = faults::apply_one(&scenario.faults[*fault], topology)
                    .map_err(|e| error(e.into()))?;
                ran.commands.extend(printed);
            }
            StepAction::Remove { fault } => {
                faults::remove(&scenario.faults[*fault], topology).map_err(|e| error(e.into()))?;
            }
            StepAction::Link { host, dev, up } => {
                let peer = scenario.links.iter().find_map(|link| {
                    let [a, b] = &link.ends;
                    match (
                        a.host == *host && a.ifname == *dev,
                        b.host == *host && b.ifname == *dev,
                    ) {
                        (true, _) => Some((b.host, b.ifname.as_str())),
                        (_, true) => Some((a.host, a.ifname.as_str())),
                        _ => None,
                    }
                });
                change::set_link(topology, *host, dev, *up, peer).map_err(|e| error(e.into()))?;
            }
            StepAction::Route { host, route, add } => {
                change::change_route(topology, *host, route, *add).map_err(|e| error(e.into()))?;
            }
            StepAction::Run { host, argv } => {
                let printed = faults::run_command(
                    topology.host(*host),
                    argv,
                    &format!("{} (step {})", scenario.path.display(), n + 1),
                )
                .map_err(|e| error(e.into()))?;
                ran.commands.extend(printed);
            }
            StepAction::Accept { traffic: entry } => {
                let spec = &scenario.traffic[*entry];
                let accepted = traffic::accept_waiting(entry + 1, spec, sockets)
                    .map_err(|e| error(e.into()))?;
                row.accepted = Some(accepted);
            }
        }
        let what = format!("after step {} ({})", n + 1, step.label);
        completion
            .drain(Instant::now() + STEP_SETTLE_CAP, &what, || Ok((0, false)))
            .map_err(|e| error(e.into()))?;
        ran.steps.push(row);
    }
    Ok(ran)
}

/// The expectations of step `n`'s later run, if it is one.
pub fn again_expect(scenario: &Scenario, n: usize) -> Option<&TrafficExpect> {
    match &scenario.steps.get(n)?.action {
        StepAction::Traffic {
            again: true,
            expect,
            ..
        } => Some(expect),
        _ => None,
    }
}
