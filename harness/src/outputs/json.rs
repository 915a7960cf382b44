//! `dropspec run --format json`: the whole run on stdout. It is a saved run (what
//! `--json FILE` writes, so `dropspec diff` reads it as is) with the verdicts added.

use crate::diff::SavedRun;

use super::{ScenarioResult, Totals};

/// The JSON document: the saved run's fields, then `totals` and `verdicts`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunDocument {
    #[serde(flatten)]
    pub run: SavedRun,
    pub totals: Totals,
    /// One per scenario, in the order they were named.
    pub verdicts: Vec<VerdictEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictEntry {
    pub scenario: String,
    pub path: String,
    /// `passed`, `failed` or `skipped`.
    pub verdict: String,
    /// Why it failed (one line each) or was skipped; empty when it passed.
    pub reasons: Vec<String>,
    /// The report's diff against its snapshot, when they differed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub diff: Option<String>,
}

pub fn document(run: SavedRun, results: &[ScenarioResult]) -> RunDocument {
    RunDocument {
        run,
        totals: Totals::of(results),
        verdicts: results
            .iter()
            .map(|r| VerdictEntry {
                scenario: r.name.clone(),
                path: r.path.display().to_string(),
                verdict: r.word().to_owned(),
                reasons: r.reasons(),
                diff: r.diff.clone(),
            })
            .collect(),
    }
}

pub fn render(document: &RunDocument) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("a run serialises to JSON");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(results: &[ScenarioResult]) -> SavedRun {
        SavedRun {
            kernel: "6.18.44-test".into(),
            probe: "tp_btf/kfree_skb".into(),
            reasons: [("NETFILTER_DROP".to_owned(), 16)].into(),
            reports: results.iter().filter_map(|r| r.report.clone()).collect(),
            skipped: Default::default(),
            events_available: Default::default(),
        }
    }

    #[test]
    fn the_document_is_a_saved_run_for_diff_with_verdicts() {
        let results = super::super::tests::sample();
        let text = render(&document(saved(&results), &results));
        // `dropspec diff` reads it as a saved run.
        let as_saved: SavedRun = serde_json::from_str(&text).unwrap();
        assert_eq!(as_saved.reports.len(), 2);
        let back: RunDocument = serde_json::from_str(&text).unwrap();
        assert_eq!(
            back.totals,
            Totals {
                passed: 1,
                failed: 1,
                skipped: 1
            }
        );
        assert_eq!(back.verdicts[1].verdict, "failed");
        assert_eq!(back.verdicts[1].reasons.len(), 2);
        assert_eq!(
            back.verdicts[2].reasons,
            ["needs root (run as root, or with sudo)"]
        );
        assert_eq!(
            back.verdicts[0].path,
            "scenarios/iptables/input_drop_icmp_nft.toml"
        );
        assert!(back.verdicts[0].diff.is_none());
    }
}
