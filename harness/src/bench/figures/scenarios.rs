//! Per-scenario cost: dropspec against the shell + bpftrace way and the floor.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use dropspec::probes::DropProbe;

use super::verdict;
use crate::bench::choose::Labelled;
use crate::bench::stats::{fmt_ms, fmt_ratio, median, ms, summarize, table};
use crate::bench::{flood, floor, progress, scenarios, shell, Settings};

pub(crate) fn scenario_section(
    chosen: &[Labelled],
    missing: &[String],
    settings: &Settings,
    work: &Path,
) -> Result<String> {
    let costs = scenarios::measure(
        chosen,
        &scenarios::Plan {
            runs: settings.runs,
            shell_runs: settings.shell_runs,
            work,
        },
        &progress,
    )?;
    let probe = DropProbe::shared()?;
    let mut s = format!(
        "\n## Scenario cost\n\nEach round runs every scenario {}: dropspec (`runner::run`, what `dropspec run` and `cargo test` call, probe shared by the process), the floor (the scenario's kernel operations alone: `unshare`, veth/addresses/routes by netlink, the rules' restore tool, one `sendto`/`connect` per packet, close), a separate collect measurement, and in the first {} rounds the shell way (`ip netns`, `ip link`, iptables-restore/nft, ping/bash `/dev/udp`,`/dev/tcp`, and `bpftrace -e '{}'`). The order of the ways rotates each round. The probe's one-time load ({}) is paid once per process and is not in any scenario's time.\n\n",
        "in turn",
        settings.shell_runs,
        flood::BPFTRACE_ONE_LINER,
        fmt_ms(ms(probe.load_time()))
    );
    if !missing.is_empty() {
        s.push_str(&format!(
            "Not measured, no scenario in this tree: {}.\n\n",
            missing.join("; ")
        ));
    }

    // dropspec phases.
    let mut rows = Vec::new();
    for c in &costs {
        let totals: Vec<f64> = c.dropspec.iter().map(|t| ms(t.total())).collect();
        let t = summarize(&totals);
        let phase = |f: fn(&dropspec::report::Timings) -> Duration| {
            fmt_ms(median(
                &c.dropspec.iter().map(|t| ms(f(t))).collect::<Vec<_>>(),
            ))
        };
        rows.push(vec![
            format!("{} (`{}`)", c.label, c.name),
            t.n.to_string(),
            fmt_ms(t.median),
            fmt_ms(t.p95),
            phase(|t| t.setup),
            phase(|t| t.attach),
            phase(|t| t.traffic),
            phase(|t| t.settle),
            fmt_ms(median(
                &c.collect.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            )),
            phase(|t| t.teardown),
            fmt_ms(median(
                &c.dropspec_cpu.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            )),
            if c.dropspec_failed == 0 {
                "all".into()
            } else {
                format!("**{} failed**", c.dropspec_failed)
            },
        ]);
    }
    s.push_str("### dropspec, per phase (medians)\n\n");
    s.push_str(&table(
        &[
            "scenario",
            "runs",
            "median",
            "p95",
            "setup",
            "attach",
            "traffic",
            "settle (+collect)",
            "collect alone",
            "teardown",
            "CPU time",
            "expectations met",
        ],
        &rows,
    ));
    s.push_str("\n`settle` in the runner includes reading the counters (`collect`); `collect alone` times those reads separately, right after the same traffic. CPU time = user + system time of the process and its tools (iptables-restore, nft) per run; the rest of the wall time is spent waiting.\n");

    // Shell phases.
    if costs.iter().any(|c| !c.shell.is_empty()) {
        let mut rows = Vec::new();
        for c in &costs {
            let t = summarize(&c.shell.iter().map(|r| ms(r.total())).collect::<Vec<_>>());
            let mut row = vec![
                c.name.clone(),
                t.n.to_string(),
                fmt_ms(t.median),
                fmt_ms(t.p95),
            ];
            for i in 0..shell::PHASES.len() {
                row.push(fmt_ms(median(
                    &c.shell.iter().map(|r| ms(r.phases[i])).collect::<Vec<_>>(),
                )));
            }
            row.push(format!("{}/{}", c.shell_saw_expected, c.shell.len()));
            row.push(c.shell_errors.len().to_string());
            rows.push(row);
        }
        s.push_str("\n### The shell + bpftrace way, per phase (medians)\n\n");
        let mut header = vec!["scenario", "runs", "median", "p95"];
        header.extend(shell::PHASES);
        header.push("bpftrace saw the drops");
        header.push("failed runs");
        s.push_str(&table(&header, &rows));
        for c in &costs {
            if let Some(first) = c.shell_errors.first() {
                s.push_str(&format!(
                    "\nA shell-way run of {} failed (not in its figures): {first}\n",
                    c.name
                ));
            }
        }
    }

    // Floor phases.
    let mut rows = Vec::new();
    for c in &costs {
        let t = summarize(&c.floor.iter().map(|f| ms(f.total())).collect::<Vec<_>>());
        let phase = |f: fn(&floor::FloorTimes) -> Duration| {
            fmt_ms(median(
                &c.floor.iter().map(|t| ms(f(t))).collect::<Vec<_>>(),
            ))
        };
        rows.push(vec![
            c.name.clone(),
            t.n.to_string(),
            fmt_ms(t.median),
            fmt_ms(t.p95),
            phase(|t| t.netns),
            phase(|t| t.links),
            phase(|t| t.rules),
            phase(|t| t.traffic),
            phase(|t| t.teardown),
        ]);
    }
    s.push_str("\n### The floor: kernel operations alone (medians)\n\n");
    s.push_str(&table(
        &[
            "scenario",
            "runs",
            "median",
            "p95",
            "namespaces",
            "links, addresses, routes",
            "rules",
            "send",
            "close",
        ],
        &rows,
    ));

    // Ratios.
    let mut rows = Vec::new();
    let (mut shell_ratios, mut floor_ratios, mut medians) = (Vec::new(), Vec::new(), Vec::new());
    for c in &costs {
        let d = median(&c.dropspec.iter().map(|t| ms(t.total())).collect::<Vec<_>>());
        let sh = median(&c.shell.iter().map(|r| ms(r.total())).collect::<Vec<_>>());
        let fl = median(&c.floor.iter().map(|f| ms(f.total())).collect::<Vec<_>>());
        medians.push(d);
        if sh.is_finite() {
            shell_ratios.push(sh / d);
        }
        floor_ratios.push(d / fl);
        rows.push(vec![
            c.name.clone(),
            fmt_ms(d),
            fmt_ms(sh),
            fmt_ratio(sh / d),
            fmt_ms(fl),
            fmt_ratio(d / fl),
        ]);
    }
    s.push_str("\n### Ratios (medians of the same run)\n\n");
    s.push_str(&table(
        &[
            "scenario",
            "dropspec",
            "shell + bpftrace",
            "shell ÷ dropspec",
            "floor",
            "dropspec ÷ floor",
        ],
        &rows,
    ));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // A crafted-packet entry: the traffic phase of a scenario whose only traffic is
    // `[[packets]]`, per entry (opening the AF_PACKET socket and the receiver, sending,
    // and waiting until the kernel is done with the frames).
    let crafted: Vec<(String, f64)> = costs
        .iter()
        .filter(|c| c.crafted_entries > 0)
        .map(|c| {
            let traffic = median(&c.dropspec.iter().map(|t| ms(t.traffic)).collect::<Vec<_>>());
            (c.name.clone(), traffic / c.crafted_entries as f64)
        })
        .collect();
    let worst = floor_ratios
        .iter()
        .zip(&costs)
        .max_by(|a, b| a.0.total_cmp(b.0))
        .map(|(_, c)| c.name.clone())
        .unwrap_or_default();
    s.push_str(&format!(
        "\nTargets: dropspec ≥ 20× faster than the shell way: slowest ratio {} ({}); median ≤ 50 ms: largest median {} ({}); within 2× of the floor: largest ratio {} ({}).\n",
        fmt_ratio(min(&shell_ratios)),
        verdict(min(&shell_ratios) >= 20.0),
        fmt_ms(max(&medians)),
        verdict(max(&medians) <= 50.0),
        fmt_ratio(max(&floor_ratios)),
        verdict(max(&floor_ratios) <= 2.0),
    ));
    if max(&floor_ratios) > 2.0 {
        s.push_str(&format!(
            "The largest ratio is `{worst}`'s; its per-phase row above shows where its time goes beyond the floor's.\n"
        ));
    }
    for (name, per_entry) in &crafted {
        s.push_str(&format!(
            "Crafted-packet entry (`{name}`, traffic phase per `[[packets]]` entry): {} (target ≤ 3 ms: {}).\n",
            fmt_ms(*per_entry),
            verdict(*per_entry <= 3.0),
        ));
    }
    Ok(s)
}
