//! Runs one scenario from start to finish: probe → topology → faults → traffic → settle
//! → collect → teardown, timing each phase.

use std::time::{Duration, Instant};

use crate::classify::{self, Evidence};
use crate::counters::{self, CountersError, HostCounters, RuleSource};
use crate::crafted::{self, CraftedError};
use crate::faults::{self, FaultError};
use crate::global_sysctls::{self, GlobalSysctlError};
use crate::probes::hooks::{HookFamily, HookSlot};
use crate::probes::{DropProbe, ProbeError, WatchSlot};
use crate::report::{
    DropRow, HookPointRow, HookReport, HookRow, PacketRow, Report, Timings, TrafficRow,
};
use crate::scenario::Scenario;
use crate::topology::{Topology, TopologyError};
use crate::traffic::{self, TrafficError, QUIET_WINDOW};

/// Longest the runner keeps watching after traffic for the kernel to go quiet.
const SETTLE_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This machine cannot run the scenario (privileges, kernel feature, tool): a skip.
    #[error("{0}")]
    Unavailable(String),
    #[error("setting up the topology: {0}")]
    Topology(#[source] TopologyError),
    #[error("injecting faults: {0}")]
    Faults(#[source] FaultError),
    #[error("drop probe: {0}")]
    Probe(#[source] ProbeError),
    #[error("sending traffic: {0}")]
    Traffic(#[source] TrafficError),
    #[error("{0}")]
    GlobalSysctl(#[source] GlobalSysctlError),
    #[error("reading the kernel's counters: {0}")]
    Counters(#[source] CountersError),
    #[error("sending crafted packets: {0}")]
    Packets(#[source] CraftedError),
}

impl From<CountersError> for RunError {
    fn from(e: CountersError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Counters(e)
        }
    }
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

impl From<ProbeError> for RunError {
    fn from(e: ProbeError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Probe(e)
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

impl From<FaultError> for RunError {
    fn from(e: FaultError) -> Self {
        if e.is_unavailable() {
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

pub fn run(scenario: &Scenario) -> Result<Report, RunError> {
    if let Some(why) = unavailable_reason() {
        return Err(RunError::Unavailable(why));
    }
    let mut timings = Timings::default();
    // Held for the whole run: a scenario that changes a machine-wide sysctl runs alone.
    let _lock = global_sysctls::lock(!scenario.global_sysctls.is_empty())?;

    // The probe first: if it cannot load, nothing has been built yet.
    let started = Instant::now();
    let probe = DropProbe::shared()?;
    // Never fails: hook points this kernel cannot attach are reported as unavailable.
    let hook_family = HookFamily::shared();
    timings.attach = started.elapsed();

    let started = Instant::now();
    let topology = Topology::build(scenario)?;
    faults::apply(scenario, &topology)?;
    let rule_sources: Vec<Vec<RuleSource>> = (0..scenario.hosts.len())
        .map(|host| counters::rule_sources(scenario, host))
        .collect();
    let counted_hosts: Vec<_> = topology
        .hosts()
        .iter()
        .zip(&rule_sources)
        .map(|(netns, sources)| (netns, sources.as_slice()))
        .collect();
    let counters_before = counters::read_hosts(&counted_hosts)?;
    timings.setup = started.elapsed();

    // Watching starts after set-up, so only what the traffic causes is counted.
    let started = Instant::now();
    let slots = topology
        .hosts()
        .iter()
        .map(|netns| probe.watch(netns.inode()))
        .collect::<Result<Vec<WatchSlot>, _>>()?;
    let hook_slots = topology
        .hosts()
        .iter()
        .map(|netns| hook_family.watch(netns.inode()))
        .collect::<Result<Vec<Option<HookSlot>>, _>>()?;
    timings.attach += started.elapsed();

    let inodes: Vec<u64> = topology.hosts().iter().map(|n| n.inode()).collect();
    let changes = scenario
        .global_sysctls
        .iter()
        .map(|(key, value)| global_sysctls::apply(key, value, &inodes))
        .collect::<Result<Vec<_>, _>>()?;

    let started = Instant::now();
    // The last change in the drop count the traffic phase saw: settling continues that
    // quiet window instead of waiting a whole second one.
    let mut last_seen = (u64::MAX, Instant::now());
    let mut total_drops = || {
        let total = total_packets(probe, &slots);
        if total != last_seen.0 {
            last_seen = (total, Instant::now());
        }
        total
    };
    let outcomes =
        traffic::run(scenario, &topology, &mut total_drops).map_err(RunError::Traffic)?;
    let (packet_outcomes, unread) =
        crafted::run(scenario, &topology, &mut total_drops).map_err(RunError::Packets)?;
    timings.traffic = started.elapsed();

    let started = Instant::now();
    settle(
        probe,
        &slots,
        Duration::from_millis(scenario.settle_min_ms),
        last_seen,
    );
    // Restored as soon as the kernel is done with the traffic: the shortest window.
    let global_sysctls = changes
        .iter()
        .map(|c| (c.key.clone(), c.value.clone(), c.original.clone()))
        .collect();
    drop(changes);
    let drops = collect(probe, scenario, &slots)?;
    let counters_after = counters::read_hosts(&counted_hosts)?;
    timings.settle = started.elapsed();
    let counters: Vec<(String, HostCounters)> = scenario
        .hosts
        .iter()
        .zip(counters_before.iter().zip(&counters_after))
        .map(|(host, (before, after))| (host.name.clone(), counters::delta(before, after)))
        .collect();
    let causes = classify_drops(&drops, &counters, &counters_after);
    let mut events = Vec::new();
    for (host, slot) in scenario.hosts.iter().zip(&slots) {
        for e in probe.read_events(slot)? {
            events.push((host.name.clone(), e.event, e.count));
        }
    }

    let hooks = hook_report(hook_family, scenario, &hook_slots)?;

    let started = Instant::now();
    drop(slots);
    drop(hook_slots);
    unread.close(&topology);
    drop(topology);
    timings.teardown = started.elapsed();

    let traffic = scenario
        .traffic
        .iter()
        .zip(outcomes)
        .map(|(spec, outcome)| TrafficRow {
            from: scenario.hosts[spec.from].name.clone(),
            to: match spec.protocol {
                crate::scenario::Protocol::Icmp => spec.destination.to_string(),
                _ => format!("{}:{}", spec.destination, spec.port),
            },
            protocol: spec.protocol,
            outcome,
        })
        .collect();
    let packets = scenario
        .packets
        .iter()
        .zip(packet_outcomes)
        .map(|(spec, outcome)| packet_row(scenario, spec, outcome))
        .collect();
    Ok(Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        kernel: kernel_release(),
        probe: probe.mode().to_string(),
        drops,
        traffic,
        events,
        causes,
        counters,
        global_sysctls,
        packets,
        hooks,
        timings,
    })
}

fn hook_report(
    family: &HookFamily,
    scenario: &Scenario,
    slots: &[Option<HookSlot>],
) -> Result<HookReport, RunError> {
    let mut counts = Vec::new();
    for (host, slot) in scenario.hosts.iter().zip(slots) {
        let Some(slot) = slot else { continue };
        for c in family.read(slot)? {
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
    Ok(HookReport {
        points: family
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
        modules_loaded: family.modules_loaded().to_vec(),
    })
}

/// Each host's drops with that host's evidence, as `classify` wants them.
fn classify_drops(
    drops: &[DropRow],
    deltas: &[(String, HostCounters)],
    totals: &[HostCounters],
) -> Vec<classify::Cause> {
    let mut causes = Vec::new();
    for ((host, delta), total) in deltas.iter().zip(totals) {
        let host_drops: Vec<classify::Drop<'_>> = drops
            .iter()
            .filter(|d| &d.host == host)
            .map(|d| classify::Drop {
                reason: &d.reason,
                function: &d.function,
                protocol: &d.protocol,
                packets: d.packets,
            })
            .collect();
        let mut evidence = Evidence {
            conntrack_drops: delta.conntrack.get("drop").copied().unwrap_or(0),
            conntrack_insert_failed: delta.conntrack.get("insert_failed").copied().unwrap_or(0),
            udp_csum_errors: ["Udp.InCsumErrors", "Udp6.InCsumErrors"]
                .iter()
                .filter_map(|k| delta.snmp.get(*k))
                .sum(),
            has_nat_rules: total.rules.iter().any(|r| classify::is_nat_rule(&r.rule)),
            ..Evidence::default()
        };
        for rule in delta
            .rules
            .iter()
            .filter(|r| classify::is_dropping_rule(&r.rule))
        {
            let name = format!(
                "{} {} {}: {}",
                rule.backend, rule.table, rule.chain, rule.rule
            );
            *evidence.rule_drops.entry(name).or_default() += rule.packets;
        }
        for (key, value) in &delta.snmp {
            if let Some(icmp_type) = key.strip_prefix("IcmpMsg.OutType") {
                evidence
                    .icmp_sent
                    .insert(format!("type={icmp_type}"), *value);
            }
        }
        if let Some(overflows) = delta.snmp.get("TcpExt.ListenOverflows") {
            evidence
                .silent_drops
                .insert("TcpExt.ListenOverflows".to_owned(), *overflows);
        }
        causes.extend(classify::classify(host, &host_drops, &evidence));
    }
    causes
}

fn packet_row(
    scenario: &Scenario,
    spec: &crate::scenario::PacketEntry,
    outcome: crafted::PacketOutcome,
) -> PacketRow {
    use crate::scenario::PacketProtocol;
    let to = match spec.protocol {
        PacketProtocol::Udp | PacketProtocol::Tcp => {
            std::net::SocketAddr::new(spec.destination, spec.port).to_string()
        }
        _ => spec.destination.to_string(),
    };
    let mut what = spec.protocol.name(spec.destination.is_ipv6());
    if spec.protocol == PacketProtocol::Tcp {
        what.push(' ');
        what.push_str(&tcp_flags_text(spec.tcp_flags));
    }
    what.push_str(&format!(" x{}, payload {}", outcome.sent, spec.payload));
    if spec.ttl != 64 {
        what.push_str(&format!(", ttl {}", spec.ttl));
    }
    if spec.corrupt != crate::packets::Corruption::None {
        what.push_str(&format!(", corrupt {}", spec.corrupt.as_str()));
    }
    if matches!(spec.protocol, PacketProtocol::Udp | PacketProtocol::Tcp) {
        what.push_str(&format!(", receiver {}", spec.receiver.as_str()));
    }
    PacketRow {
        from: scenario.hosts[spec.from].name.clone(),
        to,
        what,
        protocol: spec.protocol,
        receiver: spec.receiver,
        outcome,
    }
}

/// TCP flags as tcpdump prints them: `S`, `PA`, `R`.
fn tcp_flags_text(flags: u8) -> String {
    use crate::packets::*;
    let names = [
        (TCP_FIN, 'F'),
        (TCP_SYN, 'S'),
        (TCP_RST, 'R'),
        (TCP_PSH, 'P'),
        (TCP_ACK, 'A'),
        (TCP_URG, 'U'),
        (TCP_ECE, 'E'),
        (TCP_CWR, 'C'),
    ];
    let text: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if text.is_empty() {
        "none".into()
    } else {
        text
    }
}

fn total_packets(probe: &DropProbe, slots: &[WatchSlot]) -> u64 {
    slots
        .iter()
        .filter_map(|slot| probe.packets(slot).ok())
        .sum()
}

/// Waits until no new drop has been counted for a quiet window (and at least `minimum`),
/// so late drops of the traffic are still seen without a long fixed sleep. The window
/// started at `seen`, the last change of the count that the traffic phase saw.
fn settle(probe: &DropProbe, slots: &[WatchSlot], minimum: Duration, seen: (u64, Instant)) {
    let start = Instant::now();
    let (mut last, mut last_change) = seen;
    loop {
        let now = Instant::now();
        let total = total_packets(probe, slots);
        if total != last {
            last = total;
            last_change = now;
        }
        let quiet = now.duration_since(last_change) >= QUIET_WINDOW;
        if (quiet && now.duration_since(start) >= minimum)
            || now.duration_since(start) >= SETTLE_CAP
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
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
) -> Result<Vec<DropRow>, RunError> {
    // Rows that differ only in their stack are one row: same reason, function, hook and
    // protocol. The stack kept is the one with the most packets.
    let mut merged: std::collections::BTreeMap<RowKey, (DropRow, u64)> =
        std::collections::BTreeMap::new();
    for (host, slot) in scenario.hosts.iter().zip(slots) {
        for d in probe.read(slot)? {
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

/// A kernel function name without the suffixes the compiler adds to its clones
/// (`.constprop.0`, `.isra.0`, `.part.0`, `.cold`): they differ from one build of the same
/// kernel to the next, and the snapshot must not.
pub fn stable_function_name(name: &str) -> &str {
    name.split_once('.').map_or(name, |(base, _)| base)
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
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
