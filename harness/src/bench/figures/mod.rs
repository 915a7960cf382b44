//! The bench's output: one markdown section per part, rendered from what the
//! measurement modules (`flood`, `scenarios`, `scaling`, `memory`, `profile`) return,
//! and put between BENCHMARKS.md's markers.

mod flood;
mod guests;
mod machine;
mod memory;
mod one_file;
mod scaling;
mod scenarios;

use std::path::Path;

use anyhow::{bail, Context, Result};

pub(super) use flood::{filter_section, flood_section, profile_section};
pub(super) use guests::guests_section;
pub(super) use machine::{load_average, machine_section};
pub(super) use memory::memory_section;
pub(super) use scaling::scaling_section;
pub(super) use scenarios::scenario_section;

const BEGIN_MARKER: &str = "<!-- bench:figures:begin -->";
const END_MARKER: &str = "<!-- bench:figures:end -->";

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// Replaces what lies between the markers in `path` with `figures`.
pub(super) fn write_between_markers(path: &Path, figures: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let (Some(begin), Some(end)) = (text.find(BEGIN_MARKER), text.find(END_MARKER)) else {
        bail!(
            "{} has no `{BEGIN_MARKER}` … `{END_MARKER}` lines to put the figures between",
            path.display()
        );
    };
    if end < begin {
        bail!(
            "{}: the end marker comes before the begin marker",
            path.display()
        );
    }
    let updated = format!(
        "{}{BEGIN_MARKER}\n{}\n{}",
        &text[..begin],
        figures.trim(),
        &text[end..]
    );
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}
