//! Retina's hook points: failed returns of five kernel functions (netfilter's verdict,
//! NAT, conntrack confirmation, TCP connect and accept), counted per namespace by
//! `ebpf/hooks.bpf.c` through `crate::probes::hooks`. Points this kernel will not let
//! dropspec attach are reported unavailable in the rows, never as a failure to run.

use super::{Observations, WatchError, Watcher, Watching};
use crate::probes::hooks::{HookFamily, HookSlot};
use crate::report::{HookPointRow, HookReport, HookRow};
use crate::scenario::Scenario;
use crate::topology::Netns;

pub struct HookPoints;

const NAME: &str = "hooks";

impl Watcher for HookPoints {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self) -> Result<(), WatchError> {
        // Never fails: points that cannot attach are reported as unavailable.
        HookFamily::shared();
        Ok(())
    }

    fn start<'a>(
        &'a self,
        scenario: &'a Scenario,
        hosts: &'a [Netns],
    ) -> Result<Box<dyn Watching + 'a>, WatchError> {
        let family = HookFamily::shared();
        let slots = hosts
            .iter()
            .map(|netns| family.watch(netns.inode()))
            .collect::<Result<Vec<Option<HookSlot>>, _>>()
            .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?;
        Ok(Box::new(Watch {
            family,
            scenario,
            slots,
        }))
    }

    fn describe(&self) -> Vec<String> {
        let family = HookFamily::shared();
        let mut lines = Vec::new();
        for status in family.statuses() {
            let point = format!("{} ({})", status.point, status.point.function());
            match &status.attachment {
                Ok(how) => lines.push(format!("hook point {point}: {how}")),
                Err(why) => lines.push(format!("hook point {point}: unavailable: {why}")),
            }
            if let Some(why) = &status.fallback {
                lines.push(format!("  not fentry/fexit: {why}"));
            }
        }
        if !family.modules_loaded().is_empty() {
            lines.push(format!(
                "loaded modules: {}",
                family.modules_loaded().join(", ")
            ));
        }
        lines
    }
}

struct Watch<'a> {
    family: &'static HookFamily,
    scenario: &'a Scenario,
    slots: Vec<Option<HookSlot>>,
}

impl Watching for Watch<'_> {
    fn finish(self: Box<Self>, into: &mut Observations) -> Result<(), WatchError> {
        let mut counts = Vec::new();
        for (host, slot) in self.scenario.hosts.iter().zip(&self.slots) {
            let Some(slot) = slot else { continue };
            let rows = self
                .family
                .read(slot)
                .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?;
            for c in rows {
                counts.push(HookRow {
                    host: host.name.clone(),
                    hook: c.point.retina_name().to_owned(),
                    function: c.point.function().to_owned(),
                    ret: c.ret,
                    protocol: c.l3.to_owned(),
                    count: c.count,
                    bytes: c.bytes,
                });
            }
        }
        into.hooks = HookReport {
            points: self
                .family
                .statuses()
                .iter()
                .map(|s| HookPointRow {
                    hook: s.point.retina_name().to_owned(),
                    function: s.point.function().to_owned(),
                    attached: s
                        .attachment
                        .as_ref()
                        .map(ToString::to_string)
                        .map_err(Clone::clone),
                    fallback: s.fallback.clone(),
                })
                .collect(),
            counts,
            modules_loaded: self.family.modules_loaded().to_vec(),
        };
        Ok(())
    }
}
