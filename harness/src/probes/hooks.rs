//! Retina's hook points, the second probe family: failed returns of five kernel
//! functions, counted per watched namespace in the vocabulary of Microsoft Retina's
//! dropreason plugin (ebpf/hooks.bpf.c).
//!
//! | function                 | counted when            | name                 |
//! |--------------------------|-------------------------|----------------------|
//! | `nf_hook_slow`           | returns < 0             | `IPTABLE_RULE_DROP`  |
//! | `nf_nat_inet_fn`         | returns NF_DROP         | `IPTABLE_NAT_DROP`   |
//! | `__nf_conntrack_confirm` | returns NF_DROP         | `CONNTRACK_ADD_DROP` |
//! | `tcp_v4_connect`         | returns an error        | `TCP_CONNECT_BASIC`  |
//! | `inet_csk_accept`        | returns no socket       | `TCP_ACCEPT_BASIC`   |
//!
//! Each function is attached on its own, by fentry/fexit where the kernel allows it and
//! by kprobe/kretprobe otherwise, chosen when the family first loads. A function
//! neither can attach is reported as unavailable with both reasons, and expectations in
//! its vocabulary are skipped (visibly) rather than passed. On kernels without kprobes
//! and with tracing programs refused, the whole family is unavailable; loading never
//! fails a scenario.
//!
//! `DROPSPEC_HOOKS` picks the attachment: `fexit`, `kprobe`, `off`, or unset for
//! fexit first.

use super::abi::{
    HookKey, HookValue, HOOK_LOST_COUNTERS, HOOK_LOST_DEEP, HOOK_LOST_KEYS, HOOK_LOST_STALE,
    HOOK_LOST_UNPAIRED,
};
use super::names::l3_name;
use super::slots::{LostCounters, Slot, SlotOwner, SlotTable};
use super::{error_text, ProbeError};
use crate::kernel::btf::Btf;
use crate::kernel::loader_btf;
use crate::kernel::{self as kernel_info};
use crate::policy::HooksRequest;
use aya::maps::{MapData, PerCpuHashMap};
use aya::programs::{FEntry, FExit, KProbe};
use aya::Ebpf;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

pub use crate::vocab::HookPoint;

/// The compiled probe (harness/build.rs builds it from ebpf/hooks.bpf.c).
static HOOK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hooks.bpf.o"));
static HOOK_OBJECT_ALLOC_ON_INSERT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hooks.bpf.alloc_on_insert.o"));

/// Environment variable that picks how hook points attach: `fexit`, `kprobe` or `off`.
pub const HOOKS_ENV: &str = "DROPSPEC_HOOKS";

/// What only the probe needs to know of a hook point: its id in ebpf/hooks.h, the module
/// that defines its function, and its programs. The names both sides use are in
/// [`crate::vocab::HookPoint`].
trait HookPointExt: Sized {
    fn id(self) -> u32;
    fn from_id(id: u32) -> Option<Self>;
    fn module(self) -> Option<&'static str>;
    fn programs(self, attachment: Attachment) -> (String, String);
}

impl HookPointExt for HookPoint {
    fn id(self) -> u32 {
        self as u32 + 1
    }

    fn from_id(id: u32) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| p.id() == id)
    }

    /// The module that defines the function where netfilter is modular (Debian's kernels).
    fn module(self) -> Option<&'static str> {
        match self {
            HookPoint::NfNatInetFn => Some("nf_nat"),
            HookPoint::NfConntrackConfirm => Some("nf_conntrack"),
            _ => None,
        }
    }

    /// The entry and exit programs in ebpf/hooks.bpf.c.
    fn programs(self, attachment: Attachment) -> (String, String) {
        let stem = self.function().trim_start_matches('_');
        match attachment {
            Attachment::Fexit => (
                format!("dropspec_fentry_{stem}"),
                format!("dropspec_fexit_{stem}"),
            ),
            Attachment::Kprobe => (
                format!("dropspec_kprobe_{stem}"),
                format!("dropspec_kretprobe_{stem}"),
            ),
        }
    }
}

/// How a hook point's programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    Fexit,
    Kprobe,
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Attachment::Fexit => "fentry/fexit",
            Attachment::Kprobe => "kprobe/kretprobe",
        })
    }
}

/// Whether one hook point is being counted, and how or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStatus {
    pub point: HookPoint,
    pub attachment: Result<Attachment, String>,
    /// Why an earlier-preferred attachment was not used (fentry/fexit refused, so kprobes).
    pub fallback: Option<String>,
}

/// Failures of one hook point in a watched namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HookCount {
    pub point: HookPoint,
    /// The failure: nf_hook_slow's negative errno, the NF_DROP verdict (0), or the
    /// socket call's negative errno.
    pub ret: i32,
    /// `ipv4`, `ipv6`, … for the netfilter functions; empty for the socket calls.
    pub l3: &'static str,
    pub count: u64,
    /// Sum of skb->len when each failed call began; 0 for the socket calls.
    pub bytes: u64,
}

/// The hook-point family: which points are counted, and the loaded probe if any is.
pub struct HookFamily {
    statuses: Vec<HookStatus>,
    /// Modules loaded so that their functions could be attached, named in reports.
    modules_loaded: Vec<String>,
    loaded: Option<Loaded>,
}

struct Loaded {
    maps: Mutex<HookMaps>,
    _ebpf: Mutex<Ebpf>,
}

struct HookMaps {
    slots: SlotTable,
    hooks: PerCpuHashMap<MapData, HookKey, HookValue>,
    lost: LostCounters,
}

impl Loaded {
    fn lock_maps(&self) -> MutexGuard<'_, HookMaps> {
        // As the drop probe does: a panic elsewhere leaves the maps usable.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How often the kernel skipped one of the family's programs since it was loaded,
    /// because it was already running on that CPU (`misses.rs`): an entry skipped is a
    /// call not counted, an exit skipped a frame left stale.
    fn recursion_misses(&self) -> Result<u64, ProbeError> {
        let ebpf = self._ebpf.lock().unwrap_or_else(|p| p.into_inner());
        super::misses::total(ebpf.programs().map(|(_, p)| p)).map_err(|e| ProbeError::Map {
            map: "hooks.bpf.c programs",
            op: "reading the recursion misses (BPF_OBJ_GET_INFO_BY_FD)",
            detail: e.to_string(),
        })
    }
}

impl SlotOwner for Loaded {
    fn release(&self, id: u32) -> Result<(), ProbeError> {
        let mut maps = self.lock_maps();
        let maps = &mut *maps;
        maps.slots.remove(id)?;
        maps.slots
            .sweep(&mut maps.hooks, "dropspec_hook_counts", |key| key.slot)
    }
}

/// One namespace watched by the hook-point family; dropping it stops the counting.
#[derive(Debug)]
pub struct HookSlot {
    slot: Slot<Loaded>,
    lost_at_start: u64,
    misses_at_start: u64,
}

impl HookSlot {
    /// Stops counting and deletes the slot's counters, saying whether that worked
    /// (dropping the slot does the same and reports a failure on stderr).
    pub fn release(self) -> Result<(), ProbeError> {
        self.slot.release()
    }
}

impl fmt::Debug for HookFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookFamily")
            .field("statuses", &self.statuses)
            .field("modules_loaded", &self.modules_loaded)
            .finish_non_exhaustive()
    }
}

impl HookFamily {
    /// The family, loaded and attached on first use (once per process).
    pub fn shared() -> &'static HookFamily {
        static FAMILY: OnceLock<HookFamily> = OnceLock::new();
        FAMILY.get_or_init(HookFamily::load)
    }

    /// Every hook point, counted or not, in [`HookPoint::ALL`] order.
    pub fn statuses(&self) -> &[HookStatus] {
        &self.statuses
    }

    /// Why `point` is not counted on this kernel, or None if it is.
    pub fn unavailable(&self, point: HookPoint) -> Option<&str> {
        self.statuses
            .iter()
            .find(|s| s.point == point)
            .and_then(|s| s.attachment.as_ref().err())
            .map(String::as_str)
    }

    /// Kernel modules loaded to attach module functions.
    pub fn modules_loaded(&self) -> &[String] {
        &self.modules_loaded
    }

    /// Starts counting in a namespace; None when no hook point is attached. Like
    /// [`super::DropProbe::watch`], refuses a namespace it already watches.
    pub fn watch(&'static self, netns_inode: u64) -> Result<Option<HookSlot>, ProbeError> {
        let Some(loaded) = &self.loaded else {
            return Ok(None);
        };
        let misses_at_start = loaded.recursion_misses()?;
        let mut maps = loaded.lock_maps();
        let lost_at_start = maps.lost.total()?;
        let id = maps.slots.add(netns_inode)?;
        Ok(Some(HookSlot {
            slot: Slot::new(loaded, id, netns_inode),
            lost_at_start,
            misses_at_start,
        }))
    }

    /// Failures counted so far in this slot's namespace, summed over CPUs and sorted.
    pub fn read(&self, slot: &HookSlot) -> Result<Vec<HookCount>, ProbeError> {
        let Some(loaded) = &self.loaded else {
            return Ok(Vec::new());
        };
        if ftrace_disabled() {
            // Turned off after the family attached: what it counted since is not all.
            return Err(ProbeError::Map {
                map: "dropspec_hook_counts (hooks.bpf.c)",
                op: "reading the hook-point counters",
                detail: format!("turned off while they were counting: {FTRACE_OFF}"),
            });
        }
        let misses = loaded
            .recursion_misses()?
            .saturating_sub(slot.misses_at_start);
        if misses > 0 {
            return Err(ProbeError::CallsLost {
                map: "hooks.bpf.c programs",
                op: "reading the hook-point counters",
                detail: format!(
                    "the kernel skipped the hook-point programs {misses} time(s) while slot {} \
                     was watched (bpf recursion_misses: a call on a CPU where the same program \
                     was already running, interrupted or preempted), so calls may be missing \
                     from its counts and the run proves nothing",
                    slot.slot.id()
                ),
            });
        }
        let maps = loaded.lock_maps();
        let lost = maps.lost.total()?.saturating_sub(slot.lost_at_start);
        if lost > 0 {
            // Which kind, over the whole process (the slot kept only the sum at its start).
            let kind = |index| maps.lost.get(index).unwrap_or(0);
            return Err(ProbeError::CallsLost {
                map: "dropspec_lost (hooks.bpf.c)",
                op: "reading the hook-point counters",
                detail: format!(
                    "{lost} calls could not be counted while slot {} was watched, so the \
                     counts are incomplete (in this process so far: {} returns a kretprobe \
                     missed, {} calls nested too deep, {} calls whose exit program the \
                     kernel skipped as recursion, {} with the map full). A kernel \
                     gives a kretprobe made through perf a fixed number of instances \
                     (num_possible_cpus() on kernels without CONFIG_PREEMPTION, such as \
                     Debian's 5.10: one on a one-CPU machine), so nested or concurrent calls \
                     beyond it lose their returns (docs/kernel-findings.md, \"5.10: \
                     kretprobes\"); otherwise run fewer scenarios at once",
                    slot.slot.id(),
                    kind(HOOK_LOST_UNPAIRED),
                    kind(HOOK_LOST_DEEP),
                    kind(HOOK_LOST_STALE),
                    kind(HOOK_LOST_KEYS),
                ),
            });
        }
        let mut rows: BTreeMap<(HookPoint, i32, &'static str), (u64, u64)> = BTreeMap::new();
        for entry in maps.hooks.iter() {
            let (key, values) = entry.map_err(|e| ProbeError::Map {
                map: "dropspec_hook_counts",
                op: "reading",
                detail: error_text(&e),
            })?;
            if key.slot != slot.slot.id() {
                continue;
            }
            let Some(point) = HookPoint::from_id(key.hook) else {
                continue;
            };
            let l3 = if key.l3proto == 0 {
                ""
            } else {
                l3_name(key.l3proto)
            };
            let row = rows.entry((point, key.ret, l3)).or_default();
            for value in values.iter() {
                row.0 += value.count;
                row.1 += value.bytes;
            }
        }
        Ok(rows
            .into_iter()
            .map(|((point, ret, l3), (count, bytes))| HookCount {
                point,
                ret,
                l3,
                count,
                bytes,
            })
            .collect())
    }

    fn load() -> HookFamily {
        // A bad value never gets here: every front end refuses it before running.
        let requested = match crate::policy::Policy::current() {
            Ok(policy) => policy.hooks,
            Err(e) => return HookFamily::none_attached(e.to_string()),
        };
        let only = match requested {
            HooksRequest::Auto => None,
            HooksRequest::Fexit => Some(Attachment::Fexit),
            HooksRequest::Kprobe => Some(Attachment::Kprobe),
            HooksRequest::Off => {
                return HookFamily::none_attached(format!("turned off ({HOOKS_ENV}=off)"))
            }
        };
        match crate::spans::span("hook probe load", || HookFamily::try_load(only)) {
            Ok(family) => family,
            Err(why) => HookFamily::none_attached(why),
        }
    }

    fn none_attached(why: String) -> HookFamily {
        HookFamily {
            statuses: HookPoint::ALL
                .into_iter()
                .map(|point| HookStatus {
                    point,
                    attachment: Err(why.clone()),
                    fallback: None,
                })
                .collect(),
            modules_loaded: Vec::new(),
            loaded: None,
        }
    }

    fn try_load(only: Option<Attachment>) -> Result<HookFamily, String> {
        let btf: &Btf<'static> = kernel_info::vmlinux::btf().map_err(|e| e.to_string())?;
        // From 6.10 inet_csk_accept(sk, arg) carries its errno in arg->err.
        let functions = HookPoint::ALL.map(HookPoint::function);
        let params = btf
            .functions_params(&functions)
            .map_err(|e| e.to_string())?;
        let accept = functions.iter().position(|f| *f == "inet_csk_accept");
        let (err_in_arg, err_offset) = match accept.and_then(|i| params[i]) {
            Some(2) => {
                let offset = btf
                    .member_offset("proto_accept_arg", "err")
                    .ok()
                    .flatten()
                    .ok_or(
                        "inet_csk_accept takes 2 arguments but BTF has no proto_accept_arg.err",
                    )?;
                (1u32, offset)
            }
            _ => (0u32, 0u32),
        };
        // aya 0.14 loads tracing programs against vmlinux BTF only.
        let in_vmlinux: Vec<HookPoint> = HookPoint::ALL
            .into_iter()
            .zip(params)
            .filter_map(|(point, params)| params.map(|_| point))
            .collect();
        if in_vmlinux.len() == HookPoint::ALL.len() {
            // Loading the object creates its maps and costs a cut of the BTF, 90 ms
            // here; when neither way can attach, two cheap tests say so first.
            if let Some(why) = nothing_attaches(btf, only) {
                return Ok(HookFamily::none_attached(why));
            }
        }
        // Only what the hook programs need (see kernel::loader_btf); attach failures are
        // reported per hook point, so a cut lacking something would show as one.
        let wanted = loader_btf::Wanted {
            structs: loader_btf::PROBE_STRUCTS,
            tracepoints: &[],
            functions: &functions,
            // Attach failures are reported per point, with no retry: keep every type.
            truncate: false,
        };
        let aya_btf = loader_btf::for_aya(btf, &wanted).map_err(|e| e.to_string())?;

        let mut ebpf = super::loader::loader()
            .btf(Some(&aya_btf))
            .override_global("cfg_accept_err_in_arg", &err_in_arg, true)
            .override_global("cfg_accept_err_offset", &err_offset, true)
            .load(super::loader::object_for_kernel(
                HOOK_OBJECT,
                HOOK_OBJECT_ALLOC_ON_INSERT,
            ))
            .map_err(|e| format!("loading the hook-point object: {}", error_text(&e)))?;
        super::slots::attach_timer_marks(&mut ebpf)
            .map_err(|(what, e)| format!("{what} (hook-point object): {}", error_text(&e)))?;

        let mut modules_loaded = Vec::new();
        let mut statuses = Vec::new();
        let mut tracing_refused = false;
        for point in HookPoint::ALL {
            if let (false, Some(module)) = (in_vmlinux.contains(&point), point.module()) {
                if !Path::new("/sys/module").join(module).exists() {
                    // Debian builds NAT and conntrack as modules that load on first use;
                    // load them now, or their functions cannot be probed.
                    let loaded = crate::forks::output(Command::new("modprobe").arg(module))
                        .is_ok_and(|o| o.status.success());
                    if loaded {
                        modules_loaded.push(module.to_owned());
                    }
                }
            }
            let (attachment, fallback) = match attach_point(
                &mut ebpf,
                &aya_btf,
                point,
                in_vmlinux.contains(&point),
                only,
                &mut tracing_refused,
            ) {
                Ok((attachment, fallback)) => (Ok(attachment), fallback),
                Err(why) => (Err(why), None),
            };
            statuses.push(HookStatus {
                point,
                attachment,
                fallback,
            });
        }
        if ftrace_disabled() {
            // Attached, but they would count nothing: say so instead of reporting zeros.
            for status in &mut statuses {
                if let Ok(attachment) = status.attachment {
                    let passed_over = status.fallback.take().map(|why| format!("{why}; "));
                    status.attachment = Err(format!(
                        "{}{attachment} attached, but {FTRACE_OFF}",
                        passed_over.unwrap_or_default()
                    ));
                }
            }
        }
        if statuses.iter().all(|s| s.attachment.is_err()) {
            // Nothing attached: report per point, and keep nothing loaded.
            return Ok(HookFamily {
                statuses,
                modules_loaded,
                loaded: None,
            });
        }
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| format!("map {name} missing from ebpf/hooks.bpf.c"))
        };
        let (netns, hooks, lost) = (
            take("dropspec_netns")?,
            take("dropspec_hook_counts")?,
            take("dropspec_lost")?,
        );
        let maps = HookMaps {
            slots: SlotTable::new(netns, "dropspec_netns (hooks.bpf.c)")
                .map_err(|e| e.to_string())?,
            hooks: PerCpuHashMap::try_from(hooks).map_err(|e| error_text(&e))?,
            lost: LostCounters::new(lost, "dropspec_lost (hooks.bpf.c)", HOOK_LOST_COUNTERS)
                .map_err(|e| e.to_string())?,
        };
        Ok(HookFamily {
            statuses,
            modules_loaded,
            loaded: Some(Loaded {
                maps: Mutex::new(maps),
                _ebpf: Mutex::new(ebpf),
            }),
        })
    }
}

/// Why no hook point counts while `kernel.ftrace_enabled` is 0 (docs/hook-points.md).
const FTRACE_OFF: &str = "kernel.ftrace_enabled = 0: fentry/fexit and entry kprobes sit on \
     the function's ftrace call site, which the kernel then never calls (every count 0 on \
     Debian's 5.10 and 6.12); nothing else sees a return, so there is no fallback: set \
     kernel.ftrace_enabled = 1";

/// Whether `kernel.ftrace_enabled` is 0. A kernel without the file (no ftrace) has no
/// fentry/fexit or ftrace-based kprobes either, and says so when they attach.
fn ftrace_disabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/ftrace_enabled").is_ok_and(|v| v.trim() == "0")
}

/// Attaches one hook point's entry and exit, fexit first unless `only` says otherwise.
/// Both or neither: an entry without its exit would unbalance the frame stack.
fn attach_point(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    point: HookPoint,
    in_vmlinux: bool,
    only: Option<Attachment>,
    tracing_refused: &mut bool,
) -> Result<(Attachment, Option<String>), String> {
    let order: &[Attachment] = match only {
        Some(Attachment::Fexit) => &[Attachment::Fexit],
        Some(Attachment::Kprobe) => &[Attachment::Kprobe],
        None => &[Attachment::Fexit, Attachment::Kprobe],
    };
    let mut why = Vec::new();
    for &attachment in order {
        let result = match attachment {
            // A kernel that refuses one tracing program refuses them all: one attempt
            // (each costs a BTF lookup and a load) says it for every point.
            Attachment::Fexit if *tracing_refused => Err(TRACING_REFUSED.to_owned()),
            Attachment::Fexit => attach_fexit(ebpf, btf, point, in_vmlinux).inspect_err(|e| {
                *tracing_refused = e == TRACING_REFUSED;
            }),
            Attachment::Kprobe => attach_kprobe(ebpf, point),
        };
        match result {
            Ok(()) => return Ok((attachment, (!why.is_empty()).then(|| why.join("; ")))),
            Err(e) => why.push(format!("{attachment}: {e}")),
        }
    }
    Err(why.join("; "))
}

fn attach_fexit(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    point: HookPoint,
    in_vmlinux: bool,
) -> Result<(), String> {
    let function = point.function();
    if !in_vmlinux {
        return Err(format!(
            "{function} is in a module here, and dropspec's loader (aya 0.14) attaches \
             tracing programs to vmlinux functions only"
        ));
    }
    let (entry, exit) = point.programs(Attachment::Fexit);
    let attach_entry = |ebpf: &mut Ebpf| -> Result<(), String> {
        let prog: &mut FEntry = program(ebpf, &entry)?;
        prog.load(function, btf).map_err(|e| explain(&e))?;
        prog.attach().map_err(|e| explain(&e))?;
        Ok(())
    };
    attach_entry(ebpf)?;
    let attach_exit = |ebpf: &mut Ebpf| -> Result<(), String> {
        let prog: &mut FExit = program(ebpf, &exit)?;
        prog.load(function, btf).map_err(|e| explain(&e))?;
        prog.attach().map_err(|e| explain(&e))?;
        Ok(())
    };
    attach_exit(ebpf).inspect_err(|_| {
        if let Ok(prog) = program::<FEntry>(ebpf, &entry) {
            // Its link closed where no starting child holds a copy (forks.rs), or the
            // entry stays attached beside the kprobe pair tried next.
            let _ = crate::forks::close_now_with(|| prog.unload());
        }
    })
}

/// Why no hook point can attach, when two cheap tests say so, in the words the family's
/// own attempt gives every point (`attach_point`): kprobes absent ([`kprobes_configured`])
/// and fentry/fexit refused ([`tracing_refused`]). None when either way might attach:
/// then the family is loaded and tried point by point as before. Only for a kernel
/// whose BTF describes every point's function (the caller checks): a module function
/// is told apart, and its module loaded, by the full attempt.
fn nothing_attaches(btf: &Btf<'_>, only: Option<Attachment>) -> Option<String> {
    let order: &[Attachment] = match only {
        Some(Attachment::Fexit) => &[Attachment::Fexit],
        Some(Attachment::Kprobe) => &[Attachment::Kprobe],
        None => &[Attachment::Fexit, Attachment::Kprobe],
    };
    // The cheap one first.
    if order.contains(&Attachment::Kprobe) && kprobes_configured() {
        return None;
    }
    if order.contains(&Attachment::Fexit) && !tracing_refused(btf, HookPoint::ALL[0]) {
        return None;
    }
    let why: Vec<String> = order
        .iter()
        .map(|attachment| match attachment {
            Attachment::Fexit => format!("{attachment}: {TRACING_REFUSED}"),
            Attachment::Kprobe => format!("{attachment}: {NO_KPROBES}"),
        })
        .collect();
    Some(why.join("; "))
}

/// Whether the kernel refuses (EPERM) an fentry program on `point`'s function: the
/// smallest one (`return 0`), loaded and closed at once, nothing attached. The family's
/// own fentry programs on that function are refused the same way where tracing
/// programs are not allowed (TRACING_REFUSED); any other answer, success included,
/// leaves the decision to the full attempt.
fn tracing_refused(btf: &Btf<'_>, point: HookPoint) -> bool {
    let Ok(Some(function)) = btf.find(crate::kernel::btf::kind::FUNC, point.function()) else {
        return false;
    };
    // r0 = 0; exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0, 0, 0, 0]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = c"GPL";
    // union bpf_attr for BPF_PROG_LOAD, up to attach_btf_obj_fd (0: vmlinux).
    let mut attr = [0u8; 120];
    let mut put = |at: usize, bytes: &[u8]| attr[at..at + bytes.len()].copy_from_slice(bytes);
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    put(0, &BPF_PROG_TYPE_TRACING.to_ne_bytes());
    put(4, &(insns.len() as u32).to_ne_bytes());
    put(8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(16, &(license.as_ptr() as u64).to_ne_bytes());
    put(68, &BPF_TRACE_FENTRY.to_ne_bytes());
    put(108, &function.id.to_ne_bytes());
    const BPF_PROG_LOAD: libc::c_long = 5;
    // SAFETY: attr is a zeroed bpf_attr whose pointers (insns, license) outlive the call.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, attr.as_ptr(), attr.len()) };
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just gave this thread, closed once.
        unsafe { libc::close(fd as libc::c_int) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Why kprobes cannot attach on a kernel built without them.
const NO_KPROBES: &str =
    "this kernel has no kprobes (CONFIG_KPROBES off: no kprobe PMU, no kprobe_events)";

fn attach_kprobe(ebpf: &mut Ebpf, point: HookPoint) -> Result<(), String> {
    if !kprobes_configured() {
        return Err(NO_KPROBES.into());
    }
    let function = point.function();
    let (entry, exit) = point.programs(Attachment::Kprobe);
    for (index, name) in [&entry, &exit].into_iter().enumerate() {
        let attached = program::<KProbe>(ebpf, name).and_then(|prog| {
            prog.load().map_err(|e| explain(&e))?;
            prog.attach(function, 0).map_err(|e| explain(&e))?;
            Ok(())
        });
        if let Err(e) = attached {
            if index == 1 {
                if let Ok(prog) = program::<KProbe>(ebpf, &entry) {
                    // As in attach_fexit: no starting child may keep the entry attached.
                    let _ = crate::forks::close_now_with(|| prog.unload());
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P, String>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| {
        format!("program {name} is not in the probe object (not built for this architecture)")
    })?;
    prog.try_into().map_err(|e| explain(&e))
}

fn kprobes_configured() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || [
            "/sys/kernel/tracing/kprobe_events",
            "/sys/kernel/debug/tracing/kprobe_events",
        ]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// A refused tracing program. The kernel does not say why; lockdown, a security module
/// or a kernel built without BPF trampolines all end here.
const TRACING_REFUSED: &str = "the kernel refused to load it (EPERM)";

/// An attach error in one line.
fn explain(e: &(dyn std::error::Error + 'static)) -> String {
    let text = error_text(e);
    // The verifier log that follows a refused load is empty or beside the point here.
    let first = text.lines().next().unwrap_or_default();
    let first = first
        .split(". Verifier output:")
        .next()
        .unwrap_or(first)
        .to_owned();
    if super::errno_of(e) == Some(libc::EPERM) {
        TRACING_REFUSED.to_owned()
    } else {
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retina_names_round_trip_and_ids_match_hooks_h() {
        let header = include_str!("../../../ebpf/hooks.h");
        for point in HookPoint::ALL {
            assert_eq!(
                HookPoint::from_retina_name(point.retina_name()),
                Some(point)
            );
            assert_eq!(HookPoint::from_id(point.id()), Some(point));
            let define = format!(
                "#define DROPSPEC_HOOK_{} {}",
                point.function().trim_start_matches('_').to_uppercase(),
                point.id()
            );
            assert!(header.contains(&define), "hooks.h lacks `{define}`");
        }
        assert_eq!(HookPoint::from_retina_name("NETFILTER_DROP"), None);
    }

    #[test]
    fn every_point_has_both_program_pairs_in_the_object() {
        let source = include_str!("../../../ebpf/hooks.bpf.c");
        for point in HookPoint::ALL {
            for attachment in [Attachment::Fexit, Attachment::Kprobe] {
                let (entry, exit) = point.programs(attachment);
                for name in [entry, exit] {
                    // `int name(void *ctx)` or `BPF_PROG(name, ...)` / `BPF_KPROBE(name, ...)`.
                    assert!(
                        source.contains(&format!(" {name}("))
                            || source.contains(&format!("({name},")),
                        "hooks.bpf.c lacks {name}"
                    );
                }
            }
        }
    }
}
