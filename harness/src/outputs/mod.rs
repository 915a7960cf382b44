//! What a finished `dropspec run` leaves for CI: the whole run as JSON ([`json`]), a JUnit
//! report ([`junit`]), a Markdown job summary ([`summary`]) and the observed drops in
//! Prometheus text format under Retina's metric names ([`metrics`]).
//!
//! Every renderer takes the same [`ScenarioResult`]s (the one verdict, from
//! `verdict::judge`, and the report when there is one) and returns text; none decides
//! anything or prints. The front end chooses where each text goes.

use std::path::PathBuf;
use std::time::Duration;

use crate::report::Report;
use crate::verdict::Verdict;

pub mod json;
pub mod junit;
pub mod metrics;
pub mod progress;
pub mod summary;

/// One scenario of a run: its verdict and what led to it.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// `iptables/input_drop_icmp_nft`.
    pub name: String,
    /// The file, relative to the project root where it lies inside it
    /// (`scenarios/iptables/input_drop_icmp_nft.toml`).
    pub path: PathBuf,
    pub verdict: Verdict,
    /// The baseline comparison's diff, when the report differed from its snapshot.
    pub diff: Option<String>,
    /// None when the scenario could not run (a skip or a run error).
    pub report: Option<Report>,
}

impl ScenarioResult {
    /// Time the scenario took, zero when it did not run.
    pub fn time(&self) -> Duration {
        self.report
            .as_ref()
            .map_or(Duration::ZERO, |r| r.timings.total())
    }

    /// `passed`, `failed` or `skipped`.
    pub fn word(&self) -> &'static str {
        match self.verdict {
            Verdict::Passed => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::Skipped(_) => "skipped",
        }
    }

    /// The verdict's reasons: every failure line, or the skip's reason.
    pub fn reasons(&self) -> Vec<String> {
        match &self.verdict {
            Verdict::Passed => Vec::new(),
            Verdict::Failed(problems) => problems.clone(),
            Verdict::Skipped(why) => vec![why.clone()],
        }
    }
}

/// How many scenarios passed, failed and were skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Totals {
    pub fn of(results: &[ScenarioResult]) -> Totals {
        let mut totals = Totals::default();
        for r in results {
            match r.verdict {
                Verdict::Passed => totals.passed += 1,
                Verdict::Failed(_) => totals.failed += 1,
                Verdict::Skipped(_) => totals.skipped += 1,
            }
        }
        totals
    }

    pub fn total(&self) -> usize {
        self.passed + self.failed + self.skipped
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{DropRow, HookReport, HookRow, Timings};

    pub(crate) fn report(scenario: &str, drops: Vec<DropRow>) -> Report {
        Report {
            scenario: scenario.into(),
            description: "a test report".into(),
            kernel: "6.18.44-test".into(),
            probe: "tp_btf/kfree_skb".into(),
            reasons_unavailable: None,
            datapath: Vec::new(),
            steps: Vec::new(),
            icmp_send_watched: false,
            reruns: Vec::new(),
            commands: Vec::new(),
            drops,
            traffic: Vec::new(),
            events: Vec::new(),
            causes: Vec::new(),
            counters: Vec::new(),
            global_sysctls: Vec::new(),
            packets: Vec::new(),
            hooks: HookReport::default(),
            timings: Timings {
                setup: Duration::from_millis(12),
                ..Timings::default()
            },
        }
    }

    pub(crate) fn drop_row(
        host: &str,
        reason: &str,
        function: &str,
        hook: Option<&str>,
    ) -> DropRow {
        DropRow {
            host: host.into(),
            reason: reason.into(),
            reason_number: 1,
            function: function.into(),
            protocol: "ipv4/icmp".into(),
            hook: hook.map(Into::into),
            packets: 3,
            bytes: 252,
            stack: Vec::new(),
        }
    }

    /// A run with one of each verdict, with text that needs escaping everywhere.
    pub(crate) fn sample() -> Vec<ScenarioResult> {
        let mut hooked = report(
            "iptables/input_drop_icmp_nft",
            vec![drop_row(
                "server",
                "NETFILTER_DROP",
                "nft_do_chain",
                Some("ip_local_deliver"),
            )],
        );
        hooked.hooks.counts.push(HookRow {
            host: "server".into(),
            hook: "IPTABLE_RULE_DROP".into(),
            function: "nf_hook_slow".into(),
            ret: 0,
            protocol: "ipv4".into(),
            count: 3,
            bytes: 252,
        });
        vec![
            ScenarioResult {
                name: "iptables/input_drop_icmp_nft".into(),
                path: "scenarios/iptables/input_drop_icmp_nft.toml".into(),
                verdict: Verdict::Passed,
                diff: None,
                report: Some(hooked),
            },
            ScenarioResult {
                name: "routing/a\"b<c>&d".into(),
                path: "scenarios/routing/a\"b<c>&d.toml".into(),
                verdict: Verdict::Failed(vec![
                    "expected 3 drops of NO_SOCKET at server, saw 0 <none> & \"quoted\"".into(),
                    "the report differs from snapshots/x.snap (diff below) | a pipe".into(),
                ]),
                diff: Some("-drops: none\n+drops:\n".into()),
                report: Some(report(
                    "routing/a\"b<c>&d",
                    vec![drop_row(
                        "router\\1",
                        "IP_OUTNOROUTES",
                        "ip_route_output",
                        Some("__ip_local_out"),
                    )],
                )),
            },
            ScenarioResult {
                name: "tc/ingress_drop".into(),
                path: "scenarios/tc/ingress_drop.toml".into(),
                verdict: Verdict::Skipped("needs root (run as root, or with sudo)".into()),
                diff: None,
                report: None,
            },
        ]
    }

    #[test]
    fn totals_count_each_verdict() {
        let totals = Totals::of(&sample());
        assert_eq!(
            totals,
            Totals {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
        assert_eq!(totals.to_string(), "1 passed, 1 failed, 1 skipped");
    }
}
