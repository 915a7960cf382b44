//! The guests part: the suite's wall time per kernel under TCG against issue 15's 30 s
//! goal, and where it goes, debug and release builds side by side.

use std::time::Duration;

use crate::bench::guests::{GuestRun, Phases};
use crate::bench::stats::table;

/// Issue 15: the suite ≤ 30 s per kernel under TCG.
const GOAL_S: f64 = 30.0;

fn s(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn fmt_s(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v >= 10.0 {
        format!("{v:.0} s")
    } else if v >= 1.0 {
        format!("{v:.1} s")
    } else {
        format!("{:.0} ms", v * 1000.0)
    }
}

fn share(part: f64, whole: f64) -> String {
    if whole > 0.0 && part.is_finite() {
        format!("{} ({:.0} %)", fmt_s(part), 100.0 * part / whole)
    } else {
        fmt_s(part)
    }
}

/// What the guest's processes did, summed over them.
struct Inside {
    trials: usize,
    verdicts: String,
    trials_s: f64,
    phases: Phases,
    drop_load_s: f64,
    hook_load_s: f64,
    datapath_load_s: f64,
    kallsyms_s: f64,
    kallsyms_reads: usize,
    /// The command's time not inside any trial: process starts and exits, libtest.
    outside_trials_s: f64,
    /// The guest's uptime when the first process started.
    first_uptime_s: Option<f64>,
}

fn inside(run: &GuestRun) -> Inside {
    let mut phases = Phases::default();
    let mut verdicts = std::collections::BTreeMap::<String, usize>::new();
    let mut trials_s = 0.0;
    let mut trials = 0;
    let span =
        // A total over the processes: 0 s when none ran the step (the row counts its reads).
        |name: &str| -> f64 {
            run.processes
                .iter()
                .filter_map(|p| p.span_ms(name))
                .fold(0.0, |a, b| a + b)
                / 1000.0
        };
    for p in &run.processes {
        phases.add(&p.phases());
        trials_s += p.trials_ms() / 1000.0;
        trials += p.trials.len();
        for (v, n) in p.verdicts() {
            *verdicts.entry(v).or_default() += n;
        }
    }
    Inside {
        trials,
        verdicts: verdicts
            .iter()
            .map(|(v, n)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        trials_s,
        phases,
        drop_load_s: span("drop probe load"),
        hook_load_s: span("hook probe load"),
        datapath_load_s: span("datapath probe load"),
        kallsyms_s: span("kallsyms read"),
        kallsyms_reads: run
            .processes
            .iter()
            .flat_map(|p| &p.spans)
            .filter(|(n, ..)| n == "kallsyms read")
            .count(),
        outside_trials_s: s(run.outcome.command_time) - trials_s,
        first_uptime_s: run.processes.first().and_then(|p| p.uptime_s),
    }
}

fn slowest(run: &GuestRun, n: usize) -> Vec<(String, Phases, f64, String)> {
    let mut all: Vec<(String, Phases, f64, String)> = run
        .processes
        .iter()
        .flat_map(|p| {
            p.trials.iter().map(move |(name, start, ms, verdict)| {
                let pass = if p.hooks.is_some() {
                    format!("{name} (hooks by kprobe)")
                } else {
                    name.clone()
                };
                (pass, p.runs_within(*start, *ms), *ms, verdict.clone())
            })
        })
        .collect();
    all.sort_by(|a, b| b.2.total_cmp(&a.2));
    all.truncate(n);
    all
}

pub(crate) fn guests_section(runs: &[GuestRun], errors: &[String]) -> String {
    let mut out = String::from("\n## Guests: the suite under TCG\n\n");
    out.push_str(
        "The whole scenario suite in one `dropspec vm` guest (qemu TCG, 2048 MiB), the way `ci/vm-suite.sh` runs it: the suite's test binary (built on the host by `cargo test --no-run`), then the hook-point scenarios again with every point attached by kprobe (`DROPSPEC_HOOKS=kprobe … hook`), with `CI=true DROPSPEC_REQUIRE_PRIVILEGED=1 DROPSPEC_REQUIRE_HOOKS=1`. One run per build. The host side is timed by `dropspec::vm::run` (qemu's power-off is seen at its 100 ms poll); the guest side comes from the test binary's own timing lines (`DROPSPEC_INTERNAL_SPANS`, JSON: each probe load, kallsyms read, runner run with its phases, and trial with its verdict), written into the shared tree.\n\n",
    );
    if runs.is_empty() {
        out.push_str("No guest run finished.\n");
    }
    for e in errors {
        out.push_str(&format!("- a guest run failed: {e}\n"));
    }
    if runs.is_empty() {
        return out;
    }
    let header: Vec<String> = std::iter::once("where the time goes".to_owned())
        .chain(runs.iter().map(|r| {
            format!(
                "{} build, {}, {} vCPU{}",
                r.build.name(),
                r.kernel,
                r.cpus,
                r.filter
                    .as_ref()
                    .map(|f| format!(", filter `{f}`"))
                    .unwrap_or_default()
            )
        }))
        .collect();
    let insides: Vec<Inside> = runs.iter().map(inside).collect();
    let row = |label: &str, f: &dyn Fn(&GuestRun, &Inside) -> String| -> Vec<String> {
        std::iter::once(label.to_owned())
            .chain(runs.iter().zip(&insides).map(|(r, i)| f(r, i)))
            .collect()
    };
    let w = |r: &GuestRun| s(r.wall);
    let rows = vec![
        row(
            "**wall per kernel** (`dropspec vm`: the figure held to the goal)",
            &|r, _| format!("**{}**", fmt_s(w(r))),
        ),
        row("goal ≤ 30 s", &|r, i| {
            let ok = r.outcome.exit_code == 0;
            format!(
                "{}{}",
                if w(r) <= GOAL_S && ok {
                    "met"
                } else {
                    "**missed**"
                },
                if ok {
                    String::new()
                } else {
                    format!(" (the suite exited {})", r.outcome.exit_code)
                }
            ) + &format!("; {} trials: {}", i.trials, i.verdicts)
        }),
        row(
            "host, before (not in the wall): the test binary built (`cargo test --no-run`)",
            &|r, _| fmt_s(s(r.host_build)),
        ),
        row("host: kernel from the cache, initramfs built", &|r, _| {
            share(s(r.outcome.prepare_time), w(r))
        }),
        row("qemu started → the suite starting", &|r, i| {
            share(s(r.outcome.boot_time), w(r))
                + &i.first_uptime_s
                    .map(|u| format!("; guest kernel up {} of it", fmt_s(u)))
                    .unwrap_or_default()
        }),
        row(
            "the command (the suite, then the hook points by kprobe)",
            &|r, _| share(s(r.outcome.command_time), w(r)),
        ),
        row("– in trials (load, run, judge each scenario)", &|r, i| {
            share(i.trials_s, w(r))
        }),
        row(
            "– – runner, setup (namespaces, links, rules)",
            &|r, i| share(i.phases.setup / 1000.0, w(r)),
        ),
        row(
            "– – runner, attach (watchers; the probe loads below are in it)",
            &|r, i| share(i.phases.attach / 1000.0, w(r)),
        ),
        row(
            "– – – drop probe loads (BTF parsed, programs loaded)",
            &|_, i| fmt_s(i.drop_load_s),
        ),
        row("– – – hook-point probe loads", &|_, i| {
            fmt_s(i.hook_load_s)
        }),
        row("– – – datapath probe loads", &|_, i| {
            fmt_s(i.datapath_load_s)
        }),
        row("– – runner, traffic", &|r, i| {
            share(i.phases.traffic / 1000.0, w(r))
        }),
        row("– – runner, settle (completion, counters)", &|r, i| {
            share(i.phases.settle / 1000.0, w(r))
        }),
        row("– – runner, teardown", &|r, i| {
            share(i.phases.teardown / 1000.0, w(r))
        }),
        row(
            "– – runner, outside its phases (report, naming)",
            &|r, i| {
                let p = &i.phases;
                share(
                    (p.total - p.setup - p.attach - p.traffic - p.settle - p.teardown) / 1000.0,
                    w(r),
                )
            },
        ),
        row(
            "– – trial outside the runner (TOML, names check, verdict, snapshot)",
            &|r, i| share(i.trials_s - i.phases.total / 1000.0, w(r)),
        ),
        row(
            "– – kallsyms reads (own thread; overlap the above)",
            &|_, i| format!("{} in {} read(s)", fmt_s(i.kallsyms_s), i.kallsyms_reads),
        ),
        row(
            "– outside trials (processes starting and exiting, libtest)",
            &|r, i| share(i.outside_trials_s, w(r)),
        ),
        row("exit code seen → qemu gone (power-off)", &|r, _| {
            share(s(r.outcome.shutdown_time), w(r))
        }),
        row("runner runs (scenarios, reruns included)", &|_, i| {
            i.phases.runs.to_string()
        }),
    ];
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    out.push_str(&table(&header_refs, &rows));

    for (r, i) in runs.iter().zip(&insides) {
        out.push_str(&format!(
            "\nThe 10 slowest trials, {} build (of {}; phases are the runner's, summed over the runs made within the trial):\n\n",
            r.build.name(),
            i.trials
        ));
        let rows: Vec<Vec<String>> = slowest(r, 10)
            .into_iter()
            .map(|(name, ph, ms, verdict)| {
                let f = |v: f64| format!("{:.0} ms", v);
                vec![
                    format!("`{name}`"),
                    verdict,
                    f(ms),
                    f(ph.setup),
                    f(ph.attach),
                    f(ph.traffic),
                    f(ph.settle),
                    f(ph.teardown),
                    f(ms - ph.total),
                    ph.runs.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "trial",
                "verdict",
                "wall",
                "setup",
                "attach",
                "traffic",
                "settle",
                "teardown",
                "outside the runner",
                "runs",
            ],
            &rows,
        ));
        if r.outcome.exit_code != 0 {
            out.push_str("\nThe console's last lines:\n\n```\n");
            out.push_str(&r.console_tail.join("\n"));
            out.push_str("\n```\n");
        }
    }
    if let [debug, release] = runs {
        if debug.build != release.build {
            out.push_str(&format!(
                "\nRelease ÷ debug build: wall {:.2}×, the command {:.2}×.\n",
                s(release.wall) / s(debug.wall),
                s(release.outcome.command_time) / s(debug.outcome.command_time)
            ));
        }
    }
    let whole: Vec<&GuestRun> = runs
        .iter()
        .filter(|r| r.filter.is_none() && r.outcome.exit_code == 0)
        .collect();
    if whole.is_empty() {
        out.push_str("\nGoal (issue 15), the suite ≤ 30 s per kernel under TCG: not judged (no whole-suite run passed here).\n");
    } else {
        let best = whole
            .iter()
            .map(|r| s(r.wall))
            .fold(f64::INFINITY, f64::min);
        out.push_str(&format!(
            "\nGoal (issue 15), the suite ≤ 30 s per kernel under TCG: best {} ({}).\n",
            fmt_s(best),
            if best <= GOAL_S { "met" } else { "**missed**" }
        ));
    }
    out
}
