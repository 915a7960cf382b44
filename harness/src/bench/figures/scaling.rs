//! Suite wall time against its size and the number of threads.

use std::path::Path;

use anyhow::{bail, Context, Result};
use dropspec::scenario;

use super::verdict;
use crate::bench::stats::{fmt_ms, fmt_ratio, median, ms, table};
use crate::bench::{progress, scaling, Settings};

pub(crate) fn scaling_section(root: &Path, settings: &Settings, work: &Path) -> Result<String> {
    let sources = scenario::discover(&root.join("scenarios")).context("reading scenarios/")?;
    if sources.is_empty() {
        bail!("no scenarios to copy for the scaling runs");
    }
    let fixtures = root.join("fixtures");
    // Warm-up, not counted: loads the probe (once per process) and reads kallsyms.
    let warm = scaling::generate(&sources, 1, &work.join("scaling-warm-up"), &fixtures)?;
    scaling::run_suite(&warm, 1);
    let mut rows = Vec::new();
    let mut per_scenario = Vec::new();
    let mut speedups = Vec::new();
    for &size in settings.scaling_sizes {
        let dir = work.join(format!("scaling-{size}"));
        let suite = scaling::generate(&sources, size, &dir, &fixtures)?;
        let mut walls = [Vec::new(), Vec::new()];
        let mut failed = 0;
        for rep in 0..settings.scaling_reps {
            for k in 0..2 {
                let threads = 1 + (k + rep) % 2;
                progress(&format!(
                    "scaling: {size} scenarios, {threads} thread(s), round {}/{}",
                    rep + 1,
                    settings.scaling_reps
                ));
                let t = scaling::run_suite(&suite, threads);
                failed += t.failed;
                walls[threads - 1].push(ms(t.wall));
            }
        }
        let (one, two) = (median(&walls[0]), median(&walls[1]));
        per_scenario.push(one / size as f64);
        if size >= 10 {
            speedups.push(one / two);
        }
        rows.push(vec![
            size.to_string(),
            fmt_ms(one),
            fmt_ms(one / size as f64),
            fmt_ms(two),
            fmt_ms(two / size as f64),
            fmt_ratio(one / two),
            failed.to_string(),
        ]);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut s = format!(
        "\n## Scaling\n\nSuites of generated copies of the project's {} scenario files (cycled), run through `runner::run` by 1 or 2 threads sharing one queue, as `dropspec run --jobs N` does; median of {} suite runs each.\n\n",
        sources.len(),
        settings.scaling_reps
    );
    s.push_str(&table(
        &[
            "scenarios",
            "1 thread",
            "per scenario",
            "2 threads",
            "per scenario",
            "speedup",
            "failed runs",
        ],
        &rows,
    ));
    let spread = per_scenario
        .iter()
        .skip(1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let min_speedup = speedups.iter().copied().fold(f64::INFINITY, f64::min);
    s.push_str(&format!(
        "\nPer-scenario time from 10 to {} scenarios stays within {}–{} (linear growth); 2-thread speedup at ≥ 10 scenarios: at least {} (target ≥ 1.6×: {}).\n",
        settings.scaling_sizes.last().unwrap_or(&0),
        fmt_ms(spread.0),
        fmt_ms(spread.1),
        fmt_ratio(min_speedup),
        verdict(min_speedup >= 1.6),
    ));
    Ok(s)
}
