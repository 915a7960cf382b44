//! Programs under test (`[[programs]]`): the check that would have caught Cilium #22527,
//! drops a datapath program makes without reporting them.
//!
//! The watcher loads and attaches each program in its host's namespace when the scenario
//! starts (so it owns it: the program is detached, in that namespace, when the watch
//! ends), records every drop on those interfaces with `probes::datapath` (the kernel's
//! word, ground truth), and at the end reads the program's own accounting with
//! `probes::program` (its metrics map, its drop events). Kernel drops the program did
//! not report are the finding; when its events carry the packet, each report is matched
//! to a dropped packet, so the unreported ones are named.
//!
//! Nothing is loaded for a scenario without programs.

use super::{Observations, WatchError, Watcher, Watching};
use crate::probes::datapath::{caused_by, DatapathProbe, DatapathSlot, KernelDrop, Packet};
use crate::probes::program::{self, Accounting, Attached};
use crate::report::{DatapathRow, ReportedDrops};
use crate::scenario::{Program, Scenario};
use crate::topology::Netns;
use std::collections::BTreeMap;

pub struct Datapath;

const NAME: &str = "datapath";

fn failed(message: String) -> WatchError {
    WatchError::Failed {
        watcher: NAME,
        message,
        source: None,
    }
}

impl Watcher for Datapath {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self) -> Result<(), WatchError> {
        // Loaded by the first scenario with programs: the others pay nothing.
        Ok(())
    }

    fn start<'a>(
        &'a self,
        scenario: &'a Scenario,
        hosts: &'a [Netns],
    ) -> Result<Box<dyn Watching + 'a>, WatchError> {
        let mut watch = Watch {
            scenario,
            hosts,
            programs: Vec::new(),
            slots: Vec::new(),
        };
        if scenario.programs.is_empty() {
            return Ok(Box::new(watch));
        }
        let probe = DatapathProbe::shared()
            .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?;
        let mut by_host: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
        let mut ifindexes = Vec::new();
        for p in &scenario.programs {
            let netns = &hosts[p.host];
            let name = p.interface.clone();
            let ifindex = netns
                .run(move || nix::net::if_::if_nametoindex(name.as_str()))
                .map_err(|e| failed(format!("entering host {}: {e}", netns.label())))?
                .map_err(|e| {
                    failed(format!(
                        "interface {} of host {}: {e}",
                        p.interface,
                        netns.label()
                    ))
                })?;
            by_host.entry(p.host).or_default().push(ifindex);
            ifindexes.push(ifindex);
        }
        for (p, ifindex) in scenario.programs.iter().zip(ifindexes) {
            let object =
                program::object_bytes(p, &scenario.path).map_err(|e| failed(e.to_string()))?;
            let attached = hosts[p.host]
                .run(|| program::attach(p, &object))
                .map_err(|e| failed(format!("entering host {}: {e}", hosts[p.host].label())))?
                .map_err(|e| failed(e.to_string()))?;
            watch.programs.push((p, ifindex, Some(attached)));
        }
        // Then the kernel's drops, from the programs' first packet: attaching is set-up
        // (native XDP on veth frees an empty skb as a drop while it attaches, 6.18).
        for (&host, ifs) in &by_host {
            let slot = probe
                .watch(hosts[host].inode(), ifs)
                .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?;
            watch.slots.push((host, slot));
        }
        Ok(Box::new(watch))
    }

    fn describe(&self) -> Vec<String> {
        vec![format!(
            "{NAME}: programs under test, loaded per scenario; the kernel's drops on their interfaces by tp_btf/kfree_skb"
        )]
    }
}

struct Watch<'a> {
    scenario: &'a Scenario,
    hosts: &'a [Netns],
    programs: Vec<(&'a Program, u32, Option<Attached>)>,
    slots: Vec<(usize, DatapathSlot)>,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // Detach where the program was attached: a netlink (cls_bpf) filter is found by
        // ifindex in the current namespace.
        for (p, _, attached) in &mut self.programs {
            if let Some(attached) = attached.take() {
                if let Err(e) = self.hosts[p.host].run(move || drop(attached)) {
                    eprintln!("dropspec: while detaching program {}: {e}", p.program);
                }
            }
        }
    }
}

impl Watching for Watch<'_> {
    fn finish(mut self: Box<Self>, into: &mut Observations) -> Result<(), WatchError> {
        if self.programs.is_empty() {
            return Ok(());
        }
        let probe = DatapathProbe::shared()
            .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?;
        let mut kernel: BTreeMap<(usize, u32), Vec<KernelDrop>> = BTreeMap::new();
        for (host, slot) in &self.slots {
            for d in probe
                .take(slot)
                .map_err(|e| WatchError::from_source(NAME, e.is_unavailable(), e))?
            {
                kernel.entry((*host, d.ifindex)).or_default().push(d);
            }
        }
        let mut rows = Vec::new();
        for (p, ifindex, attached) in &mut self.programs {
            let Some(attached) = attached.as_mut() else {
                continue;
            };
            let accounting = attached
                .read()
                .map_err(|e| failed(format!("reading program {}'s accounting: {e}", p.program)))?;
            let drops = kernel.remove(&(p.host, *ifindex)).unwrap_or_default();
            let mut row = compare(self.scenario, p, &drops, &accounting);
            row.how = attached.how.clone();
            rows.push(row);
        }
        into.datapath = rows;
        Ok(())
    }
}

/// Puts the kernel's drops at a program's attach point beside what it reported.
fn compare(
    scenario: &Scenario,
    p: &Program,
    drops: &[KernelDrop],
    accounting: &Accounting,
) -> DatapathRow {
    let (mine, others): (Vec<&KernelDrop>, Vec<&KernelDrop>) = drops
        .iter()
        .partition(|d| caused_by(p.attach, &d.reason, &d.function));
    let group = |items: &mut dyn Iterator<Item = String>| -> Vec<(String, u64)> {
        let mut map: BTreeMap<String, u64> = BTreeMap::new();
        for item in items {
            *map.entry(item).or_default() += 1;
        }
        map.into_iter().collect()
    };
    let mut kernel_names: Vec<String> = mine
        .iter()
        .map(|d| format!("{} at {}", d.reason, d.function))
        .collect();
    kernel_names.sort();
    kernel_names.dedup();
    let name = |code: u32| p.reasons.get(&code).cloned();
    let mut reported = Vec::new();
    if let Some(metrics) = &accounting.metrics {
        for &(code, count, bytes) in metrics {
            reported.push(ReportedDrops {
                channel: "metrics".into(),
                code,
                name: name(code),
                count,
                bytes,
            });
        }
    }
    let mut matched_by_packet = false;
    let (channel, reported_drops, unreported_packets, unreported, over) =
        if let Some(events) = &accounting.events {
            let mut by_code: BTreeMap<u32, u64> = BTreeMap::new();
            for (code, _) in events {
                *by_code.entry(*code).or_default() += 1;
            }
            for (code, count) in by_code {
                reported.push(ReportedDrops {
                    channel: "events".into(),
                    code,
                    name: name(code),
                    count,
                    bytes: 0,
                });
            }
            let reported_drops = events.len() as u64;
            if !events.is_empty() && events.iter().all(|(_, packet)| packet.is_some()) {
                // Each report takes one dropped packet that looks the same.
                matched_by_packet = true;
                let mut left: Vec<Packet> = mine.iter().map(|d| d.packet.clone()).collect();
                let mut over = 0;
                for (_, packet) in events {
                    let packet = Packet::from_frame(packet.as_deref().unwrap_or_default());
                    match left.iter().position(|k| *k == packet) {
                        Some(i) => {
                            left.remove(i);
                        }
                        None => over += 1,
                    }
                }
                let unreported = left.len() as u64;
                let listed = group(&mut left.iter().map(Packet::describe));
                ("events", reported_drops, listed, unreported, over)
            } else {
                let unreported = (mine.len() as u64).saturating_sub(reported_drops);
                let over = reported_drops.saturating_sub(mine.len() as u64);
                let listed = if unreported > 0 {
                    group(&mut mine.iter().map(|d| d.packet.describe()))
                } else {
                    Vec::new()
                };
                ("events", reported_drops, listed, unreported, over)
            }
        } else {
            let reported_drops = accounting
                .metrics
                .as_ref()
                .map_or(0, |m| m.iter().map(|&(_, count, _)| count).sum());
            let unreported = (mine.len() as u64).saturating_sub(reported_drops);
            let over = reported_drops.saturating_sub(mine.len() as u64);
            let listed = if unreported > 0 {
                group(&mut mine.iter().map(|d| d.packet.describe()))
            } else {
                Vec::new()
            };
            ("metrics", reported_drops, listed, unreported, over)
        };
    DatapathRow {
        host: scenario.hosts[p.host].name.clone(),
        interface: p.interface.clone(),
        attach: p.attach.as_str().to_owned(),
        program: p.program.clone(),
        object: p.object.clone(),
        how: String::new(),
        kernel_names,
        kernel_drops: mine.len() as u64,
        kernel_bytes: mine.iter().map(|d| u64::from(d.len)).sum(),
        kernel_packets: group(&mut mine.iter().map(|d| d.packet.describe())),
        channel: channel.to_owned(),
        reported,
        reported_drops,
        unreported_drops: unreported,
        unreported_packets,
        matched_by_packet,
        overreported_drops: over,
        other_drops: group(
            &mut others
                .iter()
                .map(|d| format!("{} at {} ({})", d.reason, d.function, d.packet.protocol)),
        ),
        events_lost: accounting.events_lost,
    }
}
