//! The drop probe (`ebpf/drops.bpf.c`): loaded and attached once per process, shared by
//! every scenario.
//!
//! It counts every `kfree_skb` drop whose network namespace is being watched, in a
//! per-CPU hash keyed by (slot, reason, call site, L3, L4), `dropspec_drops`; the first
//! drops of each per CPU are counted with their kernel stack (the first frames from the
//! call site on) in a second one, `dropspec_stacks`, instead. The auxiliary tracepoints
//! of `events.rs` are counted the same way.
//! Which namespace a drop belongs to and the watch slots are `slots.rs`'s, shared with
//! the hook-point probe. Reason and function names are resolved here, in user space,
//! from what the running kernel says (BTF, kallsyms), never from numbers compiled in.

use super::abi::{
    DropKey, DropValue, EventKey, LastDrop, StackKey, StackValue, ABSENT, LOST_COUNTERS,
    LOST_DROPS, LOST_EVENTS, LOST_STACKS, NO_REASON, STACK_FROM_CALLER, STACK_NONE, STACK_SKIPPED,
    STACK_UNTRIMMED,
};
use super::events::{self, ClassicPlan, EventCount, EventSpec};
use super::names::{l3_name, l4_name, KallsymsCache};
use super::slots::{LostCounters, Slot, SlotOwner, SlotTable};
use super::{
    check_privileges, errno_of, error_text, map_error_text, Kallsyms, ProbeError, ReasonTable,
};
use crate::kernel::btf::Btf;
use crate::kernel::kallsyms_boot;
use crate::kernel::loader_btf;
use crate::kernel::stacks;
use crate::kernel::tracefs::{self, TracepointFormat};
use crate::kernel::{self as kernel_info, KernelError};
use crate::policy::{Policy, ProbeRequest};
use aya::maps::{MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, ProgramError, TracePoint};
use aya::{Ebpf, EbpfError};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Once, OnceLock};
use std::time::{Duration, Instant};

/// The compiled probe (harness/build.rs builds it from ebpf/drops.bpf.c).
static PROBE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drops.bpf.o"));
static PROBE_OBJECT_ALLOC_ON_INSERT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drops.bpf.alloc_on_insert.o"));

/// Environment variable that forces one probe mode: `tp_btf` or `tracepoint`.
pub const PROBE_ENV: &str = "DROPSPEC_PROBE";

/// Environment variable that turns kernel stacks off (`off`) or on (`on`, the default):
/// off, every [`DropCount::stack`] is empty. For measuring what stacks cost.
pub const STACKS_ENV: &str = "DROPSPEC_STACKS";

const TRACEPOINT_CATEGORY: &str = "skb";

/// Reads of the counters in a row that may each see a CPU move its last drop's counts
/// (`dropspec_last`) before [`DropProbe::read`] gives up: each move is one change of
/// drop kind on a CPU, so even a mixed flood settles within a few.
const LAST_READ_ATTEMPTS: u32 = 1000;
const TRACEPOINT: &str = "kfree_skb";

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

/// The run's policy (every `DROPSPEC_*` variable, parsed in `crate::policy`).
fn policy() -> Result<&'static Policy, ProbeError> {
    Policy::current().map_err(|e| ProbeError::BadPolicy {
        message: e.to_string(),
    })
}

impl ProbeMode {
    /// The mode forced by `DROPSPEC_PROBE` (read by the run's policy), if any.
    pub fn from_env() -> Result<Option<ProbeMode>, ProbeError> {
        Ok(match policy()?.probe {
            ProbeRequest::Auto => None,
            ProbeRequest::BtfTracepoint => Some(ProbeMode::BtfTracepoint),
            ProbeRequest::ClassicTracepoint => Some(ProbeMode::ClassicTracepoint),
        })
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
    /// Counter keys in dropspec_drops and dropspec_stacks (all slots), out of 16384 each.
    pub keys: usize,
    /// Drops of watched namespaces not counted since load because the map was full.
    pub lost: u64,
    /// Keys in dropspec_events (all slots), out of 4096.
    pub event_keys: usize,
    /// Events of watched namespaces not counted since load because the map was full.
    pub events_lost: u64,
    /// Drops counted since load without a stack because the kernel could not unwind.
    pub stacks_missing: u64,
    /// Times since load the kernel skipped one of the probe's programs because it was
    /// already running on that CPU (`misses.rs`); each may be a drop not counted.
    pub recursion_misses: u64,
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
    kallsyms: KallsymsCache,
    /// Owns the programs and their links: dropping it would detach the probe.
    _ebpf: Mutex<Ebpf>,
}

struct Maps {
    slots: SlotTable,
    drops: PerCpuHashMap<MapData, DropKey, DropValue>,
    stacks: PerCpuHashMap<MapData, StackKey, StackValue>,
    last: PerCpuArray<MapData, LastDrop>,
    events: PerCpuHashMap<MapData, EventKey, u64>,
    lost: LostCounters,
}

/// Counting drops in one namespace; stops (and frees the slot's counters) on drop.
#[derive(Debug)]
pub struct WatchSlot {
    slot: Slot<DropProbe>,
    lost_at_start: u64,
    events_lost_at_start: u64,
    /// The probe's recursion misses when the slot started (see `misses.rs`).
    misses_at_start: u64,
}

impl WatchSlot {
    /// Slot id, unique within this process.
    pub fn id(&self) -> u32 {
        self.slot.id()
    }

    pub fn netns_inode(&self) -> u64 {
        self.slot.netns_inode()
    }

    /// Same as [`DropProbe::read`] on this slot.
    pub fn read(&self) -> Result<Vec<DropCount>, ProbeError> {
        self.slot.owner().read(self)
    }

    /// Same as [`DropProbe::read_events`] on this slot.
    pub fn read_events(&self) -> Result<Vec<EventCount>, ProbeError> {
        self.slot.owner().read_events(self)
    }

    /// Stops counting and deletes the slot's counters, saying whether that worked
    /// (dropping the slot does the same and reports a failure on stderr).
    pub fn release(self) -> Result<(), ProbeError> {
        self.slot.release()
    }
}

impl SlotOwner for DropProbe {
    fn release(&self, id: u32) -> Result<(), ProbeError> {
        let mut maps = self.lock_maps();
        let maps = &mut *maps;
        maps.slots.remove(id)?;
        maps.slots
            .sweep(&mut maps.drops, "dropspec_drops", |key| key.slot)?;
        maps.slots
            .sweep(&mut maps.stacks, "dropspec_stacks", |key| key.slot)?;
        maps.slots
            .sweep(&mut maps.events, "dropspec_events", |key| key.slot)
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
            .get_or_init(|| {
                crate::spans::span(
                    "drop probe load",
                    || DropProbe::load(ProbeMode::from_env()?),
                )
            })
            .as_ref()
            .map_err(Clone::clone)?;
        // Reading kallsyms takes 50-150 ms; do it while the first scenario sets up, so
        // its first read() does not wait (a failure is kept and reported by read()).
        // With this boot's vmlinux symbols kept (kernel::kallsyms_boot) and no modules
        // loaded, no drop can need more: those are read instead.
        WARM_KALLSYMS.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("dropspec-kallsyms".into())
                .spawn(move || {
                    if kallsyms_boot::load().is_none() || !no_modules_loaded() {
                        let _ = probe.kallsyms();
                    }
                });
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
        self.kallsyms.get()
    }

    /// Starts counting drops in this namespace (netns inode = fstat(nsfd).st_ino). Each
    /// call gets a fresh slot id, so namespace inode reuse never mixes counts. Dropping
    /// the [`WatchSlot`] stops counting and deletes the slot's counters.
    pub fn watch(&'static self, netns_inode: u64) -> Result<WatchSlot, ProbeError> {
        let mut maps = self.lock_maps();
        let lost_at_start = maps.lost.get(LOST_DROPS)?;
        let events_lost_at_start = maps.lost.get(LOST_EVENTS)?;
        let misses_at_start = self.recursion_misses()?;
        let id = maps.slots.add(netns_inode)?;
        Ok(WatchSlot {
            slot: Slot::new(self, id, netns_inode),
            lost_at_start,
            events_lost_at_start,
            misses_at_start,
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
    fn raw_rows(&self, slot: &WatchSlot) -> Result<Vec<(StackKey, u64, u64)>, ProbeError> {
        let mut rows = Vec::new();
        {
            let maps = self.lock_maps();
            let read_error = |map| {
                move |e: MapError| ProbeError::Map {
                    map,
                    op: "reading counters",
                    detail: map_error_text(&e),
                }
            };
            let read_last = || -> Result<Vec<LastDrop>, ProbeError> {
                Ok(maps
                    .last
                    .get(&0, 0)
                    .map_err(read_error("dropspec_last"))?
                    .iter()
                    .copied()
                    .collect())
            };
            // Each CPU's last drop (dropspec_last) holds counts not yet in its row, and
            // moves them there when another drop comes: read it before and after the
            // rows, and use it only if no CPU moved any in between (its `seq`).
            let mut attempts = 0;
            loop {
                attempts += 1;
                rows.clear();
                let before = read_last()?;
                // The drops counted without a stack. A row whose drops were all
                // counted with their stack (the first few per CPU) has none here.
                for entry in maps.drops.iter() {
                    let (key, per_cpu) = entry.map_err(read_error("dropspec_drops"))?;
                    if key.slot != slot.id() {
                        continue;
                    }
                    let (packets, bytes) = per_cpu
                        .iter()
                        .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
                    if packets > 0 {
                        rows.push((StackKey::from(key), packets, bytes));
                    }
                }
                for entry in maps.stacks.iter() {
                    let (key, per_cpu) = entry.map_err(read_error("dropspec_stacks"))?;
                    if key.slot != slot.id() {
                        continue;
                    }
                    let (packets, bytes) = per_cpu
                        .iter()
                        .fold((0, 0), |(p, b), v| (p + v.packets, b + v.bytes));
                    rows.push((key, packets, bytes));
                }
                let after = read_last()?;
                let settled = before.len() == after.len()
                    && before
                        .iter()
                        .zip(&after)
                        .all(|(b, a)| b.seq == a.seq && a.seq % 2 == 0);
                if settled {
                    rows.extend(
                        after
                            .iter()
                            .filter(|last| last.slot == slot.id() && last.packets > 0)
                            .map(|last| (last.key(), last.packets, last.bytes)),
                    );
                    break;
                }
                if attempts == LAST_READ_ATTEMPTS {
                    return Err(ProbeError::Map {
                        map: "dropspec_last",
                        op: "reading counters",
                        detail: format!(
                            "a CPU's last drop changed during each of {attempts} reads in a \
                             row: drops of many kinds are arriving faster than they can be read"
                        ),
                    });
                }
            }
            let lost = maps.lost.get(LOST_DROPS)?;
            if lost > slot.lost_at_start {
                return Err(ProbeError::Lost {
                    slot: slot.id(),
                    lost: lost - slot.lost_at_start,
                });
            }
        }
        let misses = self.recursion_misses()?;
        if misses > slot.misses_at_start {
            return Err(ProbeError::Missed {
                slot: slot.id(),
                missed: misses - slot.misses_at_start,
            });
        }
        Ok(rows)
    }

    /// How often the kernel skipped one of the probe's programs since it was loaded,
    /// because it was already running on that CPU (`misses.rs`).
    pub fn recursion_misses(&self) -> Result<u64, ProbeError> {
        let ebpf = self._ebpf.lock().unwrap_or_else(|p| p.into_inner());
        super::misses::total(ebpf.programs().map(|(_, p)| p)).map_err(|e| ProbeError::Bpf {
            mode: self.mode,
            what: "reading the probe's recursion misses (BPF_OBJ_GET_INFO_BY_FD)".into(),
            detail: e.to_string(),
            errno: e.raw_os_error(),
        })
    }

    /// Drops counted so far for this slot, names resolved, summed over CPUs, merged per
    /// (reason, function, l3, l4, stack) and sorted by those (hook before stack).
    pub fn read(&self, slot: &WatchSlot) -> Result<Vec<DropCount>, ProbeError> {
        let rows = self.raw_rows(slot)?;
        // This boot's vmlinux symbols name every address in vmlinux's text exactly as a
        // live read would; any other address (a module, a BPF program) needs the live one.
        let boot = kallsyms_boot::load().filter(|text| {
            rows.iter().all(|(key, ..)| {
                text.covers(key.location)
                    && key
                        .stack
                        .iter()
                        .take_while(|&&a| a != 0)
                        .all(|&a| text.covers(a.saturating_sub(1)))
            })
        });
        let kallsyms = match boot {
            Some(text) => Some(text.kallsyms.clone()),
            // Read again only if an address may lie in a module loaded since the last
            // read (each read ~0.5 s in a TCG guest): every address a name is looked up
            // for below, a stack's return addresses one byte before.
            None => {
                let addresses = rows.iter().flat_map(|(key, ..)| {
                    std::iter::once(key.location).chain(
                        key.stack
                            .iter()
                            .take_while(|&&a| a != 0)
                            .map(|&a| a.saturating_sub(1)),
                    )
                });
                self.kallsyms.get_for(addresses).ok()
            }
        };
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
            // The probe's mark for "this kernel passes no reason" (before 5.17).
            let reason = if key.reason == NO_REASON {
                super::NO_REASON.to_owned()
            } else {
                self.reasons.describe(key.reason).into_owned()
            };
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
            if key.slot != slot.id() {
                continue;
            }
            let name = events::event_name(key.event, key.arg0, key.arg1, &self.reset_reasons);
            *counts.entry(name).or_default() += per_cpu.iter().sum::<u64>();
        }
        let lost = maps.lost.get(LOST_EVENTS)?;
        if lost > slot.events_lost_at_start {
            return Err(ProbeError::EventsLost {
                slot: slot.id(),
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
            watched: maps.slots.len(),
            keys: maps.drops.keys().filter(Result::is_ok).count()
                + maps.stacks.keys().filter(Result::is_ok).count(),
            lost: maps.lost.get(LOST_DROPS)?,
            event_keys: maps.events.keys().filter(Result::is_ok).count(),
            events_lost: maps.lost.get(LOST_EVENTS)?,
            stacks_missing: maps.lost.get(LOST_STACKS)?,
            recursion_misses: self.recursion_misses()?,
        })
    }

    fn lock_maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps as consistent as the kernel
        // keeps them; carry on rather than poison every later scenario.
        self.maps
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks prerequisites, then loads and attaches in `requested` mode or, if None,
    /// tp_btf with the classic tracepoint as fallback.
    fn load(requested: Option<ProbeMode>) -> Result<DropProbe, ProbeError> {
        let started = Instant::now();
        check_privileges()?;
        // The probe's struct reads are CO-RE relocations: without kernel BTF they would
        // read at our header's made-up offsets, so BTF is required in both modes.
        let btf: &Btf<'static> = kernel_info::vmlinux::btf()?;
        // Before 5.17 there are none: the probe still counts drops (DROPSPEC_NO_REASON).
        let reasons = ReasonTable::from_parsed_btf_or_none(btf)?;
        let take_stacks = policy()?.stacks;
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
        let reset_reasons = events::reset_reasons(btf);
        // aya gets only what our programs need from the kernel's BTF (see
        // kernel::loader_btf): parsing all of it cost 60 ms and 13 MiB.
        let tracepoints: Vec<&str> = std::iter::once(TRACEPOINT)
            .chain(events::EVENTS.iter().map(|spec| spec.name))
            .collect();
        let wanted = loader_btf::Wanted {
            structs: loader_btf::PROBE_STRUCTS,
            tracepoints: &tracepoints,
            functions: &[],
            truncate: true,
        };
        let aya_btf = loader_btf::for_aya(btf, &wanted)?;

        let attached = Self::attach_any(requested, &kernel, &aya_btf);
        drop(aya_btf);
        // Should the cut ever lack something a relocation needs, load with all of it.
        let attached = match attached {
            Ok(attached) => attached,
            Err(cut_error) => {
                let full =
                    aya::Btf::parse(kernel_info::vmlinux::bytes()?, aya::Endianness::default())
                        .map_err(|e| KernelError::Btf {
                            what: "aya's parse".into(),
                            detail: e.to_string(),
                        })?;
                Self::attach_any(requested, &kernel, &full).map_err(|_| cut_error)?
            }
        };
        let (mode, (ebpf, events), fallback) = attached;
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
            kallsyms: KallsymsCache::default(),
            _ebpf: Mutex::new(ebpf),
        })
    }

    /// Attaches in `requested` mode or, if None, tp_btf with the classic tracepoint as
    /// fallback: the mode, what was attached, and why tp_btf was passed over.
    fn attach_any(
        requested: Option<ProbeMode>,
        kernel: &KernelFacts,
        aya_btf: &aya::Btf,
    ) -> Result<(ProbeMode, Attached, Option<ProbeError>), ProbeError> {
        Ok(match requested {
            Some(mode) => (mode, attach(mode, kernel, aya_btf)?, None),
            None => match attach(ProbeMode::BtfTracepoint, kernel, aya_btf) {
                Ok(attached) => (ProbeMode::BtfTracepoint, attached, None),
                Err(btf_error) => match attach(ProbeMode::ClassicTracepoint, kernel, aya_btf) {
                    Ok(attached) => (ProbeMode::ClassicTracepoint, attached, Some(btf_error)),
                    Err(classic) => {
                        return Err(ProbeError::NoMode {
                            btf: Box::new(btf_error),
                            classic: Box::new(classic),
                        })
                    }
                },
            },
        })
    }
}

/// No module is loaded (or the kernel has none): every kernel function is vmlinux's.
fn no_modules_loaded() -> bool {
    std::fs::read_to_string("/proc/modules").map_or(true, |text| text.trim().is_empty())
}

impl Maps {
    fn take(ebpf: &mut Ebpf, mode: ProbeMode) -> Result<Maps, ProbeError> {
        let mut take = |name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| ProbeError::Bpf {
                mode,
                what: format!("finding map {name} in the probe object"),
                detail: "not there: ebpf/drops.bpf.c and probes/drops.rs disagree".into(),
                errno: None,
            })
        };
        let (netns, drops, stacks, last, events, lost) = (
            take("dropspec_netns")?,
            take("dropspec_drops")?,
            take("dropspec_stacks")?,
            take("dropspec_last")?,
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
            slots: SlotTable::new(netns, "dropspec_netns (drops.bpf.c)")?,
            drops: PerCpuHashMap::try_from(drops).map_err(wrong_type("dropspec_drops"))?,
            stacks: PerCpuHashMap::try_from(stacks).map_err(wrong_type("dropspec_stacks"))?,
            last: PerCpuArray::try_from(last).map_err(wrong_type("dropspec_last"))?,
            events: PerCpuHashMap::try_from(events).map_err(wrong_type("dropspec_events"))?,
            lost: LostCounters::new(lost, "dropspec_lost (drops.bpf.c)", LOST_COUNTERS)?,
        })
    }
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
            // No `reason` before 5.17: the probe then counts DROPSPEC_NO_REASON.
            reason: field("reason", 4, false)?,
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
                // Before 5.17: (skb, location), no reason.
                Some(2) => "dropspec_tpbtf2",
                Some(n) => {
                    return Err(unsupported(format!(
                        "kfree_skb passes {n} arguments; the probe knows 2 (before 5.17, no \
                         reason), 3 (5.17 to 6.11) and 4 (with rx_sk, 6.12 on): use \
                         DROPSPEC_PROBE=tracepoint"
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
    let mut loader = super::loader::loader();
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
    let mut ebpf = loader
        .load(super::loader::object_for_kernel(
            PROBE_OBJECT,
            PROBE_OBJECT_ALLOC_ON_INSERT,
        ))
        .map_err(|e: EbpfError| {
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
    super::slots::attach_timer_marks(&mut ebpf).map_err(|(what, e)| bpf_error(what, &e))?;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reasons::tests::{fixture_btf, fixture_format, fixture_kernels};

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
        // A kernel before 5.17: no reason field, and the probe counts without one.
        assert_eq!(
            RecordOffsets::from_format(&no_reason).unwrap().reason,
            ABSENT
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
}
