//! The structs and numbers the probes share with user space: one `#[repr(C)]` mirror of
//! each struct in `ebpf/drops.h` (the drop probe and its events) and `ebpf/hooks.h`
//! (the hook-point probe), with compile-time size assertions and unit tests that lay
//! the C structs out from the headers and compare them field by field. A Rust name is
//! its C name without the `DROPSPEC_` prefix. Change a header and this file together.
//!
//! The watched-namespace map (`dropspec_netns`, ebpf/slots.bpf.h) is mirrored in
//! `slots.rs`, next to the code that fills it.

use crate::kernel::stacks;

// ---- ebpf/drops.h ------------------------------------------------------------------

/// `struct dropspec_drop_key` (ebpf/drops.h): a distinct drop, without its stack.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct DropKey {
    pub(super) slot: u32,
    pub(super) reason: u32,
    pub(super) location: u64,
    pub(super) l3proto: u16,
    pub(super) l4proto: u8,
    pub(super) stack_status: u8,
    pub(super) pad: [u8; 4],
}

/// `struct dropspec_drop_value` (ebpf/drops.h), one per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DropValue {
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) stacks_taken: u32,
    pub(super) pad: u32,
}

/// `struct dropspec_stack_key` (ebpf/drops.h): a distinct drop with its stack.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct StackKey {
    pub(super) slot: u32,
    pub(super) reason: u32,
    pub(super) location: u64,
    pub(super) l3proto: u16,
    pub(super) l4proto: u8,
    pub(super) stack_status: u8,
    pub(super) pad: [u8; 4],
    pub(super) stack: [u64; STACK_DEPTH],
}

impl From<DropKey> for StackKey {
    /// The row of a drop counted without a stack, as a stack row with none.
    fn from(key: DropKey) -> StackKey {
        StackKey {
            slot: key.slot,
            reason: key.reason,
            location: key.location,
            l3proto: key.l3proto,
            l4proto: key.l4proto,
            stack_status: key.stack_status,
            pad: key.pad,
            stack: [0; STACK_DEPTH],
        }
    }
}

/// `struct dropspec_stack_value` (ebpf/drops.h), one per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct StackValue {
    pub(super) packets: u64,
    pub(super) bytes: u64,
}

/// `struct dropspec_last` (ebpf/drops.h): per CPU, the drop it counted last and the
/// counts of it not yet in its `dropspec_drops` row.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LastDrop {
    pub(super) slot: u32,
    pub(super) reason: u32,
    pub(super) location: u64,
    pub(super) l3proto: u16,
    pub(super) l4proto: u8,
    pub(super) stack_status: u8,
    pub(super) pad: [u8; 4],
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) seq: u32,
    pub(super) pad2: u32,
}

impl LastDrop {
    /// Its drop, as the row of a drop counted without a stack.
    pub(super) fn key(&self) -> StackKey {
        StackKey::from(DropKey {
            slot: self.slot,
            reason: self.reason,
            location: self.location,
            l3proto: self.l3proto,
            l4proto: self.l4proto,
            stack_status: self.stack_status,
            pad: self.pad,
        })
    }
}

/// `struct dropspec_event_key` (ebpf/drops.h); the value is a per-CPU u64.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct EventKey {
    pub(super) slot: u32,
    pub(super) event: u32,
    pub(super) arg0: u32,
    pub(super) arg1: u32,
}

const _: () = assert!(std::mem::size_of::<DropKey>() == 24);
const _: () = assert!(std::mem::size_of::<DropValue>() == 24);
const _: () = assert!(std::mem::size_of::<StackKey>() == 88);
const _: () = assert!(std::mem::size_of::<StackValue>() == 16);
const _: () = assert!(std::mem::size_of::<LastDrop>() == 48);
const _: () = assert!(std::mem::size_of::<EventKey>() == 16);

// SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (it is spelled out), and
// every bit pattern is a valid value.
unsafe impl aya::Pod for DropKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DropValue {}
// SAFETY: as above.
unsafe impl aya::Pod for StackKey {}
// SAFETY: as above.
unsafe impl aya::Pod for StackValue {}
// SAFETY: as above.
unsafe impl aya::Pod for LastDrop {}
// SAFETY: as above.
unsafe impl aya::Pod for EventKey {}

/// DROPSPEC_MAX_DROP_KEYS, DROPSPEC_MAX_EVENT_KEYS, DROPSPEC_ABSENT, DROPSPEC_STACK_DEPTH
/// in ebpf/drops.h.
pub(super) const MAX_DROP_KEYS: u32 = 16384;
pub(super) const MAX_EVENT_KEYS: u32 = 4096;
pub(super) const ABSENT: u32 = u32::MAX;
/// DROPSPEC_NO_REASON: DropKey::reason on a kernel whose kfree_skb passes none (< 5.17).
pub(super) const NO_REASON: u32 = u32::MAX - 1;
pub(super) const STACK_DEPTH: usize = 8;
const _: () = assert!(STACK_DEPTH == stacks::MAX_FRAMES);

/// DROPSPEC_STACK_* (how StackKey::stack was filled; DropKey says SKIPPED or NONE).
pub(super) const STACK_FROM_CALLER: u8 = 0;
pub(super) const STACK_UNTRIMMED: u8 = 1;
pub(super) const STACK_NONE: u8 = 2;
/// Enough stacks of this distinct drop were taken already (DROPSPEC_STACK_SAMPLES).
pub(super) const STACK_SKIPPED: u8 = 3;
/// DROPSPEC_STACK_SAMPLES: stacks taken per distinct drop and CPU (DropValue::stacks_taken).
#[cfg(test)]
pub(super) const STACK_SAMPLES: u32 = 8;

/// DROPSPEC_LOST_* (indexes of dropspec_lost).
pub(super) const LOST_DROPS: u32 = 0;
pub(super) const LOST_EVENTS: u32 = 1;
pub(super) const LOST_STACKS: u32 = 2;
pub(super) const LOST_COUNTERS: u32 = 3;

// ---- ebpf/hooks.h ------------------------------------------------------------------

/// `struct dropspec_hook_key` (ebpf/hooks.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct HookKey {
    pub(super) slot: u32,
    pub(super) hook: u32,
    pub(super) ret: i32,
    pub(super) l3proto: u16,
    pub(super) pad: u16,
}

/// `struct dropspec_hook_value` (ebpf/hooks.h), one per CPU.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HookValue {
    pub(super) count: u64,
    pub(super) bytes: u64,
}

const _: () = assert!(std::mem::size_of::<HookKey>() == 16);
const _: () = assert!(std::mem::size_of::<HookValue>() == 16);

// SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding, every bit pattern valid.
unsafe impl aya::Pod for HookKey {}
// SAFETY: as above.
unsafe impl aya::Pod for HookValue {}

/// DROPSPEC_HOOK_LOST_* in ebpf/hooks.h. User space checks their sum
/// (`LostCounters::total`) and names each in the error; the ABI test holds hooks.h to them.
pub(super) const HOOK_LOST_KEYS: u32 = 0;
pub(super) const HOOK_LOST_UNPAIRED: u32 = 1;
pub(super) const HOOK_LOST_DEEP: u32 = 2;
pub(super) const HOOK_LOST_STALE: u32 = 3;
pub(super) const HOOK_LOST_COUNTERS: u32 = 4;

// ---- ebpf/datapath.h ----------------------------------------------------------------

/// `DATAPATH_LOST_COUNTERS` (ebpf/datapath.h).
pub(super) const DATAPATH_LOST_COUNTERS: u32 = 1;
/// `DATAPATH_HEAD_BYTES` (ebpf/datapath.h).
pub(super) const DATAPATH_HEAD_BYTES: usize = 96;

/// `struct datapath_iface` (ebpf/datapath.h): an interface a program under test is on.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct DatapathIface {
    pub(super) slot: u32,
    pub(super) ifindex: u32,
}

/// `struct datapath_drop` (ebpf/datapath.h): one dropped packet.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DatapathDrop {
    pub(super) slot: u32,
    pub(super) ifindex: u32,
    pub(super) reason: u32,
    pub(super) len: u32,
    pub(super) location: u64,
    pub(super) from_mac: u16,
    pub(super) pad0: u16,
    pub(super) pad1: u32,
    pub(super) head: [u8; DATAPATH_HEAD_BYTES],
}

// SAFETY: plain integers, no padding the C side does not also have.
unsafe impl aya::Pod for DatapathIface {}

const _: () = assert!(std::mem::size_of::<DatapathIface>() == 8);
const _: () = assert!(std::mem::size_of::<DatapathDrop>() == 32 + DATAPATH_HEAD_BYTES);

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::probes::events;
    use std::mem::offset_of;

    const DROPS_H: &str = include_str!("../../../ebpf/drops.h");
    const HOOKS_H: &str = include_str!("../../../ebpf/hooks.h");

    /// (field, offset, size) of a struct in a probe header, laid out by C's rules for these
    /// fixed-size types (each aligned to its size, arrays to their element).
    pub(crate) fn c_layout(header: &str, name: &str) -> Vec<(String, usize, usize)> {
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
    pub(crate) fn c_number(header: &str, text: &str) -> usize {
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
        let drop = |name: &str, offset, size| (name.to_owned(), offset, size);
        let key = vec![
            drop("slot", offset_of!(DropKey, slot), 4),
            drop("reason", offset_of!(DropKey, reason), 4),
            drop("location", offset_of!(DropKey, location), 8),
            drop("l3proto", offset_of!(DropKey, l3proto), 2),
            drop("l4proto", offset_of!(DropKey, l4proto), 1),
            drop("stack_status", offset_of!(DropKey, stack_status), 1),
            drop("pad", offset_of!(DropKey, pad), 4),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_drop_key"), key);
        let value = vec![
            drop("packets", offset_of!(DropValue, packets), 8),
            drop("bytes", offset_of!(DropValue, bytes), 8),
            drop("stacks_taken", offset_of!(DropValue, stacks_taken), 4),
            drop("pad", offset_of!(DropValue, pad), 4),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_drop_value"), value);
        let stack_key = vec![
            drop("slot", offset_of!(StackKey, slot), 4),
            drop("reason", offset_of!(StackKey, reason), 4),
            drop("location", offset_of!(StackKey, location), 8),
            drop("l3proto", offset_of!(StackKey, l3proto), 2),
            drop("l4proto", offset_of!(StackKey, l4proto), 1),
            drop("stack_status", offset_of!(StackKey, stack_status), 1),
            drop("pad", offset_of!(StackKey, pad), 4),
            drop("stack", offset_of!(StackKey, stack), 8 * STACK_DEPTH),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_stack_key"), stack_key);
        let stack_value = vec![
            drop("packets", offset_of!(StackValue, packets), 8),
            drop("bytes", offset_of!(StackValue, bytes), 8),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_stack_value"), stack_value);
        let last = vec![
            drop("slot", offset_of!(LastDrop, slot), 4),
            drop("reason", offset_of!(LastDrop, reason), 4),
            drop("location", offset_of!(LastDrop, location), 8),
            drop("l3proto", offset_of!(LastDrop, l3proto), 2),
            drop("l4proto", offset_of!(LastDrop, l4proto), 1),
            drop("stack_status", offset_of!(LastDrop, stack_status), 1),
            drop("pad", offset_of!(LastDrop, pad), 4),
            drop("packets", offset_of!(LastDrop, packets), 8),
            drop("bytes", offset_of!(LastDrop, bytes), 8),
            drop("seq", offset_of!(LastDrop, seq), 4),
            drop("pad2", offset_of!(LastDrop, pad2), 4),
        ];
        assert_eq!(c_layout(DROPS_H, "dropspec_last"), last);
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
            ("DROPSPEC_NO_REASON", format!("{NO_REASON:#x}u")),
            ("DROPSPEC_STACK_DEPTH", STACK_DEPTH.to_string()),
            ("DROPSPEC_STACK_FROM_CALLER", STACK_FROM_CALLER.to_string()),
            ("DROPSPEC_STACK_UNTRIMMED", STACK_UNTRIMMED.to_string()),
            ("DROPSPEC_STACK_NONE", STACK_NONE.to_string()),
            ("DROPSPEC_STACK_SKIPPED", STACK_SKIPPED.to_string()),
            ("DROPSPEC_STACK_SAMPLES", STACK_SAMPLES.to_string()),
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
    fn rust_mirror_matches_hooks_h() {
        let header = HOOKS_H;
        let field = |name: &str, offset, size| (name.to_owned(), offset, size);
        assert_eq!(
            c_layout(header, "dropspec_hook_key"),
            vec![
                field("slot", offset_of!(HookKey, slot), 4),
                field("hook", offset_of!(HookKey, hook), 4),
                field("ret", offset_of!(HookKey, ret), 4),
                field("l3proto", offset_of!(HookKey, l3proto), 2),
                field("pad", offset_of!(HookKey, pad), 2),
            ]
        );
        assert_eq!(
            c_layout(header, "dropspec_hook_value"),
            vec![
                field("count", offset_of!(HookValue, count), 8),
                field("bytes", offset_of!(HookValue, bytes), 8),
            ]
        );
        for (name, value) in [
            ("DROPSPEC_HOOK_LOST_KEYS", HOOK_LOST_KEYS),
            ("DROPSPEC_HOOK_LOST_UNPAIRED", HOOK_LOST_UNPAIRED),
            ("DROPSPEC_HOOK_LOST_DEEP", HOOK_LOST_DEEP),
            ("DROPSPEC_HOOK_LOST_STALE", HOOK_LOST_STALE),
            ("DROPSPEC_HOOK_LOST_COUNTERS", HOOK_LOST_COUNTERS),
        ] {
            assert_eq!(c_number(header, name), value as usize, "{name}");
        }
    }
}
