//! `dropspec bench`: every figure in BENCHMARKS.md, measured side by side in one run.
//!
//! Absolute times drift on shared machines, so each part compares ways of doing the same
//! thing within one run, interleaved: dropspec against the shell + bpftrace way and the
//! kernel-only floor per scenario ([`scenarios`]); flood rates with no probe, dropspec's
//! and bpftrace's ([`flood`]); suite wall time against size and threads ([`scaling`]);
//! and memory ([`memory`]). Those modules measure; [`figures`] renders each part as a
//! markdown section, and `--write BENCHMARKS.md` puts them between the file's
//! `bench:figures` markers. [`choose`] picks the scenarios.
//!
//! The parts run in this order because dropspec's probe, once loaded in a process, stays
//! attached for its life: the floods run first, each in a child process, while this
//! process has loaded no probe yet.

mod choose;
mod figures;
mod flood;
mod floor;
mod guests;
mod memory;
mod profile;
mod scaling;
mod scenarios;
mod shell;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use dropspec::runner;

use figures::{
    filter_section, flood_section, guests_section, load_average, machine_section, memory_section,
    profile_section, scaling_section, scenario_section, write_between_markers,
};

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
    /// Kernel for the guests part: a name ci/kernels.toml lists (its pinned package) or
    /// anything `dropspec vm --kernel` takes (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "6.12")]
    pub guest_kernel: Vec<String>,
    /// Builds of the suite's test binary the guests part runs, one guest each (default:
    /// debug and release; `--quick`: debug, and only `sockets/`).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub guest_builds: Vec<guests::Build>,
    /// vCPUs of the guests part's guests (as `dropspec vm --cpus`).
    #[arg(long, default_value_t = 1)]
    pub guest_cpus: u32,
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
    /// The whole suite in a qemu guest (TCG): wall per kernel and where it goes.
    Guests,
}

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
    for line in dropspec::cleanup::reap_before_run()
        .context("removing what earlier runs left")?
        .lines()
    {
        progress(&format!("{line} (left by an earlier run)"));
    }
    for name in shell::reap_own_leftovers()? {
        progress(&format!("removed namespace {name} left by a killed bench"));
    }
    // `dropspec-<pid>-bench`: removed when the bench ends, reaped if it is killed.
    let work =
        dropspec::cleanup::TempDir::new("bench").context("creating the bench's work directory")?;

    // Scenarios are loaded (and validated) before anything is measured.
    let (chosen, missing) = choose::choose_scenarios(&args.scenarios, &root)?;

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
        emit(profile_section(&exe, &settings, work.path())?);
    }
    if wants(Part::Scenarios) {
        emit(scenario_section(&chosen, &missing, &settings, work.path())?);
    }
    if wants(Part::Scaling) {
        emit(scaling_section(&root, &settings, work.path())?);
    }
    if wants(Part::Memory) {
        emit(memory_section(&exe, &root)?);
    }
    if wants(Part::Guests) {
        emit(guests_part(&args, &root));
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

/// The guests part: one guest per kernel and build; a failed guest run is reported in
/// the section, not fatal to the bench.
fn guests_part(args: &Args, root: &std::path::Path) -> String {
    let builds = if !args.guest_builds.is_empty() {
        args.guest_builds.clone()
    } else if args.quick {
        vec![guests::Build::Debug]
    } else {
        vec![guests::Build::Debug, guests::Build::Release]
    };
    let mut runs = Vec::new();
    let mut errors = Vec::new();
    for kernel in &args.guest_kernel {
        for &build in &builds {
            let plan = guests::Plan {
                root,
                kernel,
                build,
                cpus: args.guest_cpus.max(1),
                filter: args.quick.then_some("sockets/"),
            };
            match guests::run(&plan, &progress) {
                Ok(run) => runs.push(run),
                Err(e) => {
                    progress(&format!("guests: {e:#}"));
                    errors.push(format!("{kernel}, {} build: {e:#}", build.name()));
                }
            }
        }
    }
    guests_section(&runs, &errors)
}
