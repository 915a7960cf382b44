//! Writing scenarios: a starting file (`dropspec new`), expectations proposed from a run
//! (`dropspec run --propose`), where a file's name and snapshot come from wherever it is
//! (`place`), and a run's namespaces kept up to look around in (`dropspec run --keep`).
//!
//! A front-end helper: `main.rs` calls it; nothing below the front ends names it.

pub mod keep;
pub mod new;
pub mod place;
pub mod propose;
