//! Tables across the kernel matrix, from one saved run per kernel (`dropspec run --json`,
//! as `ci/kernel-docs.sh` makes them): how each of Retina's hook points attached on each
//! kernel, and which drop reasons each kernel has, which the suite exercises, and which
//! are new since the kernel before it and exercised by no scenario.
//!
//! Runs are given oldest kernel first; nothing here knows a kernel by its number: what a
//! kernel has is what its run says (reasons from its BTF, attachments from its probe).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::diff::SavedRun;

/// Markdown: one row per hook point, one column per kernel; a cell says how the point
/// attached (`fexit`, `kprobe`, with why fexit was passed over) or why it did not.
pub fn hook_table(runs: &[SavedRun]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = runs.iter().map(|r| r.kernel.as_str()).collect();
    writeln!(out, "| hook point | function | {} |", header.join(" | ")).unwrap();
    writeln!(out, "|---|---|{}", "---|".repeat(runs.len())).unwrap();
    // The family loads once per process: any report with points tells the whole run's.
    let points = |run: &SavedRun| {
        run.reports
            .iter()
            .find(|r| !r.hooks.points.is_empty())
            .map(|r| r.hooks.points.clone())
            .unwrap_or_default()
    };
    let per_run: Vec<_> = runs.iter().map(points).collect();
    let mut rows: Vec<(String, String)> = Vec::new();
    for p in per_run.iter().flatten() {
        if !rows.iter().any(|(h, _)| *h == p.hook) {
            rows.push((p.hook.clone(), p.function.clone()));
        }
    }
    for (hook, function) in rows {
        let cells: Vec<String> = per_run
            .iter()
            .map(|points| match points.iter().find(|p| p.hook == hook) {
                None => "not run".to_owned(),
                Some(p) => match (&p.attached, &p.fallback) {
                    (Ok(how), None) => short_attachment(how).to_owned(),
                    (Ok(how), Some(why)) => {
                        format!("{} ({})", short_attachment(how), cell_text(why))
                    }
                    (Err(why), _) => format!("none: {}", cell_text(why)),
                },
            })
            .collect();
        writeln!(out, "| `{hook}` | `{function}` | {} |", cells.join(" | ")).unwrap();
    }
    out
}

fn short_attachment(how: &str) -> &str {
    if how.contains("fexit") {
        "fexit"
    } else if how.contains("kprobe") {
        "kprobe"
    } else {
        how
    }
}

/// A reason to fit a table cell: one line, no pipes.
fn cell_text(why: &str) -> String {
    why.replace('|', "/").replace('\n', " ")
}

/// What one kernel's run says about reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub kernel: String,
    /// Every reason the kernel has (empty before 5.17).
    pub has: BTreeSet<String>,
    /// Reasons some scenario's drops were reported under.
    pub exercised: BTreeSet<String>,
    /// Reasons this kernel has and the previous one in the list did not.
    pub new: BTreeSet<String>,
}

impl Coverage {
    /// New reasons no scenario exercises on this kernel.
    pub fn new_uncovered(&self) -> impl Iterator<Item = &String> {
        self.new.difference(&self.exercised)
    }
}

/// One [`Coverage`] per run, each compared with the run before it.
pub fn coverage(runs: &[SavedRun]) -> Vec<Coverage> {
    let mut previous: Option<BTreeSet<String>> = None;
    runs.iter()
        .map(|run| {
            // NOT_DROPPED_YET and CONSUMED are frees that are not drops.
            let has: BTreeSet<String> = run
                .reasons
                .keys()
                .filter(|n| !matches!(n.as_str(), "NOT_DROPPED_YET" | "CONSUMED" | "MAX"))
                .cloned()
                .collect();
            let exercised = run
                .reports
                .iter()
                .flat_map(|r| r.drops.iter().map(|d| d.reason.clone()))
                .filter(|r| has.contains(r))
                .collect();
            let new = match &previous {
                Some(before) => has.difference(before).cloned().collect(),
                None => BTreeSet::new(),
            };
            previous = Some(has.clone());
            Coverage {
                kernel: run.kernel.clone(),
                has,
                exercised,
                new,
            }
        })
        .collect()
}

/// Markdown: a summary row per kernel, then per kernel the new reasons no scenario
/// exercises.
pub fn coverage_table(runs: &[SavedRun]) -> String {
    let rows = coverage(runs);
    let mut out = String::new();
    writeln!(
        out,
        "| kernel | reasons it has | exercised by the suite | new since the previous kernel | new and not exercised |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    for c in &rows {
        let has = if c.has.is_empty() {
            "none (no drop reasons before 5.17)".to_owned()
        } else {
            c.has.len().to_string()
        };
        writeln!(
            out,
            "| {} | {has} | {} | {} | {} |",
            c.kernel,
            c.exercised.len(),
            c.new.len(),
            c.new_uncovered().count()
        )
        .unwrap();
    }
    for c in &rows {
        writeln!(out, "\n### {}\n", c.kernel).unwrap();
        let list = |set: Vec<&String>| {
            if set.is_empty() {
                "none".to_owned()
            } else {
                set.iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        writeln!(out, "- exercised: {}", list(c.exercised.iter().collect())).unwrap();
        writeln!(
            out,
            "- new since the previous kernel, not exercised: {}",
            list(c.new_uncovered().collect())
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{DropRow, HookPointRow, Report, Timings};

    fn run(
        kernel: &str,
        reasons: &[&str],
        dropped: &[&str],
        accept: Result<&str, &str>,
    ) -> SavedRun {
        let drops = dropped
            .iter()
            .map(|r| DropRow {
                host: "server".into(),
                reason: (*r).into(),
                reason_number: 0,
                function: "f".into(),
                protocol: "ipv4/udp".into(),
                hook: None,
                packets: 1,
                bytes: 1,
                stack: vec![],
            })
            .collect();
        let mut report = Report {
            scenario: "s".into(),
            description: String::new(),
            kernel: kernel.into(),
            probe: "p".into(),
            reasons_unavailable: None,
            datapath: Vec::new(),
            steps: Vec::new(),
            icmp_send_watched: false,
            reruns: Vec::new(),
            commands: Vec::new(),
            drops,
            traffic: vec![],
            events: vec![],
            causes: vec![],
            counters: vec![],
            global_sysctls: vec![],
            packets: vec![],
            hooks: Default::default(),
            timings: Timings::default(),
        };
        report.hooks.points = vec![HookPointRow {
            hook: "TCP_ACCEPT_BASIC".into(),
            function: "inet_csk_accept".into(),
            attached: accept.map(str::to_owned).map_err(str::to_owned),
            fallback: None,
        }];
        SavedRun {
            kernel: kernel.into(),
            probe: "p".into(),
            reasons: reasons.iter().map(|r| ((*r).to_owned(), 0)).collect(),
            reports: vec![report],
            skipped: Default::default(),
            events_available: Default::default(),
        }
    }

    #[test]
    fn new_reasons_are_counted_from_the_kernel_before() {
        let runs = [
            run("5.10", &[], &["UNAVAILABLE"], Ok("fentry/fexit")),
            run(
                "6.1",
                &["NO_SOCKET", "CONSUMED"],
                &["NO_SOCKET"],
                Ok("fentry/fexit"),
            ),
            run(
                "6.12",
                &["NO_SOCKET", "UDP_CSUM", "TC_EGRESS"],
                &["UDP_CSUM"],
                Err("kprobes | not configured"),
            ),
        ];
        let c = coverage(&runs);
        assert!(c[0].has.is_empty() && c[0].exercised.is_empty());
        assert_eq!(c[1].new.len(), 1, "the first kernel with reasons: all new");
        assert_eq!(
            c[2].new_uncovered().collect::<Vec<_>>(),
            [&"TC_EGRESS".to_owned()]
        );
        let table = coverage_table(&runs);
        assert!(
            table.contains("| 5.10 | none (no drop reasons before 5.17) | 0 | 0 | 0 |"),
            "{table}"
        );
        assert!(table.contains("| 6.12 | 3 | 1 | 2 | 1 |"), "{table}");
        let hooks = hook_table(&runs);
        assert!(
            hooks.contains("| `TCP_ACCEPT_BASIC` | `inet_csk_accept` | fexit | fexit | none: kprobes / not configured |"),
            "{hooks}"
        );
    }
}
