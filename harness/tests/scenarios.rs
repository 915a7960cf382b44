//! `cargo test` entry for the scenario suite: one trial per `scenarios/**/*.toml`, named
//! by its path, plus a check that every file in `snapshots/` belongs to a scenario.
//!
//! This file only maps the library's verdict (`dropspec::verdict::judge`, the same one
//! `dropspec run` calls) onto libtest: passed, failed with its reasons, or ignored with
//! why. Skips, baselines, `since_kernel` and the `DROPSPEC_*` policy are decided there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use dropspec::baseline::Baselines;
use dropspec::policy::{BaselineMode, Policy};
use dropspec::runner;
use dropspec::scenario;
use dropspec::verdict::{self, Verdict};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ sits in the workspace")
        .to_owned()
}

fn main() {
    dropspec::spans::begin("scenario suite");
    let args = Arguments::from_args();
    // A bad DROPSPEC_* value stops the whole run before anything is built: a misspelt
    // DROPSPEC_REQUIRE_PRIVILEGED must not quietly turn CI's no-skip rule off.
    let policy = match Policy::current() {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("dropspec: {e}");
            std::process::exit(2);
        }
    };
    let root = workspace();
    let scenarios_dir = root.join("scenarios");
    let paths = scenario::discover(&scenarios_dir).expect("reading scenarios/");
    if paths.is_empty() {
        eprintln!(
            "dropspec: no scenario files under {}: nothing would be tested",
            scenarios_dir.display()
        );
        std::process::exit(2);
    }
    match dropspec::cleanup::reap_before_run() {
        Ok(reaped) => reaped.lines().iter().for_each(|line| eprintln!("{line}")),
        Err(e) => {
            eprintln!("dropspec: removing what an earlier run left: {e}");
            std::process::exit(2);
        }
    }
    let names: Vec<String> = paths
        .iter()
        .map(|p| scenario::scenario_name(p, &scenarios_dir))
        .collect();

    let mut trials: Vec<Trial> = paths
        .into_iter()
        .zip(names.iter().cloned())
        .map(|(path, name)| {
            let root = root.clone();
            Trial::ignorable_test(name.clone(), move || run_trial(&root, &path, policy))
        })
        .collect();
    trials.push(Trial::test("snapshots/all_referenced", {
        let names = names.clone();
        move || {
            let started = std::time::Instant::now();
            let result = unreferenced_snapshots(&workspace().join("snapshots"), &names);
            dropspec::spans::trial("snapshots/all_referenced", started, word(&result));
            result
        }
    }));
    trials.push(Trial::ignorable_test("controls/no_harness_drops", {
        let names = names.clone();
        move || {
            let started = std::time::Instant::now();
            let result = no_harness_drops(&workspace(), &names, policy);
            let word = match &result {
                Ok(Completion::Completed) => "passed",
                Ok(_) => "skipped",
                Err(_) => "failed",
            };
            dropspec::spans::trial("controls/no_harness_drops", started, word);
            result
        }
    }));
    // The controls whose own trials will run in this process: controls/no_harness_drops
    // checks the reports those trials made, and runs any other control itself.
    let _ = CONTROLS_RUN_BY_TRIALS.set(
        trials
            .iter()
            .filter(|t| names.iter().any(|n| n == t.name()) && t.name().starts_with("controls/"))
            .filter(|t| !args.list && !args.is_filtered_out(t) && !args.is_ignored(t))
            .map(|t| t.name().to_owned())
            .collect(),
    );
    // Only a whole-suite run can compare. cargo-nextest runs one trial per process
    // (`--exact NAME`), so there this check never runs (nor could it: each process sees
    // one verdict); `cargo test` in .ci/run makes it.
    let whole_suite = args.filter.is_none() && args.skip.is_empty() && !args.list;
    let conclusion = libtest_mimic::run(&args, trials);
    // Both front ends must reach the same verdict: run the suite again through
    // `dropspec run` and compare, scenario by scenario. Not in guests, which run this
    // same binary (so they agree with it by construction) and where it would double the
    // suite's time under TCG; not while recording, which changes the baselines between.
    if whole_suite
        && policy.vm_kernel.is_none()
        && matches!(
            policy.baseline,
            BaselineMode::Check | BaselineMode::CheckOnly
        )
    {
        if let Err(disagreements) = cli_agrees(&root) {
            eprintln!("dropspec run and cargo test disagree:\n{disagreements}");
            std::process::exit(101);
        }
    }
    conclusion.exit();
}

/// A trial's outcome as `dropspec::spans` records it.
fn word(result: &Result<(), Failed>) -> &'static str {
    if result.is_ok() {
        "passed"
    } else {
        "failed"
    }
}

/// Each trial's verdict, by scenario name: "passed", "failed" or "skipped".
static VERDICTS: Mutex<BTreeMap<String, &'static str>> = Mutex::new(BTreeMap::new());

fn verdict_word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Passed => "passed",
        Verdict::Failed(_) => "failed",
        Verdict::Skipped(_) => "skipped",
    }
}

/// Runs `dropspec run` on the whole suite and compares its verdicts with the trials'.
/// It reads them from `--format json` (stdout must be that document alone) and has the
/// run write its JUnit, summary and metrics too, so CI's outputs are made by every
/// whole-suite `cargo test`.
fn cli_agrees(root: &Path) -> Result<(), String> {
    let outputs = std::env::temp_dir().join(format!("dropspec-agree-{}", std::process::id()));
    std::fs::create_dir_all(&outputs).map_err(|e| format!("{}: {e}", outputs.display()))?;
    let junit = outputs.join("junit.xml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dropspec"))
        .args(["run", "--jobs", "2", "--format", "json", "--junit"])
        .arg(&junit)
        .arg("--summary")
        .arg(outputs.join("summary.md"))
        .arg("--metrics")
        .arg(outputs.join("drops.prom"))
        .current_dir(root)
        .output()
        .map_err(|e| format!("starting dropspec run: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let document: serde_json::Value = serde_json::from_str(&stdout).map_err(|e| {
        format!(
            "dropspec run --format json printed no JSON document ({e}):\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let mut cli = BTreeMap::new();
    for entry in document["verdicts"].as_array().into_iter().flatten() {
        if let (Some(name), Some(word)) = (entry["scenario"].as_str(), entry["verdict"].as_str()) {
            cli.insert(name.to_owned(), word.to_owned());
        }
    }
    let junit_cases = std::fs::read_to_string(&junit)
        .map(|xml| xml.matches("<testcase ").count())
        .unwrap_or(0);
    let written = ["summary.md", "drops.prom"]
        .iter()
        .all(|f| std::fs::metadata(outputs.join(f)).is_ok_and(|m| m.len() > 0));
    let _ = std::fs::remove_dir_all(&outputs);
    let trials = VERDICTS.lock().unwrap_or_else(|p| p.into_inner());
    let mut problems = Vec::new();
    if junit_cases != cli.len() || !written {
        problems.push(format!(
            "  CI outputs: {junit_cases} JUnit test case(s) for {} verdicts; summary and metrics written: {written}",
            cli.len()
        ));
    }
    for (name, word) in trials.iter() {
        match cli.get(name) {
            Some(cli_word) if cli_word == word => {}
            Some(cli_word) => problems.push(format!(
                "  {name}: cargo test {word}, dropspec run {cli_word}"
            )),
            None => problems.push(format!(
                "  {name}: cargo test {word}, dropspec run gave no verdict"
            )),
        }
    }
    if problems.is_empty() {
        eprintln!(
            "verdicts: dropspec run agrees with cargo test on all {} scenarios (read from its --format json; JUnit, summary and metrics written)",
            trials.len()
        );
        Ok(())
    } else {
        Err(format!(
            "{}\n(dropspec run said:)\n{}",
            problems.join("\n"),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// One scenario as a trial: run it, and let the library's one verdict decide.
fn run_trial(root: &Path, path: &Path, policy: &Policy) -> Result<Completion, Failed> {
    let started = std::time::Instant::now();
    let scenarios_dir = root.join("scenarios");
    // First, so that a control's trial ending early (a bad file, an unknown name) still
    // tells controls/no_harness_drops it made no run.
    let mut control = ControlSlot::for_trial(&scenario::scenario_name(path, &scenarios_dir));
    let scenario = scenario::load(path, &scenarios_dir, &root.join("fixtures"))
        .map_err(|e| Failed::from(e.to_string()))?;
    // The same names check `dropspec run` makes before running a file.
    let unknown = dropspec::names::check(&scenario);
    if !unknown.is_empty() {
        let lines: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        return Err(lines.join("\n").into());
    }
    let baselines = Baselines::in_project(root);
    let run = runner::run(&scenario);
    control.record(&run);
    let judgement = verdict::judge(&scenario, run, &baselines, policy);
    // DROPSPEC_REPEAT=N: N-1 more runs, each judged alike; a failing one is the trial's
    // verdict, and any count or outcome that varied fails it too.
    let mut judgement = judgement;
    if policy.repeat > 1 {
        let mut runs = vec![repeat_run(&judgement)];
        for _ in 1..policy.repeat {
            let run = runner::run(&scenario);
            control.record(&run);
            let again = verdict::judge(&scenario, run, &baselines, policy);
            runs.push(repeat_run(&again));
            if matches!(again.verdict, Verdict::Failed(_))
                && !matches!(judgement.verdict, Verdict::Failed(_))
            {
                judgement = again;
            }
        }
        let varied = dropspec::repeat::variations(&runs);
        if !varied.is_empty() {
            return Err(format!(
                "{}: varied over {} runs:\n  - {}",
                path.display(),
                policy.repeat,
                varied.join("\n  - ")
            )
            .into());
        }
    }
    for note in &judgement.notes {
        eprintln!("{}: {note}", scenario.name);
    }
    VERDICTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(scenario.name.clone(), verdict_word(&judgement.verdict));
    dropspec::spans::trial(&scenario.name, started, verdict_word(&judgement.verdict));
    match judgement.verdict {
        Verdict::Passed => Ok(Completion::Completed),
        Verdict::Skipped(why) => Ok(Completion::ignored_with(why)),
        Verdict::Failed(problems) => {
            let mut text = format!("{}:\n  - {}", path.display(), problems.join("\n  - "));
            if let Some(diff) = &judgement.diff {
                text.push_str(&format!("\n\n{diff}"));
            }
            if let Some(report) = &judgement.report {
                text.push_str(&format!(
                    "\n\nwhat the kernel did:\n{}",
                    report.render(true)
                ));
            }
            Err(text.into())
        }
    }
}

/// Kernel functions that free packets only because a socket or a namespace is being
/// closed: a drop with one of them in its stack was made by whoever closed it, never by
/// a scenario's fault. Read from the kernel's close paths (net/ipv4/tcp.c,
/// inet_connection_sock.c, af_inet.c, net/core/sock.c, stream.c, udp.c, af_packet.c,
/// net_namespace.c, dev.c):
/// - `tcp_disconnect`: a listener's unaccepted children (`inet_csk_listen_stop` →
///   `inet_child_forget`) and repair-mode closes purge their queues here (NOT_SPECIFIED
///   on 6.1, QUEUE_PURGE later) and reset the peer;
/// - `tcp_close`, `__tcp_close`, `inet_release`, `sock_close`, `__sock_release`,
///   `sk_common_release`: close(2) of any inet socket, on the way to the above;
/// - `sk_stream_kill_queues`, `inet_csk_destroy_sock`: an orphaned TCP socket dying with
///   skbs still queued (a FIN that arrived after close: QUEUE_PURGE);
/// - `__sk_destruct`, `sk_destruct`, `inet_sock_destruct`, `udp_destruct_common`: queues
///   freed when the last reference goes (UDP's from an RCU callback);
/// - `packet_release`: an AF_PACKET socket closed with frames queued;
/// - `cleanup_net`, `unregister_netdevice_many`, `default_device_exit_batch`,
///   `dev_close_many`: a namespace torn down with packets still in its devices.
pub const TEARDOWN_FUNCTIONS: &[&str] = &[
    "tcp_disconnect",
    "tcp_close",
    "__tcp_close",
    "inet_release",
    "inet_csk_listen_stop",
    "inet_child_forget",
    "sock_close",
    "__sock_release",
    "sk_common_release",
    "sk_stream_kill_queues",
    "inet_csk_destroy_sock",
    "__sk_destruct",
    "sk_destruct",
    "inet_sock_destruct",
    "udp_destruct_common",
    "packet_release",
    "cleanup_net",
    "unregister_netdevice_many",
    "default_device_exit_batch",
    "dev_close_many",
];

/// What one run of a control scenario showed controls/no_harness_drops: its drops
/// with a teardown function in their stacks, or why it did not run.
enum ControlRun {
    Ran(Vec<String>),
    Unavailable(String),
    KernelLacks { feature: &'static str, why: String },
    Error(String),
}

impl ControlRun {
    fn of(name: &str, run: &Result<dropspec::report::Report, runner::RunError>) -> ControlRun {
        match run {
            Ok(report) => ControlRun::Ran(teardown_drops(name, report)),
            Err(runner::RunError::Unavailable(why)) => ControlRun::Unavailable(why.clone()),
            Err(runner::RunError::KernelLacks { feature, why }) => ControlRun::KernelLacks {
                feature: feature.name,
                why: why.clone(),
            },
            Err(e) => ControlRun::Error(e.to_string()),
        }
    }
}

/// The controls whose own trials run in this process (after libtest's filters): set once
/// in `main` before the trials start.
static CONTROLS_RUN_BY_TRIALS: OnceLock<BTreeSet<String>> = OnceLock::new();
/// Each control trial's runs (empty if it ended before running the scenario: a bad file,
/// an unknown name, a panic), filled in when the trial ends, however it ends.
static CONTROL_RUNS: Mutex<BTreeMap<String, Vec<ControlRun>>> = Mutex::new(BTreeMap::new());
static CONTROL_RUN_ENDED: Condvar = Condvar::new();

/// A control trial's runs on their way to CONTROL_RUNS: handed over on drop, so a trial
/// that returns early or panics still ends the wait in controls/no_harness_drops.
struct ControlSlot {
    name: Option<String>,
    runs: Vec<ControlRun>,
}

impl ControlSlot {
    fn for_trial(name: &str) -> ControlSlot {
        ControlSlot {
            name: name.starts_with("controls/").then(|| name.to_owned()),
            runs: Vec::new(),
        }
    }

    fn record(&mut self, run: &Result<dropspec::report::Report, runner::RunError>) {
        if let Some(name) = &self.name {
            self.runs.push(ControlRun::of(name, run));
        }
    }
}

impl Drop for ControlSlot {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            let mut runs = CONTROL_RUNS.lock().unwrap_or_else(|p| p.into_inner());
            runs.insert(name, std::mem::take(&mut self.runs));
            CONTROL_RUN_ENDED.notify_all();
        }
    }
}

/// The runs the control's own trial made, once it has ended; None if no trial of this
/// process runs it (filtered out, `--skip`, nextest's one trial per process) or it ended
/// without a run. The trials start in order and this trial is queued after every
/// scenario, so a control counted here has already started: the wait ends.
fn control_trial_runs(name: &str) -> Option<Vec<ControlRun>> {
    if !CONTROLS_RUN_BY_TRIALS
        .get()
        .is_some_and(|set| set.contains(name))
    {
        return None;
    }
    let mut runs = CONTROL_RUNS.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(found) = runs.remove(name) {
            return (!found.is_empty()).then_some(found);
        }
        runs = CONTROL_RUN_ENDED
            .wait(runs)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// The drop rows of a control's report with a teardown function in their function or
/// stack, as problems.
fn teardown_drops(name: &str, report: &dropspec::report::Report) -> Vec<String> {
    let mut problems = Vec::new();
    for drop in &report.drops {
        let frames = std::iter::once(&drop.function).chain(&drop.stack);
        if let Some(f) = frames
            .into_iter()
            .find(|f| TEARDOWN_FUNCTIONS.contains(&f.as_str()))
        {
            problems.push(format!(
                "{name}: {} {} at {} ({} packets) has {f} in its stack: a drop made by closing, not by the scenario (stack: {})",
                drop.host, drop.reason, drop.function, drop.packets, drop.stack.join(" <- ")
            ));
        }
    }
    problems
}

/// Checks every control scenario (`scenarios/controls/`) and fails if any drop row has a
/// teardown function in its function or stack. A control's own trial already ran it in
/// this process: its reports (every run of it, DROPSPEC_REPEAT's too) are checked; a
/// control no trial ran (filtered out, or its trial stopped before running it) is run
/// here. A control that cannot run makes the trial a skip that says so (a failure under
/// DROPSPEC_REQUIRE_PRIVILEGED=1), never a pass.
fn no_harness_drops(root: &Path, names: &[String], policy: &Policy) -> Result<Completion, Failed> {
    let scenarios_dir = root.join("scenarios");
    let controls: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with("controls/"))
        .collect();
    if controls.is_empty() {
        return Err("no control scenario under scenarios/controls/: nothing to check".into());
    }
    let (mut checked, mut reused, mut skipped, mut problems) = (0, 0, Vec::new(), Vec::new());
    for name in controls {
        let trial_runs = control_trial_runs(name);
        let from_trial = trial_runs.is_some();
        let runs = match trial_runs {
            Some(runs) => runs,
            None => {
                let path = scenarios_dir.join(format!("{name}.toml"));
                let scenario = scenario::load(&path, &scenarios_dir, &root.join("fixtures"))
                    .map_err(|e| Failed::from(e.to_string()))?;
                vec![ControlRun::of(name, &runner::run(&scenario))]
            }
        };
        let mut ran = false;
        for run in runs {
            match run {
                ControlRun::Ran(found) => {
                    ran = true;
                    problems.extend(found);
                }
                ControlRun::Unavailable(why) => skipped.push(format!("{name}: {why}")),
                // A feature DROPSPEC_MAY_LACK names: that control's own trial says the same.
                ControlRun::KernelLacks { feature, why } => {
                    match verdict::lack_allowed(policy, feature) {
                        Some(allowed) => eprintln!("controls/no_harness_drops: {name}: {allowed}"),
                        None => skipped.push(format!("{name}: {why}")),
                    }
                }
                ControlRun::Error(e) => return Err(format!("{name}: {e}").into()),
            }
        }
        if ran {
            checked += 1;
            reused += usize::from(from_trial);
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("\n").into());
    }
    if checked == 0 || (!skipped.is_empty() && policy.require_privileged) {
        let why = format!("{checked} control(s) ran; not run: {}", skipped.join("; "));
        return if policy.require_privileged {
            Err(why.into())
        } else {
            Ok(Completion::ignored_with(why))
        };
    }
    eprintln!(
        "controls/no_harness_drops: {checked} controls ran ({reused} checked in their own trials' reports, {} run here), no drop made by a teardown",
        checked - reused
    );
    Ok(Completion::Completed)
}

fn repeat_run(judgement: &verdict::Judgement) -> dropspec::repeat::Run {
    dropspec::repeat::Run {
        outcome: verdict_word(&judgement.verdict),
        snapshot: judgement.report.as_ref().map(|r| r.render_snapshot()),
    }
}

fn unreferenced_snapshots(dir: &Path, scenario_names: &[String]) -> Result<(), Failed> {
    let mut stray = Vec::new();
    let kernels = dir.join("kernels");
    if let Ok(entries) = std::fs::read_dir(&kernels) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                if let Err(e) = unreferenced_in(&entry.path(), scenario_names) {
                    stray.push(format!(
                        "{}: {}",
                        entry.path().display(),
                        e.message().unwrap_or("")
                    ));
                }
            }
        }
    }
    if let Err(e) = unreferenced_in(dir, scenario_names) {
        stray.push(e.message().unwrap_or("").to_owned());
    }
    if stray.is_empty() {
        Ok(())
    } else {
        Err(stray.join("\n").into())
    }
}

fn unreferenced_in(dir: &Path, scenario_names: &[String]) -> Result<(), Failed> {
    let expected: BTreeSet<String> = scenario_names
        .iter()
        .map(|n| format!("{}.snap", scenario::snapshot_name(n)))
        .collect();
    let mut stray = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
        let file = entry.map_err(|e| e.to_string())?.file_name();
        let file = file.to_string_lossy();
        if file.ends_with(".snap") && !expected.contains(file.as_ref()) {
            stray.push(file.into_owned());
        }
    }
    if stray.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "snapshots without a scenario (delete them, or restore their scenario): {}",
            stray.join(", ")
        )
        .into())
    }
}
