//! Peak RSS of suite runs and the probe's map memory.

use std::path::Path;

use anyhow::Result;
use dropspec::probes::DropProbe;

use crate::bench::memory;
use crate::bench::progress;
use crate::bench::stats::{fmt_bytes, fmt_ms, ms, table};

pub(crate) fn memory_section(exe: &Path, root: &Path) -> Result<String> {
    let (mut rows, one_file_goal) = super::one_file::one_file(exe, root)?;
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
                "probe map `{}` (type {}, {} entries max{})",
                m.name,
                m.map_type,
                m.max_entries,
                if m.alloc_on_insert {
                    ", allocated on insert"
                } else {
                    ""
                }
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
