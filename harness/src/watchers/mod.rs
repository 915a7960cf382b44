//! Watchers: every source of evidence about what the kernel did with a scenario's
//! packets, behind one small trait, listed in one registry.
//!
//! A watcher is loaded once per process (the probes are shared by parallel scenarios),
//! says whether it can run on this kernel and why not ([`Watcher::prepare`]), starts
//! watching a scenario's namespaces after they are built ([`Watcher::start`]), and at
//! the end puts what it saw into the run's [`Observations`] and lets go of its
//! namespaces ([`Watching::finish`], and `Drop` on any early return). The runner loops
//! over [`REGISTRY`]; it knows no watcher by name.
//!
//! Adding one: a module here (its loader and any C beside it as `ebpf/<name>.bpf.c`),
//! an entry in `REGISTRY`, and a field in `Observations` if its rows are new
//! (docs/ARCHITECTURE.md, "Adding a watcher").

pub use crate::report::Observations;
use crate::scenario::Scenario;
use crate::topology::Netns;

mod counters;
mod datapath;
mod drops;
mod hooks;

pub use drops::stable_function_name;

/// Every watcher, in the order they start (and so the order their set-up cost falls in).
/// `datapath` is first because its start attaches the scenario's programs under test,
/// which is set-up: attaching native XDP on veth frees an empty skb as a drop (6.18).
pub static REGISTRY: &[&dyn Watcher] = &[
    &datapath::Datapath,
    &drops::Drops,
    &hooks::HookPoints,
    &counters::Counters,
];

/// A source of evidence.
pub trait Watcher: Sync {
    /// Short name, as in `dropspec probes` and error messages: `drops`, `hooks`, …
    fn name(&self) -> &'static str;

    /// Loads it (once per process) before anything is built. An error means no scenario
    /// can run here ([`WatchError::Unavailable`]: a skip, with why) or a bug. A watcher
    /// that can watch only part of what it covers (hook points the kernel refuses)
    /// returns Ok and reports the rest in its rows.
    fn prepare(&self) -> Result<(), WatchError>;

    /// Starts watching the scenario's hosts (`hosts[i]` is `scenario.hosts[i]`). Called
    /// after set-up, so only what the traffic causes is counted.
    fn start<'a>(
        &'a self,
        scenario: &'a Scenario,
        hosts: &'a [Netns],
    ) -> Result<Box<dyn Watching + 'a>, WatchError>;

    /// What it can watch on this kernel, one line per part, for `dropspec probes`.
    fn describe(&self) -> Vec<String>;
}

/// A watcher watching one scenario's namespaces. Dropping it stops watching.
pub trait Watching {
    /// A number that grows with every drop seen so far, if this watcher counts drops:
    /// the runner knows the kernel is done with the traffic when it stops growing.
    fn progress(&self) -> Option<u64> {
        None
    }

    /// The scenario is about to change something a watcher reads at the end (a step
    /// applies or removes a fault or runs a command, which may delete or reset rules): read now what the
    /// change would take away (a removed rule's counters).
    fn checkpoint(&self) -> Result<(), WatchError> {
        Ok(())
    }

    /// Reads everything seen into `into`, then stops watching.
    fn finish(self: Box<Self>, into: &mut Observations) -> Result<(), WatchError>;
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// This machine cannot run the watcher (privileges, kernel feature, tool): a skip.
    #[error("{0}")]
    Unavailable(String),
    #[error("{watcher}: {message}")]
    Failed {
        watcher: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl WatchError {
    /// A watcher's probe could not count every call of the run
    /// ([`crate::probes::ProbeError::CallsLost`]): the run proves nothing either way, so
    /// the runner runs the scenario again.
    pub fn calls_lost(&self) -> bool {
        matches!(self, WatchError::Failed { source: Some(source), .. }
        if matches!(
            source.downcast_ref::<crate::probes::ProbeError>(),
            Some(
                crate::probes::ProbeError::CallsLost { .. }
                    | crate::probes::ProbeError::Missed { .. }
            )
        ))
    }

    /// A failure of `watcher`, or a skip when `unavailable` says the machine lacks
    /// something rather than dropspec having a bug.
    pub fn from_source<E>(watcher: &'static str, unavailable: bool, e: E) -> WatchError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if unavailable {
            WatchError::Unavailable(e.to_string())
        } else {
            WatchError::Failed {
                watcher,
                message: e.to_string(),
                source: Some(Box::new(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::ProbeError;

    #[test]
    fn only_calls_the_kernel_skipped_make_a_run_worth_repeating() {
        let lost = ProbeError::CallsLost {
            map: "m",
            op: "o",
            detail: "d".into(),
        };
        assert!(WatchError::from_source("hooks", false, lost).calls_lost());
        let missed = ProbeError::Missed { slot: 1, missed: 2 };
        assert!(WatchError::from_source("drops", false, missed).calls_lost());
        let map = ProbeError::Map {
            map: "m",
            op: "o",
            detail: "d".into(),
        };
        assert!(!WatchError::from_source("hooks", false, map).calls_lost());
        assert!(!WatchError::Unavailable("no".into()).calls_lost());
    }
}
