//! The eBPF drop probe: loaded and attached once per process, shared by every scenario.
//!
//! `ebpf/drops.bpf.c` counts every `kfree_skb` drop whose network namespace is being
//! watched, in a per-CPU hash keyed by (slot, reason, call site, L3, L4, the first
//! kernel stack frames from the call site on). A scenario
//! asks [`DropProbe::watch`] for a slot on its namespace, runs traffic, and reads the
//! counts with [`DropProbe::read`]; dropping the [`WatchSlot`] stops counting and frees
//! the slot's keys. Reason and function names are resolved here, in user space, from
//! what the running kernel says (BTF, kallsyms), never from numbers compiled in. Each
//! [`DropCount`] carries its stack as function names and the hook it shows
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

use crate::kernel::btf::Btf;
use crate::kernel::stacks;
use crate::kernel::tracefs::{self, TracepointFormat};
use crate::kernel::{self as kernel_info, KernelError};
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use events::{ClassicPlan, EventSpec};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

pub use crate::kernel::kallsyms::Kallsyms;
pub use crate::kernel::reasons::{ReasonSource, ReasonTable};
pub use events::EventCount;

mod events;
pub mod hooks;

/// The compiled probe (harness/build.rs builds it from ebpf/drops.bpf.c).
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drops.bpf.o"));

/// Environment variable that forces one probe mode: `tp_btf` or `tracepoint`.
pub const PROBE_ENV: &str = "DROPSPEC_PROBE";

/// Environment variable that turns kernel stacks off (`off`) or on (`on`, the default):
/// off, every [`DropCount::stack`] is empty. For measuring what stacks cost.
pub const STACKS_ENV: &str = "DROPSPEC_STACKS";

const TRACEPOINT_CATEGORY: &str = "skb";
const TRACEPOINT: &str = "kfree_skb";

// ---- ABI with ebpf/drops.h ---------------------------------------------------------

/// `struct dropspec_drop_key` (ebpf/drops.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct DropKey {
    slot: u32,
    reason: u32,
    location: u64,
    l3proto: u16,
    l4proto: u8,
    stack_status: u8,
    pad: [u8; 4],
    stack: [u64; STACK_DEPTH],
}

/// `struct dropspec_drop_value` (ebpf/drops.h), one per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DropValue {
    packets: u64,
    bytes: u64,
}

/// `struct dropspec_event_key` (ebpf/drops.h); the value is a per-CPU u64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct EventKey {
    slot: u32,
    event: u32,
    arg0: u32,
    arg1: u32,
}

const _: () = assert!(std::mem::size_of::<DropKey>() == 88);
const _: () = assert!(std::mem::size_of::<DropValue>() == 16);
const _: () = assert!(std::mem::size_of::<EventKey>() == 16);

// SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (it is spelled out), and
// every bit pattern is a valid value.
unsafe impl aya::Pod for DropKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DropValue {}
// SAFETY: as above.
unsafe impl aya::Pod for EventKey {}

/// DROPSPEC_MAX_DROP_KEYS, DROPSPEC_MAX_EVENT_KEYS, DROPSPEC_ABSENT, DROPSPEC_STACK_DEPTH
/// in ebpf/drops.h; DROPSPEC_MAX_NETNS in ebpf/slots.bpf.h.
const MAX_DROP_KEYS: u32 = 16384;
const MAX_EVENT_KEYS: u32 = 4096;
const MAX_NETNS: u32 = 1024;
const ABSENT: u32 = u32::MAX;
const STACK_DEPTH: usize = 8;
const _: () = assert!(STACK_DEPTH == stacks::MAX_FRAMES);

/// DROPSPEC_STACK_* (how DropKey::stack was filled).
const STACK_FROM_CALLER: u8 = 0;
const STACK_UNTRIMMED: u8 = 1;
const STACK_NONE: u8 = 2;
/// Enough stacks of this distinct drop were taken already (DROPSPEC_STACK_SAMPLES).
const STACK_SKIPPED: u8 = 3;

/// DROPSPEC_LOST_* (indexes of dropspec_lost).
const LOST_DROPS: u32 = 0;
const LOST_EVENTS: u32 = 1;
const LOST_STACKS: u32 = 2;
const LOST_COUNTERS: u32 = 3;

// ---- Public types ------------------------------------------------------------------

/// How the probe is attached to skb:kfree_skb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeMode {
    /// BTF-typed raw tracepoint: arguments read directly, cheapest. Needs kernel BTF.
    BtfTracepoint,
    /// Classic (perf) tracepoint: record layout read from the tracefs format file.
    ClassicTracepoint,
}

impl fmt::Display for ProbeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProbeMode::BtfTracepoint => "tp_btf/kfree_skb",
            ProbeMode::ClassicTracepoint => "tracepoint/skb/kfree_skb",
        })
    }
}

impl ProbeMode {
    /// The mode forced by `DROPSPEC_PROBE`, if any.
    pub fn from_env() -> Result<Option<ProbeMode>, ProbeError> {
        match std::env::var(PROBE_ENV) {
            Err(_) => Ok(None),
            Ok(value) => match value.trim() {
                "" => Ok(None),
                "tp_btf" | "tp_btf/kfree_skb" => Ok(Some(ProbeMode::BtfTracepoint)),
                "tracepoint" | "tracepoint/skb/kfree_skb" => Ok(Some(ProbeMode::ClassicTracepoint)),
                _ => Err(ProbeError::BadModeRequest { value }),
            },
        }
    }
}

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
    #[error(
        "{PROBE_ENV}={value:?} is not a probe mode: use `tp_btf` or `tracepoint`, or unset \
         it to try tp_btf first"
    )]
    BadModeRequest { value: String },
    #[error("{STACKS_ENV}={value:?} is neither `on` nor `off`: unset it to take stacks")]
    BadStacksRequest { value: String },
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
        "network namespace {inode} is already watched (slot {slot}): drop that WatchSlot \
         before watching the namespace again"
    )]
    AlreadyWatched { inode: u64, slot: u32 },
    #[error("{op} on BPF map {map} failed: {detail}")]
    Map {
        map: &'static str,
        op: &'static str,
        detail: String,
    },
    #[error(
        "{lost} drops in watched namespaces were not counted because dropspec_drops was \
         full ({MAX_DROP_KEYS} keys) while slot {slot} was watched, so its counts are \
         incomplete: run fewer scenarios at once"
    )]
    Lost { slot: u32, lost: u64 },
    #[error(
        "{lost} auxiliary events (ICMP errors, resets, ...) in watched namespaces were not \
         counted because dropspec_events was full ({MAX_EVENT_KEYS} keys) while slot {slot} \
         was watched, so its event counts are incomplete: run fewer scenarios at once"
    )]
    EventsLost { slot: u32, lost: u64 },
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
            ProbeError::BadModeRequest { .. }
            | ProbeError::BadStacksRequest { .. }
            | ProbeError::BadNetnsInode { .. }
            | ProbeError::AlreadyWatched { .. }
            | ProbeError::Map { .. }
            | ProbeError::Lost { .. }
            | ProbeError::EventsLost { .. } => false,
        }
    }
}

/// Drops counted for one slot, merged per (reason, function, l3, l4, stack).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DropCount {
    /// Reason name without the `SKB_DROP_REASON_` prefix: `NETFILTER_DROP`.
    pub reason: String,
    /// The running kernel's number for it (differs between kernels: never compare it).
    pub reason_number: u32,
    /// The function that dropped (kallsyms symbol containing the call site, no offset);
    /// the address in hex when kallsyms is unreadable.
    pub function: String,
    /// `ipv4`, `ipv6`, `arp`, or the ethertype as `0x....`.
    pub l3: &'static str,
    /// `icmp`, `tcp`, `udp`, `icmpv6`, `` (no network header), or the protocol number.
    pub l4: &'static str,
    pub packets: u64,
    pub bytes: u64,
    /// Kernel stack as function names, innermost first, starting at `function` (the
    /// caller of the kfree_skb family), at most 8 frames and none past the softirq
    /// entry (`net_rx_action`): `nft_do_chain`, `nft_do_chain_ipv4`, `nf_hook_slow`,
    /// `ip_local_deliver`, ... Empty when the kernel could not unwind (counted in
    /// [`ProbeStats::stacks_missing`]) or with `DROPSPEC_STACKS=off`. Names carry no
    /// offsets or clone suffixes. Rows differing only here are separate `DropCount`s.
    pub stack: Vec<String>,
    /// The first frame of `stack` that names a place in the packet path
    /// ([`stacks::HOOKS`]): `ip_local_deliver` for an INPUT drop, `__ip_local_out` for
    /// OUTPUT, `ip_forward` for FORWARD. None when no frame does;
    /// [`stacks::hook_stage`] turns it into `ipv4 input`.
    pub hook: Option<&'static str>,
}

/// Occupancy of the probe's maps, for diagnostics and leak checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeStats {
    /// Namespaces being watched now.
    pub watched: usize,
    /// Counter keys in dropspec_drops (all slots), out of 16384.
    pub keys: usize,
    /// Drops of watched namespaces not counted since load because the map was full.
    pub lost: u64,
    /// Keys in dropspec_events (all slots), out of 4096.
    pub event_keys: usize,
    /// Events of watched namespaces not counted since load because the map was full.
    pub events_lost: u64,
    /// Drops counted since load without a stack because the kernel could not unwind.
    pub stacks_missing: u64,
}

/// The loaded, attached probe. One per process: see [`DropProbe::shared`].
pub struct DropProbe {
    mode: ProbeMode,
    reasons: ReasonTable,
    /// Why tp_btf was not used when the classic tracepoint was chosen automatically.
    fallback: Option<ProbeError>,
    load_time: Duration,
    maps: Mutex<Maps>,
    /// Per auxiliary tracepoint: the program attached, or why none could be.
    events: Vec<(String, Result<&'static str, String>)>,
    /// `enum sk_rst_reason` names, for tcp_send_reset.
    reset_reasons: HashMap<u32, String>,
    kallsyms: Mutex<Option<SymbolCache>>,
    next_slot: AtomicU32,
    /// Owns the programs and their links: dropping it would detach the probe.
    _ebpf: Mutex<Ebpf>,
}

struct Maps {
    netns: BpfHashMap<MapData, u32, u32>,
    drops: PerCpuHashMap<MapData, DropKey, DropValue>,
    events: PerCpuHashMap<MapData, EventKey, u64>,
    lost: PerCpuArray<MapData, u64>,
    /// Live slots: slot id → netns inum.
    active: BTreeMap<u32, u32>,
}

/// Counting drops in one namespace; stops (and frees the slot's counters) on drop.
pub struct WatchSlot {
    probe: &'static DropProbe,
    id: u32,
    netns_inode: u64,
    lost_at_start: u64,
    events_lost_at_start: u64,
}

impl WatchSlot {
    /// Slot id, unique within this process.
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn netns_inode(&self) -> u64 {
        self.netns_inode
    }

    /// Same as [`DropProbe::read`] on this slot.
    pub fn read(&self) -> Result<Vec<DropCount>, ProbeError> {
        self.probe.read(self)
    }

    /// Same as [`DropProbe::read_events`] on this slot.
    pub fn read_events(&self) -> Result<Vec<EventCount>, ProbeError> {
        self.probe.read_events(self)
    }
}

impl fmt::Debug for WatchSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchSlot")
            .field("id", &self.id)
            .field("netns_inode", &self.netns_inode)
            .finish()
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Err(e) = self.probe.unwatch(self.id) {
            // Nothing to return to from a destructor; the leftover keys are swept by the
            // next slot that is dropped.
            eprintln!("dropspec: while releasing watch slot {}: {e}", self.id);
        }
    }
}

impl fmt::Debug for DropProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DropProbe")
            .field("mode", &self.mode)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}

impl DropProbe {
    /// Loads and attaches once per process; every scenario thread shares it. Tries
    /// tp_btf first, then the classic tracepoint; `DROPSPEC_PROBE=tp_btf|tracepoint`
    /// forces one. A failure is remembered and returned to every later caller.
    pub fn shared() -> Result<&'static DropProbe, ProbeError> {
        static SHARED: OnceLock<Result<DropProbe, ProbeError>> = OnceLock::new();
        static WARM_KALLSYMS: Once = Once::new();
        let probe = SHARED
            .get_or_init(|| DropProbe::load(ProbeMode::from_env()?))
            .as_ref()
            .map_err(Clone::clone)?;
        // Reading kallsyms takes 50-150 ms; do it while the first scenario sets up, so
        // its first read() does not wait (a failure is kept and reported by read()).
        WARM_KALLSYMS.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("dropspec-kallsyms".into())
                .spawn(move || probe.kallsyms().map(|_| ()));
        });
        Ok(probe)
    }

    pub fn mode(&self) -> ProbeMode {
        self.mode
    }

    pub fn reasons(&self) -> &ReasonTable {
        &self.reasons
    }

    /// How long loading and attaching took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Why tp_btf was passed over, when the classic tracepoint was picked automatically.
    pub fn fallback_reason(&self) -> Option<&ProbeError> {
        self.fallback.as_ref()
    }

    /// Kernel symbols, read from /proc/kallsyms on first use and again whenever the set
    /// of loaded modules has changed since: on a kernel with netfilter as modules (Debian's
    /// 6.1, 6.12) nf_tables is loaded by a scenario's first rule, after the first read, and
    /// its drops would otherwise be named after whatever symbol precedes it.
    pub fn kallsyms(&self) -> Result<Arc<Kallsyms>, ProbeError> {
        let modules = loaded_modules();
        let mut cache = self
            .kallsyms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = cache.as_ref().filter(|c| c.modules == modules) {
            return cached.symbols.clone();
        }
        let symbols = Kallsyms::from_proc()
            .map(Arc::new)
            .map_err(ProbeError::from);
        *cache = Some(SymbolCache {
            modules,
            symbols: symbols.clone(),
        });
        symbols
    }

    /// Starts counting drops in this namespace (netns inode = fstat(nsfd).st_ino). Each
    /// call gets a fresh slot id, so namespace inode reuse never mixes counts. Dropping
    /// the [`WatchSlot`] stops counting and deletes the slot's counters.
    pub fn watch(&'static self, netns_inode: u64) -> Result<WatchSlot, ProbeError> {
        let inum = u32::try_from(netns_inode)
            .map_err(|_| ProbeError::BadNetnsInode { inode: netns_inode })?;
        let mut maps = self.lock_maps();
        if let Some((&slot, _)) = maps.active.iter().find(|(_, &n)| n == inum) {
            return Err(ProbeError::AlreadyWatched {
                inode: netns_inode,
                slot,
            });
        }
        let lost_at_start = maps.lost(LOST_DROPS)?;
        let events_lost_at_start = maps.lost(LOST_EVENTS)?;
        let id = self.next_slot.fetch_add(1, Ordering::Relaxed);
        maps.netns.insert(inum, id, 0).map_err(|e| {
            let detail = if maps.active.len() >= MAX_NETNS as usize {
                format!("{MAX_NETNS} namespaces are watched already: drop WatchSlots when done")
            } else {
                map_error_text(&e)
            };
            ProbeError::Map {
                map: "dropspec_netns",
                op: "adding a namespace",
                detail,
            }
        })?;
        maps.active.insert(id, inum);
        Ok(WatchSlot {
            probe: self,
            id,
            netns_inode,
            lost_at_start,
            events_lost_at_start,
        })
    }

    /// Packets dropped so far in this slot, summed over every drop and CPU. Cheap: no
    /// name is resolved, so the traffic phase can poll it every millisecond. (Resolving
    /// names re-reads /proc/kallsyms after a module was loaded, which takes about two
    /// seconds in a TCG guest: long enough for a pending TCP SYN to be retransmitted.)
    pub fn packets(&self, slot: &WatchSlot) -> Result<u64, ProbeError> {
        Ok(self
            .raw_rows(slot)?
            .iter()
            .map(|(_, packets, _)| packets)
            .sum())
    }

    /// This slot's counters as the kernel keeps them: (key, packets, bytes), summed over
    /// CPUs, nothing resolved.
    fn raw_rows(&self, slot: &WatchSlot) -> Result<Vec<(DropKey, u64, u64)>, ProbeError> {
        let mut rows = Vec::new();
        {
            let maps = self.lock_maps();
            for entry in maps.drops.iter() {
                let (key, per_cpu) = entry.map_err(|e| ProbeError::Map {
                    map: "dropspec_drops",
                    op: "reading counters",
                    detail: map_error_text(&e),
                })?;
                if key.slot != slot.id {
                    continue;
                }
                let (packets, bytes) = per_cpu
                    .iter()
                    .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
                rows.push((key, packets, bytes));
            }
            let lost = maps.lost(LOST_DROPS)?;
            if lost > slot.lost_at_start {
                return Err(ProbeError::Lost {
                    slot: slot.id,
                    lost: lost - slot.lost_at_start,
                });
            }
        }
        Ok(rows)
    }

    /// Drops counted so far for this slot, names resolved, summed over CPUs, merged per
    /// (reason, function, l3, l4, stack) and sorted by those (hook before stack).
    pub fn read(&self, slot: &WatchSlot) -> Result<Vec<DropCount>, ProbeError> {
        let rows = self.raw_rows(slot)?;
        let kallsyms = self.kallsyms().ok();
        // (reason, reason number, function, l3, l4, hook, stack) → (packets, bytes).
        // Keys that differ only in addresses (another call site in the same function,
        // another return address in a frame) name the same stack and merge here.
        type Row = (
            String,
            u32,
            String,
            &'static str,
            &'static str,
            Option<&'static str>,
            Vec<String>,
        );
        let mut merged: BTreeMap<Row, (u64, u64)> = BTreeMap::new();
        for (key, packets, bytes) in rows {
            let function = match kallsyms.as_ref().and_then(|k| k.function_at(key.location)) {
                Some(name) => name.to_owned(),
                None => format!("{:#x}", key.location),
            };
            let reason = self.reasons.describe(key.reason).into_owned();
            let l3 = l3_name(key.l3proto);
            let l4 = l4_name(key.l3proto, key.l4proto);
            let stack = match key.stack_status {
                STACK_FROM_CALLER => stacks::symbolize(kallsyms.as_deref(), &key.stack, true),
                STACK_UNTRIMMED => stacks::symbolize(kallsyms.as_deref(), &key.stack, false),
                _ => {
                    debug_assert!(matches!(key.stack_status, STACK_NONE | STACK_SKIPPED));
                    Vec::new()
                }
            };
            let hook = stacks::hook_of(&stack);
            let sum = merged
                .entry((reason, key.reason, function, l3, l4, hook, stack))
                .or_default();
            sum.0 += packets;
            sum.1 += bytes;
        }
        Ok(merged
            .into_iter()
            .map(
                |((reason, reason_number, function, l3, l4, hook, stack), (packets, bytes))| {
                    DropCount {
                        reason,
                        reason_number,
                        function,
                        l3,
                        l4,
                        packets,
                        bytes,
                        stack,
                        hook,
                    }
                },
            )
            .collect())
    }

    /// Auxiliary events counted so far for this slot, summed over CPUs, sorted by name.
    /// Events this kernel lacks are simply absent: see [`DropProbe::events_available`].
    pub fn read_events(&self, slot: &WatchSlot) -> Result<Vec<EventCount>, ProbeError> {
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let maps = self.lock_maps();
        for entry in maps.events.iter() {
            let (key, per_cpu) = entry.map_err(|e| ProbeError::Map {
                map: "dropspec_events",
                op: "reading counters",
                detail: map_error_text(&e),
            })?;
            if key.slot != slot.id {
                continue;
            }
            let name = events::event_name(key.event, key.arg0, key.arg1, &self.reset_reasons);
            *counts.entry(name).or_default() += per_cpu.iter().sum::<u64>();
        }
        let lost = maps.lost(LOST_EVENTS)?;
        if lost > slot.events_lost_at_start {
            return Err(ProbeError::EventsLost {
                slot: slot.id,
                lost: lost - slot.events_lost_at_start,
            });
        }
        Ok(counts
            .into_iter()
            .map(|(event, count)| EventCount { event, count })
            .collect())
    }

    /// Each auxiliary tracepoint (`icmp_send`, `tcp_send_reset`, `tcp_bad_csum`,
    /// `udp_fail_queue_rcv_skb`): Ok if it is being counted, or why not (the kernel
    /// lacks it, or neither tp_btf nor the classic tracepoint could attach, with both
    /// reasons).
    pub fn events_available(&self) -> Vec<(String, Result<(), String>)> {
        self.events
            .iter()
            .map(|(name, status)| {
                (
                    name.clone(),
                    status.as_ref().map(|_| ()).map_err(Clone::clone),
                )
            })
            .collect()
    }

    /// The program counting each auxiliary tracepoint (`dropspec_icmp_send_btf`, ...),
    /// or why none does: for diagnostics, next to [`DropProbe::events_available`].
    pub fn event_programs(&self) -> &[(String, Result<&'static str, String>)] {
        &self.events
    }

    pub fn stats(&self) -> Result<ProbeStats, ProbeError> {
        let maps = self.lock_maps();
        Ok(ProbeStats {
            watched: maps.active.len(),
            keys: maps.drops.keys().filter(Result::is_ok).count(),
            lost: maps.lost(LOST_DROPS)?,
            event_keys: maps.events.keys().filter(Result::is_ok).count(),
            events_lost: maps.lost(LOST_EVENTS)?,
            stacks_missing: maps.lost(LOST_STACKS)?,
        })
    }

    fn lock_maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps as consistent as the kernel
        // keeps them; carry on rather than poison every later scenario.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unwatch(&self, id: u32) -> Result<(), ProbeError> {
        let mut maps = self.lock_maps();
        if let Some(inum) = maps.active.remove(&id) {
            match maps.netns.remove(&inum) {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
                Err(e) => {
                    return Err(ProbeError::Map {
                        map: "dropspec_netns",
                        op: "removing a namespace",
                        detail: map_error_text(&e),
                    })
                }
            }
        }
        // Delete this slot's keys, and any a probe still running on another CPU added
        // for an earlier, already released slot.
        let stale: Vec<DropKey> = maps
            .drops
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !maps.active.contains_key(&key.slot))
            .collect();
        for key in stale {
            match maps.drops.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
                Err(e) => {
                    return Err(ProbeError::Map {
                        map: "dropspec_drops",
                        op: "deleting a released slot's counters",
                        detail: map_error_text(&e),
                    })
                }
            }
        }
        let stale: Vec<EventKey> = maps
            .events
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !maps.active.contains_key(&key.slot))
            .collect();
        for key in stale {
            match maps.events.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
                Err(e) => {
                    return Err(ProbeError::Map {
                        map: "dropspec_events",
                        op: "deleting a released slot's counters",
                        detail: map_error_text(&e),
                    })
                }
            }
        }
        Ok(())
    }

    /// Checks prerequisites, then loads and attaches in `requested` mode or, if None,
    /// tp_btf with the classic tracepoint as fallback.
    fn load(requested: Option<ProbeMode>) -> Result<DropProbe, ProbeError> {
        let started = Instant::now();
        check_privileges()?;
        // The probe's struct reads are CO-RE relocations: without kernel BTF they would
        // read at our header's made-up offsets, so BTF is required in both modes.
        let btf_bytes = kernel_info::read_file(Path::new(kernel_info::VMLINUX_BTF))?;
        let btf = Btf::parse(&btf_bytes)?;
        let reasons = ReasonTable::from_parsed_btf(&btf)?;
        let take_stacks = match std::env::var(STACKS_ENV).as_deref().map(str::trim) {
            Err(_) | Ok("" | "on") => true,
            Ok("off") => false,
            Ok(other) => {
                return Err(ProbeError::BadStacksRequest {
                    value: other.to_owned(),
                })
            }
        };
        let kernel = KernelFacts {
            take_stacks,
            tracepoint_args: btf.tracepoint_args(TRACEPOINT)?,
            not_dropped: reasons.number("NOT_DROPPED_YET").unwrap_or(ABSENT),
            consumed: reasons.number("CONSUMED").unwrap_or(ABSENT),
            event_btf: events::EVENTS
                .iter()
                .map(|spec| {
                    let types = btf.tracepoint_arg_types(spec.name)?;
                    Ok(EventBtf {
                        present: types.is_some(),
                        program: events::btf_program(spec, types.as_deref()),
                    })
                })
                .collect::<Result<_, KernelError>>()?,
        };
        let reset_reasons = events::reset_reasons(&btf);
        let aya_btf = aya::Btf::parse(&btf_bytes, aya::Endianness::default()).map_err(|e| {
            KernelError::Btf {
                what: "aya's parse".into(),
                detail: e.to_string(),
            }
        })?;
        drop(btf);
        drop(btf_bytes);

        let (mode, (ebpf, events), fallback) = match requested {
            Some(mode) => (mode, attach(mode, &kernel, &aya_btf)?, None),
            None => match attach(ProbeMode::BtfTracepoint, &kernel, &aya_btf) {
                Ok(attached) => (ProbeMode::BtfTracepoint, attached, None),
                Err(btf_error) => match attach(ProbeMode::ClassicTracepoint, &kernel, &aya_btf) {
                    Ok(attached) => (ProbeMode::ClassicTracepoint, attached, Some(btf_error)),
                    Err(classic) => {
                        return Err(ProbeError::NoMode {
                            btf: Box::new(btf_error),
                            classic: Box::new(classic),
                        })
                    }
                },
            },
        };
        let mut ebpf = ebpf;
        let maps = Maps::take(&mut ebpf, mode)?;
        Ok(DropProbe {
            mode,
            reasons,
            fallback,
            load_time: started.elapsed(),
            maps: Mutex::new(maps),
            events,
            reset_reasons,
            kallsyms: Mutex::new(None),
            next_slot: AtomicU32::new(1),
            _ebpf: Mutex::new(ebpf),
        })
    }
}

impl Maps {
    fn take(ebpf: &mut Ebpf, mode: ProbeMode) -> Result<Maps, ProbeError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| ProbeError::Bpf {
                mode,
                what: format!("finding map {name} in the probe object"),
                detail: "not there: ebpf/drops.bpf.c and probes.rs disagree".into(),
                errno: None,
            })
        };
        let (netns, drops, events, lost) = (
            take("dropspec_netns")?,
            take("dropspec_drops")?,
            take("dropspec_events")?,
            take("dropspec_lost")?,
        );
        let wrong_type = |name: &'static str| {
            move |e: MapError| ProbeError::Map {
                map: name,
                op: "opening",
                detail: map_error_text(&e),
            }
        };
        Ok(Maps {
            netns: BpfHashMap::try_from(netns).map_err(wrong_type("dropspec_netns"))?,
            drops: PerCpuHashMap::try_from(drops).map_err(wrong_type("dropspec_drops"))?,
            events: PerCpuHashMap::try_from(events).map_err(wrong_type("dropspec_events"))?,
            lost: PerCpuArray::try_from(lost).map_err(wrong_type("dropspec_lost"))?,
            active: BTreeMap::new(),
        })
    }

    /// The total over CPUs of one DROPSPEC_LOST_* counter.
    fn lost(&self, index: u32) -> Result<u64, ProbeError> {
        debug_assert!(index < LOST_COUNTERS);
        let per_cpu = self.lost.get(&index, 0).map_err(|e| ProbeError::Map {
            map: "dropspec_lost",
            op: "reading",
            detail: map_error_text(&e),
        })?;
        Ok(per_cpu.iter().sum())
    }
}

/// Kernel symbols and the modules that were loaded when they were read.
struct SymbolCache {
    modules: Vec<(String, String)>,
    symbols: Result<Arc<Kallsyms>, ProbeError>,
}

/// (name, load address) of every loaded module, from /proc/modules; empty on a kernel
/// without modules. Reference counts are left out: they change with every rule.
fn loaded_modules() -> Vec<(String, String)> {
    module_list(&std::fs::read_to_string("/proc/modules").unwrap_or_default())
}

fn module_list(text: &str) -> Vec<(String, String)> {
    let mut modules: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(5)?.to_string()))
        })
        .collect();
    modules.sort();
    modules
}

/// What the loader needs to know about the running kernel, read before loading.
struct KernelFacts {
    /// Not a kernel fact: STACKS_ENV, passed to the probe with them.
    take_stacks: bool,
    /// Arguments of tp_btf kfree_skb (3 before ~6.12, 4 with rx_sk); None without BTF
    /// tracepoint types.
    tracepoint_args: Option<usize>,
    not_dropped: u32,
    consumed: u32,
    /// Per events::EVENTS entry: what the kernel's BTF says about the tracepoint.
    event_btf: Vec<EventBtf>,
}

struct EventBtf {
    /// The BTF has btf_trace_<name>: the kernel has the tracepoint.
    present: bool,
    /// The tp_btf program written for its argument list, or why none fits.
    program: Result<&'static str, String>,
}

/// Offsets of the classic tracepoint record's fields, from the tracefs format file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordOffsets {
    skbaddr: u32,
    location: u32,
    reason: u32,
    rx_sk: u32,
}

impl RecordOffsets {
    const NONE: RecordOffsets = RecordOffsets {
        skbaddr: ABSENT,
        location: ABSENT,
        reason: ABSENT,
        rx_sk: ABSENT,
    };

    fn from_format(format: &TracepointFormat) -> Result<RecordOffsets, String> {
        let field = |name: &str, size: u32, required: bool| -> Result<u32, String> {
            match format.field(name) {
                Some(f) if f.size == size => Ok(f.offset),
                Some(f) => Err(format!(
                    "field `{name}` is {} bytes, the probe reads {size}",
                    f.size
                )),
                None if required => Err(format!("no field `{name}`")),
                None => Ok(ABSENT),
            }
        };
        Ok(RecordOffsets {
            skbaddr: field("skbaddr", 8, true)?,
            location: field("location", 8, true)?,
            reason: field("reason", 4, true)?,
            rx_sk: field("rx_sk", 8, false)?,
        })
    }
}

/// The loaded object with kfree_skb attached in `mode`, and per auxiliary event the
/// program attached or why none could be (those never fail the whole probe).
type Attached = (Ebpf, Vec<(String, Result<&'static str, String>)>);

fn attach(mode: ProbeMode, kernel: &KernelFacts, btf: &aya::Btf) -> Result<Attached, ProbeError> {
    let unsupported = |detail: String| ProbeError::Unsupported { mode, detail };
    let bpf_error = |what: String, e: &(dyn std::error::Error + 'static)| ProbeError::Bpf {
        mode,
        what,
        detail: error_text(e),
        errno: errno_of(e),
    };

    let (program, offsets) = match mode {
        ProbeMode::BtfTracepoint => {
            let program = match kernel.tracepoint_args {
                Some(4) => "dropspec_tpbtf",
                Some(3) => "dropspec_tpbtf3",
                Some(n) => {
                    return Err(unsupported(format!(
                        "kfree_skb passes {n} arguments; the probe knows 3 (5.17 to 6.11) \
                         and 4 (with rx_sk, 6.12 on): use DROPSPEC_PROBE=tracepoint"
                    )))
                }
                None => {
                    return Err(unsupported(
                        "the kernel's BTF has no btf_trace_kfree_skb (no BTF tracepoints)".into(),
                    ))
                }
            };
            (program, RecordOffsets::NONE)
        }
        ProbeMode::ClassicTracepoint => {
            let root = tracefs::tracefs_root()?;
            let format = TracepointFormat::read(&root, TRACEPOINT_CATEGORY, TRACEPOINT)?;
            let offsets = RecordOffsets::from_format(&format)
                .map_err(|detail| unsupported(format!("events/skb/kfree_skb/format: {detail}")))?;
            ("dropspec_tp", offsets)
        }
    };

    let classic_events = plan_classic_events(mode, kernel);
    let mut event_offsets: Vec<(&'static str, u32)> =
        events::record_globals().map(|g| (g, ABSENT)).collect();
    for (_, offsets) in classic_events.iter().filter_map(|p| p.as_ref().ok()) {
        for &(global, offset) in offsets {
            if let Some(slot) = event_offsets.iter_mut().find(|(g, _)| *g == global) {
                slot.1 = offset;
            }
        }
    }

    let take_stacks = u32::from(kernel.take_stacks);
    let mut loader = EbpfLoader::new();
    for (global, offset) in &event_offsets {
        loader.override_global(global, offset, true);
    }
    loader
        .btf(Some(btf))
        .override_global("cfg_reason_not_dropped", &kernel.not_dropped, true)
        .override_global("cfg_reason_consumed", &kernel.consumed, true)
        .override_global("cfg_tp_skbaddr", &offsets.skbaddr, true)
        .override_global("cfg_tp_location", &offsets.location, true)
        .override_global("cfg_tp_reason", &offsets.reason, true)
        .override_global("cfg_tp_rx_sk", &offsets.rx_sk, true)
        .override_global("cfg_take_stacks", &take_stacks, true);
    let mut ebpf = loader.load(PROBE_OBJECT).map_err(|e: EbpfError| {
        bpf_error("loading the probe object (maps, relocations)".into(), &e)
    })?;

    let prog = ebpf.program_mut(program).ok_or_else(|| {
        unsupported(format!(
            "program {program} missing from the probe object: rebuild"
        ))
    })?;
    let loading = format!("loading program {program}");
    let attaching = format!("attaching {program}");
    match mode {
        ProbeMode::BtfTracepoint => {
            let prog: &mut BtfTracePoint = prog
                .try_into()
                .map_err(|e: ProgramError| bpf_error(loading.clone(), &e))?;
            prog.load(TRACEPOINT, btf)
                .map_err(|e| bpf_error(loading, &e))?;
            prog.attach().map_err(|e| bpf_error(attaching, &e))?;
        }
        ProbeMode::ClassicTracepoint => {
            let prog: &mut TracePoint = prog
                .try_into()
                .map_err(|e: ProgramError| bpf_error(loading.clone(), &e))?;
            prog.load().map_err(|e| bpf_error(loading, &e))?;
            prog.attach(TRACEPOINT_CATEGORY, TRACEPOINT)
                .map_err(|e| bpf_error(attaching, &e))?;
        }
    }

    let events = events::EVENTS
        .iter()
        .zip(&kernel.event_btf)
        .zip(classic_events)
        .map(|((spec, btf_plan), classic)| {
            let status = attach_event(&mut ebpf, mode, spec, btf_plan, classic, btf);
            (spec.name.to_owned(), status)
        })
        .collect();
    Ok((ebpf, events))
}

/// For each auxiliary event, the classic program and its record offsets, or why not.
/// The format files are only read when the classic program may be used (the probe's
/// mode is the classic one, or no tp_btf program fits), so tp_btf mode on a kernel
/// where everything fits never touches tracefs.
fn plan_classic_events(mode: ProbeMode, kernel: &KernelFacts) -> Vec<ClassicPlan> {
    let mut root: Option<Result<std::path::PathBuf, String>> = None;
    events::EVENTS
        .iter()
        .zip(&kernel.event_btf)
        .map(|(spec, btf_plan)| {
            if mode == ProbeMode::BtfTracepoint && btf_plan.program.is_ok() {
                return Err("tracepoint: not tried (tp_btf fits this kernel)".to_owned());
            }
            if spec.classic.is_err() {
                return events::classic_program(spec, Err(String::new()));
            }
            let root = root
                .get_or_insert_with(|| tracefs::tracefs_root().map_err(|e| e.to_string()))
                .clone()?;
            if !kernel_has_classic(&root, spec) && !kernel.event_btf_present(spec) {
                return Err(missing_event(spec));
            }
            let format =
                TracepointFormat::read(&root, spec.category, spec.name).map_err(|e| e.to_string());
            events::classic_program(spec, format.as_ref().map_err(Clone::clone))
        })
        .collect()
}

fn kernel_has_classic(root: &Path, spec: &EventSpec) -> bool {
    root.join("events")
        .join(spec.category)
        .join(spec.name)
        .is_dir()
}

fn missing_event(spec: &EventSpec) -> String {
    format!(
        "this kernel has no tracepoint {0}:{1} (no btf_trace_{1} in its BTF, no \
         events/{0}/{1} in tracefs): it predates the tracepoint or was built without it",
        spec.category, spec.name
    )
}

impl KernelFacts {
    fn event_btf_present(&self, spec: &EventSpec) -> bool {
        events::EVENTS
            .iter()
            .zip(&self.event_btf)
            .any(|(s, plan)| s.id == spec.id && plan.present)
    }
}

/// Attaches one auxiliary event: the program of the probe's mode first, then the other.
fn attach_event(
    ebpf: &mut Ebpf,
    mode: ProbeMode,
    spec: &EventSpec,
    btf_plan: &EventBtf,
    classic: ClassicPlan,
    btf: &aya::Btf,
) -> Result<&'static str, String> {
    if !btf_plan.present {
        if let Err(why) = &classic {
            if why.starts_with("this kernel has no tracepoint") {
                return Err(why.clone());
            }
        }
    }
    let try_btf = |ebpf: &mut Ebpf| -> Result<&'static str, String> {
        let program = btf_plan.program.clone()?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("tp_btf: program {program} missing from the probe object"))?
            .try_into()
            .map_err(|e: ProgramError| format!("tp_btf: {program}: {}", error_text(&e)))?;
        prog.load(spec.name, btf)
            .map_err(|e| format!("tp_btf: loading {program}: {}", error_text(&e)))?;
        prog.attach()
            .map_err(|e| format!("tp_btf: attaching {program}: {}", error_text(&e)))?;
        Ok(program)
    };
    let try_classic = |ebpf: &mut Ebpf| -> Result<&'static str, String> {
        let (program, _) = classic.clone()?;
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| format!("tracepoint: program {program} missing from the probe object"))?
            .try_into()
            .map_err(|e: ProgramError| format!("tracepoint: {program}: {}", error_text(&e)))?;
        prog.load()
            .map_err(|e| format!("tracepoint: loading {program}: {}", error_text(&e)))?;
        prog.attach(spec.category, spec.name)
            .map_err(|e| format!("tracepoint: attaching {program}: {}", error_text(&e)))?;
        Ok(program)
    };
    match mode {
        ProbeMode::BtfTracepoint => {
            try_btf(ebpf).or_else(|e1| try_classic(ebpf).map_err(|e2| format!("{e1}; {e2}")))
        }
        ProbeMode::ClassicTracepoint => {
            try_classic(ebpf).or_else(|e1| try_btf(ebpf).map_err(|e2| format!("{e1}; {e2}")))
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

/// `&'static str` for protocol numbers without a name: at most 65,536 + 256 distinct
/// strings, so leaking each once is bounded.
fn intern(text: String) -> &'static str {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut table = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&s) = table.get(&text) {
        return s;
    }
    let leaked: &'static str = Box::leak(text.clone().into_boxed_str());
    table.insert(text, leaked);
    leaked
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

fn l3_name(ethertype: u16) -> &'static str {
    match ethertype {
        ETH_P_IP => "ipv4",
        ETH_P_IPV6 => "ipv6",
        ETH_P_ARP => "arp",
        other => intern(format!("0x{other:04x}")),
    }
}

fn l4_name(ethertype: u16, protocol: u8) -> &'static str {
    match (ethertype, protocol) {
        (_, 0) => "",
        (ETH_P_IP, 1) => "icmp",
        (ETH_P_IPV6, 58) => "icmpv6",
        (ETH_P_IP | ETH_P_IPV6, 6) => "tcp",
        (ETH_P_IP | ETH_P_IPV6, 17) => "udp",
        (_, other) => intern(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reasons::tests::{fixture_btf, fixture_format, fixture_kernels};
    use std::mem::offset_of;

    const DROPS_H: &str = include_str!("../../../ebpf/drops.h");

    /// (field, offset, size) of a struct in a probe header, laid out by C's rules for these
    /// fixed-size types (each aligned to its size, arrays to their element).
    pub(super) fn c_layout(header: &str, name: &str) -> Vec<(String, usize, usize)> {
        let start = header.find(&format!("struct {name} {{")).unwrap();
        let body = &header[start..];
        let body = &body[body.find('{').unwrap() + 1..body.find("};").unwrap()];
        let mut fields = Vec::new();
        let mut offset = 0usize;
        for decl in body
            .lines()
            .filter_map(|l| l.split("/*").next()?.trim().strip_suffix(';'))
        {
            let (ty, field) = decl.split_once(' ').unwrap();
            let size: usize = match ty {
                "__u8" => 1,
                "__u16" => 2,
                "__u32" | "__s32" => 4,
                "__u64" => 8,
                other => panic!("{name}: type {other} not handled"),
            };
            let (field, count) = match field.split_once('[') {
                Some((f, n)) => (f, c_number(header, n.trim_end_matches(']'))),
                None => (field, 1),
            };
            offset = offset.next_multiple_of(size);
            fields.push((field.trim().to_owned(), offset, size * count));
            offset += size * count;
        }
        fields
    }

    /// A literal, or the value of a `#define NAME value` in the header.
    pub(super) fn c_number(header: &str, text: &str) -> usize {
        text.parse().unwrap_or_else(|_| {
            let define = format!("#define {text} ");
            let line = header
                .lines()
                .find_map(|l| l.strip_prefix(&define))
                .unwrap_or_else(|| panic!("no #define {text}"));
            line.split_whitespace().next().unwrap().parse().unwrap()
        })
    }

    #[test]
    fn rust_mirror_matches_drops_h() {
        let key = vec![
            ("slot".to_owned(), offset_of!(DropKey, slot), 4),
            ("reason".to_owned(), offset_of!(DropKey, reason), 4),
            ("location".to_owned(), offset_of!(DropKey, location), 8),
            ("l3proto".to_owned(), offset_of!(DropKey, l3proto), 2),
            ("l4proto".to_owned(), offset_of!(DropKey, l4proto), 1),
            (
                "stack_status".to_owned(),
                offset_of!(DropKey, stack_status),
                1,
            ),
            ("pad".to_owned(), offset_of!(DropKey, pad), 4),
            (
                "stack".to_owned(),
                offset_of!(DropKey, stack),
                8 * STACK_DEPTH,
            ),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_drop_key"), key);
        let value = vec![
            ("packets".to_owned(), offset_of!(DropValue, packets), 8),
            ("bytes".to_owned(), offset_of!(DropValue, bytes), 8),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_drop_value"), value);
        let event = vec![
            ("slot".to_owned(), offset_of!(EventKey, slot), 4),
            ("event".to_owned(), offset_of!(EventKey, event), 4),
            ("arg0".to_owned(), offset_of!(EventKey, arg0), 4),
            ("arg1".to_owned(), offset_of!(EventKey, arg1), 4),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_event_key"), event);
        for (name, value) in [
            ("DROPSPEC_MAX_DROP_KEYS", MAX_DROP_KEYS.to_string()),
            ("DROPSPEC_MAX_EVENT_KEYS", MAX_EVENT_KEYS.to_string()),
            ("DROPSPEC_ABSENT", format!("{ABSENT:#x}u")),
            ("DROPSPEC_STACK_DEPTH", STACK_DEPTH.to_string()),
            ("DROPSPEC_STACK_FROM_CALLER", STACK_FROM_CALLER.to_string()),
            ("DROPSPEC_STACK_UNTRIMMED", STACK_UNTRIMMED.to_string()),
            ("DROPSPEC_STACK_NONE", STACK_NONE.to_string()),
            ("DROPSPEC_LOST_DROPS", LOST_DROPS.to_string()),
            ("DROPSPEC_LOST_EVENTS", LOST_EVENTS.to_string()),
            ("DROPSPEC_LOST_STACKS", LOST_STACKS.to_string()),
            ("DROPSPEC_LOST_COUNTERS", LOST_COUNTERS.to_string()),
            ("DROPSPEC_EVENT_ICMP_SEND", events::ICMP_SEND.to_string()),
            (
                "DROPSPEC_EVENT_TCP_SEND_RESET",
                events::TCP_SEND_RESET.to_string(),
            ),
            (
                "DROPSPEC_EVENT_TCP_BAD_CSUM",
                events::TCP_BAD_CSUM.to_string(),
            ),
            (
                "DROPSPEC_EVENT_UDP_FAIL_QUEUE",
                events::UDP_FAIL_QUEUE.to_string(),
            ),
        ] {
            let define = format!("#define {name} ");
            let found = DROPS_H
                .lines()
                .find_map(|l| l.strip_prefix(&define))
                .and_then(|rest| rest.split_whitespace().next());
            assert_eq!(found, Some(value.as_str()), "{name}");
        }
    }

    #[test]
    fn max_netns_matches_slots_bpf_h() {
        let header = include_str!("../../../ebpf/slots.bpf.h");
        assert_eq!(c_number(header, "DROPSPEC_MAX_NETNS"), MAX_NETNS as usize);
    }

    #[test]
    fn record_offsets_come_from_the_format_file() {
        let dir = fixture_kernels()
            .into_iter()
            .find(|d| d.ends_with("6.18.44-fc-v595"))
            .unwrap();
        let format = TracepointFormat::parse(&fixture_format(&dir)).unwrap();
        assert_eq!(
            RecordOffsets::from_format(&format).unwrap(),
            RecordOffsets {
                skbaddr: 8,
                location: 16,
                reason: 36,
                rx_sk: 24
            }
        );
        let old = format.print_fmt.clone();
        let without_rx_sk = TracepointFormat {
            fields: format
                .fields
                .iter()
                .filter(|f| f.name != "rx_sk")
                .cloned()
                .collect(),
            print_fmt: old,
            ..format.clone()
        };
        assert_eq!(
            RecordOffsets::from_format(&without_rx_sk).unwrap().rx_sk,
            ABSENT
        );
        let no_reason = TracepointFormat {
            fields: format
                .fields
                .iter()
                .filter(|f| f.name != "reason")
                .cloned()
                .collect(),
            ..format
        };
        assert_eq!(
            RecordOffsets::from_format(&no_reason).unwrap_err(),
            "no field `reason`"
        );
    }

    /// The tp_btf variant must match the record: 4 arguments exactly when the classic
    /// record has rx_sk, on every saved kernel.
    #[test]
    fn tracepoint_arity_agrees_with_the_format_file() {
        for dir in fixture_kernels() {
            let bytes = fixture_btf(&dir);
            let btf = Btf::parse(&bytes).unwrap();
            let args = btf.tracepoint_args("kfree_skb").unwrap();
            let format = TracepointFormat::parse(&fixture_format(&dir)).unwrap();
            let expected = if format.field("rx_sk").is_some() {
                4
            } else {
                3
            };
            assert_eq!(args, Some(expected), "{}", dir.display());
        }
    }

    #[test]
    fn a_missing_event_says_where_it_was_looked_for() {
        let spec = &events::EVENTS[0];
        assert_eq!(
            missing_event(spec),
            "this kernel has no tracepoint icmp:icmp_send (no btf_trace_icmp_send in its \
             BTF, no events/icmp/icmp_send in tracefs): it predates the tracepoint or was \
             built without it"
        );
        let err = ProbeError::EventsLost { slot: 3, lost: 2 };
        assert!(!err.is_unavailable());
        assert!(err
            .to_string()
            .contains("dropspec_events was full (4096 keys)"));
    }

    #[test]
    fn module_list_ignores_reference_counts() {
        let before = "nf_tables 266240 0 - Live 0xffffffffc03e0000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        let in_use = "veth 36864 0 - Live 0xffffffffc0300000\nnf_tables 266240 4 nft_chain,[permanent] Live 0xffffffffc03e0000\n";
        assert_eq!(module_list(before), module_list(in_use));
        let reloaded = "nf_tables 266240 0 - Live 0xffffffffc0500000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        assert_ne!(module_list(before), module_list(reloaded));
        assert_ne!(
            module_list(before),
            module_list("veth 36864 0 - Live 0xffffffffc0300000\n")
        );
        assert!(module_list("").is_empty());
    }

    #[test]
    fn protocol_names() {
        assert_eq!(l3_name(0x0800), "ipv4");
        assert_eq!(l3_name(0x86dd), "ipv6");
        assert_eq!(l3_name(0x0806), "arp");
        assert_eq!(l3_name(0x88cc), "0x88cc");
        assert_eq!(l3_name(0), "0x0000");
        assert_eq!(l4_name(0x0800, 1), "icmp");
        assert_eq!(l4_name(0x0800, 17), "udp");
        assert_eq!(l4_name(0x86dd, 6), "tcp");
        assert_eq!(l4_name(0x86dd, 58), "icmpv6");
        assert_eq!(l4_name(0x0800, 0), "");
        assert_eq!(l4_name(0x0800, 132), "132");
        assert!(std::ptr::eq(l4_name(0x0800, 132), l4_name(0x0800, 132)));
    }

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
