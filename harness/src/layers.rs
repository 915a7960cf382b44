//! Which module may name which: the layering rules of issue 9, checked on the sources.
//!
//! Data flows one way (scenario → topology → faults → probes → traffic → report), and
//! the lower layers must not reach back up: parsing a scenario needs no probe, socket or
//! namespace code, and reading the kernel needs no probe. Each rule below lists the
//! only modules under `crate` that a file, or every file of a folder, may name; a name
//! both sides need belongs in `vocab.rs`. A new module is refused by every rule until
//! someone adds it, on purpose, to a list.

use std::path::Path;

/// (file or folder under harness/src, modules under `crate` it may name).
const RULES: &[(&str, &[&str])] = &[
    // The model: itself, the shared names and the name suggester (a leaf), nothing of
    // the runtime.
    (
        "scenario",
        &["scenario", "socket_options", "suggest", "vocab"],
    ),
    // Builds the model's `KnownNames` from what the kernel layer and the counters read.
    ("names.rs", &["counters", "kernel", "scenario", "spans"]),
    // Leaves.
    ("vocab.rs", &[]),
    // Timing lines for `dropspec bench` (DROPSPEC_INTERNAL_SPANS), named from any layer.
    ("spans.rs", &[]),
    ("socket_options.rs", &[]),
    ("forks.rs", &[]),
    ("topology/error.rs", &[]),
    ("topology/sysctl.rs", &[]),
    // The kernel layer has its own errors; probes wrap them.
    ("kernel", &["kernel", "policy", "spans"]),
    // The namespace handle reports its errors as the topology's (a leaf, above).
    ("topology/netns.rs", &["topology"]),
    // The counters read what they are told to read; which fault needs which counter is
    // the faults' decision, so they never name faults or the scenario.
    (
        "counters",
        &["counters", "forks", "netns", "topology", "vocab"],
    ),
    // A program under test and the kernel's word on its drops: the model's `[[programs]]`
    // and the kernel's names, nothing of the run; the watcher pairs them for the report.
    ("probes/program.rs", &["forks", "scenario"]),
    (
        "probes/datapath.rs",
        &["forks", "kernel", "scenario", "spans"],
    ),
    (
        "watchers/datapath.rs",
        &["probes", "report", "scenario", "topology"],
    ),
    // The policy and the name suggester are leaves every front end uses.
    ("suggest.rs", &[]),
    ("policy.rs", &["kernel_features", "suggest"]),
    ("kernel_features.rs", &[]),
    // The runner knows no watcher by name: it loops over the registry.
    (
        "runner.rs",
        &[
            "completion",
            "crafted",
            "faults",
            "global_sysctls",
            "kernel_features",
            "report",
            "scenario",
            "spans",
            "steps",
            "topology",
            "traffic",
            "watchers",
        ],
    ),
    // Coverage reads the suite (the model, its baselines) and reason tables handed to it.
    ("coverage.rs", &["baseline", "scenario"]),
    // CI outputs render verdicts and reports (and the saved run, for JSON); they read
    // the kernel layer only for the hook frames' stages (the metrics' direction).
    ("outputs", &["diff", "kernel", "report", "verdict"]),
    // Flake detection compares runs' texts and knows nothing else.
    ("repeat.rs", &[]),
    // The verdict decides from the report, the baselines and the policy alone.
    (
        "verdict.rs",
        &[
            "baseline",
            "kernel_features",
            "names",
            "policy",
            "report",
            "runner",
            "scenario",
        ],
    ),
];

/// Every module below `crate` that a source file names, with its line number.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((n + 1, name));
            }
        }
    }
    found
}

/// The `.rs` files of a file or folder, recursively.
fn sources(path: &Path) -> Vec<std::path::PathBuf> {
    if path.is_file() {
        return vec![path.to_owned()];
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
    found
}

#[test]
fn each_layer_names_only_what_it_may() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (part, allowed) in RULES {
        let files = sources(&src.join(part));
        assert!(!files.is_empty(), "no sources for `{part}`");
        for path in files {
            let source = std::fs::read_to_string(&path).unwrap();
            for (line, name) in crate_paths(&source) {
                if !allowed.contains(&name.as_str()) {
                    wrong.push(format!("{}:{line}: crate::{name}", path.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "a layer names a module it may not (see the rules in layers.rs); move a name both \
         sides need into vocab.rs instead:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn crate_paths_are_found_anywhere_on_a_line() {
    assert_eq!(
        crate_paths(concat!(
            "use crate",
            "::vocab::X;\n",
            "let a = crate",
            "::probes::Y + crate",
            "::x;"
        )),
        vec![
            (1, "vocab".to_owned()),
            (2, "probes".to_owned()),
            (2, "x".to_owned())
        ]
    );
}

/// The crate's top-level modules (a file or a folder under src/), with the modules each
/// names outside its tests. `netns` is the topology's (re-exported at the root).
fn module_graph() -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = std::collections::BTreeMap::new();
    for path in sources(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if ["main", "lib", "layers"].contains(&top.as_str()) {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // Tests may reach anywhere (fixtures of another module, say).
        let code = source.split("#[cfg(test)]").next().unwrap();
        let names: &mut std::collections::BTreeSet<String> = graph.entry(top.clone()).or_default();
        for (_, name) in crate_paths(code) {
            let name = if name == "netns" {
                "topology".into()
            } else {
                name
            };
            if name != top {
                names.insert(name);
            }
        }
    }
    graph
}

#[test]
fn no_two_modules_name_each_other_even_through_others() {
    let graph = module_graph();
    let mut cycles = Vec::new();
    // Depth-first from every module; a path that comes back to its start is a cycle.
    for start in graph.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    cycles.push(format!("{} -> {start}", path.join(" -> ")));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles between modules (data flows one way; see docs/ARCHITECTURE.md):\n{}",
        cycles.join("\n")
    );
}
