//! Issue 15's one-file goal: `dropspec run FILE` as a whole process, its wall time and
//! peak RSS, and where its time goes, from the process's own timing lines
//! (`DROPSPEC_INTERNAL_SPANS`: probe loads, kallsyms read, the runner's phases).

use std::path::Path;

use anyhow::{Context, Result};

use crate::bench::guests::{parse_spans, Process};
use crate::bench::memory;
use crate::bench::progress;
use crate::bench::stats::{fmt_bytes, fmt_ms, median, ms, table};

/// The scenario of issue 15's one-file goal.
const ONE_FILE: &str = "scenarios/iptables/input_drop_icmp_nft.toml";
/// Whole-process runs of it measured.
const ONE_FILE_RUNS: usize = 5;

/// One run: its wall time (from outside) and its own lines.
struct Run {
    wall: f64,
    process: Process,
}

/// The memory part's first row, the goal's sentence and the profile's table.
pub(crate) fn one_file(exe: &Path, root: &Path) -> Result<(Vec<Vec<String>>, String)> {
    let args = ["run", ONE_FILE];
    let spans_path = std::env::temp_dir().join(format!(
        "dropspec-{}-bench-one-file.jsonl",
        std::process::id()
    ));
    let mut walls = Vec::new();
    let mut peaks = Vec::new();
    let mut runs = Vec::new();
    let mut failed = 0;
    for round in 0..ONE_FILE_RUNS {
        progress(&format!(
            "memory: `dropspec run {ONE_FILE}` {}/{ONE_FILE_RUNS}",
            round + 1
        ));
        let _ = std::fs::remove_file(&spans_path);
        let run = memory::peak_rss_with_env(
            exe,
            root,
            &args,
            &[(dropspec::spans::ENV, spans_path.as_path())],
        );
        let text = std::fs::read_to_string(&spans_path).unwrap_or_default();
        let _ = std::fs::remove_file(&spans_path);
        let run = run?;
        walls.push(ms(run.wall));
        peaks.push(run.max_rss);
        failed += usize::from(!run.status.success());
        // The `--peak-rss-of` parent writes its start line too; the run is the process
        // that ran the scenario.
        let process = parse_spans(&text)?
            .into_iter()
            .find(|p| p.what == "dropspec" && !p.run_spans.is_empty())
            .context("`dropspec run` wrote no timing line for its scenario")?;
        runs.push(Run {
            wall: ms(run.wall),
            process,
        });
    }
    let wall = median(&walls);
    let peak = peaks.iter().copied().max().unwrap_or(0);
    let rows = vec![vec![
        format!("`dropspec run {ONE_FILE}` × {ONE_FILE_RUNS}, whole process"),
        fmt_bytes(peak),
        format!(
            "wall median {} (runs: {}); {failed} failed",
            fmt_ms(wall),
            walls
                .iter()
                .map(|w| fmt_ms(*w))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ]];
    let verdict = |met: bool| if met { "met" } else { "**missed**" };
    let mut text = format!(
        "\nGoal (issue 15), one file as a whole process ≤ 60 ms and ≤ 25 MiB: wall {} ({}), peak RSS {} ({}).\n",
        fmt_ms(wall),
        verdict(wall <= 60.0 && failed == 0),
        fmt_bytes(peak),
        verdict(peak <= 25 << 20),
    );
    text.push_str(&profile(&runs));
    Ok((rows, text))
}

/// Where one run's time goes, medians over the runs.
fn profile(runs: &[Run]) -> String {
    let med = |f: &dyn Fn(&Run) -> f64| fmt_ms(median(&runs.iter().map(f).collect::<Vec<_>>()));
    let first_run = |r: &Run| {
        r.process
            .run_spans
            .first()
            .map_or((0.0, 0.0), |s| (s.1, s.2.total))
    };
    let phases = |r: &Run| r.process.phases();
    // A step that may not run (no hook point to load, kallsyms kept for this boot): the
    // median of the runs that ran it, or what was not done.
    let step = |name: &str, not_done: &str| {
        fmt_step(
            &runs
                .iter()
                .map(|r| r.process.span_ms(name))
                .collect::<Vec<_>>(),
            not_done,
        )
    };
    let rows: Vec<Vec<String>> = [
        (
            "main → the scenario starting (CLI, policy, TOML, names check)",
            med(&|r| first_run(r).0),
        ),
        ("the scenario (`runner::run`)", med(&|r| first_run(r).1)),
        ("– setup", med(&|r| phases(r).setup)),
        (
            "– attach (the watchers; the probe loads below are in it)",
            med(&|r| phases(r).attach),
        ),
        (
            "– – drop probe load (BTF read and parsed, cut for aya, programs loaded and attached)",
            step("drop probe load", "not loaded"),
        ),
        (
            "– – hook-point probe load",
            step("hook probe load", "not loaded"),
        ),
        ("– traffic", med(&|r| phases(r).traffic)),
        (
            "– settle (completion, counters)",
            med(&|r| phases(r).settle),
        ),
        ("– teardown", med(&|r| phases(r).teardown)),
        (
            "– outside its phases (report: drops named by kallsyms)",
            med(&|r| {
                let p = phases(r);
                p.total - p.setup - p.attach - p.traffic - p.settle - p.teardown
            }),
        ),
        (
            "kallsyms read (its own thread, from the drop probe's load on)",
            step("kallsyms read", "not read (cached for this boot)"),
        ),
        (
            "kallsyms of this boot read (`/run/dropspec-kallsyms`, instead of the above)",
            step("kallsyms of this boot read", "not read"),
        ),
        (
            "after the scenario to its last line (verdict, output)",
            med(&|r| r.process.last_ms() - first_run(r).0 - first_run(r).1),
        ),
        (
            "exec → main, and last line → exit (probes detached, memory freed)",
            med(&|r| r.wall - r.process.last_ms()),
        ),
        ("whole process (wall, from outside)", med(&|r| r.wall)),
    ]
    .into_iter()
    .map(|(what, v)| vec![what.to_owned(), v])
    .collect();
    format!(
        "\nWhere one `dropspec run {ONE_FILE}` spends its time: the process's own timing lines (`DROPSPEC_INTERNAL_SPANS`, JSON), medians of the {} runs above; each line's median is taken on its own, so they need not add up exactly.\n\n{}",
        runs.len(),
        table(&["part of the process", "median"], &rows)
    )
}

/// A step's median over the runs that ran it; `not_done` when none did, and how many
/// did when only some did (the first run of a boot reads kallsyms, the later ones keep
/// it).
fn fmt_step(samples: &[Option<f64>], not_done: &str) -> String {
    let done: Vec<f64> = samples.iter().flatten().copied().collect();
    if done.is_empty() {
        not_done.to_owned()
    } else if done.len() == samples.len() {
        fmt_ms(median(&done))
    } else {
        format!(
            "{} in {} of {} runs; {not_done} in the others",
            fmt_ms(median(&done)),
            done.len(),
            samples.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fmt_step;

    #[test]
    fn a_step_not_done_is_not_a_time() {
        let not_done = "not read (cached for this boot)";
        assert_eq!(fmt_step(&[None, None, None], not_done), not_done);
        assert_eq!(
            fmt_step(&[Some(80.0), Some(90.0), Some(100.0)], not_done),
            "90.0 ms"
        );
        assert_eq!(
            fmt_step(&[Some(80.0), None, None], not_done),
            "80.0 ms in 1 of 3 runs; not read (cached for this boot) in the others"
        );
        // A step that ran and took no measurable time is still a time.
        assert_eq!(fmt_step(&[Some(0.0)], not_done), "0.00 ms");
    }
}
