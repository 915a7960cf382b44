//! Watch slots: which network namespaces a probe counts, and under which id. The user
//! side of `ebpf/slots.bpf.h`, which every probe object includes.
//!
//! Each probe object has its own `dropspec_netns` map (netns inode → slot id) and keys
//! its counters by slot id. A [`SlotTable`] hands the ids out and keeps that map; a
//! [`Slot`] is the guard a scenario holds, and releasing it (explicitly, or by dropping
//! it) stops the counting and deletes the slot's counters. Ids are never reused within
//! a process, so a namespace inode the kernel hands out again never mixes counts, and a
//! namespace is watched at most once per probe: two slots on one namespace would have
//! the second silently steal the first's counts.
//!
//! [`LostCounters`] reads the probe's `dropspec_lost`, the counts of what its maps had
//! no room for. [`attach_timer_marks`] attaches the programs that tell the object's
//! namespace lookup when a timer callback runs (so a drop freed there is never given
//! the namespace of the task the timer interrupted).

use super::{map_error_text, ProbeError};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::{ProgramError, RawTracePoint};
use aya::{Ebpf, Pod};
use std::collections::BTreeMap;
use std::fmt;

/// DROPSPEC_MAX_NETNS in ebpf/slots.bpf.h: namespaces one probe watches at once.
pub(super) const MAX_NETNS: u32 = 1024;

/// A probe's `dropspec_netns` map and the slots it holds.
pub(super) struct SlotTable {
    map: BpfHashMap<MapData, u32, u32>,
    /// The map and its object, for error messages: both probes have a `dropspec_netns`.
    name: &'static str,
    /// Live slots: slot id → netns inode.
    active: BTreeMap<u32, u32>,
    next_id: u32,
}

impl SlotTable {
    /// Takes over a probe object's `dropspec_netns`; `name` says whose, for messages.
    pub(super) fn new(map: Map, name: &'static str) -> Result<SlotTable, ProbeError> {
        Ok(SlotTable {
            map: BpfHashMap::try_from(map).map_err(map_error(name, "opening"))?,
            name,
            active: BTreeMap::new(),
            next_id: 1,
        })
    }

    /// Starts counting a namespace (inode = fstat(nsfd).st_ino) under a fresh slot id.
    /// Refuses a namespace this table already watches.
    pub(super) fn add(&mut self, netns_inode: u64) -> Result<u32, ProbeError> {
        let inum = u32::try_from(netns_inode)
            .map_err(|_| ProbeError::BadNetnsInode { inode: netns_inode })?;
        if let Some((&slot, _)) = self.active.iter().find(|(_, &n)| n == inum) {
            return Err(ProbeError::AlreadyWatched {
                inode: netns_inode,
                slot,
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.map.insert(inum, id, 0).map_err(|e| {
            let detail = if self.active.len() >= MAX_NETNS as usize {
                format!("{MAX_NETNS} namespaces are watched already: drop watch slots when done")
            } else {
                map_error_text(&e)
            };
            ProbeError::Map {
                map: self.name,
                op: "adding a namespace",
                detail,
            }
        })?;
        self.active.insert(id, inum);
        Ok(id)
    }

    /// Stops counting slot `id`'s namespace. Its counters stay until [`SlotTable::sweep`].
    pub(super) fn remove(&mut self, id: u32) -> Result<(), ProbeError> {
        let Some(inum) = self.active.remove(&id) else {
            return Ok(());
        };
        match self.map.remove(&inum) {
            Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
            Err(e) => Err(map_error(self.name, "removing a namespace")(e)),
        }
    }

    /// Namespaces being watched now.
    pub(super) fn len(&self) -> usize {
        self.active.len()
    }

    /// Deletes the counters of every released slot from `counters`: the slot just
    /// released, and any a probe still running on another CPU added for an earlier one.
    pub(super) fn sweep<K: Pod, V: Pod>(
        &self,
        counters: &mut PerCpuHashMap<MapData, K, V>,
        name: &'static str,
        slot_of: impl Fn(&K) -> u32,
    ) -> Result<(), ProbeError> {
        let stale: Vec<K> = counters
            .keys()
            .filter_map(Result::ok)
            .filter(|key| !self.active.contains_key(&slot_of(key)))
            .collect();
        for key in stale {
            match counters.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => {}
                Err(e) => return Err(map_error(name, "deleting a released slot's counters")(e)),
            }
        }
        Ok(())
    }
}

/// A probe's `dropspec_lost`: per-CPU counts of what it could not count, by index.
pub(super) struct LostCounters {
    array: PerCpuArray<MapData, u64>,
    name: &'static str,
    len: u32,
}

impl LostCounters {
    /// Takes over a probe object's `dropspec_lost`, which has `len` counters.
    pub(super) fn new(map: Map, name: &'static str, len: u32) -> Result<LostCounters, ProbeError> {
        Ok(LostCounters {
            array: PerCpuArray::try_from(map).map_err(map_error(name, "opening"))?,
            name,
            len,
        })
    }

    /// One counter, summed over CPUs.
    pub(super) fn get(&self, index: u32) -> Result<u64, ProbeError> {
        debug_assert!(index < self.len);
        let per_cpu = self
            .array
            .get(&index, 0)
            .map_err(map_error(self.name, "reading"))?;
        Ok(per_cpu.iter().sum())
    }

    /// Every counter, summed over CPUs.
    pub(super) fn total(&self) -> Result<u64, ProbeError> {
        (0..self.len).map(|index| self.get(index)).sum()
    }
}

/// The programs of ebpf/slots.bpf.h that keep `dropspec_in_timer`, and the raw
/// tracepoints they attach to (every kernel from 5.10 has both). The exit first: a timer
/// that starts between the two attachments must not leave the flag set until the next.
const TIMER_MARKS: [(&str, &str); 2] = [
    ("dropspec_timer_exit", "timer_expire_exit"),
    ("dropspec_timer_entry", "timer_expire_entry"),
];

/// Loads and attaches the timer marks of an object that includes ebpf/slots.bpf.h. They
/// stay attached while the object lives. Without them a drop freed in a timer callback
/// with neither device nor socket (a purged fragment queue) would be given the
/// namespace of whichever task the timer interrupted. On failure: what failed, and why.
pub(crate) fn attach_timer_marks(ebpf: &mut Ebpf) -> Result<(), (String, ProgramError)> {
    for (program, tracepoint) in TIMER_MARKS {
        let loading = || format!("loading {program}");
        let prog: &mut RawTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| (loading(), ProgramError::NotLoaded))?
            .try_into()
            .map_err(|e| (loading(), e))?;
        prog.load().map_err(|e| (loading(), e))?;
        prog.attach(tracepoint).map_err(|e| {
            (
                format!("attaching {program} to raw tracepoint {tracepoint}"),
                e,
            )
        })?;
    }
    Ok(())
}

fn map_error(map: &'static str, op: &'static str) -> impl Fn(MapError) -> ProbeError {
    move |e| ProbeError::Map {
        map,
        op,
        detail: map_error_text(&e),
    }
}

/// A probe that counts per slot, and so has a slot's counters to delete on release.
pub(super) trait SlotOwner: 'static {
    /// Stops counting slot `id` and deletes its counters.
    fn release(&self, id: u32) -> Result<(), ProbeError>;
}

/// One namespace watched by one probe. Dropping it releases the slot and reports a
/// failure on stderr (a destructor has no caller to return it to); [`Slot::release`]
/// returns it instead.
pub(super) struct Slot<O: SlotOwner> {
    owner: &'static O,
    id: u32,
    netns_inode: u64,
    released: bool,
}

impl<O: SlotOwner> Slot<O> {
    /// The guard of slot `id`, which `owner`'s table just added.
    pub(super) fn new(owner: &'static O, id: u32, netns_inode: u64) -> Slot<O> {
        Slot {
            owner,
            id,
            netns_inode,
            released: false,
        }
    }

    pub(super) fn owner(&self) -> &'static O {
        self.owner
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }

    pub(super) fn netns_inode(&self) -> u64 {
        self.netns_inode
    }

    /// Stops counting now and says whether the slot's counters could be deleted.
    pub(super) fn release(mut self) -> Result<(), ProbeError> {
        self.released = true;
        self.owner.release(self.id)
    }
}

impl<O: SlotOwner> fmt::Debug for Slot<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("id", &self.id)
            .field("netns_inode", &self.netns_inode)
            .finish()
    }
}

impl<O: SlotOwner> Drop for Slot<O> {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if let Err(e) = self.owner.release(self.id) {
            // The leftover counters are swept by the next slot that is released.
            eprintln!("dropspec: while releasing watch slot {}: {e}", self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::abi::tests::c_number;

    const SLOTS_BPF_H: &str = include_str!("../../../ebpf/slots.bpf.h");
    /// Every file a probe object is built from, except slots.bpf.h.
    const PROBES: [(&str, &str); 3] = [
        ("drops.bpf.c", include_str!("../../../ebpf/drops.bpf.c")),
        ("events.bpf.h", include_str!("../../../ebpf/events.bpf.h")),
        ("hooks.bpf.c", include_str!("../../../ebpf/hooks.bpf.c")),
    ];

    /// C source without its comments, so that prose about the code is not mistaken for it.
    fn code(source: &str) -> String {
        let mut code = String::new();
        let mut rest = source;
        while let Some(start) = rest.find(['/']) {
            code.push_str(&rest[..start]);
            let tail = &rest[start..];
            if let Some(comment) = tail.strip_prefix("/*") {
                rest = comment.split_once("*/").map_or("", |(_, after)| after);
            } else if tail.starts_with("//") {
                rest = tail.split_once('\n').map_or("", |(_, after)| after);
            } else {
                code.push('/');
                rest = &tail[1..];
            }
        }
        code.push_str(rest);
        code
    }

    #[test]
    fn max_netns_matches_slots_bpf_h() {
        assert_eq!(
            c_number(SLOTS_BPF_H, "DROPSPEC_MAX_NETNS"),
            MAX_NETNS as usize
        );
    }

    /// The hook probe attributes a packet to a namespace exactly as the drop probe does,
    /// UDP's dev_scratch fall-through included, because neither has code of its own for
    /// it: every read that leads from a packet or socket to a namespace, the watched
    /// namespace map, the lost counters and the per-CPU add are in slots.bpf.h only.
    /// (That the shared attribution gets a UDP socket-queue drop right is shown by the
    /// checksum/udp_*_long scenarios, UDP_CSUM in udp_recvmsg, on kernels from 6.15.)
    #[test]
    fn probes_attribute_namespaces_only_through_slots_bpf_h() {
        let shared = code(SLOTS_BPF_H);
        // What attribution and slot lookup are made of (a device's, a socket's and a
        // task's namespace, a namespace's inode, the map of watched ones), the lost
        // counters, and the per-CPU add's race with another CPU (EEXIST).
        let primitives = [
            "nd_net",
            "skc_net",
            "nsproxy",
            "bpf_get_current_task",
            "ns.inum",
            "dropspec_netns",
            "dropspec_lost",
            "EEXIST",
            "BPF_MAP_TYPE_PERCPU_ARRAY",
        ];
        // The one per-CPU array drops.bpf.c defines itself is dropspec_last (each CPU's
        // last drop, not a lost counter): its definition is left out of the check.
        let own = |file: &str, source: &str| {
            let code = code(source);
            let end = "} dropspec_last SEC(\".maps\");";
            match (file, code.find(end)) {
                ("drops.bpf.c", Some(at)) => {
                    let start = code[..at].rfind("struct {").unwrap();
                    format!("{}{}", &code[..start], &code[at + end.len()..])
                }
                _ => code,
            }
        };
        for primitive in primitives {
            assert!(shared.contains(primitive), "slots.bpf.h lacks {primitive}");
            for (file, source) in PROBES {
                assert!(
                    !own(file, source).contains(primitive),
                    "{file} uses {primitive} itself: take it from slots.bpf.h"
                );
            }
        }
        for (file, source) in [PROBES[0], PROBES[2]] {
            assert!(
                code(source).contains("#include \"slots.bpf.h\""),
                "{file} does not include slots.bpf.h"
            );
        }
        // Both probes ask the same function about packets: the drop probe for the
        // dropped skb, the hook probe for the skb __nf_conntrack_confirm is given.
        for (file, source) in PROBES {
            assert!(
                code(source).contains("netns_of_skb("),
                "{file} does not attribute its packets with netns_of_skb"
            );
        }
        // The fall-through itself: a device whose namespace reads as NULL (UDP's
        // dev_scratch) is passed over for the sockets and the task.
        let body = &shared[shared.find("netns_of_skb(struct sk_buff").unwrap()..];
        let body = &body[..body.find("\n}").unwrap()];
        let after_device = &body[body.find("nd_net.net").unwrap()..];
        assert!(
            after_device.contains("if (net)") && after_device.contains("rx_sk"),
            "netns_of_skb no longer falls through when the device yields no namespace"
        );
        // The same in the direct-load variant of the tp_btf programs: dev_scratch (no
        // top bit) is not followed, and a device without a namespace falls through.
        let body = &shared[shared
            .find("watched_slot_of_skb_btf(struct sk_buff")
            .unwrap()..];
        let body = &body[..body.find("\n}").unwrap()];
        let after_device = &body[body.find("nd_net.net").unwrap()..];
        assert!(
            body.contains(">= 0x8000000000000000UL")
                && after_device.contains("if (!net && rx_sk)")
                && after_device.contains("if (!net && sk)")
                && after_device.contains("bpf_get_current_task"),
            "watched_slot_of_skb_btf no longer falls through as netns_of_skb does"
        );
    }
}
