//! The eBPF probes: kernel code in `ebpf/`, each paired with its loader here.
//!
//! | file        | holds                                                                |
//! |-------------|----------------------------------------------------------------------|
//! | `drops.rs`  | the drop probe (`ebpf/drops.bpf.c`): every `kfree_skb` drop, by reason, call site, protocols and stack |
//! | `events.rs` | tracepoints counted next to the drops (`ebpf/events.bpf.h`)           |
//! | `hooks.rs`  | Retina's hook points (`ebpf/hooks.bpf.c`), a second vocabulary       |
//! | `slots.rs`  | watch slots: which namespaces a probe counts (`ebpf/slots.bpf.h`, shared by both probes) |
//! | `abi.rs`    | the `#[repr(C)]` mirrors of `ebpf/drops.h` and `ebpf/hooks.h`         |
//! | `datapath.rs` | drops on the interfaces of programs under test, per packet (`ebpf/datapath.bpf.c`) |
//! | `program.rs` | a program under test: loaded, prefilled, attached, its own drop accounting read |
//! | `names.rs`  | names for the numbers probes record (kallsyms, protocols)            |
//!
//! A scenario asks [`DropProbe::watch`] for a slot on its namespace, runs traffic, and
//! reads the counts with [`DropProbe::read`]; dropping the [`WatchSlot`] stops counting
//! and frees the slot's keys. Reason and function names are resolved in user space,
//! from what the running kernel says (BTF, kallsyms), never from numbers compiled in.
//! Each [`DropCount`] carries its stack as function names and the hook it shows
//! (`ip_local_deliver` for an INPUT drop: see [`crate::kernel::stacks`]).
//!
//! Next to the drops, a few tracepoints that explain them are counted per slot the same
//! way (ICMP errors sent, TCP resets, TCP checksum failures, UDP enqueue failures):
//! [`DropProbe::read_events`], and [`DropProbe::events_available`] for the ones this
//! kernel lacks.
//!
//! Before loading, [`DropProbe::shared`] checks what the probe needs (privileges, BTF,
//! drop reasons, the tracepoint) and says what is missing in words a person can act on;
//! [`ProbeError::is_unavailable`] tells a missing prerequisite (skip the test) from a bug.
//!
//! ```no_run
//! # fn scenario(netns_inode: u64) -> Result<(), dropspec::probes::ProbeError> {
//! use dropspec::probes::DropProbe;
//! let probe = DropProbe::shared()?; // loads on first use, ~100 ms
//! let slot = probe.watch(netns_inode)?; // fstat(nsfd).st_ino
//! // ... send traffic in that namespace ...
//! for drop in slot.read()? {
//!     println!("{} x {} in {} ({}/{})", drop.packets, drop.reason, drop.function, drop.l3, drop.l4);
//! }
//! # Ok(()) }
//! ```
//!
//! What is not counted: frees that are not drops (NOT_DROPPED_YET, CONSUMED), drops in
//! namespaces nobody watches, and netlink / unix-socket messages (local IPC whose queue
//! purges arrive asynchronously after the harness's own `ip`/`nft` commands exit).
//! `cargo run --example probe_smoke` (as root) checks all of this on a live kernel.

use crate::kernel::KernelError;
use abi::{MAX_DROP_KEYS, MAX_EVENT_KEYS};
use aya::maps::MapError;

pub use crate::kernel::kallsyms::Kallsyms;
pub use crate::kernel::reasons::{ReasonSource, ReasonTable, NO_REASON};
pub use drops::{DropCount, DropProbe, ProbeMode, ProbeStats, WatchSlot, PROBE_ENV, STACKS_ENV};
pub use events::EventCount;

mod abi;
pub mod datapath;
mod drops;
mod events;
pub mod hooks;
pub(crate) mod loader;
mod misses;
mod names;
pub mod program;
mod slots;
pub(crate) use slots::attach_timer_marks;

/// Why the probe could not be loaded or read. Messages say what failed and what to do;
/// they carry their cause inline because they are printed verbatim as skip reasons.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(
        "loading BPF programs needs root (CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN); \
         this process lacks {missing}: run as root"
    )]
    NotPrivileged { missing: String },
    /// A `DROPSPEC_*` variable (DROPSPEC_PROBE, DROPSPEC_STACKS) has a value it does not take.
    #[error("{message}")]
    BadPolicy { message: String },
    #[error("{mode} cannot be used on this kernel: {detail}")]
    Unsupported { mode: ProbeMode, detail: String },
    #[error("{what} ({mode}) failed: {detail}{}", errno_hint(*errno))]
    Bpf {
        mode: ProbeMode,
        what: String,
        detail: String,
        errno: Option<i32>,
    },
    #[error("no drop probe could be attached.\n  {btf}\n  {classic}")]
    NoMode {
        btf: Box<ProbeError>,
        classic: Box<ProbeError>,
    },
    #[error(
        "{inode} is not a network namespace inode the probe can key on (the kernel's are \
         32-bit): pass fstat(nsfd).st_ino of /proc/<pid>/ns/net"
    )]
    BadNetnsInode { inode: u64 },
    #[error(
        "network namespace {inode} is already watched (slot {slot}): release that slot \
         before watching the namespace again"
    )]
    AlreadyWatched { inode: u64, slot: u32 },
    /// The probe could not count every call while a slot was watched (a tracing program
    /// the kernel skipped, a kretprobe out of instances): the counts are incomplete, and
    /// the run proves nothing.
    #[error("{op} on BPF map {map} failed: {detail}")]
    CallsLost {
        map: &'static str,
        op: &'static str,
        detail: String,
    },
    #[error("{op} on BPF map {map} failed: {detail}")]
    Map {
        map: &'static str,
        op: &'static str,
        detail: String,
    },
    #[error(
        "{lost} drops in watched namespaces were not counted because dropspec_drops or \
         dropspec_stacks was full ({MAX_DROP_KEYS} keys each) while slot {slot} was watched, so its counts are \
         incomplete: run fewer scenarios at once"
    )]
    Lost { slot: u32, lost: u64 },
    #[error(
        "{lost} auxiliary events (ICMP errors, resets, ...) in watched namespaces were not \
         counted because dropspec_events was full ({MAX_EVENT_KEYS} keys) while slot {slot} \
         was watched, so its event counts are incomplete: run fewer scenarios at once"
    )]
    EventsLost { slot: u32, lost: u64 },
    #[error(
        "the kernel skipped the drop probe {missed} time(s) while slot {slot} was watched \
         (bpf recursion_misses: a drop happened on a CPU where the probe was already running, \
         e.g. in a softirq that interrupted it), so drops may be missing from its counts and \
         the run proves nothing: run it again, with fewer scenarios at once (--jobs 1)"
    )]
    Missed { slot: u32, missed: u64 },
}

fn errno_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM | libc::EACCES) => {
            " (the kernel refused although this process has CAP_BPF: check kernel lockdown \
             in /sys/kernel/security/lockdown, seccomp, or an LSM policy)"
        }
        Some(libc::ENOENT) => " (the kernel does not have this tracepoint or attach target)",
        Some(libc::EOPNOTSUPP | libc::ENOSYS | 524 /* ENOTSUPP */) => {
            " (the kernel does not support this program type)"
        }
        _ => "",
    }
}

impl ProbeError {
    /// True when the cause is missing privileges or a missing kernel feature: tests that
    /// need the probe are then skipped, with this message. False for bugs to fix.
    pub fn is_unavailable(&self) -> bool {
        match self {
            ProbeError::Kernel(e) => e.is_unavailable(),
            ProbeError::NotPrivileged { .. } | ProbeError::Unsupported { .. } => true,
            ProbeError::Bpf { errno, .. } => matches!(
                errno,
                Some(
                    libc::EPERM
                        | libc::EACCES
                        | libc::ENOENT
                        | libc::EOPNOTSUPP
                        | libc::ENOSYS
                        | 524
                )
            ),
            ProbeError::NoMode { btf, classic } => btf.is_unavailable() && classic.is_unavailable(),
            ProbeError::BadPolicy { .. }
            | ProbeError::BadNetnsInode { .. }
            | ProbeError::AlreadyWatched { .. }
            | ProbeError::Map { .. }
            | ProbeError::CallsLost { .. }
            | ProbeError::Lost { .. }
            | ProbeError::EventsLost { .. }
            | ProbeError::Missed { .. } => false,
        }
    }
}
/// CAP_BPF + CAP_PERFMON (5.8 on), or CAP_SYS_ADMIN, in the effective set. Checked
/// before loading so the message names the missing capability instead of "EPERM".
fn check_privileges() -> Result<(), ProbeError> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_PERFMON: u32 = 38;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(effective) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Ok(()); // cannot tell: let the kernel decide
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Ok(());
    }
    let missing: Vec<&str> = [(CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON")]
        .into_iter()
        .filter(|&(cap, _)| !has(cap))
        .map(|(_, name)| name)
        .collect();
    Err(ProbeError::NotPrivileged {
        missing: missing.join(" and "),
    })
}

/// An error and its causes on one line; a verifier log is cut to its last lines.
fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    const KEEP: usize = 40;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > KEEP {
        let tail = lines[lines.len() - KEEP..].join("\n");
        text = format!(
            "{}\n  [... {} lines of verifier log cut ...]\n{tail}",
            lines[0],
            lines.len() - KEEP - 1
        );
    }
    text
}

fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        source = err.source();
    }
    None
}

fn map_error_text(e: &MapError) -> String {
    error_text(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_and_unavailability() {
        assert_eq!(ProbeMode::BtfTracepoint.to_string(), "tp_btf/kfree_skb");
        assert_eq!(
            ProbeMode::ClassicTracepoint.to_string(),
            "tracepoint/skb/kfree_skb"
        );
        let perm = ProbeError::NotPrivileged {
            missing: "CAP_BPF".into(),
        };
        assert!(perm.is_unavailable());
        assert!(perm.to_string().contains("run as root"));
        let verifier = ProbeError::Bpf {
            mode: ProbeMode::BtfTracepoint,
            what: "loading program dropspec_tpbtf".into(),
            detail: "invalid mem access".into(),
            errno: Some(libc::EINVAL),
        };
        assert!(!verifier.is_unavailable());
        let both = ProbeError::NoMode {
            btf: Box::new(verifier),
            classic: Box::new(perm.clone()),
        };
        assert!(!both.is_unavailable());
        let both = ProbeError::NoMode {
            btf: Box::new(perm.clone()),
            classic: Box::new(perm),
        };
        assert!(both.is_unavailable());
    }
}
