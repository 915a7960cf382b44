//! What changed in drop behaviour between two kernels, scenario by scenario.
//!
//! Input is two saved runs (`dropspec run --json`), typically the same suite on the
//! kernel a fleet runs today and on the one it is moving to. Each difference is one
//! [`Change`]; renumbered reasons are listed as harmless (scenarios name reasons, and
//! names are stable), everything else is a behaviour change that fails the diff unless
//! the user has accepted it — one line of the change's summary in an accept file, with
//! its explanation on `why:` lines under it (`ci/kernel-changes.txt` explains every
//! change between the kernels of the matrix, for the upgrade diffs in docs/).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::report::{DropRow, Report};
use crate::traffic::TrafficOutcome;

/// One kernel's run of a suite, as `dropspec run --json` saves it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SavedRun {
    pub kernel: String,
    pub probe: String,
    /// The kernel's drop reasons, name → number.
    pub reasons: BTreeMap<String, u32>,
    pub reports: Vec<Report>,
    /// Scenarios that could not run there, with why.
    pub skipped: BTreeMap<String, String>,
    /// Auxiliary tracepoints (`tcp_send_reset`, …) and whether this kernel has them;
    /// event counts are compared only where both kernels do.
    #[serde(default)]
    pub events_available: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// A reason used by the suite has another number: harmless.
    Renumbered {
        reason: String,
        from: u32,
        to: u32,
    },
    /// One kernel reports drop reasons and the other none (before 5.17): harmless, said
    /// once; every drop of the suite is then compared by host, function, protocol and
    /// count only, so a reason appearing is not a change of each drop.
    ReasonsReported {
        /// The kernel that reports reasons.
        kernel: String,
        /// True when it is the new kernel ("now reported").
        now: bool,
    },
    /// The probe attached differently.
    ProbeChanged {
        from: String,
        to: String,
    },
    ScenarioMissing {
        scenario: String,
        on: String,
    },
    /// A scenario ran on one kernel and was skipped on the other.
    Availability {
        scenario: String,
        skipped_on: String,
        why: String,
    },
    /// The same drops (host, protocol, count) reported under another reason: the old
    /// reason no longer exists on the new kernel, or the same function now gives a more
    /// precise one (NOT_SPECIFIED → UDP_CSUM at udp_recvmsg).
    Renamed {
        scenario: String,
        host: String,
        from: String,
        to: String,
        packets: u64,
    },
    Moved {
        scenario: String,
        host: String,
        reason: String,
        protocol: String,
        from: String,
        to: String,
    },
    Count {
        scenario: String,
        host: String,
        reason: String,
        protocol: String,
        from: u64,
        to: u64,
    },
    Appeared {
        scenario: String,
        host: String,
        reason: String,
        function: String,
        protocol: String,
        packets: u64,
    },
    Vanished {
        scenario: String,
        host: String,
        reason: String,
        function: String,
        protocol: String,
        packets: u64,
    },
    Traffic {
        scenario: String,
        entry: usize,
        from: String,
        to: String,
    },
    /// A Retina hook point could be counted on one kernel and not the other; its counts
    /// are not compared then. Harmless, like a probe change: it says what was watched.
    HookAvailability {
        hook: String,
        function: String,
        from: String,
        to: String,
    },
    /// A kernel counter that speaks of drops (`conntrack.found`, `Udp.InErrors`) or an
    /// auxiliary event (`tcp_send_reset reason=NO_SOCKET`) moved by another amount.
    Evidence {
        scenario: String,
        host: String,
        what: String,
        from: u64,
        to: u64,
    },
    /// Failed calls at a Retina hook point changed (appearing or vanishing: from or to 0).
    HookCount {
        scenario: String,
        host: String,
        hook: String,
        ret: i32,
        from: u64,
        to: u64,
    },
}

impl Change {
    /// Harmless changes never fail a diff.
    pub fn is_harmless(&self) -> bool {
        matches!(
            self,
            Change::Renumbered { .. }
                | Change::ReasonsReported { .. }
                | Change::ProbeChanged { .. }
                | Change::HookAvailability { .. }
        )
    }

    /// One line, also the form an accept file uses.
    pub fn summary(&self) -> String {
        match self {
            Change::Renumbered { reason, from, to } => {
                format!("reason {reason} renumbered {from} -> {to} (harmless: scenarios use names)")
            }
            Change::ReasonsReported { kernel, now: true } => format!(
                "drop reasons now reported ({kernel}; the older kernel has none, before 5.17): \
                 drops compared by host, function, protocol and count"
            ),
            Change::ReasonsReported { kernel, now: false } => format!(
                "drop reasons no longer reported (only {kernel} has them): drops compared by \
                 host, function, protocol and count"
            ),
            Change::ProbeChanged { from, to } => format!("probe {from} -> {to}"),
            Change::ScenarioMissing { scenario, on } => format!("{scenario}: not run on {on}"),
            Change::Availability {
                scenario,
                skipped_on,
                why,
            } => {
                format!("{scenario}: skipped on {skipped_on} ({why})")
            }
            Change::Renamed {
                scenario,
                host,
                from,
                to,
                packets,
            } => {
                format!("{scenario}: {host}: {packets} {from} drop(s) now reported as {to}")
            }
            Change::Moved {
                scenario,
                host,
                reason,
                protocol,
                from,
                to,
            } => {
                format!("{scenario}: {host}: {reason} ({protocol}) moved from {from} to {to}")
            }
            Change::Count {
                scenario,
                host,
                reason,
                protocol,
                from,
                to,
            } => {
                format!("{scenario}: {host}: {reason} ({protocol}) count {from} -> {to}")
            }
            Change::Appeared {
                scenario,
                host,
                reason,
                function,
                protocol,
                packets,
            } => {
                format!(
                    "{scenario}: {host}: new drop {packets} {reason} at {function} ({protocol})"
                )
            }
            Change::Vanished {
                scenario,
                host,
                reason,
                function,
                protocol,
                packets,
            } => {
                format!(
                    "{scenario}: {host}: drop gone: {packets} {reason} at {function} ({protocol})"
                )
            }
            Change::Traffic {
                scenario,
                entry,
                from,
                to,
            } => {
                format!("{scenario}: traffic #{entry}: {from} -> {to}")
            }
            Change::HookAvailability {
                hook,
                function,
                from,
                to,
            } => format!("hook point {hook} ({function}): {from} -> {to}"),
            Change::Evidence {
                scenario,
                host,
                what,
                from,
                to,
            } => format!("{scenario}: {host}: {what} {from} -> {to}"),
            Change::HookCount {
                scenario,
                host,
                hook,
                ret,
                from,
                to,
            } => format!("{scenario}: {host}: {hook} (returned {ret}) count {from} -> {to}"),
        }
    }
}

/// Every change from `old` to `new`, harmless ones first.
pub fn diff(old: &SavedRun, new: &SavedRun) -> Vec<Change> {
    let mut changes = Vec::new();
    if old.probe != new.probe {
        changes.push(Change::ProbeChanged {
            from: old.probe.clone(),
            to: new.probe.clone(),
        });
    }
    let used: BTreeSet<&str> = old
        .reports
        .iter()
        .chain(&new.reports)
        .flat_map(|r| r.drops.iter().map(|d| d.reason.as_str()))
        .collect();
    for reason in used {
        if let (Some(&from), Some(&to)) = (old.reasons.get(reason), new.reasons.get(reason)) {
            if from != to {
                changes.push(Change::Renumbered {
                    reason: reason.to_owned(),
                    from,
                    to,
                });
            }
        }
    }

    let (old_none, new_none) = (lacks_reasons(old), lacks_reasons(new));
    if old_none != new_none {
        changes.push(Change::ReasonsReported {
            kernel: if new_none { &old.kernel } else { &new.kernel }.clone(),
            now: old_none,
        });
    }
    let without_reasons = old_none || new_none;

    let (old_points, new_points) = (hook_points(old), hook_points(new));
    for (hook, (function, from)) in &old_points {
        if let Some((_, to)) = new_points.get(hook) {
            if from.is_ok() != to.is_ok() {
                changes.push(Change::HookAvailability {
                    hook: hook.clone(),
                    function: function.clone(),
                    from: point_state(from),
                    to: point_state(to),
                });
            }
        }
    }

    let old_reports: BTreeMap<&str, &Report> = old
        .reports
        .iter()
        .map(|r| (r.scenario.as_str(), r))
        .collect();
    let new_reports: BTreeMap<&str, &Report> = new
        .reports
        .iter()
        .map(|r| (r.scenario.as_str(), r))
        .collect();
    let names: BTreeSet<&str> = old_reports
        .keys()
        .chain(new_reports.keys())
        .copied()
        .chain(old.skipped.keys().map(String::as_str))
        .chain(new.skipped.keys().map(String::as_str))
        .collect();
    for name in names {
        match (old_reports.get(name), new_reports.get(name)) {
            (Some(a), Some(b)) => {
                if without_reasons {
                    let (a, b) = (without_reason(a), without_reason(b));
                    changes.extend(diff_reports(&a, &b, new));
                } else {
                    changes.extend(diff_reports(a, b, new));
                }
                changes.extend(diff_evidence(name, a, b, old, new));
                changes.extend(diff_hooks(name, a, b));
            }
            (Some(_), None) => changes.push(absent(name, new)),
            (None, Some(_)) => changes.push(absent(name, old)),
            (None, None) => {}
        }
    }
    changes
}

/// A run on a kernel without drop reasons (before 5.17).
fn lacks_reasons(run: &SavedRun) -> bool {
    run.reports.iter().any(|r| r.reasons_unavailable.is_some())
}

/// The report with every drop's reason the one a kernel without reasons gives, so that
/// two kernels compare by what both can tell.
fn without_reason(report: &Report) -> Report {
    let mut report = report.clone();
    for d in &mut report.drops {
        d.reason = crate::kernel::reasons::NO_REASON.to_owned();
    }
    report
}

type PointStates = BTreeMap<String, (String, Result<String, String>)>;

/// Each hook point's attachment in a run (the family loads once per process, so any
/// report with hook points tells it); empty for runs saved before hook points existed.
fn hook_points(run: &SavedRun) -> PointStates {
    run.reports
        .iter()
        .find(|r| !r.hooks.points.is_empty())
        .map(|r| {
            r.hooks
                .points
                .iter()
                .map(|p| (p.hook.clone(), (p.function.clone(), p.attached.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn point_state(state: &Result<String, String>) -> String {
    match state {
        Ok(how) => format!("counted ({how})"),
        Err(why) => format!("unavailable ({why})"),
    }
}

/// Counters and events that moved differently. An event one kernel lacks is left out
/// (its absence says nothing about behaviour); so are the rule counters of the
/// scenario's own rules, which repeat the drop counts.
fn diff_evidence(
    scenario: &str,
    old: &Report,
    new: &Report,
    old_run: &SavedRun,
    new_run: &SavedRun,
) -> Vec<Change> {
    let both_have = |event: &str| {
        let name = event.split_whitespace().next().unwrap_or(event);
        let has = |run: &SavedRun| run.events_available.get(name).copied().unwrap_or(false);
        has(old_run) && has(new_run)
    };
    let tally = |r: &Report| {
        let mut t: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (host, counters) in &r.counters {
            for (name, delta) in crate::report::kernel_drop_counters(counters) {
                t.insert((host.clone(), format!("counter {name}")), delta);
            }
        }
        for (host, event, count) in &r.events {
            if both_have(event) {
                *t.entry((host.clone(), format!("event {event}")))
                    .or_default() += count;
            }
        }
        t
    };
    moved(&tally(old), &tally(new))
        .into_iter()
        .map(|((host, what), from, to)| Change::Evidence {
            scenario: scenario.to_owned(),
            host,
            what,
            from,
            to,
        })
        .collect()
}

/// Hook-point failures that changed, for points both kernels could count.
fn diff_hooks(scenario: &str, old: &Report, new: &Report) -> Vec<Change> {
    let counted = |r: &Report, hook: &str| {
        r.hooks
            .points
            .iter()
            .any(|p| p.hook == hook && p.attached.is_ok())
    };
    let tally = |r: &Report| {
        let mut t: BTreeMap<(String, String, i32), u64> = BTreeMap::new();
        for row in &r.hooks.counts {
            *t.entry((row.host.clone(), row.hook.clone(), row.ret))
                .or_default() += row.count;
        }
        t
    };
    moved(&tally(old), &tally(new))
        .into_iter()
        .filter(|((_, hook, _), _, _)| counted(old, hook) && counted(new, hook))
        .map(|((host, hook, ret), from, to)| Change::HookCount {
            scenario: scenario.to_owned(),
            host,
            hook,
            ret,
            from,
            to,
        })
        .collect()
}

/// Every key whose count differs between `a` and `b` (absent counts as 0): (key, a, b).
fn moved<K: Ord + Clone>(a: &BTreeMap<K, u64>, b: &BTreeMap<K, u64>) -> Vec<(K, u64, u64)> {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let from = a.get(key).copied().unwrap_or(0);
            let to = b.get(key).copied().unwrap_or(0);
            (from != to).then(|| (key.clone(), from, to))
        })
        .collect()
}

/// A scenario that has a report in one run and not in `run`: skipped there (and why), or
/// not run at all.
fn absent(scenario: &str, run: &SavedRun) -> Change {
    match run.skipped.get(scenario) {
        Some(why) => Change::Availability {
            scenario: scenario.to_owned(),
            skipped_on: run.kernel.clone(),
            why: why.clone(),
        },
        None => Change::ScenarioMissing {
            scenario: scenario.to_owned(),
            on: run.kernel.clone(),
        },
    }
}

/// Where a drop happened and what it was: (host, reason, protocol).
type Place = (String, String, String);
/// The kernel function(s) and the packet count at a place.
type Seen = (String, u64);

/// Drops keyed by where they happened and what they were, for matching across kernels.
fn by_place(drops: &[DropRow]) -> BTreeMap<Place, Seen> {
    let mut places: BTreeMap<Place, Seen> = BTreeMap::new();
    for d in drops {
        let entry = places
            .entry((d.host.clone(), d.reason.clone(), d.protocol.clone()))
            .or_insert_with(|| (d.function.clone(), 0));
        entry.1 += d.packets;
        if entry.0 != d.function {
            // Several functions for one reason: keep them all visible in the name.
            entry.0 = format!("{}+{}", entry.0, d.function);
        }
    }
    places
}

fn diff_reports(old: &Report, new: &Report, new_run: &SavedRun) -> Vec<Change> {
    let scenario = old.scenario.clone();
    let mut changes = Vec::new();
    let a = by_place(&old.drops);
    let b = by_place(&new.drops);
    let mut gone: Vec<(&Place, &Seen)> = Vec::new();
    let mut added: Vec<(&Place, &Seen)> = Vec::new();
    for (key, (function, packets)) in &a {
        match b.get(key) {
            Some((new_function, new_packets)) => {
                let (host, reason, protocol) = key.clone();
                if function != new_function {
                    changes.push(Change::Moved {
                        scenario: scenario.clone(),
                        host: host.clone(),
                        reason: reason.clone(),
                        protocol: protocol.clone(),
                        from: function.clone(),
                        to: new_function.clone(),
                    });
                }
                if packets != new_packets {
                    changes.push(Change::Count {
                        scenario: scenario.clone(),
                        host,
                        reason,
                        protocol,
                        from: *packets,
                        to: *new_packets,
                    });
                }
            }
            None => gone.push((key, &a[key])),
        }
    }
    for (key, value) in &b {
        if !a.contains_key(key) {
            added.push((key, value));
        }
    }
    // Drops that vanished under one reason and appeared under another at the same host
    // and protocol with the same count are one change, not two, when the old reason is
    // gone from the new kernel or the same function reports the new one.
    gone.retain(|(old_key, (function, packets))| {
        let reason_gone = !new_run.reasons.contains_key(&old_key.1);
        let renamed_to = added
            .iter()
            .position(|(new_key, (new_function, new_packets))| {
                new_key.0 == old_key.0
                    && new_key.2 == old_key.2
                    && new_packets == packets
                    && (reason_gone || new_function == function)
            });
        match renamed_to {
            Some(i) => {
                let (new_key, _) = added.remove(i);
                changes.push(Change::Renamed {
                    scenario: scenario.clone(),
                    host: old_key.0.clone(),
                    from: old_key.1.clone(),
                    to: new_key.1.clone(),
                    packets: *packets,
                });
                false
            }
            None => true,
        }
    });
    for ((host, reason, protocol), (function, packets)) in gone {
        changes.push(Change::Vanished {
            scenario: scenario.clone(),
            host: host.clone(),
            reason: reason.clone(),
            function: function.clone(),
            protocol: protocol.clone(),
            packets: *packets,
        });
    }
    for ((host, reason, protocol), (function, packets)) in added {
        changes.push(Change::Appeared {
            scenario: scenario.clone(),
            host: host.clone(),
            reason: reason.clone(),
            function: function.clone(),
            protocol: protocol.clone(),
            packets: *packets,
        });
    }
    for (i, (x, y)) in old.traffic.iter().zip(&new.traffic).enumerate() {
        if x.outcome != y.outcome {
            let (from, to) = outcome_difference(&x.outcome, &y.outcome);
            changes.push(Change::Traffic {
                scenario: scenario.clone(),
                entry: i + 1,
                from,
                to,
            });
        }
    }
    changes
}

/// The fields of two traffic outcomes that differ, as `delivered 4` and `delivered 3`:
/// a whole outcome struct would bury the one number that changed.
fn outcome_difference(old: &TrafficOutcome, new: &TrafficOutcome) -> (String, String) {
    let fields = |o: &TrafficOutcome| {
        [
            ("sent", o.sent),
            ("answered", o.answered),
            ("delivered", o.delivered),
            ("errors", o.errors),
            ("connected", o.connected),
            ("refused", o.refused),
            ("timed_out", o.timed_out),
            ("unreachable", o.unreachable),
            ("blocked", o.blocked),
        ]
    };
    let (mut from, mut to) = (Vec::new(), Vec::new());
    for ((name, a), (_, b)) in fields(old).into_iter().zip(fields(new)) {
        if a != b {
            from.push(format!("{name} {a}"));
            to.push(format!("{name} {b}"));
        }
    }
    (from.join(", "), to.join(", "))
}

/// The diff as text or Markdown, with accepted changes marked and each change's
/// explanation from the accept file (see [`parse_explanations`]) after it.
pub fn render(
    old: &SavedRun,
    new: &SavedRun,
    changes: &[Change],
    accepted: &BTreeSet<String>,
    explanations: &BTreeMap<String, String>,
    markdown: bool,
) -> String {
    let mut out = String::new();
    let (harmless, behaviour): (Vec<&Change>, Vec<&Change>) =
        changes.iter().partition(|c| c.is_harmless());
    if markdown {
        writeln!(out, "# Drop behaviour: {} → {}\n", old.kernel, new.kernel).unwrap();
    } else {
        writeln!(out, "drop behaviour: {} -> {}", old.kernel, new.kernel).unwrap();
    }
    let section = |out: &mut String, title: &str, items: &[&Change]| {
        if markdown {
            writeln!(out, "## {title} ({})\n", items.len()).unwrap();
        } else {
            writeln!(out, "{title} ({}):", items.len()).unwrap();
        }
        for c in items {
            let summary = c.summary();
            let mut mark = if accepted.contains(&summary) && !markdown {
                " [accepted]".to_owned()
            } else {
                String::new()
            };
            if let Some(why) = explanations.get(&summary) {
                mark.push_str(&format!(": {why}"));
            }
            if markdown {
                writeln!(out, "- {summary}{mark}").unwrap();
            } else {
                writeln!(out, "  {summary}{mark}").unwrap();
            }
        }
        if markdown {
            writeln!(out).unwrap();
        }
    };
    section(&mut out, "behaviour changes", &behaviour);
    section(&mut out, "harmless", &harmless);
    out
}

/// Behaviour changes not accepted by the user: what makes `dropspec diff` fail.
pub fn unaccepted<'a>(changes: &'a [Change], accepted: &BTreeSet<String>) -> Vec<&'a Change> {
    changes
        .iter()
        .filter(|c| !c.is_harmless() && !accepted.contains(&c.summary()))
        .collect()
}

/// Reads an accept file: one change summary per line, `#` comments, and under a change
/// optionally its explanation on lines starting with `why:` (indented or not).
pub fn parse_accepted(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("why:"))
        .map(str::to_owned)
        .collect()
}

/// The explanations of an accept file: change summary -> its `why:` lines, joined.
pub fn parse_explanations(text: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(why) = line.strip_prefix("why:") {
            if let Some(summary) = &current {
                let text = out.entry(summary.clone()).or_default();
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(why.trim());
            }
        } else {
            current = Some(line.to_owned());
        }
    }
    out
}

/// Changes the explanations do not explain: what `ci/kernel-docs.sh` refuses to publish.
pub fn unexplained<'a>(
    changes: &'a [Change],
    explanations: &BTreeMap<String, String>,
) -> Vec<&'a Change> {
    changes
        .iter()
        .filter(|c| !c.is_harmless() && !explanations.contains_key(&c.summary()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Report, Timings};

    fn drop_row(reason: &str, function: &str, packets: u64) -> DropRow {
        DropRow {
            host: "server".into(),
            reason: reason.into(),
            reason_number: 0,
            function: function.into(),
            protocol: "ipv4/icmp".into(),
            hook: None,
            packets,
            bytes: packets * 84,
            stack: vec![],
        }
    }

    fn run(kernel: &str, reasons: &[(&str, u32)], drops: Vec<DropRow>) -> SavedRun {
        SavedRun {
            kernel: kernel.into(),
            probe: "tp_btf/kfree_skb".into(),
            reasons: reasons.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            reports: vec![Report {
                scenario: "iptables/input_drop_icmp_nft".into(),
                description: String::new(),
                kernel: kernel.into(),
                probe: "tp_btf/kfree_skb".into(),
                reasons_unavailable: None,
                drops,
                traffic: vec![],
                events: vec![],
                causes: vec![],
                counters: vec![],
                global_sysctls: vec![],
                packets: vec![],
                hooks: Default::default(),
                datapath: Vec::new(),
                steps: Vec::new(),
                icmp_send_watched: false,
                reruns: Vec::new(),
                commands: Vec::new(),
                timings: Timings::default(),
            }],
            skipped: BTreeMap::new(),
            events_available: [("tcp_send_reset".to_owned(), true)].into(),
        }
    }

    #[test]
    fn a_kernel_upgrade_renumbers_and_moves_and_nothing_else() {
        let old = run(
            "6.1",
            &[("NETFILTER_DROP", 7)],
            vec![drop_row("NETFILTER_DROP", "nf_hook_slow", 3)],
        );
        let new = run(
            "6.18",
            &[("NETFILTER_DROP", 12)],
            vec![drop_row("NETFILTER_DROP", "nft_do_chain", 3)],
        );
        let changes = diff(&old, &new);
        let summaries: Vec<String> = changes.iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "reason NETFILTER_DROP renumbered 7 -> 12 (harmless: scenarios use names)",
                "iptables/input_drop_icmp_nft: server: NETFILTER_DROP (ipv4/icmp) moved from nf_hook_slow to nft_do_chain",
            ]
        );
        assert_eq!(unaccepted(&changes, &BTreeSet::new()).len(), 1);
        let accepted = parse_accepted(&format!("# known\n{}\n", summaries[1]));
        assert!(unaccepted(&changes, &accepted).is_empty());
        // Explanations: `why:` lines under a change, not changes themselves.
        let file = format!("{}\n  why: first half,\n  why: second half\n", summaries[1]);
        assert!(unaccepted(&changes, &parse_accepted(&file)).is_empty());
        let why = parse_explanations(&file);
        assert_eq!(
            why.get(&summaries[1]).map(String::as_str),
            Some("first half, second half")
        );
        assert!(unexplained(&changes, &why).is_empty());
        assert_eq!(unexplained(&changes, &BTreeMap::new()).len(), 1);
    }

    #[test]
    fn counts_appearances_and_renames_are_told_apart() {
        let old = run(
            "a",
            &[("OLD_NAME", 5), ("NO_SOCKET", 3)],
            vec![drop_row("OLD_NAME", "f", 2), drop_row("NO_SOCKET", "g", 1)],
        );
        let new = run(
            "b",
            &[("NEW_NAME", 5), ("NO_SOCKET", 3), ("TC_INGRESS", 9)],
            vec![
                drop_row("NEW_NAME", "f", 2),
                drop_row("NO_SOCKET", "g", 4),
                drop_row("TC_INGRESS", "h", 1),
            ],
        );
        let summaries: Vec<String> = diff(&old, &new).iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "iptables/input_drop_icmp_nft: server: NO_SOCKET (ipv4/icmp) count 1 -> 4",
                "iptables/input_drop_icmp_nft: server: 2 OLD_NAME drop(s) now reported as NEW_NAME",
                "iptables/input_drop_icmp_nft: server: new drop 1 TC_INGRESS at h (ipv4/icmp)",
            ]
        );
    }

    #[test]
    fn a_more_precise_reason_at_the_same_function_is_one_change() {
        // 6.12 → 6.18: udp_recvmsg reports a checksum failed at read time as UDP_CSUM.
        let reasons = |csum| [("NOT_SPECIFIED", 2), ("UDP_CSUM", csum), ("NO_SOCKET", 3)];
        let old = run(
            "6.12",
            &reasons(6),
            vec![drop_row("NOT_SPECIFIED", "udp_recvmsg", 3)],
        );
        let new = run(
            "6.18",
            &reasons(11),
            vec![drop_row("UDP_CSUM", "udp_recvmsg", 3)],
        );
        let summaries: Vec<String> = diff(&old, &new).iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "reason UDP_CSUM renumbered 6 -> 11 (harmless: scenarios use names)",
                "iptables/input_drop_icmp_nft: server: 3 NOT_SPECIFIED drop(s) now reported as UDP_CSUM",
            ]
        );

        // Another function, and the old reason still exists: two changes, not a rename.
        let old = run(
            "a",
            &reasons(6),
            vec![drop_row("NOT_SPECIFIED", "icmp_rcv", 1)],
        );
        let new = run("b", &reasons(6), vec![drop_row("NO_SOCKET", "ping_rcv", 1)]);
        let summaries: Vec<String> = diff(&old, &new).iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "iptables/input_drop_icmp_nft: server: drop gone: 1 NOT_SPECIFIED at icmp_rcv (ipv4/icmp)",
                "iptables/input_drop_icmp_nft: server: new drop 1 NO_SOCKET at ping_rcv (ipv4/icmp)",
            ]
        );
    }

    #[test]
    fn a_traffic_change_names_only_the_numbers_that_changed() {
        let with_traffic = |delivered| {
            let mut r = run("k", &[], vec![]);
            r.reports[0].traffic = vec![crate::report::TrafficRow {
                from: "client".into(),
                to: "198.18.0.2:5000".into(),
                protocol: crate::scenario::Protocol::Udp,
                outcome: TrafficOutcome {
                    sent: 10,
                    delivered,
                    ..Default::default()
                },
            }];
            r
        };
        let summaries: Vec<String> = diff(&with_traffic(4), &with_traffic(3))
            .iter()
            .map(Change::summary)
            .collect();
        assert_eq!(
            summaries,
            vec!["iptables/input_drop_icmp_nft: traffic #1: delivered 4 -> delivered 3"]
        );
    }

    /// 5.10 → a kernel with reasons: one harmless line, then only what both can tell.
    #[test]
    fn reasons_appearing_is_one_line_not_a_flood() {
        let none = crate::kernel::reasons::NO_REASON;
        let udp = |reason: &str, function: &str| DropRow {
            protocol: "ipv4/udp".into(),
            ..drop_row(reason, function, 2)
        };
        let mut old = run(
            "5.10",
            &[],
            vec![
                drop_row(none, "nft_do_chain", 3),
                udp(none, "__udp4_lib_rcv"),
            ],
        );
        old.reports[0].reasons_unavailable = Some("before 5.17".into());
        let new = run(
            "6.18",
            &[("NETFILTER_DROP", 12), ("UDP_CSUM", 30)],
            vec![
                drop_row("NETFILTER_DROP", "nft_do_chain", 3),
                udp("UDP_CSUM", "udp_rcv"),
            ],
        );
        let summaries: Vec<String> = diff(&old, &new).iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            [
                "drop reasons now reported (6.18; the older kernel has none, before 5.17): drops compared by host, function, protocol and count",
                "iptables/input_drop_icmp_nft: server: UNAVAILABLE (ipv4/udp) moved from __udp4_lib_rcv to udp_rcv",
            ]
        );
        assert!(diff(&old, &new)[0].is_harmless());
        assert_eq!(
            diff(&new, &old)[0].summary(),
            "drop reasons no longer reported (only 6.18 has them): drops compared by host, function, protocol and count"
        );
    }

    #[test]
    fn identical_runs_have_no_changes() {
        let a = run(
            "6.18",
            &[("NETFILTER_DROP", 12)],
            vec![drop_row("NETFILTER_DROP", "nft_do_chain", 3)],
        );
        assert!(diff(&a, &a.clone()).is_empty());
    }

    fn with_hooks(
        mut run: SavedRun,
        attached: Result<&str, &str>,
        counts: &[(&str, u64)],
    ) -> SavedRun {
        use crate::report::{HookPointRow, HookRow};
        let report = &mut run.reports[0];
        report.hooks.points = ["IPTABLE_RULE_DROP", "IPTABLE_NAT_DROP"]
            .iter()
            .map(|hook| HookPointRow {
                hook: (*hook).into(),
                function: "f".into(),
                attached: attached.map(Into::into).map_err(Into::into),
                fallback: None,
            })
            .collect();
        report.hooks.counts = counts
            .iter()
            .map(|(hook, count)| HookRow {
                host: "server".into(),
                hook: (*hook).into(),
                function: "f".into(),
                ret: -1,
                protocol: "ipv4".into(),
                count: *count,
                bytes: 0,
            })
            .collect();
        run
    }

    #[test]
    fn hook_counts_are_compared_only_where_both_kernels_count_them() {
        let base = |kernel| run(kernel, &[], vec![]);
        let old = with_hooks(
            base("6.1"),
            Ok("kprobe/kretprobe"),
            &[("IPTABLE_NAT_DROP", 3)],
        );
        let new = with_hooks(
            base("6.12"),
            Ok("fentry/fexit"),
            &[("IPTABLE_RULE_DROP", 3)],
        );
        let summaries: Vec<String> = diff(&old, &new).iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "iptables/input_drop_icmp_nft: server: IPTABLE_NAT_DROP (returned -1) count 3 -> 0",
                "iptables/input_drop_icmp_nft: server: IPTABLE_RULE_DROP (returned -1) count 0 -> 3",
            ]
        );
        let host = with_hooks(base("6.18"), Err("no kprobes"), &[]);
        let changes = diff(&old, &host);
        let summaries: Vec<String> = changes.iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "hook point IPTABLE_NAT_DROP (f): counted (kprobe/kretprobe) -> unavailable (no kprobes)",
                "hook point IPTABLE_RULE_DROP (f): counted (kprobe/kretprobe) -> unavailable (no kprobes)",
            ]
        );
        assert!(unaccepted(&changes, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn counters_and_events_that_moved_are_behaviour_changes() {
        let mut old = run("6.1", &[], vec![]);
        let mut new = run("6.18", &[], vec![]);
        let mut counters = crate::counters::HostCounters::default();
        counters.conntrack.insert("found".into(), 2);
        counters.snmp.insert("Udp.InDatagrams".into(), 9); // traffic, not evidence
        old.reports[0].counters = vec![("router".into(), counters)];
        new.reports[0].events = vec![
            ("server".into(), "tcp_send_reset reason=NO_SOCKET".into(), 3),
            ("server".into(), "icmp_send type=3 code=3".into(), 1), // only one kernel has it
        ];
        new.events_available.insert("icmp_send".into(), true);
        let changes = diff(&old, &new);
        let summaries: Vec<String> = changes.iter().map(Change::summary).collect();
        assert_eq!(
            summaries,
            vec![
                "iptables/input_drop_icmp_nft: router: counter conntrack.found 2 -> 0",
                "iptables/input_drop_icmp_nft: server: event tcp_send_reset reason=NO_SOCKET 0 -> 3",
            ]
        );
        assert_eq!(unaccepted(&changes, &BTreeSet::new()).len(), 2);
    }
}
