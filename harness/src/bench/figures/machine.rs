//! The first section: what machine, kernel, tools and settings the figures come from.

use std::path::Path;

use dropspec::runner;

use crate::bench::stats::table;
use crate::bench::{Args, Settings};

fn read_first_line(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn command_version(program: &str, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("{program}: not found"))
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn machine_section(args: &Args, settings: &Settings, root: &Path) -> String {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = String::from("## Machine and run\n\n");
    let rows = vec![
        vec!["kernel".into(), runner::kernel_release()],
        vec![
            "CPU".into(),
            format!("{} × {}", cores, read_first_line("/proc/cpuinfo", "model name")),
        ],
        vec!["memory".into(), read_first_line("/proc/meminfo", "MemTotal")],
        vec!["bpftrace".into(), command_version("bpftrace", "--version")],
        vec!["iptables".into(), command_version("iptables", "--version")],
        vec!["dropspec commit".into(), commit],
        vec![
            "command".into(),
            format!(
                "`dropspec bench{}`",
                if args.quick { " --quick" } else { "" }
            ),
        ],
        vec![
            "repetitions".into(),
            format!(
                "{} rounds per scenario (dropspec, floor, collect), {} of the shell way; floods of {} packets × {}; scaling × {}",
                settings.runs,
                settings.shell_runs,
                settings.packets,
                settings.flood_reps,
                settings.scaling_reps
            ),
        ],
        vec!["load average at the start".into(), load_average()],
    ];
    s.push_str(&table(&["", ""], &rows));
    s
}
