//! `dropspec`: run drop scenarios outside cargo, check scenario files, list drop reasons.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dropspec::baseline::Baselines;
use dropspec::policy::{BaselineMode, Policy};
use dropspec::report::Report;
use dropspec::runner;
use dropspec::verdict::{self, Verdict};
use dropspec::{cleanup, diff, probes, scenario};

mod bench;

#[derive(Parser)]
#[command(version, about = "Regression tests for Linux packet-drop behaviour")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios (files or directories; default: the project's scenarios/) and print
    /// each report, its expectation check and whether it matches its snapshot.
    Run {
        paths: Vec<PathBuf>,
        /// Print a per-phase timing breakdown for each scenario and the median.
        #[arg(long)]
        timings: bool,
        /// Scenarios run at once (default: one per core).
        #[arg(long, short, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
        /// Write each report as its baseline (insta's `.snap` format, so `cargo insta
        /// review` works on them) where the inline expectations held; the same as
        /// INSTA_UPDATE=always. A scenario whose expectations failed is never recorded.
        #[arg(long)]
        record: bool,
        /// Also save the whole run (kernel, its reason table, every report) as JSON, for
        /// `dropspec diff` against another kernel.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Run each scenario N times and report every count or outcome that varied, with
        /// the values seen; exits non-zero if anything varied (DROPSPEC_REPEAT=N is the
        /// same for `cargo test`).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        repeat: Option<u32>,
    },
    /// Compare two saved runs (`run --json`) of the suite on two kernels, scenario by
    /// scenario. Exits 1 when there is a behaviour change not listed in --accept.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Print Markdown instead of text.
        #[arg(long)]
        markdown: bool,
        /// A file of accepted changes: one change line (as printed) per line.
        #[arg(long, value_name = "FILE")]
        accept: Option<PathBuf>,
    },
    /// Validate scenario files without running them (no root needed).
    Check { paths: Vec<PathBuf> },
    /// List the running kernel's drop reasons with their numbers.
    Reasons,
    /// What this kernel lets dropspec watch: the drop probe's attachment, the auxiliary
    /// tracepoints, and how each of Retina's hook points attaches or why it cannot (root).
    Probes,
    /// Remove what killed runs left: named dropspec namespaces and temporary files of dead
    /// processes, and global sysctls they (and their guardians) left changed. Every other
    /// entry point (`run`, `bench`, `cargo test`) does this too before it starts.
    Cleanup,
    /// Measure dropspec against the shell + bpftrace way, the kernel-only floor and
    /// bpftrace's probe; prints the figures of BENCHMARKS.md (as root, ~3-4 minutes).
    Bench(bench::Args),
    /// Run a command on another kernel: boots a Debian kernel package under qemu with
    /// this machine's files (read-only, the project directory writable) and returns the
    /// command's exit code. Example: dropspec vm --kernel 6.1 -- target/debug/dropspec run
    Vm(VmArgs),
}

#[derive(clap::Args)]
struct VmArgs {
    /// 6.1 or 6.12 (newest of that series apt knows), an exact package version
    /// (6.1.0-50, 6.12.117+deb12) or a package name (linux-image-…).
    #[arg(long)]
    kernel: String,
    /// Guest memory in MiB (qemu only uses what the guest touches).
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    /// Guest CPUs. One by default. Completion no longer rests on a quiet window (the old
    /// reason), but under multi-threaded TCG a second vCPU crashed a 6.12 guest in 1 of 6
    /// suite runs: "Oops: int3" in ip_local_deliver while a static key was being patched
    /// (cross-modifying code). `--cpus 2` works otherwise (5 of 6 runs green).
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Seconds for boot, command and power-off together; qemu is killed after that.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Directory the guest may write to (repeatable). Default: the project root (the
    /// directory with scenarios/ at or above this one), else this directory.
    #[arg(long)]
    share: Vec<PathBuf>,
    /// Share nothing writable: the guest sees the host read-only.
    #[arg(long, conflicts_with = "share")]
    read_only: bool,
    /// NAME=VALUE for the command (repeatable); PATH, HOME, CI, CARGO_*, RUST*, INSTA_*,
    /// DROPSPEC_* are passed through already.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Where kernels are cached (default: $DROPSPEC_KERNEL_CACHE, else
    /// $XDG_CACHE_HOME/dropspec/kernels or ~/.cache/dropspec/kernels).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// qemu accelerator: tcg (default; KVM guests hang at boot on our machines) or kvm.
    #[arg(long, default_value = "tcg")]
    accel: dropspec::vm::Accel,
    /// Show the guest kernel's boot and power-off messages.
    #[arg(long)]
    verbose: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            paths,
            timings,
            jobs,
            json,
            record,
            repeat,
        } => run(&paths, timings, jobs, json.as_deref(), record, repeat),
        Command::Diff {
            old,
            new,
            markdown,
            accept,
        } => diff_runs(&old, &new, markdown, accept.as_deref()),
        Command::Check { paths } => check(&paths),
        Command::Reasons => reasons(),
        Command::Probes => probes_available(),
        Command::Cleanup => cleanup_leftovers(),
        Command::Bench(args) => bench::run(args),
        Command::Vm(args) => vm(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dropspec: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The project root: the nearest directory at or above the current one with `scenarios/`.
fn project_root() -> Result<PathBuf> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    cwd.ancestors()
        .find(|dir| dir.join("scenarios").is_dir())
        .map(Path::to_owned)
        .with_context(|| {
            format!(
                "no scenarios/ directory at or above {}: run dropspec inside a dropspec project, or name scenario files",
                cwd.display()
            )
        })
}

/// Expands the command line's paths (files or directories) into scenario files.
fn scenario_files(paths: &[PathBuf], root: &Path) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        return scenario::discover(&root.join("scenarios")).context("reading scenarios/");
    }
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            files.extend(
                scenario::discover(path).with_context(|| format!("reading {}", path.display()))?,
            );
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{}: no such scenario file or directory", path.display());
        }
    }
    Ok(files)
}

fn load_all(files: &[PathBuf], root: &Path) -> Result<Vec<scenario::Scenario>, Vec<String>> {
    let scenarios_dir = root.join("scenarios");
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let scenarios_dir = std::fs::canonicalize(&scenarios_dir).unwrap_or(scenarios_dir.clone());
        match scenario::load(&absolute, &scenarios_dir, &root.join("fixtures")) {
            Ok(mut s) => {
                s.path = file.clone();
                loaded.push(s)
            }
            Err(mut e) => {
                e.path = file.clone();
                errors.push(e.to_string())
            }
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn check(paths: &[PathBuf]) -> Result<ExitCode> {
    let root = project_root()?;
    let files = scenario_files(paths, &root)?;
    match load_all(&files, &root) {
        Ok(scenarios) => {
            println!("{} scenario file(s) valid", scenarios.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!(
                "{} of {} scenario file(s) invalid",
                errors.len(),
                files.len()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

fn cleanup_leftovers() -> Result<ExitCode> {
    if let Some(why) = runner::unavailable_reason() {
        bail!("{why}");
    }
    let reaped = cleanup::reap_before_run().context("removing what earlier runs left")?;
    for line in reaped.lines() {
        println!("{line}");
    }
    if reaped.is_empty() {
        println!("nothing left by earlier runs");
    }
    Ok(ExitCode::SUCCESS)
}

fn reasons() -> Result<ExitCode> {
    let table = probes::ReasonTable::from_running_kernel()
        .context("reading the running kernel's drop reasons")?;
    println!("drop reasons of kernel {}:", runner::kernel_release());
    for (number, name) in table.iter() {
        println!("{number:>5}  {name}");
    }
    Ok(ExitCode::SUCCESS)
}

fn probes_available() -> Result<ExitCode> {
    println!("kernel {}", runner::kernel_release());
    for watcher in dropspec::watchers::REGISTRY {
        for line in watcher.describe() {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A scenario's verdict, with its report when it ran.
type Outcome = (Verdict, Option<Report>);

fn diff_runs(old: &Path, new: &Path, markdown: bool, accept: Option<&Path>) -> Result<ExitCode> {
    let read = |path: &Path| -> Result<diff::SavedRun> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading saved run {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a saved run: make one with `dropspec run --json FILE`",
                path.display()
            )
        })
    };
    let (old, new) = (read(old)?, read(new)?);
    let accepted = match accept {
        Some(path) => diff::parse_accepted(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading accepted changes {}", path.display()))?,
        ),
        None => Default::default(),
    };
    let changes = diff::diff(&old, &new);
    print!(
        "{}",
        diff::render(&old, &new, &changes, &accepted, markdown)
    );
    let open = diff::unaccepted(&changes, &accepted);
    if open.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{} behaviour change(s) not accepted: review them, and list the ones you expect in an --accept file",
            open.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Writes the run for `dropspec diff`.
fn save_run(path: &Path, results: &[Outcome], scenarios: &[scenario::Scenario]) -> Result<()> {
    let reasons = probes::ReasonTable::from_running_kernel()
        .context("reading the running kernel's drop reasons")?
        .iter()
        .map(|(number, name)| (name.to_owned(), number))
        .collect();
    let reports: Vec<Report> = results.iter().filter_map(|(_, r)| r.clone()).collect();
    let skipped = scenarios
        .iter()
        .zip(results)
        .filter_map(|(s, (verdict, report))| match (verdict, report) {
            // A scenario that ran with its hook expectations skipped has a report.
            (Verdict::Skipped(why), None) => Some((s.name.clone(), why.clone())),
            _ => None,
        })
        .collect();
    let events_available = match probes::DropProbe::shared() {
        Ok(probe) => probe
            .events_available()
            .into_iter()
            .map(|(event, status)| (event, status.is_ok()))
            .collect(),
        Err(_) => Default::default(),
    };
    let saved = diff::SavedRun {
        kernel: runner::kernel_release(),
        probe: reports
            .first()
            .map_or_else(|| "unavailable".to_owned(), |r| r.probe.clone()),
        reasons,
        reports,
        skipped,
        events_available,
    };
    let json = serde_json::to_string_pretty(&saved).context("encoding the run as JSON")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn run(
    paths: &[PathBuf],
    timings: bool,
    jobs: Option<u16>,
    json: Option<&Path>,
    record: bool,
    repeat: Option<u32>,
) -> Result<ExitCode> {
    let mut policy = Policy::current()?.clone();
    // The flag, else DROPSPEC_REPEAT: one number of runs per scenario for both front ends.
    let repeat = repeat.unwrap_or(policy.repeat) as usize;
    if repeat > 1 && record {
        bail!("--record with --repeat would record one run of several: record once, then repeat");
    }
    if record {
        if policy.baseline == BaselineMode::RecordKernel {
            bail!("--record and DROPSPEC_BASELINE=record ask for two kinds of recording at once: use one");
        }
        policy.baseline = BaselineMode::Record;
    }
    let root = project_root()?;
    let files = scenario_files(paths, &root)?;
    if files.is_empty() {
        bail!(
            "no scenario files in {}: nothing would be tested",
            if paths.is_empty() {
                "scenarios/".to_owned()
            } else {
                format!("{paths:?}")
            }
        );
    }
    let scenarios = match load_all(&files, &root) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} scenario file(s) invalid: nothing was run", errors.len());
        }
    };
    for line in cleanup::reap_before_run()
        .context("removing what an earlier run left")?
        .lines()
    {
        eprintln!("{line}");
    }
    let jobs = jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let baselines = Baselines::in_project(&root);

    let next = AtomicUsize::new(0);
    let runs = scenarios.len() * repeat;
    // Run k of scenario i is slot i * repeat + k; the repetitions of one scenario are
    // spread over the jobs like any other runs.
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..runs).map(|_| None).collect());
    let output = Mutex::new(());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs) {
            scope.spawn(|| loop {
                let slot = next.fetch_add(1, Ordering::Relaxed);
                if slot >= runs {
                    break;
                }
                let s = &scenarios[slot / repeat];
                let judgement = verdict::judge(s, runner::run(s), &baselines, &policy);
                {
                    let _guard = output.lock().unwrap();
                    print_result(s, &judgement, timings);
                }
                results.lock().unwrap()[slot] = Some((judgement.verdict, judgement.report));
            });
        }
    });
    let wall = started.elapsed();

    let all: Vec<Outcome> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every scenario ran"))
        .collect();
    let mut varied = 0;
    if repeat > 1 {
        for (s, runs) in scenarios.iter().zip(all.chunks(repeat)) {
            let runs: Vec<dropspec::repeat::Run> = runs
                .iter()
                .map(|(verdict, report)| dropspec::repeat::Run {
                    outcome: match verdict {
                        Verdict::Passed => "passed",
                        Verdict::Failed(_) => "failed",
                        Verdict::Skipped(_) => "skipped",
                    },
                    snapshot: report.as_ref().map(|r| r.render_snapshot()),
                })
                .collect();
            let found = dropspec::repeat::variations(&runs);
            if !found.is_empty() {
                varied += 1;
                println!("VARIED: {} over {repeat} runs", s.name);
                for line in found {
                    println!("  {line}");
                }
            }
        }
        println!(
            "{varied} of {} scenario(s) varied over {repeat} runs each",
            scenarios.len()
        );
    }
    // Every run counts in the totals; the saved run is the first of each scenario.
    let results = all;
    let passed = results
        .iter()
        .filter(|(v, _)| matches!(v, Verdict::Passed))
        .count();
    let failed = results
        .iter()
        .filter(|(v, _)| matches!(v, Verdict::Failed(_)))
        .count();
    let skipped = results.len() - passed - failed;
    if timings {
        let mut totals: Vec<f64> = results
            .iter()
            .filter_map(|(_, r)| r.as_ref())
            .map(|r| r.timings.total().as_secs_f64() * 1000.0)
            .collect();
        totals.sort_by(f64::total_cmp);
        if !totals.is_empty() {
            println!(
                "per-scenario time: median {:.1}ms, max {:.1}ms; wall time {:.0}ms with {jobs} job(s)",
                totals[totals.len() / 2],
                totals[totals.len() - 1],
                wall.as_secs_f64() * 1000.0
            );
        }
    }
    if let Some(path) = json {
        let firsts: Vec<Outcome> = results.iter().step_by(repeat).cloned().collect();
        save_run(path, &firsts, &scenarios)?;
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    Ok(if failed > 0 || varied > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_result(s: &scenario::Scenario, judgement: &verdict::Judgement, timings: bool) {
    if let Some(report) = &judgement.report {
        print!("{}", report.render(timings));
    }
    for note in &judgement.notes {
        println!("note: {note}");
    }
    match &judgement.verdict {
        Verdict::Passed => println!("ok: {}\n", s.name),
        Verdict::Skipped(why) => println!("skipped: {} ({why})\n", s.name),
        Verdict::Failed(problems) => {
            println!("FAILED: {} ({})", s.name, s.path.display());
            for p in problems {
                println!("  - {p}");
            }
            if let Some(diff) = &judgement.diff {
                println!("{diff}");
            }
            println!();
        }
    }
}

fn vm(args: VmArgs) -> Result<ExitCode> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let writable = if args.read_only {
        Vec::new()
    } else if !args.share.is_empty() {
        args.share
    } else {
        match project_root() {
            Ok(root) => vec![root],
            Err(_) if cwd != Path::new("/") => vec![cwd.clone()],
            Err(_) => Vec::new(),
        }
    };
    let mut env = dropspec::vm::passthrough_env();
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // The guest's console is a tty; without this, tools would colour a log file.
        env.retain(|(k, _)| k != "TERM");
        env.push(("TERM".into(), "dumb".into()));
        for (name, value) in [("NO_COLOR", "1"), ("CARGO_TERM_COLOR", "never")] {
            if !env.iter().any(|(k, _)| k == name) {
                env.push((name.into(), value.into()));
            }
        }
    }
    for pair in &args.env {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected NAME=VALUE"))?;
        env.retain(|(k, _)| k != name);
        env.push((name.to_owned(), value.to_owned()));
    }
    let options = dropspec::vm::VmOptions {
        kernel: args.kernel,
        memory_mib: args.memory,
        cpus: args.cpus.max(1),
        timeout: std::time::Duration::from_secs(args.timeout),
        accel: args.accel,
        writable,
        env,
        cwd,
        command: args.command,
        cache_dir: args
            .cache_dir
            .unwrap_or_else(dropspec::vm::package::default_cache_dir),
        verbose: args.verbose,
    };
    let outcome = match dropspec::vm::run(
        &options,
        Box::new(std::io::stdout()),
        &mut std::io::stderr(),
    ) {
        Ok(outcome) => outcome,
        Err(e @ dropspec::vm::VmError::Interrupted) => {
            eprintln!("dropspec vm: {e}");
            return Ok(ExitCode::from(130));
        }
        Err(e @ dropspec::vm::VmError::Timeout { .. }) => {
            eprintln!("dropspec vm: {e}");
            return Ok(ExitCode::from(124));
        }
        Err(e) => return Err(e).context(format!("running a command on kernel {}", options.kernel)),
    };
    let rss = outcome
        .qemu_peak_rss_kib
        .map_or_else(|| "?".into(), |k| format!("{} MiB", k / 1024));
    eprintln!(
        "dropspec vm: {} exited {} (boot {:.1}s, command {:.1}s, qemu peak RSS {rss})",
        outcome.kernel.release,
        outcome.exit_code,
        outcome.boot_time.as_secs_f64(),
        outcome.command_time.as_secs_f64(),
    );
    Ok(ExitCode::from(u8::try_from(outcome.exit_code).unwrap_or(1)))
}
