//! The scenario file: TOML text → a validated [`Scenario`].
//!
//! Parsing happens in two passes. `read` turns the text into `raw::*` structs that keep
//! the byte span of every value a person may get wrong, one entry at a time so that one
//! bad entry does not hide the next; `validate` then checks what serde cannot (host
//! references, address ranges, port presence) and builds the model the rest of the
//! harness uses. Every error of a file is reported at once, each naming the file, line
//! and column of the offending value, and saying what to do. Names only a kernel can
//! confirm (drop reasons, functions) are checked in a later step, `names`.
//!
//! | file          | holds                                                        |
//! |---------------|--------------------------------------------------------------|
//! | `raw.rs`      | what serde reads, with spans                                 |
//! | `read.rs`     | TOML → `raw`, every entry on its own, errors in plain words  |
//! | `validate.rs` | the checks serde cannot make, and the build of the model     |
//! | `validate/steps.rs` | `[[steps]]`: names resolved, the order checked          |
//! | `undo.rs`     | how a `remove` step takes a fault back, or why it cannot     |
//! | `model.rs`    | the validated [`Scenario`] the runtime reads                 |
//! | `routing.rs`  | the model's routes and policy rules, either family           |
//! | `validate_routing.rs` | the checks and build of routes, rules and families   |
//! | `discover.rs` | finding scenario files, and their names and snapshot names   |
//! | `names.rs`    | reason and function names against what a kernel knows        |
//!
//! The model imports nothing from the runtime (probes, sockets, namespaces); the names it
//! shares with it live in [`crate::vocab`]. A test in `layers.rs` keeps that true.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod discover;
mod model;
pub mod names;
mod raw;
mod read;
mod routing;
pub mod undo;
mod validate;
mod validate_routing;

pub use discover::{discover, scenario_name, snapshot_name};
pub use model::*;
pub use routing::*;
pub use validate::{
    is_test_address, parse_kernel_version, COMMAND_PROGRAMS, DEFAULT_SOURCE_PORT, MAX_COUNT,
    MAX_TIMEOUT_MS, MAX_WAIT_MS,
};

use validate::{Locator, Validator};

/// Where the editor schema is shipped, relative to the project root. Every scenario file
/// names it on its first line (`#:schema <relative path>`, the taplo / Even Better TOML
/// convention), so an editor completes and checks keys.
pub const SCHEMA_PATH: &str = "schema/dropspec-scenario.schema.json";

/// The JSON Schema of the scenario format, derived from the serde structs in `raw.rs`:
/// what the shipped schema file must say (a test compares them; `dropspec schema` prints it).
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(raw::ScenarioFile);
    schema.insert("title".into(), "dropspec scenario".into());
    schema.insert(
        "description".into(),
        "A dropspec scenario: hosts, links, faults, traffic and the drops expected. \
         Generated from harness/src/scenario/raw.rs by `dropspec schema`; do not edit."
            .into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema is JSON");
    text.push('\n');
    text
}

/// The `#:schema` line for a scenario file at `file` in a project rooted at `root`.
pub fn schema_line(file: &Path, root: &Path) -> String {
    let dir = file.parent().unwrap_or(Path::new(""));
    let depth = dir
        .strip_prefix(root)
        .map_or(0, |rel| rel.components().count());
    format!("#:schema {}{SCHEMA_PATH}", "../".repeat(depth))
}

/// A problem in a scenario file, with where it is and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one scenario file, in file order.
#[derive(Debug, Clone)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl std::fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

impl ScenarioErrors {
    /// The same problems, reported against another path (the one the user typed).
    pub fn with_path(mut self, path: &Path) -> Self {
        for e in &mut self.0 {
            e.path = path.to_owned();
        }
        self
    }
}

/// Reads and validates one scenario file. `root` is the scenarios directory, used to
/// derive the scenario's name; `fixtures` is where `*_file` references are resolved.
pub fn load(path: &Path, root: &Path, fixtures: &Path) -> Result<Scenario, ScenarioErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ScenarioErrors(vec![ScenarioError {
            path: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the scenario file: {e}"),
        }])
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
) -> Result<Scenario, ScenarioErrors> {
    let at = Locator { path, text };
    let (raw, problems) = read::read(text);
    let mut errors: Vec<ScenarioError> = problems
        .into_iter()
        .map(|p| at.error(p.span, p.message))
        .collect();
    if let Some(raw) = raw {
        let validated = Validator {
            at,
            fixtures,
            name,
            host_ids: BTreeMap::new(),
            kernel_names: Vec::new(),
            errors: std::cell::RefCell::new(Vec::new()),
        }
        .validate(raw);
        match validated {
            Ok(scenario) if errors.is_empty() => return Ok(scenario),
            Ok(_) => {}
            Err(more) => errors.extend(more),
        }
    }
    errors.sort_by_key(|e| (e.line, e.column));
    Err(ScenarioErrors(errors))
}
