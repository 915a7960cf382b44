//! Peak RSS of suite runs and the probe's map memory.

use std::path::Path;

use anyhow::Result;
use dropspec::probes::DropProbe;

use crate::bench::memory;
use crate::bench::progress;
use crate::bench::stats::{fmt_bytes, fmt_ms, ms, table};

/// The scenario of issue 15's one-file goal.
const ONE_FILE: &str = "scenarios/iptables/input_drop_icmp_nft.toml";
/// Whole-process runs of it measured.
const ONE_FILE_RUNS: usize = 5;

/// `dropspec run FILE` as a whole process, several times: wall time and peak RSS, with
/// issue 15's goal (≤ 60 ms, ≤ 25 MiB). The shell + bpftrace way's figure for the same
/// file is its row in the scenario part.
fn one_file_rows(exe: &Path, root: &Path) -> Result<(Vec<Vec<String>>, String)> {
    let args = ["run", ONE_FILE];
    let mut walls = Vec::new();
    let mut peaks = Vec::new();
    let mut failed = 0;
    for round in 0..ONE_FILE_RUNS {
        progress(&format!(
            "memory: `dropspec run {ONE_FILE}` {}/{ONE_FILE_RUNS}",
            round + 1
        ));
        let run = memory::peak_rss_via_small_parent(exe, root, &args)?;
        walls.push(ms(run.wall));
        peaks.push(run.max_rss);
        failed += usize::from(!run.status.success());
    }
    let mut sorted = walls.clone();
    sorted.sort_by(f64::total_cmp);
    let wall = sorted[sorted.len() / 2];
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
    let goal = format!(
        "\nGoal (issue 15), one file as a whole process ≤ 60 ms and ≤ 25 MiB: wall {} ({}), peak RSS {} ({}).{}\n",
        fmt_ms(wall),
        verdict(wall <= 60.0 && failed == 0),
        fmt_bytes(peak),
        verdict(peak <= 25 << 20),
        if peak > 25 << 20 || wall > 60.0 {
            " What is left: aya 0.14 parses the kernel's whole BTF in every `EbpfLoader::new()` and in its feature probe, however little BTF it is then given (about 20 ms and 13 MiB each, twice per run: the drop probe and the hook probe), and /proc/kallsyms is read once (40-120 ms here) to name the drops."
        } else {
            ""
        }
    );
    Ok((rows, goal))
}

pub(crate) fn memory_section(exe: &Path, root: &Path) -> Result<String> {
    let (mut rows, one_file_goal) = one_file_rows(exe, root)?;
    let runs: [(&[&str], &str); 6] = [
        (&["run", "scenarios/", "--jobs", "1"], "the suite"),
        (&["run", "scenarios/", "--jobs", "2"], "the suite"),
        (&["check", "scenarios/"], "parsing only, for comparison"),
        (
            &["reasons"],
            "reads and parses the kernel's BTF, no probe: for comparison",
        ),
        (
            &["bench", "--flood-worker", "none", "--packets", "1000"],
            "namespaces, a rule, 1,000 packets, no probe: for comparison",
        ),
        (
            &["bench", "--flood-worker", "dropspec", "--packets", "1000"],
            "the same with dropspec's probe loaded: for comparison",
        ),
    ];
    for (args, what) in runs {
        let command = format!("dropspec {}", args.join(" "));
        progress(&format!("memory: `{command}`"));
        let run = memory::peak_rss_via_small_parent(exe, root, args)?;
        rows.push(vec![
            format!("`{command}`, peak RSS"),
            fmt_bytes(run.max_rss),
            format!(
                "{what}; {} in {}",
                if run.status.success() {
                    "passed"
                } else {
                    "FAILED"
                },
                fmt_ms(ms(run.wall))
            ),
        ]);
    }
    // The probe's maps as this process holds them (loaded by the scenario part, or now).
    DropProbe::shared()?;
    let maps = memory::probe_maps()?;
    let total: u64 = maps.iter().map(|m| m.memlock).sum();
    for m in &maps {
        rows.push(vec![
            format!(
                "probe map `{}` (type {}, {} entries max)",
                m.name, m.map_type, m.max_entries
            ),
            fmt_bytes(m.memlock),
            "kernel memory charged (memlock)".into(),
        ]);
    }
    rows.push(vec![
        "probe maps, total".into(),
        fmt_bytes(total),
        "idle, no slot watched".into(),
    ]);
    if let Some(own) = memory::own_peak_rss() {
        rows.push(vec![
            "this bench process, peak RSS".into(),
            fmt_bytes(own),
            "for scale".into(),
        ]);
    }
    let mut s = String::from("\n## Memory\n\n");
    s.push_str(&table(&["what", "size", "note"], &rows));
    s.push_str(&one_file_goal);
    Ok(s)
}
