//! Fills the model's [`KnownNames`] from this machine: the running kernel's drop reasons,
//! function names and counter names, and the saved kernels' reasons. Used by `dropspec check`,
//! `dropspec run` and the tests before a scenario runs; see `scenario::names` for the
//! rule applied to names that only some kernels have.

use crate::counters;
use crate::kernel::kallsyms::Kallsyms;
use crate::kernel::known;
use crate::scenario::names::{self, KnownNames};
use crate::scenario::{Scenario, ScenarioError};

/// What this machine's kernel and the bundled tables know. Needs no root: BTF and the
/// names in /proc/kallsyms are world-readable. What cannot be read is left `None`, and
/// the check falls back as `scenario::names` documents.
pub fn on_this_machine() -> KnownNames {
    KnownNames {
        functions: crate::spans::span("names: kernel functions", known::running_functions).ok(),
        ..on_this_machine_but_functions()
    }
}

/// [`on_this_machine`] without reading kallsyms.
fn on_this_machine_but_functions() -> KnownNames {
    let (counters, unread_counter_groups) =
        match crate::spans::span("names: counter names", counters::counter_names) {
            Some((names, unread)) => (Some(names), unread.into_iter().map(String::from).collect()),
            None => (None, Vec::new()),
        };
    KnownNames {
        counters,
        unread_counter_groups,
        release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|r| r.trim().to_owned()),
        reasons: crate::spans::span("names: drop reasons (BTF)", known::running_reasons).ok(),
        functions: None,
        bundled_reasons: known::bundled_reasons(),
    }
}

/// [`names::check`] against [`on_this_machine`], read once per process: before a run.
///
/// On a kernel with loadable modules, kallsyms lists a module's functions only once it
/// is loaded (`nft_do_chain` lives in nf_tables on Debian), and a function not loaded
/// yet cannot be told from a misspelling. There the functions wait for
/// [`check_functions_after_run`], when the scenario's faults have loaded what they need.
pub fn check(scenario: &Scenario) -> Vec<ScenarioError> {
    static KNOWN: std::sync::OnceLock<KnownNames> = std::sync::OnceLock::new();
    static WITH_FUNCTIONS: std::sync::OnceLock<KnownNames> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(on_this_machine_but_functions);
    // Functions are read only for a scenario that names one: collecting kallsyms's
    // 150,000 names costs 100-350 ms here before anything runs (the drop probe reads
    // kallsyms anyway, but on its own thread while the scenario sets up). On a modular
    // kernel they are not read at all (seconds in a TCG guest): they wait for
    // `check_functions_after_run`.
    let names_a_function = scenario
        .kernel_names
        .iter()
        .any(|n| matches!(n.kind, crate::scenario::KernelNameKind::Function));
    if !names_a_function || modular_kernel() {
        return names::check(scenario, known);
    }
    let known = WITH_FUNCTIONS.get_or_init(|| KnownNames {
        functions: crate::spans::span("names: kernel functions", known::running_functions).ok(),
        ..known.clone()
    });
    names::check(scenario, known)
}

/// The functions of a scenario's expectations, against kallsyms read now: after the
/// scenario ran, every module its faults and traffic needed is loaded. Empty when the
/// kernel has no loadable modules (then [`check`] checked them already).
pub fn check_functions_after_run(scenario: &Scenario) -> Vec<ScenarioError> {
    if !modular_kernel() {
        return Vec::new();
    }
    // Reading kallsyms costs seconds in a TCG guest, so the symbols read last are asked
    // first, and kallsyms is read again only for a function they do not have (its module
    // may have been loaded since), which is the rare case; that read then becomes the
    // one asked first. A function found in them is known (a module's functions stay
    // listed as long as it is loaded, and the check is against misspellings).
    type Functions = (std::sync::Arc<Kallsyms>, std::collections::BTreeSet<String>);
    static LATEST: std::sync::Mutex<Option<Functions>> = std::sync::Mutex::new(None);
    let check_with = |functions: &std::collections::BTreeSet<String>| {
        // Every function the scenario names is there: nothing to report, and no copy of
        // the 150,000 names (a second or more per scenario in a TCG guest).
        if scenario
            .kernel_names
            .iter()
            .filter(|n| matches!(n.kind, crate::scenario::KernelNameKind::Function))
            .all(|n| functions.contains(&n.name))
        {
            return Vec::new();
        }
        // Only what the function rule needs: the release (for `since_kernel`) and the
        // functions; reasons and counters were checked before the run.
        let known = KnownNames {
            functions: Some(functions.clone()),
            release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|r| r.trim().to_owned()),
            reasons: None,
            bundled_reasons: Default::default(),
            counters: None,
            unread_counter_groups: Vec::new(),
        };
        names::check(scenario, &known)
            .into_iter()
            .filter(|e| e.to_string().contains("no function `"))
            .collect::<Vec<_>>()
    };
    let read = || {
        let kallsyms = Kallsyms::shared_names().ok()?;
        let functions = known::functions_of(&kallsyms);
        Some((kallsyms, functions))
    };
    let mut latest = LATEST.lock().unwrap_or_else(|p| p.into_inner());
    if latest.is_none() {
        *latest = read();
    }
    let Some((read_then, functions)) = latest.as_ref() else {
        return Vec::new();
    };
    let unknown = check_with(functions);
    if unknown.is_empty() {
        return unknown;
    }
    match read() {
        // The modules are as they were: that read is this one.
        Some((now, _)) if std::sync::Arc::ptr_eq(&now, read_then) => unknown,
        Some(now) => {
            let unknown = check_with(&now.1);
            *latest = Some(now);
            unknown
        }
        None => Vec::new(),
    }
}

/// Whether this kernel can load modules (it then lists them in /proc/modules).
fn modular_kernel() -> bool {
    std::path::Path::new("/proc/modules").exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// `cargo test` runs the shipped scenarios through `scenario::load`; this makes sure
    /// every name they use is one this kernel (or, under `since_kernel`, a saved one) has.
    #[test]
    fn every_shipped_scenario_names_only_known_reasons_and_functions() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let scenarios = root.join("scenarios");
        let mut problems = Vec::new();
        for file in crate::scenario::discover(&scenarios).unwrap() {
            let scenario =
                crate::scenario::load(&file, &scenarios, &root.join("fixtures")).unwrap();
            problems.extend(check(&scenario).iter().map(ToString::to_string));
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The guests' kernels, from their saved BTF: every shipped scenario's reasons must
    /// pass the check there too (the 6.1 and 6.12 guests run the same suite).
    #[test]
    fn every_shipped_scenario_names_only_reasons_each_saved_kernel_has() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let scenarios = root.join("scenarios");
        let loaded: Vec<Scenario> = crate::scenario::discover(&scenarios)
            .unwrap()
            .iter()
            .map(|f| crate::scenario::load(f, &scenarios, &root.join("fixtures")).unwrap())
            .collect();
        let mut problems = Vec::new();
        for dir in crate::kernel::reasons::tests::fixture_kernels() {
            let btf = crate::kernel::reasons::tests::fixture_btf(&dir);
            let table = crate::kernel::reasons::ReasonTable::from_btf(&btf).unwrap();
            let saved = KnownNames {
                release: Some(dir.file_name().unwrap().to_string_lossy().into_owned()),
                reasons: Some(table.iter().map(|(_, n)| n.to_owned()).collect()),
                // No kallsyms is saved for these kernels, and their BTF lacks the
                // functions the compiler cloned (see `known::running_functions`).
                functions: None,
                bundled_reasons: known::bundled_reasons(),
                counters: None,
                unread_counter_groups: Vec::new(),
            };
            for scenario in &loaded {
                problems.extend(
                    names::check(scenario, &saved)
                        .iter()
                        .map(ToString::to_string),
                );
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
