//! Scaling: suite wall time for 1, 10, 50 and 100 scenarios with 1 and 2 test threads.
//!
//! The suite is made of generated copies of the project's scenario files, cycled in
//! order, written to a temporary directory, and run through the library the way
//! `dropspec run --jobs N` does: N threads taking the next scenario from one queue,
//! each calling `runner::run`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use dropspec::report;
use dropspec::runner;
use dropspec::scenario::{self, Scenario};

/// One suite run.
#[derive(Debug, Clone)]
pub struct SuiteTime {
    pub wall: Duration,
    /// Runs that errored or missed their expectations.
    pub failed: usize,
}

/// Writes `count` copies of `sources` (cycled) into `dir` and loads them.
pub fn generate(
    sources: &[PathBuf],
    count: usize,
    dir: &Path,
    fixtures: &Path,
) -> Result<Vec<Scenario>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut loaded = Vec::with_capacity(count);
    for i in 0..count {
        let source = &sources[i % sources.len()];
        let stem = source.file_stem().unwrap_or_default().to_string_lossy();
        let copy = dir.join(format!("{i:03}_{stem}.toml"));
        std::fs::copy(source, &copy)
            .with_context(|| format!("copying {} to {}", source.display(), copy.display()))?;
        let s = scenario::load(&copy, dir, fixtures).map_err(|e| anyhow::anyhow!("{e}"))?;
        loaded.push(s);
    }
    Ok(loaded)
}

pub fn run_suite(scenarios: &[Scenario], threads: usize) -> SuiteTime {
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(scenarios.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(s) = scenarios.get(i) else { break };
                let ok = match runner::run(s) {
                    Ok(r) => report::check(s, &r).is_empty(),
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    SuiteTime {
        wall: started.elapsed(),
        failed: failed.into_inner(),
    }
}
