//! Where a flood's CPU time goes, from `perf record -e cpu-clock` around a flood worker:
//! on veth the whole receive path and the drop run in the sending process's context, so
//! its samples cover the probe's cost. (cpu-clock is a software timer event: it works in
//! virtual machines without hardware counters, like this one.)

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::flood::Mode;

/// One symbol's share of the samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub percent: f64,
    pub name: String,
}

/// What the kernel spends on a kfree_skb probe, grouped.
pub const CATEGORIES: [&str; 3] = [
    "BPF programs on kfree_skb",
    "BPF helpers and map lookups",
    "tracepoint dispatch to BPF",
];

/// Which of [`CATEGORIES`] a kernel symbol counts towards, if any.
pub fn category(symbol: &str) -> Option<usize> {
    if symbol.starts_with("bpf_prog_") {
        return Some(0);
    }
    const HELPERS: &[&str] = &[
        "bpf_probe_read_kernel",
        "copy_from_kernel_nofault",
        "__htab_map_lookup_elem",
        "htab_map_lookup_elem",
        "htab_percpu_map_lookup_elem",
        "lookup_nulls_elem_raw",
        "lookup_elem_raw",
        "htab_map_hash",
        "jhash",
        "bpf_get_current_task",
        "percpu_array_map_lookup_elem",
        "htab_lru_map_lookup_elem",
    ];
    if HELPERS.iter().any(|h| symbol.starts_with(h)) {
        return Some(1);
    }
    const DISPATCH: &[&str] = &[
        "bpf_trace_run",
        "__bpf_trace_",
        "trace_call_bpf",
        "perf_trace_",
        "perf_swevent_",
        "perf_tp_event",
        "__bpf_prog_enter",
        "__bpf_prog_exit",
        "bpf_prog_run",
        "__traceiter_kfree_skb",
        "migrate_disable",
        "migrate_enable",
    ];
    DISPATCH.iter().any(|d| symbol.starts_with(d)).then_some(2)
}

/// Profiles one flood worker of `packets` in `mode`; returns its symbols, largest first.
pub fn profile_flood(exe: &Path, work: &Path, mode: Mode, packets: u64) -> Result<Vec<Symbol>> {
    let data = work.join(format!("perf-{}.data", mode.name()));
    let status = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "4999", "-o"])
        .arg(&data)
        .arg("--")
        .arg(exe)
        .args([
            "bench",
            "--flood-worker",
            mode.name(),
            "--packets",
            &packets.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running perf record (apt-get install linux-perf)")?;
    if !status.status.success() {
        bail!(
            "perf record failed: {}",
            String::from_utf8_lossy(&status.stderr).trim()
        );
    }
    let report = Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "sym", "-i"])
        .arg(&data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running perf report")?;
    let _ = std::fs::remove_file(&data);
    Ok(parse_report(&String::from_utf8_lossy(&report.stdout)))
}

/// `     3.45%  [k] bpf_prog_e6de1db5a524c3b9_dropspec_tpbtf` lines of `perf report`.
fn parse_report(text: &str) -> Vec<Symbol> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start();
            let (percent, rest) = line.split_once('%')?;
            let percent: f64 = percent.trim().parse().ok()?;
            let rest = rest.trim_start();
            let name = rest
                .strip_prefix("[k]")
                .or_else(|| rest.strip_prefix("[.]"))?
                .trim();
            Some(Symbol {
                percent,
                name: name.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_and_categories() {
        let text = "# Samples: 4K of event 'cpu-clock'\n#\n     4.31%  [k] perf_swevent_event\n     3.45%  [k] bpf_prog_e6de1db5a524c3b9_dropspec_tpbtf\n     2.55%  [k] bpf_probe_read_kernel\n     0.50%  [.] main\n";
        let symbols = parse_report(text);
        assert_eq!(symbols.len(), 4);
        assert_eq!(symbols[1].name, "bpf_prog_e6de1db5a524c3b9_dropspec_tpbtf");
        assert_eq!(symbols[1].percent, 3.45);
        assert_eq!(category(&symbols[0].name), Some(2));
        assert_eq!(category(&symbols[1].name), Some(0));
        assert_eq!(category(&symbols[2].name), Some(1));
        assert_eq!(category("udp_sendmsg"), None);
    }
}
