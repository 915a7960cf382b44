//! Flake detection: the same scenario run several times must give the same counts and
//! the same outcome. Both front ends (`dropspec run --repeat N`, `DROPSPEC_REPEAT=N
//! cargo test`) call [`variations`], so "what varied" is decided in one place.
//!
//! What is compared is the outcome (passed, failed, skipped) and the snapshot text (every
//! count the kernel gave: drops, causes, counters, traffic and packet outcomes). A line
//! is keyed by its text with its counts taken out, so `delivered 0, errors 3` and
//! `delivered 0, errors 0` of the same entry are one line whose values varied.

use std::collections::BTreeMap;

/// One run of a scenario: its outcome word and, if it ran, its snapshot text.
#[derive(Debug, Clone)]
pub struct Run {
    pub outcome: &'static str,
    pub snapshot: Option<String>,
}

/// Everything that varied across `runs`, one line each, with every value seen and in
/// how many runs; empty when all runs agreed.
pub fn variations(runs: &[Run]) -> Vec<String> {
    let mut found = Vec::new();
    let outcomes = tally(runs.iter().map(|r| r.outcome.to_owned()));
    if outcomes.len() > 1 {
        found.push(format!("outcome: {}", seen(&outcomes)));
    }
    // key -> the line as it read in each run ("(absent)" where a run had none).
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let ran: Vec<&str> = runs.iter().filter_map(|r| r.snapshot.as_deref()).collect();
    for (i, text) in ran.iter().enumerate() {
        let mut occurrences: BTreeMap<String, usize> = BTreeMap::new();
        for line in text.lines() {
            let key = key(line);
            let n = occurrences.entry(key.clone()).or_default();
            *n += 1;
            let key = format!("{key}#{n}");
            let values = lines.entry(key).or_default();
            values.resize(i, "(absent)".to_owned());
            values.push(line.trim().to_owned());
        }
    }
    for (key, mut values) in lines {
        values.resize(ran.len(), "(absent)".to_owned());
        let tallied = tally(values.into_iter());
        if tallied.len() > 1 {
            let label = key.rsplit_once('#').map_or(key.as_str(), |(k, _)| k);
            found.push(format!("{}: {}", label.trim(), seen(&tallied)));
        }
    }
    found
}

/// A line with its counts (whole-word numbers, `+3`, `4,`) replaced by `#`.
fn key(line: &str) -> String {
    line.split(' ')
        .map(|word| {
            let bare = word.trim_start_matches('+').trim_end_matches(',');
            if !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_digit()) {
                word.replace(bare, "#")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn tally(values: impl Iterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts
}

fn seen(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(v, n)| format!("`{v}` in {n} run(s)"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: &'static str, text: &str) -> Run {
        Run {
            outcome,
            snapshot: Some(text.to_owned()),
        }
    }

    #[test]
    fn agreeing_runs_have_no_variations() {
        let text = "drops:\n  router  NEIGH_FAILED  neigh_invalidate  3 packets\n";
        assert!(variations(&[run("passed", text), run("passed", text)]).is_empty());
    }

    #[test]
    fn a_varying_count_and_outcome_are_named_with_the_values_seen() {
        let a = "drops:\n  router  NEIGH_FAILED  neigh_invalidate  3 packets  180 bytes\n  #1 client -> 198.18.2.2:5000 udp x3: delivered 0, errors 3\n";
        let b = "drops:\n  #1 client -> 198.18.2.2:5000 udp x3: delivered 0, errors 0\n";
        let found = variations(&[run("passed", a), run("passed", a), run("failed", b)]);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert_eq!(
            found[0],
            "outcome: `failed` in 1 run(s), `passed` in 2 run(s)"
        );
        assert!(found.iter().any(|f| f
            .starts_with("#1 client -> 198.18.2.2:5000 udp x3: delivered #, errors #:")
            && f.contains(
                "`#1 client -> 198.18.2.2:5000 udp x3: delivered 0, errors 0` in 1 run(s)"
            )));
        assert!(found
            .iter()
            .any(|f| f.contains("(absent)") && f.contains("NEIGH_FAILED")));
    }
}
