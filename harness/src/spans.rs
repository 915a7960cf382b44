//! Where one process's time goes, for `dropspec bench`: with `DROPSPEC_INTERNAL_SPANS=FILE`
//! set, the process appends one JSON line to FILE when it starts ([`begin`]), for each
//! probe load and kallsyms read ([`span`]), and for each scenario the runner runs
//! ([`scenario`]: its phases) or a test trial judges ([`trial`]: its verdict). Lines are
//! written as they happen (append mode, one `write` each), so a guest that is powered off
//! right after the command, or a process that exits without unwinding, loses none.
//!
//! The bench reads them back for the profile of a guest's suite run and of one
//! `dropspec run FILE` process. Unset, every call here is one check of a `OnceLock`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::json;

/// The variable; `DROPSPEC_INTERNAL_*` is the policy's internal prefix.
pub const ENV: &str = "DROPSPEC_INTERNAL_SPANS";

struct Sink {
    file: Mutex<File>,
    origin: Instant,
}

static SINK: OnceLock<Option<Sink>> = OnceLock::new();

fn sink() -> Option<&'static Sink> {
    SINK.get_or_init(|| {
        let path = std::env::var_os(ENV)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok()?;
        Some(Sink {
            file: Mutex::new(file),
            origin: Instant::now(),
        })
    })
    .as_ref()
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn emit(sink: &Sink, mut value: serde_json::Value, at: Instant) {
    value["start_ms"] = json!(ms(at.saturating_duration_since(sink.origin)));
    let mut line = value.to_string();
    line.push('\n');
    let mut file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
    let _ = file.write_all(line.as_bytes());
}

/// The process's first line: what it is, its pid, and the machine's uptime (in a guest,
/// the time since its kernel started). Call it first thing in `main`: its time is the
/// origin of every later line's `start_ms`.
pub fn begin(what: &str) {
    let Some(sink) = sink() else { return };
    let uptime: Option<f64> = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok());
    emit(
        sink,
        json!({
            "process": what,
            "pid": std::process::id(),
            "uptime_s": uptime,
            "hooks": std::env::var("DROPSPEC_HOOKS").ok(),
        }),
        sink.origin,
    );
}

/// Runs `f`, and records how long it took under `name`.
pub fn span<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let Some(sink) = sink() else { return f() };
    let started = Instant::now();
    let out = f();
    emit(
        sink,
        json!({ "span": name, "ms": ms(started.elapsed()) }),
        started,
    );
    out
}

/// One run of a scenario by the runner, started at `started`: its wall time and phases
/// (setup, attach, traffic, settle, teardown: the report's `Timings`).
pub fn scenario(name: &str, started: Instant, phases: [Duration; 5]) {
    let Some(sink) = sink() else { return };
    let [setup, attach, traffic, settle, teardown] = phases;
    emit(
        sink,
        json!({
            "scenario": name,
            "ms": ms(started.elapsed()),
            "setup_ms": ms(setup),
            "attach_ms": ms(attach),
            "traffic_ms": ms(traffic),
            "settle_ms": ms(settle),
            "teardown_ms": ms(teardown),
        }),
        started,
    );
}

/// One test trial (load, run, judge), started at `started`, and its verdict.
pub fn trial(name: &str, started: Instant, verdict: &str) {
    let Some(sink) = sink() else { return };
    emit(
        sink,
        json!({ "trial": name, "ms": ms(started.elapsed()), "verdict": verdict }),
        started,
    );
}
