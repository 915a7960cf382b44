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

use super::{error_text, l3_name, ProbeError};
use crate::kernel::btf::Btf;
use crate::kernel::{self as kernel_info};
use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::{FEntry, FExit, KProbe};
use aya::{Ebpf, EbpfLoader};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// The compiled probe (harness/build.rs builds it from ebpf/hooks.bpf.c).
static HOOK_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/hooks.bpf.o"));

/// Environment variable that picks how hook points attach: `fexit`, `kprobe` or `off`.
pub const HOOKS_ENV: &str = "DROPSPEC_HOOKS";

/// `DROPSPEC_HOOK_*` in ebpf/hooks.h, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    NfHookSlow,
    NfNatInetFn,
    NfConntrackConfirm,
    TcpV4Connect,
    InetCskAccept,
}

impl HookPoint {
    pub const ALL: [HookPoint; 5] = [
        HookPoint::NfHookSlow,
        HookPoint::NfNatInetFn,
        HookPoint::NfConntrackConfirm,
        HookPoint::TcpV4Connect,
        HookPoint::InetCskAccept,
    ];

    /// The kernel function watched.
    pub fn function(self) -> &'static str {
        match self {
            HookPoint::NfHookSlow => "nf_hook_slow",
            HookPoint::NfNatInetFn => "nf_nat_inet_fn",
            HookPoint::NfConntrackConfirm => "__nf_conntrack_confirm",
            HookPoint::TcpV4Connect => "tcp_v4_connect",
            HookPoint::InetCskAccept => "inet_csk_accept",
        }
    }

    /// What Retina calls a counted failure of this function.
    pub fn retina_name(self) -> &'static str {
        match self {
            HookPoint::NfHookSlow => "IPTABLE_RULE_DROP",
            HookPoint::NfNatInetFn => "IPTABLE_NAT_DROP",
            HookPoint::NfConntrackConfirm => "CONNTRACK_ADD_DROP",
            HookPoint::TcpV4Connect => "TCP_CONNECT_BASIC",
            HookPoint::InetCskAccept => "TCP_ACCEPT_BASIC",
        }
    }

    pub fn from_retina_name(name: &str) -> Option<HookPoint> {
        HookPoint::ALL.into_iter().find(|p| p.retina_name() == name)
    }

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

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.retina_name())
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

/// `struct dropspec_hook_key` (ebpf/hooks.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
struct HookKey {
    slot: u32,
    hook: u32,
    ret: i32,
    l3proto: u16,
    pad: u16,
}

/// `struct dropspec_hook_value` (ebpf/hooks.h), one per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HookValue {
    count: u64,
    bytes: u64,
}

const _: () = assert!(std::mem::size_of::<HookKey>() == 16);
const _: () = assert!(std::mem::size_of::<HookValue>() == 16);

// SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding, every bit pattern valid.
unsafe impl aya::Pod for HookKey {}
// SAFETY: as above.
unsafe impl aya::Pod for HookValue {}

/// DROPSPEC_HOOK_LOST_* in ebpf/hooks.h.
const LOST_KEYS: u32 = 0;
const LOST_UNPAIRED: u32 = 1;
const LOST_DEEP: u32 = 2;

/// The hook-point family: which points are counted, and the loaded probe if any is.
pub struct HookFamily {
    statuses: Vec<HookStatus>,
    /// Modules loaded so that their functions could be attached, named in reports.
    modules_loaded: Vec<String>,
    loaded: Option<Loaded>,
}

struct Loaded {
    maps: Mutex<HookMaps>,
    next_slot: AtomicU32,
    _ebpf: Mutex<Ebpf>,
}

struct HookMaps {
    netns: BpfHashMap<MapData, u32, u32>,
    hooks: PerCpuHashMap<MapData, HookKey, HookValue>,
    lost: PerCpuArray<MapData, u64>,
    active: BTreeMap<u32, u32>,
}

/// One namespace watched by the hook-point family; dropping it stops the counting.
pub struct HookSlot {
    family: &'static HookFamily,
    id: u32,
    lost_at_start: u64,
}

impl Drop for HookSlot {
    fn drop(&mut self) {
        if let Some(loaded) = &self.family.loaded {
            let mut maps = loaded.maps.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(inum) = maps.active.remove(&self.id) {
                let _ = maps.netns.remove(&inum);
            }
            let stale: Vec<HookKey> = maps
                .hooks
                .keys()
                .filter_map(Result::ok)
                .filter(|key| !maps.active.contains_key(&key.slot))
                .collect();
            for key in stale {
                let _ = maps.hooks.remove(&key);
            }
        }
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

    /// Starts counting in a namespace; None when no hook point is attached.
    pub fn watch(&'static self, netns_inode: u64) -> Result<Option<HookSlot>, ProbeError> {
        let Some(loaded) = &self.loaded else {
            return Ok(None);
        };
        let inum = u32::try_from(netns_inode)
            .map_err(|_| ProbeError::BadNetnsInode { inode: netns_inode })?;
        let mut maps = loaded.maps.lock().unwrap_or_else(|p| p.into_inner());
        let lost_at_start = maps.lost_total()?;
        let id = loaded.next_slot.fetch_add(1, Ordering::Relaxed);
        maps.netns
            .insert(inum, id, 0)
            .map_err(|e| map_error("adding a namespace", &e))?;
        maps.active.insert(id, inum);
        Ok(Some(HookSlot {
            family: self,
            id,
            lost_at_start,
        }))
    }

    /// Failures counted so far in this slot's namespace, summed over CPUs and sorted.
    pub fn read(&self, slot: &HookSlot) -> Result<Vec<HookCount>, ProbeError> {
        let Some(loaded) = &self.loaded else {
            return Ok(Vec::new());
        };
        let maps = loaded.maps.lock().unwrap_or_else(|p| p.into_inner());
        let lost = maps.lost_total()?.saturating_sub(slot.lost_at_start);
        if lost > 0 {
            return Err(ProbeError::Map {
                map: "dropspec_lost (hooks.bpf.c)",
                op: "reading the hook-point counters",
                detail: format!(
                    "{lost} calls could not be counted while slot {} was watched (map full, \
                     a kretprobe missed a return, or calls nested too deep), so the counts \
                     are incomplete: run fewer scenarios at once",
                    slot.id
                ),
            });
        }
        let mut rows: BTreeMap<(HookPoint, i32, &'static str), (u64, u64)> = BTreeMap::new();
        for entry in maps.hooks.iter() {
            let (key, values) = entry.map_err(|e| map_error("reading", &e))?;
            if key.slot != slot.id {
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
        let requested = std::env::var(HOOKS_ENV).unwrap_or_default();
        let requested = requested.trim();
        let only = match requested {
            "" => None,
            "fexit" => Some(Attachment::Fexit),
            "kprobe" => Some(Attachment::Kprobe),
            "off" => return HookFamily::none_attached(format!("turned off ({HOOKS_ENV}=off)")),
            other => {
                return HookFamily::none_attached(format!(
                    "{HOOKS_ENV}={other:?} is not `fexit`, `kprobe` or `off`"
                ))
            }
        };
        match HookFamily::try_load(only) {
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
        let btf_bytes = kernel_info::read_file(Path::new(kernel_info::VMLINUX_BTF))
            .map_err(|e| e.to_string())?;
        let btf = Btf::parse(&btf_bytes).map_err(|e| e.to_string())?;
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
        drop(btf);
        let aya_btf = aya::Btf::parse(&btf_bytes, aya::Endianness::default())
            .map_err(|e| format!("parsing the kernel's BTF: {e}"))?;

        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("cfg_accept_err_in_arg", &err_in_arg, true)
            .override_global("cfg_accept_err_offset", &err_offset, true)
            .load(HOOK_OBJECT)
            .map_err(|e| format!("loading the hook-point object: {}", error_text(&e)))?;

        let mut modules_loaded = Vec::new();
        let mut statuses = Vec::new();
        let mut tracing_refused = false;
        for point in HookPoint::ALL {
            if let (false, Some(module)) = (in_vmlinux.contains(&point), point.module()) {
                if !Path::new("/sys/module").join(module).exists() {
                    // Debian builds NAT and conntrack as modules that load on first use;
                    // load them now, or their functions cannot be probed.
                    let loaded = Command::new("modprobe")
                        .arg(module)
                        .output()
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
            netns: BpfHashMap::try_from(netns).map_err(|e| error_text(&e))?,
            hooks: PerCpuHashMap::try_from(hooks).map_err(|e| error_text(&e))?,
            lost: PerCpuArray::try_from(lost).map_err(|e| error_text(&e))?,
            active: BTreeMap::new(),
        };
        Ok(HookFamily {
            statuses,
            modules_loaded,
            loaded: Some(Loaded {
                maps: Mutex::new(maps),
                next_slot: AtomicU32::new(1),
                _ebpf: Mutex::new(ebpf),
            }),
        })
    }
}

impl HookMaps {
    fn lost_total(&self) -> Result<u64, ProbeError> {
        let mut total = 0;
        for index in [LOST_KEYS, LOST_UNPAIRED, LOST_DEEP] {
            let per_cpu = self
                .lost
                .get(&index, 0)
                .map_err(|e| map_error("reading", &e))?;
            total += per_cpu.iter().sum::<u64>();
        }
        Ok(total)
    }
}

fn map_error(op: &'static str, e: &MapError) -> ProbeError {
    ProbeError::Map {
        map: "dropspec_hook_counts",
        op,
        detail: error_text(e),
    }
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
            let _ = prog.unload();
        }
    })
}

fn attach_kprobe(ebpf: &mut Ebpf, point: HookPoint) -> Result<(), String> {
    if !kprobes_configured() {
        return Err(
            "this kernel has no kprobes (CONFIG_KPROBES off: no kprobe PMU, \
                    no kprobe_events)"
                .into(),
        );
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
                    let _ = prog.unload();
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
    fn rust_mirror_matches_hooks_h() {
        use std::mem::offset_of;
        let header = include_str!("../../../ebpf/hooks.h");
        let field = |name: &str, offset, size| (name.to_owned(), offset, size);
        assert_eq!(
            crate::probes::tests::c_layout(header, "dropspec_hook_key"),
            vec![
                field("slot", offset_of!(HookKey, slot), 4),
                field("hook", offset_of!(HookKey, hook), 4),
                field("ret", offset_of!(HookKey, ret), 4),
                field("l3proto", offset_of!(HookKey, l3proto), 2),
                field("pad", offset_of!(HookKey, pad), 2),
            ]
        );
        assert_eq!(
            crate::probes::tests::c_layout(header, "dropspec_hook_value"),
            vec![
                field("count", offset_of!(HookValue, count), 8),
                field("bytes", offset_of!(HookValue, bytes), 8),
            ]
        );
        for (name, value) in [
            ("DROPSPEC_HOOK_LOST_KEYS", LOST_KEYS),
            ("DROPSPEC_HOOK_LOST_UNPAIRED", LOST_UNPAIRED),
            ("DROPSPEC_HOOK_LOST_DEEP", LOST_DEEP),
        ] {
            assert_eq!(
                crate::probes::tests::c_number(header, name),
                value as usize,
                "{name}"
            );
        }
    }

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
