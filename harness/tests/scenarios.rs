//! `cargo test` entry for the scenario suite: one trial per `scenarios/**/*.toml`, named
//! by its path, plus a check that every file in `snapshots/` belongs to a scenario.
//!
//! A trial that cannot run here (no root, missing kernel feature or tool) is shown as
//! ignored with the reason; with `DROPSPEC_REQUIRE_PRIVILEGED=1` (CI) it fails instead.

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
    if let Err(snapshot_failure) = assert_snapshot(root, &scenario.name, &report) {
        problems.push(snapshot_failure);
    }
    if problems.is_empty() {
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

/// Compares the report with `snapshots/<name>.snap`; insta prints the diff.
fn assert_snapshot(root: &Path, name: &str, report: &report::Report) -> Result<(), String> {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root.join("snapshots"));
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
