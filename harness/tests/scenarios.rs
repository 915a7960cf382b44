//! `cargo test` entry for the scenario suite: one trial per `scenarios/**/*.toml`, named
//! by its path, plus a check that every file in `snapshots/` belongs to a scenario.
//!
//! A trial that cannot run here (no root, missing kernel feature or tool) is shown as
//! ignored with the reason; with `DROPSPEC_REQUIRE_PRIVILEGED=1` (CI) it fails instead.
//!
//! Baselines: `snapshots/<name>.snap` is shared by every kernel; a kernel that really
//! behaves differently has its own `snapshots/kernels/<uname -r>/<name>.snap`, used in
//! its place. `DROPSPEC_BASELINE=record` records a new kernel's baselines in one run:
//! where the report matches the shared snapshot nothing is written, elsewhere the
//! kernel-specific file is (re)written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dropspec::report;
use dropspec::runner::{self, RunError};
use dropspec::scenario;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ sits in the workspace")
        .to_owned()
}

fn require_privileged() -> bool {
    std::env::var("DROPSPEC_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

fn main() {
    let args = Arguments::from_args();
    let root = workspace();
    let scenarios_dir = root.join("scenarios");
    let paths = scenario::discover(&scenarios_dir).expect("reading scenarios/");
    let names: Vec<String> = paths
        .iter()
        .map(|p| scenario::scenario_name(p, &scenarios_dir))
        .collect();

    let mut trials: Vec<Trial> = paths
        .into_iter()
        .zip(names.iter().cloned())
        .map(|(path, name)| {
            let root = root.clone();
            Trial::ignorable_test(name.clone(), move || run_trial(&root, &path))
        })
        .collect();
    trials.push(Trial::test("snapshots/all_referenced", move || {
        unreferenced_snapshots(&workspace().join("snapshots"), &names)
    }));
    libtest_mimic::run(&args, trials).exit();
}

fn run_trial(root: &Path, path: &Path) -> Result<Completion, Failed> {
    let scenarios_dir = root.join("scenarios");
    let scenario = scenario::load(path, &scenarios_dir, &root.join("fixtures"))
        .map_err(|e| Failed::from(e.to_string()))?;
    let report = match runner::run(&scenario) {
        Ok(report) => report,
        Err(RunError::Unavailable(why)) if !require_privileged() => {
            return Ok(Completion::ignored_with(why));
        }
        Err(RunError::Unavailable(why)) => {
            return Err(format!(
                "could not run: {why}\n(DROPSPEC_REQUIRE_PRIVILEGED=1: a privileged scenario may not be skipped)"
            )
            .into());
        }
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };

    let mut problems: Vec<String> = report::check(&scenario, &report)
        .into_iter()
        .map(|m| m.0)
        .collect();
    if !report::expectations_apply(&scenario, &report) {
        eprintln!(
            "{}: inline expectations describe newer kernels than {}; held to its own baseline only",
            scenario.name, report.kernel
        );
        let own = report::kernel_snapshot_dir(root, &report.kernel)
            .join(format!("{}.snap", scenario::snapshot_name(&scenario.name)));
        if !own.exists() && std::env::var("DROPSPEC_BASELINE").is_err() {
            problems.push(format!(
                "kernel {} predates this scenario's since_kernel, and has no baseline of its own at {}: record one with DROPSPEC_BASELINE=record",
                report.kernel,
                own.display()
            ));
        }
    }
    if let Err(snapshot_failure) = assert_snapshot(root, &scenario.name, &report) {
        problems.push(snapshot_failure);
    }
    let skipped_hooks = report::skipped_hook_expectations(&scenario, &report);
    if !skipped_hooks.is_empty() && std::env::var_os("DROPSPEC_REQUIRE_HOOKS").is_some() {
        problems.push(format!(
            "hook-point expectations could not be checked (DROPSPEC_REQUIRE_HOOKS is set): {}",
            skipped_hooks.join("; ")
        ));
    }
    if problems.is_empty() && !skipped_hooks.is_empty() {
        // Everything else was checked and held; the hook points could not be watched.
        Ok(Completion::ignored_with(format!(
            "hook-point expectations skipped, the rest held: {}",
            skipped_hooks.join("; ")
        )))
    } else if problems.is_empty() {
        Ok(Completion::Completed)
    } else {
        Err(format!(
            "{}:\n  - {}\n\nwhat the kernel did:\n{}",
            path.display(),
            problems.join("\n  - "),
            report.render(true)
        )
        .into())
    }
}

/// Writes a kernel-specific baseline when the report differs from the shared snapshot.
fn record_baseline(root: &Path, name: &str, report: &report::Report) -> Result<(), String> {
    let file = format!("{}.snap", scenario::snapshot_name(name));
    let text = report.render_snapshot();
    let shared = report::read_snapshot(&root.join("snapshots").join(&file)).ok();
    let specific = report::kernel_snapshot_dir(root, &report.kernel).join(&file);
    if shared.as_deref().map(str::trim_end) == Some(text.trim_end()) {
        let _ = std::fs::remove_file(&specific);
        return Ok(());
    }
    std::fs::create_dir_all(specific.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    let header = format!(
        "---\nsource: harness/tests/scenarios.rs\ndescription: \"{} (recorded on kernel {}, probe {})\"\n---\n",
        report.description.replace('"', "'"),
        report.kernel,
        report.probe
    );
    std::fs::write(&specific, header + &text).map_err(|e| e.to_string())?;
    eprintln!("recorded kernel-specific baseline {}", specific.display());
    Ok(())
}

/// Compares the report with its baseline — `snapshots/kernels/<kernel>/<name>.snap` if the
/// running kernel has one, else `snapshots/<name>.snap` — and insta prints the diff.
fn assert_snapshot(root: &Path, name: &str, report: &report::Report) -> Result<(), String> {
    if std::env::var("DROPSPEC_BASELINE").is_ok_and(|v| v == "record") {
        return record_baseline(root, name, report);
    }
    let baseline = report::baseline_path(root, name, &report.kernel);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(baseline.parent().expect("a snapshot file has a directory"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!(
        "{} (recorded on kernel {}, probe {})",
        report.description, report.kernel, report.probe
    ));
    let snapshot = scenario::snapshot_name(name);
    let text = report.render_snapshot();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_snapshot!(snapshot, text));
    }))
    .map_err(|_| {
        format!(
            "the report differs from snapshots/{}.snap (diff above); if the kernel's behaviour really changed, accept it with INSTA_UPDATE=always",
            scenario::snapshot_name(name)
        )
    })
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
