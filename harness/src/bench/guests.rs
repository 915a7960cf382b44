//! Guests: the whole scenario suite in one `dropspec vm` guest (qemu), as
//! `ci/vm-suite.sh` runs it, timed from outside and profiled from inside.
//!
//! Outside, `dropspec::vm::run` reports the host's preparation (kernel from the cache,
//! initramfs), the boot up to the command, the command and the power-off. Inside, the
//! suite's test binary writes `DROPSPEC_INTERNAL_SPANS` lines (`dropspec::spans`) into a
//! file in the shared project tree: its start and the guest's uptime then, each probe
//! load and kallsyms read, each runner run with its phases and each trial with its
//! verdict. Nothing is parsed from the console's prose.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Which build of the suite's test binary the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Build {
    Debug,
    Release,
}

impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Debug => "debug",
            Build::Release => "release",
        }
    }
}

/// One guest run of the suite.
#[derive(Debug)]
pub struct GuestRun {
    pub kernel: String,
    pub build: Build,
    pub cpus: u32,
    /// The libtest filter, when only part of the suite ran (`--quick`).
    pub filter: Option<String>,
    /// `cargo test --no-run` of the suite's binary on the host.
    pub host_build: Duration,
    pub outcome: dropspec::vm::VmOutcome,
    /// From calling `dropspec::vm::run` to its return: the figure held to the goal.
    pub wall: Duration,
    pub processes: Vec<Process>,
    /// The console's last lines, kept for a run that failed.
    pub console_tail: Vec<String>,
}

/// One test-binary process in the guest (the suite, then the hook points by kprobe).
#[derive(Debug, Default)]
pub struct Process {
    /// What the process said it is (`scenario suite`, `dropspec`).
    pub what: String,
    pub hooks: Option<String>,
    /// The guest's uptime when the process started.
    pub uptime_s: Option<f64>,
    /// Probe loads and kallsyms reads: (name, start, ms).
    pub spans: Vec<(String, f64, f64)>,
    /// Each runner run: (scenario, start, phases), in order.
    pub run_spans: Vec<(String, f64, Phases)>,
    /// Per trial, in order: (name, start, ms, verdict).
    pub trials: Vec<(String, f64, f64, String)>,
}

/// The runner's phases of a scenario (summed over its runs), in ms.
#[derive(Debug, Default, Clone, Copy)]
pub struct Phases {
    pub runs: usize,
    pub total: f64,
    pub setup: f64,
    pub attach: f64,
    pub traffic: f64,
    pub settle: f64,
    pub teardown: f64,
}

impl Phases {
    pub(crate) fn add(&mut self, other: &Phases) {
        self.runs += other.runs;
        self.total += other.total;
        self.setup += other.setup;
        self.attach += other.attach;
        self.traffic += other.traffic;
        self.settle += other.settle;
        self.teardown += other.teardown;
    }
}

impl Process {
    /// The last moment the process is known to have been busy (ms from its start).
    pub fn last_ms(&self) -> f64 {
        let trials = self.trials.iter().map(|(_, s, d, _)| s + d);
        let spans = self.spans.iter().map(|(_, s, d)| s + d);
        trials.chain(spans).fold(0.0, f64::max)
    }

    pub fn phases(&self) -> Phases {
        let mut sum = Phases::default();
        for (_, _, p) in &self.run_spans {
            sum.add(p);
        }
        sum
    }

    /// The runner's runs made within a trial that started at `start` and took `ms`,
    /// summed: a scenario's own trial, or a trial that runs others (the controls' check).
    pub fn runs_within(&self, start: f64, ms: f64) -> Phases {
        let mut sum = Phases::default();
        for (_, at, p) in &self.run_spans {
            if *at >= start && *at <= start + ms {
                sum.add(p);
            }
        }
        sum
    }

    pub fn trials_ms(&self) -> f64 {
        self.trials.iter().map(|t| t.2).sum()
    }

    /// The time spent in the spans called `name`, summed; None when the process had
    /// none: the step did not run (a probe not loaded, kallsyms not read because this
    /// boot's symbols were kept). Not 0: an empty f64 sum is -0.0, and a step not done
    /// is not a step that took no time.
    pub fn span_ms(&self, name: &str) -> Option<f64> {
        self.spans
            .iter()
            .filter(|(n, ..)| n == name)
            .map(|s| s.2)
            .reduce(|a, b| a + b)
    }

    pub fn verdicts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (.., verdict) in &self.trials {
            *out.entry(verdict.clone()).or_default() += 1;
        }
        out
    }
}

#[derive(Deserialize)]
struct Line {
    process: Option<String>,
    hooks: Option<String>,
    uptime_s: Option<f64>,
    span: Option<String>,
    scenario: Option<String>,
    trial: Option<String>,
    verdict: Option<String>,
    #[serde(default)]
    start_ms: f64,
    #[serde(default)]
    ms: f64,
    #[serde(default)]
    setup_ms: f64,
    #[serde(default)]
    attach_ms: f64,
    #[serde(default)]
    traffic_ms: f64,
    #[serde(default)]
    settle_ms: f64,
    #[serde(default)]
    teardown_ms: f64,
}

/// The processes of a spans file, in the order they started.
pub fn parse_spans(text: &str) -> Result<Vec<Process>> {
    let mut processes: Vec<Process> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(raw).with_context(|| format!("spans line {}: {raw}", i + 1))?;
        if let Some(what) = line.process {
            processes.push(Process {
                what,
                hooks: line.hooks,
                uptime_s: line.uptime_s,
                ..Process::default()
            });
            continue;
        }
        let Some(process) = processes.last_mut() else {
            bail!("spans line {}: before any process line", i + 1);
        };
        if let Some(name) = line.span {
            process.spans.push((name, line.start_ms, line.ms));
        } else if let Some(name) = line.scenario {
            let phases = Phases {
                runs: 1,
                total: line.ms,
                setup: line.setup_ms,
                attach: line.attach_ms,
                traffic: line.traffic_ms,
                settle: line.settle_ms,
                teardown: line.teardown_ms,
            };
            process.run_spans.push((name, line.start_ms, phases));
        } else if let Some(name) = line.trial {
            process.trials.push((
                name,
                line.start_ms,
                line.ms,
                line.verdict.unwrap_or_default(),
            ));
        }
    }
    Ok(processes)
}

/// Builds the suite's test binary (`cargo test --no-run`, as ci/vm-suite.sh does) and
/// returns its path and how long cargo took.
fn build_suite(root: &Path, build: Build) -> Result<(PathBuf, Duration)> {
    let started = Instant::now();
    let mut cargo = Command::new("cargo");
    cargo.args(["test", "--locked"]);
    if build == Build::Release {
        cargo.arg("--release");
    }
    let output = cargo
        .args([
            "-p",
            "dropspec",
            "--test",
            "scenarios",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo to build the suite's test binary")?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        bail!("cargo test --no-run ({}) failed", build.name());
    }
    let executable = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"]["name"] == "scenarios" && v["target"]["kind"][0] == "test")
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .next_back()
        .context("cargo built no scenarios test binary")?;
    Ok((executable, elapsed))
}

/// ci/kernels.toml's pinned package for a name it lists ("6.12"), and that kernel's
/// known failures (`skip`), which ci/vm-suite.sh leaves out too.
fn pinned(root: &Path, kernel: &str) -> Result<(String, Vec<String>)> {
    #[derive(Deserialize)]
    struct File {
        kernel: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        name: String,
        package: String,
        #[serde(default)]
        skip: Vec<Skip>,
    }
    #[derive(Deserialize)]
    struct Skip {
        scenario: String,
    }
    let path = root.join("ci/kernels.toml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let file: File =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(
        match file
            .kernel
            .into_iter()
            .find(|k| k.name == kernel || k.package == kernel)
        {
            Some(k) => (k.package, k.skip.into_iter().map(|s| s.scenario).collect()),
            None => (kernel.to_owned(), Vec::new()),
        },
    )
}

/// The guest's console, kept in memory (its last lines are shown when a run fails).
#[derive(Clone, Default)]
struct Console(Arc<Mutex<Vec<u8>>>);

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct Plan<'a> {
    pub root: &'a Path,
    pub kernel: &'a str,
    pub build: Build,
    pub cpus: u32,
    /// A libtest filter (a smoke run), and then no second pass for the hook points.
    pub filter: Option<&'a str>,
}

/// Boots one guest and runs the suite in it the way ci/vm-suite.sh does: the whole
/// suite, then the hook-point scenarios again with every point attached by kprobe.
pub fn run(plan: &Plan, progress: &dyn Fn(&str)) -> Result<GuestRun> {
    let (package, leave_out) = pinned(plan.root, plan.kernel)?;
    progress(&format!(
        "guests: building the suite's {} test binary",
        plan.build.name()
    ));
    let (suite, host_build) = build_suite(plan.root, plan.build)?;
    let cache_dir = dropspec::vm::package::default_cache_dir();
    let mut status = Vec::new();
    // Downloaded now if it is not cached, so the download is not in the figures.
    dropspec::vm::fetch_kernel(&package, &cache_dir, &mut status)
        .with_context(|| format!("fetching kernel {package}"))?;

    // In the shared tree, so the guest can write it; removed with the run.
    let spans_path = plan.root.join("target").join(format!(
        "dropspec-bench-spans-{}-{}.jsonl",
        std::process::id(),
        plan.build.name()
    ));
    let _ = std::fs::remove_file(&spans_path);
    let suite = suite.to_string_lossy().into_owned();
    let mut skip_args = Vec::new();
    for scenario in &leave_out {
        skip_args.extend(["--skip".to_owned(), scenario.clone()]);
    }
    let command: Vec<String> = match plan.filter {
        Some(filter) => [suite.clone(), filter.to_owned()]
            .into_iter()
            .chain(skip_args)
            .collect(),
        None => [
            "bash".to_owned(),
            "-c".to_owned(),
            r#""$0" "${@}" && DROPSPEC_HOOKS=kprobe "$0" hook "${@}""#.to_owned(),
            suite.clone(),
        ]
        .into_iter()
        .chain(skip_args)
        .collect(),
    };
    let mut env = dropspec::vm::passthrough_env();
    env.retain(|(k, _)| !k.starts_with("DROPSPEC_") && k != "TERM");
    for (k, v) in [
        ("TERM", "dumb"),
        ("NO_COLOR", "1"),
        ("CI", "true"),
        ("DROPSPEC_REQUIRE_PRIVILEGED", "1"),
        ("DROPSPEC_REQUIRE_HOOKS", "1"),
    ] {
        env.retain(|(name, _)| name != k);
        env.push((k.to_owned(), v.to_owned()));
    }
    env.push((
        dropspec::spans::ENV.to_owned(),
        spans_path.to_string_lossy().into_owned(),
    ));
    let options = dropspec::vm::VmOptions {
        kernel: package.clone(),
        memory_mib: 2048,
        cpus: plan.cpus,
        timeout: Duration::from_secs(900),
        accel: dropspec::vm::Accel::Tcg,
        writable: vec![plan.root.to_owned()],
        env,
        cwd: plan.root.to_owned(),
        command,
        cache_dir,
        verbose: false,
    };
    progress(&format!(
        "guests: the suite ({}) on {package}, {} vCPU(s), under TCG (minutes)",
        plan.build.name(),
        plan.cpus
    ));
    let console = Console::default();
    let started = Instant::now();
    let outcome = dropspec::vm::run(&options, Box::new(console.clone()), &mut status);
    let wall = started.elapsed();
    let spans = std::fs::read_to_string(&spans_path).unwrap_or_default();
    let _ = std::fs::remove_file(&spans_path);
    let outcome = outcome.with_context(|| format!("running the suite on {package}"))?;
    let text =
        String::from_utf8_lossy(&console.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let console_tail = lines[lines.len().saturating_sub(30)..]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
    Ok(GuestRun {
        kernel: package,
        build: plan.build,
        cpus: plan.cpus,
        filter: plan.filter.map(str::to_owned),
        host_build,
        outcome,
        wall,
        processes: parse_spans(&spans)?,
        console_tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_file_into_processes() {
        let text = r#"{"process":"scenario suite","pid":5,"uptime_s":3.5,"hooks":null,"start_ms":0.0}
{"span":"drop probe load","ms":800.0,"start_ms":10.0}
{"scenario":"a/b","ms":50.0,"setup_ms":10.0,"attach_ms":810.0,"traffic_ms":5.0,"settle_ms":5.0,"teardown_ms":1.0,"start_ms":9.0}
{"scenario":"a/b","ms":40.0,"setup_ms":10.0,"attach_ms":1.0,"traffic_ms":5.0,"settle_ms":5.0,"teardown_ms":1.0,"start_ms":60.0}
{"trial":"a/b","ms":120.0,"verdict":"passed","start_ms":5.0}
{"process":"scenario suite","pid":6,"uptime_s":9.0,"hooks":"kprobe","start_ms":0.0}
{"trial":"hook/x","ms":30.0,"verdict":"skipped","start_ms":1.0}
"#;
        let p = parse_spans(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].span_ms("drop probe load"), Some(800.0));
        assert_eq!(p[0].span_ms("kallsyms read"), None);
        assert_eq!(p[0].run_spans.len(), 2);
        assert_eq!(p[0].phases().setup, 20.0);
        assert_eq!(p[0].runs_within(5.0, 120.0).runs, 2);
        assert_eq!(p[0].runs_within(5.0, 50.0).runs, 1);
        assert_eq!(p[0].last_ms(), 810.0);
        assert_eq!(p[1].hooks.as_deref(), Some("kprobe"));
        assert_eq!(p[1].verdicts()["skipped"], 1);
        assert!(parse_spans("{\"span\":\"x\",\"ms\":1}").is_err());
    }
}
