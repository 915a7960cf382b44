//! The kernel's own counters, per host: SNMP and netstat (`/proc/net/*`), conntrack's
//! statistics, and the packet counts of the host's firewall rules. Read before the
//! traffic, before each step that may delete rules ([`Watching::checkpoint`]), and after
//! it; the report keeps what moved, summed over those readings (`counters::OverRun`), so
//! a rule removed midway still accounts for the packets it dropped.

use std::cell::RefCell;

use super::{Observations, WatchError, Watcher, Watching};
use crate::counters::{self, OverRun, RuleSource};
use crate::scenario::Scenario;
use crate::topology::Netns;

pub struct Counters;

const NAME: &str = "counters";

impl Watcher for Counters {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self) -> Result<(), WatchError> {
        Ok(())
    }

    fn start<'a>(
        &'a self,
        scenario: &'a Scenario,
        hosts: &'a [Netns],
    ) -> Result<Box<dyn Watching + 'a>, WatchError> {
        // Which rule tables to read is the faults' business: each fault kind says which
        // of its counters are evidence.
        let sources: Vec<Vec<RuleSource>> = (0..scenario.hosts.len())
            .map(|host| crate::faults::rule_sources(scenario, host))
            .collect();
        let watch = Watch {
            scenario,
            hosts,
            runs: RefCell::new(Vec::new()),
            sources,
        };
        let before = counters::read_hosts(&watch.counted()).map_err(error)?;
        *watch.runs.borrow_mut() = before.into_iter().map(OverRun::new).collect();
        Ok(Box::new(watch))
    }

    fn describe(&self) -> Vec<String> {
        vec!["counters: /proc/net/{snmp,netstat,snmp6}, conntrack statistics, iptables and nft rule counters, per namespace".into()]
    }
}

fn error(e: counters::CountersError) -> WatchError {
    WatchError::from_source(NAME, e.is_unavailable(), e)
}

struct Watch<'a> {
    scenario: &'a Scenario,
    hosts: &'a [Netns],
    runs: RefCell<Vec<OverRun>>,
    sources: Vec<Vec<RuleSource>>,
}

impl Watch<'_> {
    fn counted(&self) -> Vec<(&Netns, &[RuleSource])> {
        self.hosts
            .iter()
            .zip(&self.sources)
            .map(|(netns, sources)| (netns, sources.as_slice()))
            .collect()
    }
}

impl Watch<'_> {
    fn read(&self) -> Result<(), WatchError> {
        let now = counters::read_hosts(&self.counted()).map_err(error)?;
        for (run, now) in self.runs.borrow_mut().iter_mut().zip(now) {
            run.read(now);
        }
        Ok(())
    }
}

impl Watching for Watch<'_> {
    fn checkpoint(&self) -> Result<(), WatchError> {
        self.read()
    }

    fn finish(self: Box<Self>, into: &mut Observations) -> Result<(), WatchError> {
        self.read()?;
        for (host, run) in self.scenario.hosts.iter().zip(self.runs.take()) {
            into.counters.push((host.name.clone(), run.moved().clone()));
            into.counter_totals.push((host.name.clone(), run.totals()));
        }
        Ok(())
    }
}
