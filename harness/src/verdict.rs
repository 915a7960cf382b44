//! The one verdict: a scenario, what running it gave, its baselines and the run's policy
//! → pass, fail or skip, with every reason. `dropspec run`, `cargo test` and the guest
//! suite (which runs `cargo test`'s binary) all call [`judge`]; none of them decides
//! anything of its own, so they cannot disagree.
//!
//! The rules, in order:
//! 1. A scenario this machine cannot run (no root, a kernel feature or tool missing) is
//!    skipped with the reason, or fails under `DROPSPEC_REQUIRE_PRIVILEGED=1`; a kernel
//!    feature that `DROPSPEC_MAY_LACK` names is a skip that says so even then
//!    ([`lack_allowed`]).
//! 2. Any other run error fails.
//! 3. Every function an expectation names must exist on this kernel (checked here, after
//!    the run, where it lives in a module the run loaded), and the inline expectations
//!    must hold, unless they describe newer kernels
//!    (`since_kernel`); then the kernel must have its own baseline.
//! 4. The report must match its baseline (or is recorded, per the policy, but only when
//!    the inline expectations held).
//! 5. Hook-point expectations the kernel would not let dropspec watch make an otherwise
//!    passing scenario a skip that says so, or a failure under `DROPSPEC_REQUIRE_HOOKS=1`.
//! 6. On a kernel without drop reasons (before 5.17) expectations by function still hold
//!    (`report::check`), but those by reason alone and causes that did not hold (most are
//!    named from reasons) cannot be checked: such a scenario is
//!    held to the kernel's own baseline, which must exist (as for rule 3). Never a pass on
//!    the checkable part alone: the baseline recorded on that kernel holds the rest.

use std::path::PathBuf;

use crate::baseline::{self, Baselines, Comparison};
use crate::policy::{BaselineMode, Policy};
use crate::report::{self, Report};
use crate::runner::RunError;
use crate::scenario::Scenario;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Every way the run fell short, one line each.
    Failed(Vec<String>),
    /// Why nothing (or not everything) could be checked here.
    Skipped(String),
}

/// A verdict with what led to it.
#[derive(Debug)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Things done or noticed on the way that are not failures: a baseline recorded, a
    /// review file written, expectations held to the kernel's own baseline only.
    pub notes: Vec<String>,
    /// The baseline comparison's diff, when the report differed.
    pub diff: Option<String>,
    pub report: Option<Report>,
}

impl Judgement {
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }
}

/// Judges one scenario's run.
pub fn judge(
    scenario: &Scenario,
    run: Result<Report, RunError>,
    baselines: &Baselines,
    policy: &Policy,
) -> Judgement {
    let report = match run {
        Ok(report) => report,
        Err(RunError::KernelLacks { feature, why }) => {
            return Judgement::of(match lack_allowed(policy, feature.name) {
                Some(allowed) => Verdict::Skipped(format!("{allowed}: {why}")),
                None if policy.require_privileged => Verdict::Failed(vec![format!(
                    "could not run: {why} (DROPSPEC_REQUIRE_PRIVILEGED=1: a scenario may not be skipped for a missing kernel feature unless DROPSPEC_MAY_LACK names it)"
                )]),
                None => Verdict::Skipped(why),
            })
        }
        Err(RunError::Unavailable(why)) if policy.require_privileged => {
            return Judgement::of(Verdict::Failed(vec![format!(
                "could not run: {why} (DROPSPEC_REQUIRE_PRIVILEGED=1: a privileged scenario may not be skipped)"
            )]));
        }
        Err(RunError::Unavailable(why)) => return Judgement::of(Verdict::Skipped(why)),
        Err(e) => {
            return Judgement::of(Verdict::Failed(vec![format!(
                "{}: {e}",
                scenario.path.display()
            )]))
        }
    };
    let mut notes = Vec::new();
    let mut problems: Vec<String> = report::check(scenario, &report)
        .into_iter()
        .map(|m| m.0)
        .collect();
    problems.extend(report::harness_interference(scenario, &report));
    problems.extend(report::probe_missed(&report));
    if !report.reruns.is_empty() {
        notes.push(format!(
            "run {} times: earlier attempts were discarded because the probe missed events ({})",
            report.reruns.len() + 1,
            report.reruns.join("; ")
        ));
    }
    // Functions of modules that were not loaded before the run are checked now.
    problems.extend(
        crate::names::check_functions_after_run(scenario)
            .iter()
            .map(ToString::to_string),
    );
    let expectations_held = problems.is_empty();

    if !report::expectations_apply(scenario, &report) {
        notes.push(format!(
            "inline expectations describe newer kernels than {}; held to its own baseline only",
            report.kernel
        ));
        let own = baselines.kernel_path(&scenario.name, &report.kernel);
        if !own.exists() && policy.baseline != BaselineMode::RecordKernel {
            problems.push(format!(
                "kernel {} predates this scenario's since_kernel, and has no baseline of its own at {}: record one with DROPSPEC_BASELINE=record",
                report.kernel,
                own.display()
            ));
        }
    }

    let unchecked = report::unchecked_without_reasons(scenario, &report);
    if !unchecked.is_empty() {
        notes.push(format!(
            "drop reasons are unavailable on {}: held to its own baseline only: {}",
            report.kernel,
            unchecked.join("; ")
        ));
        let own = baselines.kernel_path(&scenario.name, &report.kernel);
        if !own.exists() && policy.baseline != BaselineMode::RecordKernel {
            problems.push(format!(
                "kernel {} reports no drop reasons, so these expectations cannot be checked: {}; it needs a baseline of its own at {}: record one with DROPSPEC_BASELINE=record",
                report.kernel,
                unchecked.join("; "),
                own.display()
            ));
        }
    }

    let diff = hold_to_baseline(
        scenario,
        &report,
        baselines,
        policy,
        expectations_held,
        &mut problems,
        &mut notes,
    );

    let skipped_hooks = report::skipped_hook_expectations(scenario, &report);
    if !skipped_hooks.is_empty() && policy.require_hooks {
        problems.push(format!(
            "hook-point expectations could not be checked (DROPSPEC_REQUIRE_HOOKS=1): {}",
            skipped_hooks.join("; ")
        ));
    }
    let verdict = if !problems.is_empty() {
        Verdict::Failed(problems)
    } else if !skipped_hooks.is_empty() {
        // Everything else was checked and held; the hook points could not be watched.
        Verdict::Skipped(format!(
            "hook-point expectations skipped, the rest held: {}",
            skipped_hooks.join("; ")
        ))
    } else {
        Verdict::Passed
    };
    Judgement {
        verdict,
        notes,
        diff,
        report: Some(report),
    }
}

/// When `DROPSPEC_MAY_LACK` names the feature (by module name): the words that open the
/// skip, `this kernel lacks CONFIG_… (allowed by DROPSPEC_MAY_LACK)`. The only
/// way a missing kernel feature is not a failure under `DROPSPEC_REQUIRE_PRIVILEGED=1`;
/// the controls' teardown check (tests/scenarios.rs) asks the same.
pub fn lack_allowed(policy: &Policy, feature: &str) -> Option<String> {
    let feature = crate::kernel_features::named(feature)?;
    policy.may_lack.contains(&feature.name).then(|| {
        format!(
            "this kernel lacks {} (allowed by DROPSPEC_MAY_LACK)",
            feature.option
        )
    })
}

impl Judgement {
    fn of(verdict: Verdict) -> Judgement {
        Judgement {
            verdict,
            notes: Vec::new(),
            diff: None,
            report: None,
        }
    }
}

/// Compares the report with its baseline, or records it as the policy says. Returns the
/// diff when they differed.
fn hold_to_baseline(
    scenario: &Scenario,
    report: &Report,
    baselines: &Baselines,
    policy: &Policy,
    expectations_held: bool,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<String> {
    let text = report.render_snapshot();
    let description = format!(
        "{} (recorded on kernel {}, probe {})",
        report.description, report.kernel, report.probe
    );
    let comparison = baselines.compare(&scenario.name, &report.kernel, &text);
    let recording = matches!(
        policy.baseline,
        BaselineMode::Record | BaselineMode::RecordKernel
    );
    if recording && comparison != Comparison::Same && !expectations_held {
        problems.push(
            "baseline not recorded: the inline expectations failed (fix the scenario or the kernel's behaviour first)"
                .into(),
        );
        return None;
    }
    match (policy.baseline, comparison) {
        (BaselineMode::RecordKernel, _) => {
            record_kernel_baseline(
                scenario,
                report,
                baselines,
                &text,
                &description,
                problems,
                notes,
            );
            None
        }
        (_, Comparison::Same) => None,
        (BaselineMode::Record, Comparison::Missing { path } | Comparison::Differs { path, .. }) => {
            record(&path, &description, &text, problems, notes);
            None
        }
        (mode, Comparison::Missing { path }) => {
            problems.push(format!(
                "no baseline at {}: review this report, then record it with `dropspec run --record {}` (or INSTA_UPDATE=always cargo test)",
                path.display(),
                scenario.path.display()
            ));
            leave_for_review(mode, policy, &path, &description, &text, notes);
            None
        }
        (mode, Comparison::Differs { path, diff }) => {
            problems.push(format!(
                "the report differs from {} (diff below); if the kernel's behaviour really changed, accept it with `dropspec run --record` or `cargo insta review`",
                path.display()
            ));
            leave_for_review(mode, policy, &path, &description, &text, notes);
            Some(diff)
        }
    }
}

fn record(
    path: &std::path::Path,
    description: &str,
    text: &str,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    match baseline::write_snapshot(path, description, text) {
        Ok(()) => {
            let _ = std::fs::remove_file(baseline::pending_path(path));
            notes.push(format!("recorded baseline {}", path.display()));
        }
        Err(e) => problems.push(format!("writing baseline {}: {e}", path.display())),
    }
}

/// `.snap.new` beside the baseline, for `cargo insta review`, where a person may review
/// it: never in CI, and not with `INSTA_UPDATE=no`.
fn leave_for_review(
    mode: BaselineMode,
    policy: &Policy,
    path: &std::path::Path,
    description: &str,
    text: &str,
    notes: &mut Vec<String>,
) {
    if mode != BaselineMode::Check || policy.ci {
        return;
    }
    let pending: PathBuf = baseline::pending_path(path);
    if baseline::write_snapshot(&pending, description, text).is_ok() {
        notes.push(format!(
            "this run's report is at {} for review",
            pending.display()
        ));
    }
}

/// `DROPSPEC_BASELINE=record`: a kernel-specific baseline where the report differs from
/// the shared one, and none (an old one removed) where it does not.
fn record_kernel_baseline(
    scenario: &Scenario,
    report: &Report,
    baselines: &Baselines,
    text: &str,
    description: &str,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) {
    let shared = baseline::read_snapshot(&baselines.shared_path(&scenario.name)).ok();
    let specific = baselines.kernel_path(&scenario.name, &report.kernel);
    if shared.as_deref().map(str::trim_end) == Some(text.trim_end()) {
        if std::fs::remove_file(&specific).is_ok() {
            notes.push(format!(
                "removed {}: the kernel now matches the shared baseline",
                specific.display()
            ));
        }
        return;
    }
    record(&specific, description, text, problems, notes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judge_lacking(vars: &[(&str, &str)]) -> Verdict {
        let scenario = crate::scenario::parse(
            "description = \"x\"\n[hosts.a]\n",
            std::path::Path::new("scenarios/qdisc/netem_loss.toml"),
            "qdisc/netem_loss",
            std::path::Path::new("fixtures"),
        )
        .unwrap();
        let policy =
            Policy::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let run = Err(RunError::KernelLacks {
            feature: crate::kernel_features::named("sch_netem").unwrap(),
            why: "qdisc netem on eth0: this kernel lacks CONFIG_NET_SCH_NETEM".to_owned(),
        });
        let baselines = Baselines::in_project(std::path::Path::new("/nonexistent"));
        judge(&scenario, run, &baselines, &policy).verdict
    }

    #[test]
    fn a_missing_kernel_feature_fails_under_require_privileged_unless_may_lack_names_it() {
        assert!(matches!(judge_lacking(&[]), Verdict::Skipped(_)));
        let Verdict::Failed(why) = judge_lacking(&[("DROPSPEC_REQUIRE_PRIVILEGED", "1")]) else {
            panic!("not a failure")
        };
        assert!(
            why[0].contains("unless DROPSPEC_MAY_LACK names it"),
            "{why:?}"
        );
        // Another feature allowed is no allowance for this one.
        assert!(matches!(
            judge_lacking(&[
                ("DROPSPEC_REQUIRE_PRIVILEGED", "1"),
                ("DROPSPEC_MAY_LACK", "act_police")
            ]),
            Verdict::Failed(_)
        ));
        assert_eq!(
            judge_lacking(&[
                ("DROPSPEC_REQUIRE_PRIVILEGED", "1"),
                ("DROPSPEC_MAY_LACK", "sch_netem,act_police")
            ]),
            Verdict::Skipped(
                "this kernel lacks CONFIG_NET_SCH_NETEM (allowed by DROPSPEC_MAY_LACK): qdisc netem on eth0: this kernel lacks CONFIG_NET_SCH_NETEM".to_owned()
            )
        );
    }
}
