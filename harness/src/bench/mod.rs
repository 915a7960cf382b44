//! `dropspec bench`: every figure in BENCHMARKS.md, measured side by side in one run.
//!
//! Absolute times drift on shared machines, so each part compares ways of doing the same
//! thing within one run, interleaved: dropspec against the shell + bpftrace way and the
//! kernel-only floor per scenario ([`scenarios`]); flood rates with no probe, dropspec's
//! and bpftrace's ([`flood`]); suite wall time against size and threads ([`scaling`]);
//! and memory ([`memory`]). The output is markdown; `--write BENCHMARKS.md` puts it
//! between the file's `bench:figures` markers.
//!
//! The parts run in this order because dropspec's probe, once loaded in a process, stays
//! attached for its life: the floods run first, each in a child process, while this
//! process has loaded no probe yet.

mod flood;
mod floor;
mod memory;
mod profile;
mod scaling;
mod scenarios;
mod shell;
mod stats;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dropspec::probes::DropProbe;
use dropspec::runner;
use dropspec::scenario::{self, Scenario};

use stats::{fmt_bytes, fmt_ms, fmt_ratio, median, ms, summarize, table};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Scenario files or directories whose cost to measure one by one (default: one
    /// scenario of each representative kind that exists under scenarios/).
    pub scenarios: Vec<PathBuf>,
    /// A short smoke run: 3 rounds, 1 shell run, 100,000-packet floods, 1 repetition.
    #[arg(long)]
    pub quick: bool,
    /// Run only these parts (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Rounds per scenario of dropspec, the floor and the collect measurement (default 20).
    #[arg(long)]
    pub runs: Option<usize>,
    /// Rounds per scenario of the shell way, which takes ~0.3-1.5 s each (default 5).
    #[arg(long)]
    pub shell_runs: Option<usize>,
    /// Packets per flood (default 1,000,000).
    #[arg(long)]
    pub packets: Option<u64>,
    /// Also write the figures into this file, between its `<!-- bench:figures:begin -->`
    /// and `<!-- bench:figures:end -->` lines (BENCHMARKS.md).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Internal: measure one flood in this mode and print the result (a child process).
    #[arg(long, hide = true, value_enum)]
    pub flood_worker: Option<flood::Mode>,
    /// Internal: namespaces the flood worker's probe watches.
    #[arg(long, hide = true, default_value_t = 1)]
    pub watch: usize,
    /// Internal: rounds of the filter worker.
    #[arg(long, hide = true, default_value_t = 1)]
    pub rounds: usize,
    /// Internal: run `dropspec ARGS` (one string, split on spaces) and print its peak RSS.
    #[arg(long, hide = true)]
    pub peak_rss_of: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Probe cost and accuracy under a drop flood.
    Flood,
    /// Flood rate against the number of namespaces the probe watches.
    Filter,
    /// Where a flood's CPU time goes with each probe (perf record -e cpu-clock).
    Profile,
    /// Per-scenario cost against the shell way and the floor.
    Scenarios,
    /// Suite wall time for 1-100 scenarios with 1 and 2 threads.
    Scaling,
    /// Peak RSS of a suite run and the probe's map memory.
    Memory,
}

/// The representative kinds, and the scenario that stands for each.
const REPRESENTATIVE: &[(&str, &str)] = &[
    ("iptables drop", "iptables/input_drop_icmp_nft.toml"),
    ("iptables drop, routed", "iptables/forward_drop_router.toml"),
    ("nft drop", "nft/input_drop_udp.toml"),
    ("closed port, UDP", "sockets/udp_closed_port.toml"),
    ("closed port, TCP", "sockets/tcp_closed_port.toml"),
    ("checksum", "checksum/udp_v4_short.toml"),
    ("NAT failure", "nat/snat_port_exhaustion.toml"),
];

/// Kinds the issue names whose scenarios may not exist yet: the first scenario whose
/// path has one of these words stands for the kind when there is one. Every kind the
/// issue names now has a scenario in REPRESENTATIVE.
const LATER_KINDS: &[(&str, &[&str])] = &[];

const BEGIN_MARKER: &str = "<!-- bench:figures:begin -->";
const END_MARKER: &str = "<!-- bench:figures:end -->";

struct Settings {
    runs: usize,
    shell_runs: usize,
    packets: u64,
    flood_reps: usize,
    /// The most namespaces the filter measurement watches.
    filter_max: usize,
    filter_reps: usize,
    scaling_sizes: &'static [usize],
    scaling_reps: usize,
}

impl Settings {
    fn new(args: &Args) -> Settings {
        let quick = args.quick;
        Settings {
            runs: args.runs.unwrap_or(if quick { 3 } else { 20 }).max(1),
            shell_runs: args.shell_runs.unwrap_or(if quick { 1 } else { 5 }),
            packets: args
                .packets
                .unwrap_or(if quick { 100_000 } else { 1_000_000 }),
            flood_reps: if quick { 1 } else { 5 },
            filter_max: 1000,
            filter_reps: if quick { 1 } else { 3 },
            scaling_sizes: &[1, 10, 50, 100],
            scaling_reps: if quick { 1 } else { 3 },
        }
    }
}

/// Removes the bench's scratch directory however the bench ends (short of SIGKILL).
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(mode) = args.flood_worker {
        let packets = args.packets.unwrap_or(1_000_000);
        flood::worker(mode, packets, args.watch, args.rounds)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(command) = &args.peak_rss_of {
        let exe = std::env::current_exe().context("finding this program's path")?;
        let args: Vec<&str> = command.split_whitespace().collect();
        let run = memory::child_run(&exe, &std::env::current_dir()?, &args)?;
        println!(
            "peak-rss {} {} {}",
            run.max_rss,
            run.wall.as_secs_f64(),
            run.status.success()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(why) = runner::unavailable_reason() {
        bail!("the benchmarks build real namespaces and probes: {why}");
    }
    let root = super::project_root()?;
    let settings = Settings::new(&args);
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let exe = std::env::current_exe().context("finding this program's path")?;
    for name in shell::reap_own_leftovers()? {
        progress(&format!("removed namespace {name} left by a killed bench"));
    }
    let work = WorkDir(std::env::temp_dir().join(format!("dropspec-bench-{}", std::process::id())));
    std::fs::create_dir_all(&work.0).with_context(|| format!("creating {}", work.0.display()))?;

    // Scenarios are loaded (and validated) before anything is measured.
    let (chosen, missing) = choose_scenarios(&args.scenarios, &root)?;

    let started = Instant::now();
    let mut out = String::new();
    out.push_str(&machine_section(&args, &settings, &root));
    print!("{out}");
    let mut emit = |section: String| {
        print!("{section}");
        out.push_str(&section);
    };

    if wants(Part::Flood) {
        emit(flood_section(&exe, &settings)?);
    }
    if wants(Part::Filter) {
        emit(filter_section(&exe, &settings)?);
    }
    if wants(Part::Profile) {
        emit(profile_section(&exe, &settings, &work.0)?);
    }
    if wants(Part::Scenarios) {
        emit(scenario_section(&chosen, &missing, &settings, &work.0)?);
    }
    if wants(Part::Scaling) {
        emit(scaling_section(&root, &settings, &work.0)?);
    }
    if wants(Part::Memory) {
        emit(memory_section(&exe, &root)?);
    }
    emit(format!(
        "\nBench wall time {:.0} s; load average at the end: {}.\n",
        started.elapsed().as_secs_f64(),
        load_average()
    ));

    if let Some(path) = &args.write {
        write_between_markers(path, &out)?;
        progress(&format!("figures written into {}", path.display()));
    }
    Ok(ExitCode::SUCCESS)
}

/// A scenario with the kind it stands for (or its name, when given on the command line).
type Labelled = (String, Scenario);

/// The scenarios to measure: the given paths, or the representative set; and the kinds
/// the issue names that have no scenario yet.
fn choose_scenarios(paths: &[PathBuf], root: &Path) -> Result<(Vec<Labelled>, Vec<String>)> {
    let load = |files: &[PathBuf]| -> Result<Vec<Scenario>> {
        super::load_all(files, root).map_err(|errors| anyhow::anyhow!(errors.join("\n")))
    };
    if !paths.is_empty() {
        let files = super::scenario_files(paths, root)?;
        let loaded = load(&files)?;
        return Ok((
            loaded.into_iter().map(|s| (s.name.clone(), s)).collect(),
            Vec::new(),
        ));
    }
    let scenarios_dir = root.join("scenarios");
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for (kind, file) in REPRESENTATIVE {
        let path = scenarios_dir.join(file);
        if path.is_file() {
            let s = load(&[path])?.remove(0);
            chosen.push((kind.to_string(), s));
        } else {
            missing.push(format!("{kind} ({file} is gone)"));
        }
    }
    let all = scenario::discover(&scenarios_dir).context("reading scenarios/")?;
    for (kind, words) in LATER_KINDS {
        // A fault, not its negative control, stands for the kind.
        let found = all.iter().find(|p| {
            let relative = p.strip_prefix(&scenarios_dir).unwrap_or(p);
            let relative = relative.to_string_lossy().to_lowercase();
            !relative.contains("control")
                && relative
                    .split(['/', '_', '-', '.'])
                    .any(|w| words.contains(&w))
        });
        match found {
            Some(path) => {
                let s = load(std::slice::from_ref(path))?.remove(0);
                chosen.push((kind.to_string(), s));
            }
            None => missing.push(format!("{kind} (no scenario yet)")),
        }
    }
    Ok((chosen, missing))
}

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

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine_section(args: &Args, settings: &Settings, root: &Path) -> String {
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

fn flood_section(exe: &Path, settings: &Settings) -> Result<String> {
    let modes = [
        flood::Mode::None,
        flood::Mode::Dropspec,
        flood::Mode::Bpftrace,
    ];
    let mut results: Vec<Vec<flood::FloodResult>> = vec![Vec::new(); modes.len()];
    for rep in 0..settings.flood_reps {
        for k in 0..modes.len() {
            // Rotate the order each round so no mode always runs first.
            let m = (k + rep) % modes.len();
            progress(&format!(
                "flood: round {}/{}, {}",
                rep + 1,
                settings.flood_reps,
                modes[m].name()
            ));
            results[m].extend(spawn_worker_with_retry(exe, modes[m], settings.packets)?);
        }
    }
    let wall = |rs: &[flood::FloodResult]| -> Vec<f64> { rs.iter().map(|r| r.pps()).collect() };
    // CPU nanoseconds of the sender per packet: the steadier figure (see FloodResult).
    let cpu_ns =
        |rs: &[flood::FloodResult]| -> Vec<f64> { rs.iter().map(|r| 1e9 / r.cpu_pps()).collect() };
    let wall_base = median(&wall(&results[0]));
    let cpu_base = median(&cpu_ns(&results[0]));
    let mut rows = Vec::new();
    let mut miscounts = 0u64;
    let mut foreign = 0usize;
    for (mode, rs) in modes.iter().zip(&results) {
        let w = summarize(&wall(rs));
        let c = summarize(&cpu_ns(rs));
        foreign = foreign.max(rs.iter().map(|r| r.foreign).max().unwrap_or(0));
        let accuracy = match mode {
            flood::Mode::None | flood::Mode::Filter => "–".to_owned(),
            flood::Mode::Dropspec => {
                let wrong: Vec<String> = rs
                    .iter()
                    .filter(|r| r.dropspec != Some(r.rule))
                    .map(|r| format!("{:?} vs {}", r.dropspec, r.rule))
                    .collect();
                miscounts += rs
                    .iter()
                    .map(|r| r.dropspec.unwrap_or(0).abs_diff(r.rule))
                    .sum::<u64>();
                let other: u64 = rs.iter().filter_map(|r| r.dropspec_other).sum();
                if wrong.is_empty() {
                    format!(
                        "exact in {}/{} floods (other reasons counted: {other})",
                        rs.len(),
                        rs.len()
                    )
                } else {
                    format!("MISCOUNT: {}", wrong.join(", "))
                }
            }
            flood::Mode::Bpftrace => {
                let extra: Vec<String> = rs
                    .iter()
                    .map(|r| match r.bpftrace {
                        Some(b) => format!("{:+}", b as i64 - r.rule as i64),
                        None => "no count".to_owned(),
                    })
                    .collect();
                let killed = rs.iter().filter(|r| r.bpftrace_killed).count();
                let killed = if killed == 0 {
                    String::new()
                } else {
                    format!(
                        " ({killed} of {} bpftrace runs did not exit after SIGINT and were killed; their counts are what they printed)",
                        rs.len()
                    )
                };
                format!(
                    "NETFILTER_DROP machine-wide minus rule counter: {}{killed}",
                    extra.join(", ")
                )
            }
        };
        rows.push(vec![
            mode.name().to_owned(),
            w.n.to_string(),
            format!("{:.0} ns ({:.0}–{:.0})", c.median, c.min, c.max),
            fmt_ratio(c.median / cpu_base),
            format!("{:+.0} ns", c.median - cpu_base),
            format!(
                "{:.3} M/s ({:.3}–{:.3})",
                w.median / 1e6,
                w.min / 1e6,
                w.max / 1e6
            ),
            fmt_ratio(wall_base / w.median),
            accuracy,
        ]);
    }
    let slowdown = |m: usize| median(&cpu_ns(&results[m])) / cpu_base;
    let wall_slowdown = |m: usize| wall_base / median(&wall(&results[m]));
    let mut s = format!(
        "\n## Probe cost and accuracy under a drop flood\n\n{} UDP packets per flood, sent with sendmmsg (batches of 256) from one namespace to a peer whose `INPUT -p udp --dport 9 -j DROP` drops them all. Medians over {} floods per probe, probes in rotating order, each flood in a fresh process. *CPU per packet* is the sending thread's CPU time (user + system; the kernel charges it the softirq receive path and the drop, which run in its context) ÷ packets: time taken by other processes on this shared machine is not in it, so it is the figure the verdict uses. *Wall rate* is packets ÷ flood time, which other processes do disturb. Slowdown is against the same figure with no probe; cost per drop is the CPU time a probe adds to each drop.\n\n",
        settings.packets, settings.flood_reps
    );
    s.push_str(&table(
        &[
            "probe on kfree_skb",
            "floods",
            "CPU per packet (range)",
            "slowdown",
            "cost per drop",
            "wall rate (range)",
            "wall slowdown",
            "count check",
        ],
        &rows,
    ));
    s.push_str(&format!(
        "\nCPU slowdown with dropspec's probe {} vs bpftrace's one-liner {} (wall clock: {} vs {}); target, dropspec's overhead no worse than bpftrace's: {}. Miscounted packets: {miscounts} (target 0: {}). kfree_skb programs of other processes seen during the floods: up to {foreign}.\n",
        fmt_ratio(slowdown(1)),
        fmt_ratio(slowdown(2)),
        fmt_ratio(wall_slowdown(1)),
        fmt_ratio(wall_slowdown(2)),
        verdict(slowdown(1) <= slowdown(2)),
        verdict(miscounts == 0),
    ));
    Ok(s)
}

/// One flood worker, run a second time if the first fails: a worker that failed (a
/// compared tool that would not attach in time, say) measured nothing, so running it
/// again biases nothing, and one slow tool should not cost the whole bench.
fn spawn_worker_with_retry(
    exe: &Path,
    mode: flood::Mode,
    packets: u64,
) -> Result<Vec<flood::FloodResult>> {
    flood::spawn_worker(exe, mode, packets, 1, 1).or_else(|first| {
        progress(&format!(
            "flood: the {} worker failed, running it again: {first:#}",
            mode.name()
        ));
        flood::spawn_worker(exe, mode, packets, 1, 1).with_context(|| {
            format!(
                "the {} flood worker failed twice; first: {first:#}",
                mode.name()
            )
        })
    })
}

fn profile_section(exe: &Path, settings: &Settings, work: &Path) -> Result<String> {
    let perf_works = std::process::Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !perf_works {
        return Ok("\n## Flood profile\n\nNot measured: `perf` is not installed (apt-get install linux-perf).\n".into());
    }
    let modes = [
        flood::Mode::None,
        flood::Mode::Dropspec,
        flood::Mode::Bpftrace,
    ];
    let packets = (settings.packets / 2).max(50_000);
    let mut profiles = Vec::new();
    for mode in modes {
        progress(&format!("profile: flood with {}", mode.name()));
        profiles.push(profile::profile_flood(exe, work, mode, packets)?);
    }
    let share = |symbols: &[profile::Symbol], cat: usize| -> f64 {
        symbols
            .iter()
            .filter(|s| profile::category(&s.name) == Some(cat))
            .map(|s| s.percent)
            .sum()
    };
    let mut rows: Vec<Vec<String>> = profile::CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut row = vec![name.to_string()];
            // `+ 0.0` turns an empty sum's -0.0 into 0.0.
            row.extend(
                profiles
                    .iter()
                    .map(|p| format!("{:.1} %", share(p, i) + 0.0)),
            );
            row
        })
        .collect();
    let mut total = vec!["all of the above".to_owned()];
    total.extend(profiles.iter().map(|p| {
        format!(
            "{:.1} %",
            (0..profile::CATEGORIES.len())
                .map(|i| share(p, i))
                .sum::<f64>()
                + 0.0
        )
    }));
    rows.push(total);
    let mut s = format!(
        "\n## Flood profile: where the CPU time goes\n\n`perf record -e cpu-clock -F 4999` around one flood worker of {packets} packets per probe (the sender's process; on veth the receive path and the drop run in its context). Share of samples:\n\n"
    );
    s.push_str(&table(
        &["kernel symbols", "no probe", "dropspec", "bpftrace"],
        &rows,
    ));
    for (mode, symbols) in modes.iter().zip(&profiles) {
        let top: Vec<String> = symbols
            .iter()
            .filter(|s| profile::category(&s.name).is_some())
            .take(8)
            .map(|s| format!("`{}` {:.1} %", s.name, s.percent))
            .collect();
        s.push_str(&format!(
            "\n- with {}: {}",
            mode.name(),
            if top.is_empty() {
                "no probe symbols sampled".to_owned()
            } else {
                top.join(", ")
            }
        ));
    }
    s.push_str("\n\n`bpf_prog_…_kfree_skb` is bpftrace's program, `bpf_prog_…_dropspec_tp*` dropspec's; any such symbol in the run without a probe belongs to another process on the machine (see the foreign-program count above).\n");
    Ok(s)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn filter_section(exe: &Path, settings: &Settings) -> Result<String> {
    let sizes: Vec<usize> = flood::FILTER_SIZES
        .into_iter()
        .filter(|&n| n <= settings.filter_max)
        .collect();
    progress(&format!(
        "namespace filter: {} rounds of {} floods in one process",
        settings.filter_reps,
        sizes.len()
    ));
    let all = flood::spawn_worker(
        exe,
        flood::Mode::Filter,
        settings.packets,
        settings.filter_max,
        settings.filter_reps,
    )?;
    let results: Vec<Vec<flood::FloodResult>> = sizes
        .iter()
        .map(|&n| all.iter().filter(|r| r.watched == n).cloned().collect())
        .collect();
    let cpu_ns =
        |rs: &[flood::FloodResult]| -> Vec<f64> { rs.iter().map(|r| 1e9 / r.cpu_pps()).collect() };
    let first = median(&cpu_ns(&results[0]));
    let rows: Vec<Vec<String>> = sizes
        .iter()
        .zip(&results)
        .map(|(n, rs)| {
            let c = summarize(&cpu_ns(rs));
            let w = summarize(&rs.iter().map(|r| r.pps()).collect::<Vec<_>>());
            let exact = rs.iter().all(|r| r.dropspec == Some(r.rule));
            vec![
                n.to_string(),
                c.n.to_string(),
                format!("{:.0} ns ({:.0}–{:.0})", c.median, c.min, c.max),
                fmt_ratio(c.median / first),
                format!("{:.3} M/s", w.median / 1e6),
                if exact {
                    "exact".into()
                } else {
                    "**miscount**".into()
                },
                rs.iter()
                    .filter_map(|r| r.maps_memlock)
                    .max()
                    .map_or("–".into(), fmt_bytes),
            ]
        })
        .collect();
    let mut s = String::from(
        "\n## Namespace filter: flood rate against watched namespaces\n\ndropspec's probe watching the flood's receiver plus N − 1 idle namespaces (real ones, so the filter's hash map holds N entries). One process creates all the namespaces first, then floods in rounds, stepping through the sizes in rotating order, so only the number watched differs between floods. Same flood and CPU figure as above; medians over the rounds.\n\n",
    );
    s.push_str(&table(
        &[
            "watched namespaces",
            "floods",
            "CPU per packet (range)",
            "vs 1 watched",
            "wall rate",
            "count",
            "probe maps (memlock)",
        ],
        &rows,
    ));
    Ok(s)
}

fn scenario_section(
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
    s.push_str(&format!(
        "\nTargets: dropspec ≥ 20× faster than the shell way: slowest ratio {} ({}); median ≤ 50 ms: largest median {} ({}); within 2× of the floor: largest ratio {} ({}).\n",
        fmt_ratio(min(&shell_ratios)),
        verdict(min(&shell_ratios) >= 20.0),
        fmt_ms(max(&medians)),
        verdict(max(&medians) <= 50.0),
        fmt_ratio(max(&floor_ratios)),
        verdict(max(&floor_ratios) <= 2.0),
    ));
    Ok(s)
}

fn scaling_section(root: &Path, settings: &Settings, work: &Path) -> Result<String> {
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

fn memory_section(exe: &Path, root: &Path) -> Result<String> {
    let mut rows = Vec::new();
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
    Ok(s)
}

/// Replaces what lies between the markers in `path` with `figures`.
fn write_between_markers(path: &Path, figures: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN_MARKER), text.find(END_MARKER)) else {
        bail!(
            "{} has no `{BEGIN_MARKER}` … `{END_MARKER}` lines to put the figures between",
            path.display()
        );
    };
    if end < begin {
        bail!(
            "{}: the end marker comes before the begin marker",
            path.display()
        );
    }
    let updated = format!(
        "{}{BEGIN_MARKER}\n{}\n{}",
        &text[..begin],
        figures.trim(),
        &text[end..]
    );
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}
