//! The one Rust mirror of `ebpf/watch.h`.

/// `struct dropspec_watch_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    pub netns: u32,
    pub reason: u32,
    pub location: u64,
}

/// `struct dropspec_watch_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchValue {
    pub packets: u64,
    pub bytes: u64,
}

/// `struct dropspec_watch_sample`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WatchSample {
    pub time_ns: u64,
    pub location: u64,
    pub netns: u32,
    pub reason: u32,
    pub len: u32,
    pub l3proto: u16,
    pub l4proto: u8,
    pub has_ports: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub _pad: u32,
}

pub const LOST_COUNTS: u32 = 0;
pub const LOST_SAMPLES: u32 = 1;
pub const LOST_COUNTERS: u32 = 2;

const _: () = assert!(std::mem::size_of::<WatchKey>() == 16);
const _: () = assert!(std::mem::size_of::<WatchValue>() == 16);
const _: () = assert!(std::mem::size_of::<WatchSample>() == 72);
const _: () = assert!(std::mem::offset_of!(WatchSample, saddr) == 32);
const _: () = assert!(std::mem::offset_of!(WatchSample, sport) == 64);

// SAFETY: plain-old-data, `#[repr(C)]`, no implicit padding (it is spelled out).
unsafe impl aya::Pod for WatchKey {}
// SAFETY: as above.
unsafe impl aya::Pod for WatchValue {}

impl WatchSample {
    /// Reads a sample from the ring buffer's bytes; None when the size is not ours.
    pub fn from_bytes(bytes: &[u8]) -> Option<WatchSample> {
        if bytes.len() < std::mem::size_of::<WatchSample>() {
            return None;
        }
        // SAFETY: the length is checked, every bit pattern is a valid WatchSample, and
        // read_unaligned needs no alignment.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<WatchSample>()) })
    }
}
