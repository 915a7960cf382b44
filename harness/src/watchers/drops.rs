//! The drop probe: `skb:kfree_skb` (tp_btf, or the classic tracepoint), with the
//! auxiliary tracepoints that ride in the same object (`icmp_send`, `tcp_send_reset`,
//! …), counted in the kernel per namespace slot by `ebpf/drops.bpf.c` through
//! `crate::probes`. The drops and the events share one object and one namespace slot,
//! so they are one watcher with two kinds of rows.

use super::{Observations, WatchError, Watcher, Watching};
use crate::probes::{DropProbe, ProbeError, WatchSlot};
use crate::report::DropRow;
use crate::scenario::Scenario;
use crate::topology::Netns;

pub struct Drops;

const NAME: &str = "drops";

fn error(e: ProbeError) -> WatchError {
    WatchError::from_source(NAME, e.is_unavailable(), e)
}

impl Watcher for Drops {
    fn name(&self) -> &'static str {
        NAME
    }

    fn prepare(&self) -> Result<(), WatchError> {
        DropProbe::shared().map(|_| ()).map_err(error)
    }

    fn start<'a>(
        &'a self,
        scenario: &'a Scenario,
        hosts: &'a [Netns],
    ) -> Result<Box<dyn Watching + 'a>, WatchError> {
        let probe = DropProbe::shared().map_err(error)?;
        let slots = hosts
            .iter()
            .map(|netns| probe.watch(netns.inode()))
            .collect::<Result<Vec<WatchSlot>, _>>()
            .map_err(error)?;
        Ok(Box::new(Watch {
            probe,
            scenario,
            slots,
        }))
    }

    fn describe(&self) -> Vec<String> {
        let probe = match DropProbe::shared() {
            Ok(probe) => probe,
            Err(e) => return vec![format!("drops: unavailable: {e}")],
        };
        let mut lines = vec![format!(
            "drops: {} (loaded in {:.0?})",
            probe.mode(),
            probe.load_time()
        )];
        if let Some(why) = probe.fallback_reason() {
            lines.push(format!("  tp_btf passed over: {why}"));
        }
        for (event, status) in probe.events_available() {
            match status {
                Ok(()) => lines.push(format!("event {event}: counted")),
                Err(why) => lines.push(format!("event {event}: unavailable: {why}")),
            }
        }
        lines
    }
}

struct Watch<'a> {
    probe: &'static DropProbe,
    scenario: &'a Scenario,
    slots: Vec<WatchSlot>,
}

impl Watching for Watch<'_> {
    fn progress(&self) -> Option<u64> {
        Some(
            self.slots
                .iter()
                .filter_map(|slot| self.probe.packets(slot).ok())
                .sum(),
        )
    }

    fn finish(self: Box<Self>, into: &mut Observations) -> Result<(), WatchError> {
        into.probe = self.probe.mode().to_string();
        into.reasons_unavailable = self.probe.reasons().missing().map(str::to_owned);
        into.drops = collect(self.probe, self.scenario, &self.slots)?;
        into.icmp_send_watched = self
            .probe
            .events_available()
            .iter()
            .any(|(name, status)| name == "icmp_send" && status.is_ok());
        for (host, slot) in self.scenario.hosts.iter().zip(&self.slots) {
            for e in self.probe.read_events(slot).map_err(error)? {
                into.events.push((host.name.clone(), e.event, e.count));
            }
        }
        Ok(())
    }
}

/// The probe takes a stack for only the first few drops of each distinct drop (unwinding
/// is its most expensive part), so a flood's later drops arrive without one, hence
/// without a hook. They belong with the row of the same drop that has one — when exactly
/// one such row exists; otherwise they stay apart, hook unknown.
fn fold_stackless_rows(rows: &mut Vec<DropRow>) {
    let same_drop = |a: &DropRow, b: &DropRow| {
        a.host == b.host
            && a.reason == b.reason
            && a.function == b.function
            && a.protocol == b.protocol
    };
    let mut i = 0;
    while i < rows.len() {
        if rows[i].stack.is_empty() {
            let homes: Vec<usize> = (0..rows.len())
                .filter(|&j| j != i && !rows[j].stack.is_empty() && same_drop(&rows[i], &rows[j]))
                .collect();
            if let [home] = homes[..] {
                let stackless = rows.remove(i);
                let home = if home > i { home - 1 } else { home };
                rows[home].packets += stackless.packets;
                rows[home].bytes += stackless.bytes;
                continue;
            }
        }
        i += 1;
    }
}

/// What makes two drops one report row: host, reason, function, hook, protocol.
type RowKey = (String, String, String, Option<String>, String);

fn collect(
    probe: &DropProbe,
    scenario: &Scenario,
    slots: &[WatchSlot],
) -> Result<Vec<DropRow>, WatchError> {
    // Rows that differ only in their stack are one row: same reason, function, hook and
    // protocol. The stack kept is the one with the most packets.
    let mut merged: std::collections::BTreeMap<RowKey, (DropRow, u64)> =
        std::collections::BTreeMap::new();
    for (host, slot) in scenario.hosts.iter().zip(slots) {
        for d in probe.read(slot).map_err(error)? {
            if is_nftables_request(&d.function, d.l3) {
                continue;
            }
            let protocol = if d.l4.is_empty() {
                d.l3.to_string()
            } else {
                format!("{}/{}", d.l3, d.l4)
            };
            let function = stable_function_name(&d.function).to_owned();
            let hook = d.hook.map(str::to_owned);
            let key = (
                host.name.clone(),
                d.reason.clone(),
                function.clone(),
                hook.clone(),
                protocol.clone(),
            );
            let stack: Vec<String> = d
                .stack
                .iter()
                .map(|f| stable_function_name(f).to_owned())
                .collect();
            let entry = merged.entry(key).or_insert_with(|| {
                (
                    DropRow {
                        host: host.name.clone(),
                        reason: d.reason.clone(),
                        reason_number: d.reason_number,
                        function,
                        protocol,
                        hook,
                        packets: 0,
                        bytes: 0,
                        stack: stack.clone(),
                    },
                    0,
                )
            });
            entry.0.packets += d.packets;
            entry.0.bytes += d.bytes;
            if d.packets > entry.1 {
                entry.1 = d.packets;
                entry.0.stack = stack;
            }
        }
    }
    let mut rows: Vec<DropRow> = merged.into_values().map(|(row, _)| row).collect();
    fold_stackless_rows(&mut rows);
    rows.sort();
    Ok(rows)
}

/// The netlink request a fault's tool (`iptables-nft-restore`, `nft`) sends nf_tables:
/// 6.1 frees its clone with kfree_skb at the end of `nfnetlink_rcv_batch` (NOT_SPECIFIED,
/// no Ethernet protocol: `0x0000`), 6.18 does not. It is a message, not a packet, and
/// only a `[[steps]]` `apply`/`remove` sends one while the scenario is watched.
fn is_nftables_request(function: &str, l3: &str) -> bool {
    stable_function_name(function) == "nfnetlink_rcv_batch" && l3 == "0x0000"
}

/// A kernel function name without the suffixes the compiler adds to its clones
/// (`.constprop.0`, `.isra.0`, `.part.0`, `.cold`): they differ from one build of the same
/// kernel to the next, and the snapshot must not.
pub fn stable_function_name(name: &str) -> &str {
    name.split_once('.').map_or(name, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(hook: Option<&str>, stack: &[&str], packets: u64) -> DropRow {
        DropRow {
            host: "server".into(),
            reason: "NETFILTER_DROP".into(),
            reason_number: 12,
            function: "nft_do_chain".into(),
            protocol: "ipv4/udp".into(),
            hook: hook.map(str::to_owned),
            packets,
            bytes: packets * 60,
            stack: stack.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn stackless_drops_join_their_only_row_with_a_stack() {
        let mut rows = vec![
            row(None, &[], 999_992),
            row(
                Some("ip_local_deliver"),
                &["nft_do_chain", "ip_local_deliver"],
                8,
            ),
        ];
        fold_stackless_rows(&mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].packets, rows[0].bytes), (1_000_000, 60_000_000));
        // Two candidate hooks: the stackless drops cannot be placed, so they stay apart.
        let mut rows = vec![
            row(None, &[], 5),
            row(
                Some("ip_local_deliver"),
                &["nft_do_chain", "ip_local_deliver"],
                8,
            ),
            row(Some("ip_forward"), &["nft_do_chain", "ip_forward"], 8),
        ];
        fold_stackless_rows(&mut rows);
        assert_eq!(rows.len(), 3);
    }

    #[test]
    fn compiler_clone_suffixes_are_dropped() {
        assert_eq!(
            stable_function_name("__netif_receive_skb_core.constprop.0"),
            "__netif_receive_skb_core"
        );
        assert_eq!(stable_function_name("ip_forward"), "ip_forward");
        assert_eq!(stable_function_name("tcp_v4_rcv.cold"), "tcp_v4_rcv");
    }
}
