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
    // The model: itself and the shared names, nothing of the runtime.
    ("scenario", &["scenario", "vocab"]),
    // Leaves.
    ("vocab.rs", &[]),
    ("topology/error.rs", &[]),
    ("topology/sysctl.rs", &[]),
    // The kernel layer has its own errors; probes wrap them.
    ("kernel", &["kernel"]),
    // The namespace handle reports its errors as the topology's (a leaf, above).
    ("netns.rs", &["topology"]),
    // The counters read what they are told to read; which fault needs which counter is
    // the faults' decision, so they never name faults or the scenario.
    ("counters", &["counters", "netns", "topology", "vocab"]),
    // The policy and the name suggester are leaves every front end uses.
    ("suggest.rs", &[]),
    ("policy.rs", &["suggest"]),
    // The runner knows no watcher by name: it loops over the registry.
    (
        "runner.rs",
        &[
            "completion",
            "crafted",
            "faults",
            "global_sysctls",
            "report",
            "scenario",
            "topology",
            "traffic",
            "watchers",
        ],
    ),
    // Flake detection compares runs' texts and knows nothing else.
    ("repeat.rs", &[]),
    // The verdict decides from the report, the baselines and the policy alone.
    (
        "verdict.rs",
        &["baseline", "policy", "report", "runner", "scenario"],
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
