//! The catalogue of malformed scenario files: every file in `fixtures/invalid_scenarios/`
//! is loaded, names and all, and what dropspec says must be exactly its sibling
//! `.expected` file, one error per line. One trial per file, named after it.
//!
//! Reason and function names are checked against a fixed kernel — the saved 6.18's
//! reasons and its kallsyms excerpt — so the messages do not depend on the machine.
//! After a deliberate change of wording, `DROPSPEC_BLESS=1 cargo test -p dropspec --test
//! invalid_scenarios` rewrites the `.expected` files; review their diff like code.

use std::path::{Path, PathBuf};

use dropspec::kernel::kallsyms::Kallsyms;
use dropspec::kernel::known;
use dropspec::scenario::names::{self, KnownNames};
use libtest_mimic::{Arguments, Failed, Trial};

const KERNEL: &str = "6.18.44-fc-v595";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn saved_kernel() -> KnownNames {
    let excerpt = std::fs::read_to_string(
        root()
            .join("fixtures/kernel")
            .join(KERNEL)
            .join("kallsyms.excerpt"),
    )
    .unwrap();
    let bundled = known::bundled_reasons();
    KnownNames {
        release: Some(KERNEL.to_owned()),
        reasons: Some(
            bundled
                .iter()
                .filter(|(_, releases)| releases.iter().any(|r| r == KERNEL))
                .map(|(name, _)| name.clone())
                .collect(),
        ),
        functions: Some(
            Kallsyms::parse(&excerpt)
                .names()
                .map(str::to_owned)
                .collect(),
        ),
        bundled_reasons: bundled,
        // Counter names come from /proc; this catalogue leaves them unchecked.
        counters: None,
        unread_counter_groups: Vec::new(),
    }
}

/// What dropspec says about one file: its errors, one a line.
fn said(file: &Path, known: &KnownNames) -> String {
    let root = root();
    let shown = file.strip_prefix(&root).unwrap();
    let text = std::fs::read_to_string(file).unwrap();
    let errors: Vec<String> =
        match dropspec::scenario::parse(&text, shown, "invalid", &root.join("fixtures")) {
            Ok(scenario) => names::check(&scenario, known)
                .iter()
                .map(ToString::to_string)
                .collect(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
    let mut out = errors.join("\n");
    out.push('\n');
    out
}

fn check(file: &Path, known: &KnownNames) -> Result<(), Failed> {
    let got = said(file, known);
    let expected_path = file.with_extension("expected");
    if dropspec::policy::Policy::current().is_ok_and(|p| p.bless) {
        std::fs::write(&expected_path, &got).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path)
        .map_err(|e| format!("{}: {e}", expected_path.display()))?;
    if got.trim().is_empty() {
        return Err("the file was accepted: a malformed scenario must be refused".into());
    }
    if got == expected {
        Ok(())
    } else {
        Err(format!("expected:\n{expected}got:\n{got}").into())
    }
}

fn main() {
    let args = Arguments::from_args();
    let dir = root().join("fixtures/invalid_scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 50,
        "only {} malformed scenarios",
        files.len()
    );
    let known = std::sync::Arc::new(saved_kernel());
    let trials = files
        .into_iter()
        .map(|file| {
            let name = file.file_stem().unwrap().to_string_lossy().into_owned();
            let known = known.clone();
            Trial::test(name, move || check(&file, &known))
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
