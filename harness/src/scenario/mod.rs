//! The scenario file: TOML text → a validated [`Scenario`].
//!
//! Parsing happens in two passes. `serde` turns the text into `raw::*` structs that keep
//! the byte span of every value a person may get wrong; `validate` then checks what serde
//! cannot (host references, address ranges, port presence) and builds the model the rest
//! of the harness uses. Every error names the file, line and column, and says what to do.
//!
//! | file          | holds                                                        |
//! |---------------|--------------------------------------------------------------|
//! | `raw.rs`      | what serde reads, with spans                                 |
//! | `validate.rs` | the checks serde cannot make, and the build of the model     |
//! | `model.rs`    | the validated [`Scenario`] the runtime reads                 |
//! | `discover.rs` | finding scenario files, and their names and snapshot names   |
//!
//! The model imports nothing from the runtime (probes, sockets, namespaces); the names it
//! shares with it live in [`crate::vocab`]. A test below keeps that true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod discover;
mod model;
mod raw;
mod validate;

pub use discover::{discover, scenario_name, snapshot_name};
pub use model::*;
pub use validate::{
    is_test_address, parse_kernel_version, DEFAULT_SOURCE_PORT, MAX_COUNT, MAX_TIMEOUT_MS,
};

use validate::{Locator, Validator};

/// A problem in a scenario file, with where it is and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Reads and validates one scenario file. `root` is the scenarios directory, used to
/// derive the scenario's name; `fixtures` is where `*_file` references are resolved.
pub fn load(path: &Path, root: &Path, fixtures: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        path: path.to_owned(),
        line: 0,
        column: 0,
        message: format!("cannot read the scenario file: {e}"),
    })?;
    let name = scenario_name(path, root);
    parse(&text, path, &name, fixtures)
}

/// Parses scenario text; `path` is only used in error messages and fixture lookup.
pub fn parse(
    text: &str,
    path: &Path,
    name: &str,
    fixtures: &Path,
) -> Result<Scenario, ScenarioError> {
    let at = Locator { path, text };
    let raw: raw::ScenarioFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at.error(span, e.message().to_string())
    })?;
    Validator {
        at,
        fixtures,
        name,
        host_ids: BTreeMap::new(),
    }
    .validate(raw)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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

    /// The layering rule of issue 9: parsing and validating a scenario needs no probe,
    /// socket or namespace code, so the model can be read (and tested) anywhere. The
    /// model may name itself and the shared vocabulary, nothing else in the crate; a
    /// name it shares with the runtime belongs in `vocab.rs`. `vocab.rs` is a leaf.
    #[test]
    fn the_model_imports_nothing_from_the_runtime() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![(src.join("vocab.rs"), &[][..])];
        for entry in std::fs::read_dir(src.join("scenario")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push((path, &["scenario", "vocab"][..]));
            }
        }
        assert!(files.len() > 2, "no sources found under {}", src.display());
        let mut wrong = Vec::new();
        for (path, allowed) in &files {
            let source = std::fs::read_to_string(path).unwrap();
            for (line, name) in crate_paths(&source) {
                if !allowed.contains(&name.as_str()) {
                    wrong.push(format!("{}:{line}: crate::{name}", path.display()));
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "the scenario model (and vocab.rs) must not import runtime modules; move the \
             shared name into vocab.rs instead:\n{}",
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
}
