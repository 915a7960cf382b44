//! `dropspec`: run drop scenarios outside cargo, check scenario files, list drop reasons.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dropspec::authoring::place::{place, Place};
use dropspec::baseline::Baselines;
use dropspec::outputs::{self, progress::Progress, ScenarioResult};
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
        /// Print `[[expect.drops]]` blocks from what each scenario's run saw (with what was
        /// seen, as comments), to review and paste into the file.
        #[arg(long)]
        propose: bool,
        /// Leave each scenario's namespaces up after the run, named
        /// dropspec-keep-<scenario>-<host> under /run/netns for `ip netns exec`; remove
        /// them with `dropspec cleanup --kept`.
        #[arg(long)]
        keep: bool,
        /// Also save the whole run (kernel, its reason table, every report) as JSON, for
        /// `dropspec diff` against another kernel.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        #[command(flatten)]
        ci: CiOutputs,
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
    /// Tables across kernels from saved runs (`dropspec run --json`, oldest kernel first):
    /// how Retina's hook points attached on each (--hooks), or the drop reasons each has,
    /// exercises and gained since the one before (--reasons). Markdown. ci/kernel-docs.sh.
    Matrix {
        #[arg(long, conflicts_with = "reasons", required_unless_present = "reasons")]
        hooks: bool,
        #[arg(long)]
        reasons: bool,
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
    /// Validate scenario files without running them (no root needed).
    Check { paths: Vec<PathBuf> },
    /// Write a commented starting scenario that passes `check`: scenarios/NAME.toml in a
    /// project (NAME may have directories), NAME itself when it ends in .toml.
    New {
        name: String,
        #[arg(long, value_enum, default_value = "firewall")]
        kind: dropspec::authoring::new::Kind,
    },
    /// List the running kernel's drop reasons with their numbers.
    Reasons,
    /// Stream drops live: a line per sampled drop (reason, function, host, protocol,
    /// addresses and ports) and a table of all drops counted, for a scenario it builds and
    /// drives, for named namespaces, or for every namespace (as root).
    Watch(WatchArgs),
    /// Print the scenario format's JSON Schema (the one shipped as
    /// schema/dropspec-scenario.schema.json), for editors: name it on a scenario's first
    /// line as `#:schema PATH`.
    Schema,
    /// Which of the running kernel's drop reasons the suite exercises (by which
    /// scenarios, from their expectations and baselines), which it never does, and which
    /// are new compared with other kernels' tables. Runs nothing (no root needed).
    Coverage {
        /// Scenario files or directories (default: the project's scenarios/).
        paths: Vec<PathBuf>,
        /// Print Markdown instead of text.
        #[arg(long)]
        markdown: bool,
        /// Another kernel's reasons: a saved run (`run --json FILE`) or a bundled kernel's
        /// release (or its start: `6.12`); repeatable. Default: every bundled kernel.
        #[arg(long, value_name = "RUN.json|RELEASE")]
        against: Vec<String>,
    },
    /// What this kernel lets dropspec watch: the drop probe's attachment, the auxiliary
    /// tracepoints, and how each of Retina's hook points attaches or why it cannot (root).
    Probes,
    /// Remove what killed runs left: named dropspec namespaces and temporary files of dead
    /// processes, and global sysctls they (and their guardians) left changed. Every other
    /// entry point (`run`, `bench`, `cargo test`) does this too before it starts.
    Cleanup {
        /// Remove the namespaces `run --keep` left up (dropspec-keep-…) instead; they are
        /// never removed otherwise.
        #[arg(long)]
        kept: bool,
    },
    /// Measure dropspec against the shell + bpftrace way, the kernel-only floor and
    /// bpftrace's probe; prints the figures of BENCHMARKS.md (as root, ~3-4 minutes).
    Bench(bench::Args),
    /// Run a command on another kernel: boots a Debian kernel package under qemu with
    /// this machine's files (read-only, the project directory writable) and returns the
    /// command's exit code. Example: dropspec vm --kernel 6.1 -- target/debug/dropspec run
    Vm(VmArgs),
}

/// What a run leaves for CI (README, "In CI"); rendered by `dropspec::outputs`.
#[derive(clap::Args)]
struct CiOutputs {
    /// `json`: the whole run (a saved run as `--json` writes it, with the verdicts) on
    /// stdout, and the human text on stderr instead.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write a JUnit XML report: one test case per scenario, named by its path.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// Write a Markdown summary (for $GITHUB_STEP_SUMMARY): totals, failures and skips
    /// with their reasons, each scenario's drops.
    #[arg(long, value_name = "FILE")]
    summary: Option<PathBuf>,
    /// Write the observed drops in Prometheus text format, under Retina's metric names.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(clap::Args)]
struct WatchArgs {
    /// Build this scenario, inject its faults and send its traffic (--rounds times),
    /// watching its hosts.
    #[arg(long, value_name = "FILE", conflicts_with = "netns")]
    scenario: Option<PathBuf>,
    /// Times the scenario's traffic is sent, a second apart; 0 only keeps the scenario
    /// up (until Ctrl-C or --duration).
    #[arg(long, default_value_t = 3, requires = "scenario")]
    rounds: u32,
    /// Namespaces by /run/netns name (e.g. those `run --keep` left). Default, with no
    /// --scenario either: every namespace.
    #[arg(long, num_args = 1..)]
    netns: Vec<String>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// At most this many per-packet lines a second (every drop is still counted).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10000))]
    samples: u32,
    /// Seconds between the tables of counts.
    #[arg(long, default_value_t = 2.0)]
    every: f64,
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
    /// Guest CPUs (one by default). Under multi-threaded TCG a second vCPU once crashed a
    /// 6.12 guest in 1 of 6 suite runs: "Oops: int3" in ip_local_deliver while a static
    /// key was being patched (cross-modifying code); with more than one, TCG therefore
    /// runs the vCPUs in turn on one host thread (`thread=single`). Two vCPUs are not the
    /// default yet: on 5.10 they exposed two scenarios whose outcome depends on when a
    /// softirq runs (README, "Running on other kernels").
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
    /// DROPSPEC_* are passed through already, except DROPSPEC_MAY_LACK (the host's
    /// kernel's gaps, not the guest's: give it here to mean it for the guest).
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
    /// Only download and unpack the kernel into the cache, print its release and exit;
    /// exit status 3 when Debian does not have it (ci/vm-suite.sh --skip-unavailable).
    #[arg(long)]
    fetch_only: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required_unless_present = "fetch_only")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    dropspec::spans::begin("dropspec");
    let cli = Cli::parse();
    // Every command runs under the same policy: a bad DROPSPEC_* value stops any of them.
    if let Err(e) = Policy::current() {
        eprintln!("dropspec: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run {
            paths,
            timings,
            jobs,
            json,
            record,
            propose,
            keep,
            ci,
            repeat,
        } => run(
            &paths,
            &RunOptions {
                timings,
                jobs,
                json: json.as_deref(),
                record,
                propose,
                keep,
                repeat,
            },
            &ci,
        ),
        Command::Diff {
            old,
            new,
            markdown,
            accept,
        } => diff_runs(&old, &new, markdown, accept.as_deref()),
        Command::Matrix {
            hooks,
            reasons: _,
            runs,
        } => matrix(hooks, &runs),
        Command::Check { paths } => check(&paths),
        Command::New { name, kind } => new_scenario(&name, kind),
        Command::Reasons => reasons(),
        Command::Watch(args) => watch(args),
        Command::Schema => {
            print!("{}", scenario::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Coverage {
            paths,
            markdown,
            against,
        } => coverage(&paths, markdown, &against),
        Command::Probes => probes_available(),
        Command::Cleanup { kept } => cleanup_leftovers(kept),
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
fn scenario_files(paths: &[PathBuf], root: Option<&Path>) -> Result<Vec<PathBuf>> {
    if paths.is_empty() {
        // No file named: the project's scenarios/, and it is an error to have none.
        let root = match root {
            Some(root) => root.to_owned(),
            None => project_root()?,
        };
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

/// Loads each file where it stands (`authoring::place`): its name, fixtures and baselines.
fn load_all(
    files: &[PathBuf],
    root: Option<&Path>,
) -> Result<Vec<(scenario::Scenario, Place)>, Vec<String>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
        let place = place(file, root);
        match scenario::load(&absolute, &place.names_root, &place.fixtures) {
            Ok(mut s) => {
                s.path = file.clone();
                // The names only a kernel can confirm, checked here so that `check` and
                // `run` (and `cargo test`, through `dropspec run`) refuse the same files.
                let unknown = dropspec::names::check(&s);
                if unknown.is_empty() {
                    loaded.push((s, place))
                } else {
                    let lines: Vec<String> = unknown.iter().map(ToString::to_string).collect();
                    errors.push(lines.join("\n"));
                }
            }
            // One entry per file, all of its problems on their own lines.
            Err(e) => errors.push(e.with_path(file).to_string()),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn check(paths: &[PathBuf]) -> Result<ExitCode> {
    let root = project_root().ok();
    let files = scenario_files(paths, root.as_deref())?;
    match load_all(&files, root.as_deref()) {
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

fn new_scenario(name: &str, kind: dropspec::authoring::new::Kind) -> Result<ExitCode> {
    let file = dropspec::authoring::new::write(name, kind, project_root().ok().as_deref())?;
    let shown = file.display();
    println!("wrote {shown}");
    println!("next: dropspec check {shown}");
    println!(
        "      sudo dropspec run --propose {shown}   # see the drops, get [[expect.drops]] blocks"
    );
    println!("      sudo dropspec run --record {shown}    # record its snapshot once the expectations hold");
    Ok(ExitCode::SUCCESS)
}

fn watch(args: WatchArgs) -> Result<ExitCode> {
    use dropspec::watch::session::{self, Options, Target};
    if let Some(why) = runner::unavailable_reason() {
        bail!("{why}");
    }
    let seconds = |s: f64, what: &str| {
        std::time::Duration::try_from_secs_f64(s)
            .with_context(|| format!("{what}: {s} is not a number of seconds"))
    };
    let loaded = match &args.scenario {
        Some(file) => {
            let root = project_root().ok();
            match load_all(std::slice::from_ref(file), root.as_deref()) {
                Ok(mut loaded) => Some(loaded.remove(0).0),
                Err(errors) => bail!("{}", errors.join("\n")),
            }
        }
        None => None,
    };
    let target = match (&loaded, args.netns.is_empty()) {
        (Some(scenario), _) => Target::Scenario {
            scenario,
            rounds: args.rounds,
        },
        (None, false) => Target::Named(args.netns),
        (None, true) => Target::All,
    };
    let options = Options {
        target,
        duration: args
            .duration
            .map(|d| seconds(d, "--duration"))
            .transpose()?,
        samples_per_second: args.samples,
        table_every: seconds(args.every, "--every")?,
    };
    session::run(options, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

fn cleanup_leftovers(kept: bool) -> Result<ExitCode> {
    if let Some(why) = runner::unavailable_reason() {
        bail!("{why}");
    }
    if kept {
        let removed =
            dropspec::authoring::keep::remove_kept().context("removing kept namespaces")?;
        for name in &removed {
            println!("removed kept namespace {name}");
        }
        if removed.is_empty() {
            println!("no kept namespaces");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let reaped = cleanup::reap_before_run().context("removing what earlier runs left")?;
    for line in reaped.lines() {
        println!("{line}");
    }
    if reaped.is_empty() {
        println!("nothing left by earlier runs");
    }
    // Not a leftover (runs keep it on purpose), but dropspec's: see kernel::kallsyms_boot.
    let path = dropspec::kernel::kallsyms_boot::PATH;
    if dropspec::kernel::kallsyms_boot::remove().with_context(|| format!("removing {path}"))? {
        println!("removed {path} (this boot's kernel symbols, kept to name drops)");
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

fn coverage(paths: &[PathBuf], markdown: bool, against: &[String]) -> Result<ExitCode> {
    use dropspec::coverage::{self, OtherTable};
    let root = project_root()?;
    let files = scenario_files(paths, Some(&root))?;
    let scenarios: Vec<scenario::Scenario> = match load_all(&files, Some(&root)) {
        Ok(s) => s.into_iter().map(|(scenario, _)| scenario).collect(),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} scenario file(s) invalid", errors.len());
        }
    };
    let kernel = runner::kernel_release();
    let reasons = dropspec::kernel::known::running_reasons()
        .context("reading the running kernel's drop reasons")?;
    let bundled = coverage::bundled_tables(&dropspec::kernel::known::bundled_reasons());
    let mut others = Vec::new();
    for name in against {
        let path = Path::new(name);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading saved run {name}"))?;
            let run: diff::SavedRun = serde_json::from_str(&text).with_context(|| {
                format!("{name} is not a saved run: make one with `dropspec run --json FILE`")
            })?;
            others.push(OtherTable {
                label: format!("{} ({name})", run.kernel),
                reasons: run.reasons.into_keys().collect(),
            });
        } else {
            let found: Vec<&OtherTable> = bundled
                .iter()
                .filter(|t| t.label.starts_with(name.as_str()))
                .collect();
            match found.as_slice() {
                [one] => others.push((*one).clone()),
                _ => bail!(
                    "--against {name}: not a saved run, nor exactly one bundled kernel ({})",
                    bundled
                        .iter()
                        .map(|t| t.label.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
    if against.is_empty() {
        others = bundled
            .into_iter()
            .filter(|t| !t.label.starts_with(&format!("{kernel} ")))
            .collect();
    }
    let baselines = Baselines::in_project(&root);
    print!(
        "{}",
        coverage::of_suite(&kernel, reasons, &scenarios, &baselines, others).render(markdown)
    );
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

fn matrix(hooks: bool, paths: &[PathBuf]) -> Result<ExitCode> {
    let mut runs = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the saved run {}", path.display()))?;
        let run: diff::SavedRun = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a run saved by `dropspec run --json`",
                path.display()
            )
        })?;
        runs.push(run);
    }
    print!(
        "{}",
        if hooks {
            dropspec::matrix::hook_table(&runs)
        } else {
            dropspec::matrix::coverage_table(&runs)
        }
    );
    Ok(ExitCode::SUCCESS)
}

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
    let accept_text = match accept {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading accepted changes {}", path.display()))?,
        None => String::new(),
    };
    let accepted = diff::parse_accepted(&accept_text);
    let explanations = diff::parse_explanations(&accept_text);
    let changes = diff::diff(&old, &new);
    print!(
        "{}",
        diff::render(&old, &new, &changes, &accepted, &explanations, markdown)
    );
    if !explanations.is_empty() {
        // An accept file that explains changes should explain them all (the upgrade
        // diffs of ci/kernel-docs.sh); say which it does not.
        let missing = diff::unexplained(&changes, &explanations);
        if !missing.is_empty() {
            eprintln!(
                "{} behaviour change(s) not explained (no `why:` line in the accept file):",
                missing.len()
            );
            for c in missing {
                eprintln!("  {}", c.summary());
            }
        }
    }
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

/// The run as `dropspec diff` reads it.
fn saved_run(results: &[ScenarioResult]) -> Result<diff::SavedRun> {
    let reasons = probes::ReasonTable::from_running_kernel_or_none()
        .context("reading the running kernel's drop reasons")?
        .iter()
        .map(|(number, name)| (name.to_owned(), number))
        .collect();
    let reports: Vec<Report> = results.iter().filter_map(|r| r.report.clone()).collect();
    let skipped = results
        .iter()
        .filter_map(|r| match (&r.verdict, &r.report) {
            // A scenario that ran with its hook expectations skipped has a report.
            (Verdict::Skipped(why), None) => Some((r.name.clone(), why.clone())),
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
    Ok(diff::SavedRun {
        kernel: runner::kernel_release(),
        probe: reports
            .first()
            .map_or_else(|| "unavailable".to_owned(), |r| r.probe.clone()),
        reasons,
        reports,
        skipped,
        events_available,
    })
}

/// Writes a file the run was asked for (`--json`, `--junit`, `--summary`, `--metrics`).
fn write_output(path: &Path, what: &str, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing the {what} to {}", path.display()))
}

/// The file's path relative to the project root when it lies inside it (how JUnit
/// names a test case), else as given.
fn project_relative(path: &Path, root: &Path) -> PathBuf {
    let (Ok(path), Ok(root)) = (std::fs::canonicalize(path), std::fs::canonicalize(root)) else {
        return path.to_owned();
    };
    path.strip_prefix(&root)
        .map_or(path.clone(), Path::to_owned)
}

/// `dropspec run`'s own flags (the CI outputs are `CiOutputs`).
struct RunOptions<'a> {
    timings: bool,
    jobs: Option<u16>,
    json: Option<&'a Path>,
    record: bool,
    propose: bool,
    keep: bool,
    repeat: Option<u32>,
}

fn run(paths: &[PathBuf], options: &RunOptions<'_>, ci: &CiOutputs) -> Result<ExitCode> {
    let RunOptions {
        timings,
        jobs,
        json,
        record,
        propose,
        keep,
        repeat,
    } = *options;
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
    let root = project_root().ok();
    // An output that cannot be written is bad input: said now, not after the whole run.
    for path in json.into_iter().chain(
        [&ci.junit, &ci.summary, &ci.metrics]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path),
    ) {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            bail!(
                "{}: no directory {} to write it in",
                path.display(),
                dir.display()
            );
        }
    }
    let files = scenario_files(paths, root.as_deref())?;
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
    let loaded = dropspec::spans::span("scenario files loaded and checked", || {
        load_all(&files, root.as_deref())
    });
    let (scenarios, places): (Vec<_>, Vec<_>) = match loaded {
        Ok(s) => s.into_iter().unzip(),
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            bail!("{} scenario file(s) invalid: nothing was run", errors.len());
        }
    };
    for line in dropspec::spans::span("leftovers of earlier runs reaped", cleanup::reap_before_run)
        .context("removing what an earlier run left")?
        .lines()
    {
        eprintln!("{line}");
    }
    let jobs = jobs.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );

    let next = AtomicUsize::new(0);
    let runs = scenarios.len() * repeat;
    // Run k of scenario i is slot i * repeat + k; the repetitions of one scenario are
    // spread over the jobs like any other runs.
    let results: Mutex<Vec<Option<ScenarioResult>>> = Mutex::new((0..runs).map(|_| None).collect());
    // With --format json, stdout is the JSON document alone; the human text goes to stderr.
    let human_to_stderr = ci.format == Format::Json;
    let output = Mutex::new(Progress::new(runs));
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(runs) {
            scope.spawn(|| loop {
                let slot = next.fetch_add(1, Ordering::Relaxed);
                if slot >= runs {
                    break;
                }
                let i = slot / repeat;
                let s = &scenarios[i];
                let baselines = &places[i].baselines;
                let mut kept = None;
                let report = if keep {
                    runner::run_with(s, |topology| {
                        kept = Some(dropspec::authoring::keep::keep(&s.name, topology))
                    })
                } else {
                    runner::run(s)
                };
                let judgement = dropspec::spans::span("verdict (baseline compared)", || {
                    verdict::judge(s, report, baselines, &policy)
                });
                {
                    let mut progress = output.lock().unwrap();
                    progress.clear();
                    let mut text = render_result(s, &judgement, timings);
                    if let (true, Some(report)) = (propose, &judgement.report) {
                        text.push_str(&format!(
                            "{}\n",
                            dropspec::authoring::propose::propose(report)
                        ));
                    }
                    match &kept {
                        Some(Ok(kept)) => text.push_str(&format!(
                            "{}\n",
                            dropspec::authoring::keep::describe(&s.name, kept)
                        )),
                        Some(Err(e)) => text.push_str(&format!(
                            "could not keep the namespaces of {}: {e}\n\n",
                            s.name
                        )),
                        None => {}
                    }
                    if human_to_stderr {
                        eprint!("{text}");
                    } else {
                        print!("{text}");
                    }
                    progress.finished_one(&s.name);
                }
                results.lock().unwrap()[slot] = Some(ScenarioResult {
                    name: s.name.clone(),
                    path: root
                        .as_deref()
                        .map_or_else(|| s.path.clone(), |root| project_relative(&s.path, root)),
                    verdict: judgement.verdict,
                    diff: judgement.diff,
                    report: judgement.report,
                });
            });
        }
    });
    drop(output);
    let wall = started.elapsed();

    let all: Vec<ScenarioResult> = results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every scenario ran"))
        .collect();
    let mut varied = 0;
    if repeat > 1 {
        let mut text = String::new();
        for (s, runs) in scenarios.iter().zip(all.chunks(repeat)) {
            let runs: Vec<dropspec::repeat::Run> = runs
                .iter()
                .map(|r| dropspec::repeat::Run {
                    outcome: match r.verdict {
                        Verdict::Passed => "passed",
                        Verdict::Failed(_) => "failed",
                        Verdict::Skipped(_) => "skipped",
                    },
                    snapshot: r.report.as_ref().map(|r| r.render_snapshot()),
                })
                .collect();
            let found = dropspec::repeat::variations(&runs);
            if !found.is_empty() {
                varied += 1;
                text.push_str(&format!("VARIED: {} over {repeat} runs\n", s.name));
                for line in found {
                    text.push_str(&format!("  {line}\n"));
                }
            }
        }
        text.push_str(&format!(
            "{varied} of {} scenario(s) varied over {repeat} runs each\n",
            scenarios.len()
        ));
        if human_to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }
    // Every run counts in the totals; the outputs and the saved run show each scenario's
    // first run.
    let totals = outputs::Totals::of(&all);
    let results: Vec<ScenarioResult> = all.into_iter().step_by(repeat).collect();
    if timings {
        let mut totals: Vec<f64> = results
            .iter()
            .filter_map(|r| r.report.as_ref())
            .map(|r| r.timings.total().as_secs_f64() * 1000.0)
            .collect();
        totals.sort_by(f64::total_cmp);
        if !totals.is_empty() {
            let line = format!(
                "per-scenario time: median {:.1}ms, max {:.1}ms; wall time {:.0}ms with {jobs} job(s)",
                totals[totals.len() / 2],
                totals[totals.len() - 1],
                wall.as_secs_f64() * 1000.0
            );
            if human_to_stderr {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
        }
    }
    if json.is_some() || human_to_stderr {
        let saved = saved_run(&results)?;
        if let Some(path) = json {
            let text = serde_json::to_string_pretty(&saved).context("encoding the run as JSON")?;
            write_output(path, "saved run", &text)?;
        }
        if human_to_stderr {
            print!(
                "{}",
                outputs::json::render(&outputs::json::document(saved, &results))
            );
        }
    }
    if let Some(path) = &ci.junit {
        write_output(path, "JUnit report", &outputs::junit::render(&results))?;
    }
    if let Some(path) = &ci.summary {
        write_output(
            path,
            "Markdown summary",
            &outputs::summary::render(&results),
        )?;
    }
    if let Some(path) = &ci.metrics {
        write_output(path, "metrics", &outputs::metrics::render(&results))?;
    }
    if human_to_stderr {
        eprintln!("{totals}");
    } else {
        println!("{totals}");
    }
    Ok(if totals.failed > 0 || varied > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One scenario's report, notes and verdict, as `dropspec run` prints them.
fn render_result(s: &scenario::Scenario, judgement: &verdict::Judgement, timings: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if let Some(report) = &judgement.report {
        out.push_str(&report.render(timings));
    }
    for note in &judgement.notes {
        writeln!(out, "note: {note}").unwrap();
    }
    match &judgement.verdict {
        Verdict::Passed => writeln!(out, "ok: {}\n", s.name).unwrap(),
        Verdict::Skipped(why) => writeln!(out, "skipped: {} ({why})\n", s.name).unwrap(),
        Verdict::Failed(problems) => {
            writeln!(out, "FAILED: {} ({})", s.name, s.path.display()).unwrap();
            for p in problems {
                writeln!(out, "  - {p}").unwrap();
            }
            if let Some(diff) = &judgement.diff {
                writeln!(out, "{diff}").unwrap();
            }
            out.push('\n');
        }
    }
    out
}

fn vm(args: VmArgs) -> Result<ExitCode> {
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(dropspec::vm::package::default_cache_dir);
    if args.fetch_only {
        return match dropspec::vm::fetch_kernel(&args.kernel, &cache_dir, &mut std::io::stderr()) {
            Ok(kernel) => {
                println!("{} {} {}", kernel.package, kernel.version, kernel.release);
                Ok(ExitCode::SUCCESS)
            }
            Err(e @ dropspec::vm::VmError::NoSuchKernel { .. }) => {
                eprintln!("dropspec vm: {e}");
                Ok(ExitCode::from(3))
            }
            Err(e) => Err(e).context(format!("fetching kernel {}", args.kernel)),
        };
    }
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
        cache_dir,
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
