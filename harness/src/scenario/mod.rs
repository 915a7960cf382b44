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
//! shares with it live in [`crate::vocab`]. A test in `layers.rs` keeps that true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod discover;
mod model;
pub mod names;
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
        kernel_names: Vec::new(),
    }
    .validate(raw)
}
