//! `dropspec watch`: drops streamed live while a scenario is written — a line per sampled
//! drop (reason, function, host, protocol, addresses and ports read from the packet at
//! the probe) and a periodic table of every drop counted in the kernel.
//!
//! The cost is bounded whatever the drop rate: `ebpf/watch.bpf.c` aggregates every drop
//! in a per-CPU map and sends per-packet detail through a ring buffer at most
//! `--samples` per second (a token bucket in the program), without waking the reader;
//! this side polls every 100 ms. It is a front-end helper of `main.rs`, separate from the
//! run's watchers: a run counts exactly, watch shows what happens.
//!
//! | file | holds |
//! | --- | --- |
//! | `abi.rs` | the mirror of `ebpf/watch.h` |
//! | `probe.rs` | loading the probe, reading its maps |
//! | `mod.rs` | what to watch, the loop, the lines |

mod abi;
mod probe;
pub mod session;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub use abi::{WatchKey, WatchSample, WatchValue};
pub use probe::{Scope, WatchProbe};

use crate::kernel::kallsyms::Kallsyms;
use crate::probes::ReasonTable;

/// How often the ring buffer is read: the bound on how often the reader wakes.
pub const POLL: Duration = Duration::from_millis(100);

/// Names for namespace inodes: the hosts of a scenario, /run/netns names, `init` for
/// the machine's own, else `netns:<inode>`.
#[derive(Debug, Default, Clone)]
pub struct NetnsNames(pub BTreeMap<u64, String>);

impl NetnsNames {
    /// Every name under /run/netns and the initial namespace.
    pub fn from_system() -> NetnsNames {
        let mut names = BTreeMap::new();
        if let Ok(meta) = std::fs::metadata("/proc/1/ns/net") {
            names.insert(meta.ino(), "init".to_owned());
        }
        if let Ok(entries) = std::fs::read_dir("/run/netns") {
            for entry in entries.flatten() {
                if let Ok(meta) = std::fs::metadata(entry.path()) {
                    names.insert(meta.ino(), entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        NetnsNames(names)
    }

    /// The inode of /run/netns/NAME (or of any path to a namespace file).
    pub fn inode_of(name: &str) -> Result<u64> {
        let path = if name.contains('/') {
            std::path::PathBuf::from(name)
        } else {
            std::path::Path::new("/run/netns").join(name)
        };
        Ok(std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "no namespace {} (ip netns list shows the names)",
                    path.display()
                )
            })?
            .ino())
    }

    pub fn name(&self, inode: u64) -> String {
        self.0
            .get(&inode)
            .cloned()
            .unwrap_or_else(|| format!("netns:{inode}"))
    }
}

/// What the lines need to name things.
pub struct Namer<'a> {
    pub reasons: &'a ReasonTable,
    pub kallsyms: &'a Kallsyms,
    pub netns: &'a NetnsNames,
}

impl Namer<'_> {
    fn reason(&self, number: u32) -> String {
        self.reasons
            .name(number)
            .map_or_else(|| format!("reason#{number}"), str::to_owned)
    }

    fn function(&self, location: u64) -> String {
        self.kallsyms
            .function_at(location)
            .map_or_else(|| format!("{location:#x}"), str::to_owned)
    }

    /// One line per sampled drop.
    pub fn sample_line(&self, s: &WatchSample, since: Duration) -> String {
        let protocol = match (s.l3proto, s.l4proto) {
            (0x0800, 6) | (0x86dd, 6) => "tcp".to_owned(),
            (0x0800, 17) | (0x86dd, 17) => "udp".to_owned(),
            (0x0800, 1) => "icmp".to_owned(),
            (0x86dd, 58) => "icmpv6".to_owned(),
            (0x0800 | 0x86dd, p) => format!("ip proto {p}"),
            (0x0806, _) => "arp".to_owned(),
            (0, _) => "?".to_owned(),
            (l3, _) => format!("ethertype {l3:#06x}"),
        };
        let (source, destination) = match s.l3proto {
            0x0800 => (
                Ipv4Addr::from(<[u8; 4]>::try_from(&s.saddr[..4]).unwrap()).to_string(),
                Ipv4Addr::from(<[u8; 4]>::try_from(&s.daddr[..4]).unwrap()).to_string(),
            ),
            0x86dd => (
                format!("[{}]", Ipv6Addr::from(s.saddr)),
                format!("[{}]", Ipv6Addr::from(s.daddr)),
            ),
            _ => ("?".to_owned(), "?".to_owned()),
        };
        let (source, destination) = if s.has_ports != 0 {
            (
                format!("{source}:{}", s.sport),
                format!("{destination}:{}", s.dport),
            )
        } else {
            (source, destination)
        };
        format!(
            "{:>7.3}s  {:<24} {:<22} {:<24} {protocol:<7} {source} -> {destination} ({} bytes)",
            since.as_secs_f64(),
            self.netns.name(u64::from(s.netns)),
            self.reason(s.reason),
            self.function(s.location),
            s.len
        )
    }

    /// The table of every drop counted so far.
    pub fn table(&self, counts: &BTreeMap<WatchKey, WatchValue>, lost: (u64, u64)) -> String {
        let mut rows: Vec<(String, String, String, u64, u64)> = counts
            .iter()
            .map(|(k, v)| {
                (
                    self.netns.name(u64::from(k.netns)),
                    self.reason(k.reason),
                    self.function(k.location),
                    v.packets,
                    v.bytes,
                )
            })
            .collect();
        rows.sort_by(|a, b| b.3.cmp(&a.3).then_with(|| a.cmp(b)));
        let mut out = String::from("-- drops so far (host, reason, function: packets, bytes)\n");
        for (host, reason, function, packets, bytes) in &rows {
            let _ = writeln!(
                out,
                "   {host:<24} {reason:<22} {function:<24} {packets:>8} {bytes:>10}"
            );
        }
        if rows.is_empty() {
            out.push_str("   none\n");
        }
        if lost != (0, 0) {
            let _ = writeln!(
                out,
                "   not counted (map full): {}; samples lost (ring buffer full): {}",
                lost.0, lost.1
            );
        }
        out
    }
}

/// Set by SIGINT/SIGTERM while watching.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C ends the watch cleanly (the final table is printed, the probe detached).
pub fn stop_on_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Polls the probe every [`POLL`] until `until` says stop, Ctrl-C or `duration`;
/// prints a line per sample and the table every `every`, and the table at the end.
pub fn stream(
    probe: &mut WatchProbe,
    namer: &Namer<'_>,
    duration: Option<Duration>,
    every: Duration,
    until: &dyn Fn() -> bool,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let started = Instant::now();
    let boot_at_start = monotonic_ns();
    let mut last_table = Instant::now();
    loop {
        std::thread::sleep(POLL);
        for sample in probe.drain_samples() {
            let since = Duration::from_nanos(sample.time_ns.saturating_sub(boot_at_start));
            writeln!(out, "{}", namer.sample_line(&sample, since))?;
        }
        let done = stopped() || until() || duration.is_some_and(|d| started.elapsed() >= d);
        if done || last_table.elapsed() >= every {
            write!(out, "{}", namer.table(&probe.counts(), probe.lost()))?;
            last_table = Instant::now();
        }
        out.flush()?;
        if done {
            return Ok(());
        }
    }
}

/// CLOCK_MONOTONIC in ns, the clock bpf_ktime_get_ns reads.
fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_line_names_everything_read_from_the_packet() {
        let saved = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/kernel/6.12.117+deb12-amd64/skb_kfree_skb.format");
        let reasons =
            ReasonTable::from_tracefs_format(&std::fs::read_to_string(saved).unwrap()).unwrap();
        let netfilter = reasons.number("NETFILTER_DROP").unwrap();
        let not_specified = reasons.number("NOT_SPECIFIED").unwrap();
        let kallsyms =
            Kallsyms::parse("ffffffff81000000 T nft_do_chain\nffffffff81000400 T other\n");
        let netns = NetnsNames([(7, "server".to_owned())].into());
        let namer = Namer {
            reasons: &reasons,
            kallsyms: &kallsyms,
            netns: &netns,
        };
        let mut s = WatchSample {
            time_ns: 0,
            location: 0xffffffff81000010,
            netns: 7,
            reason: netfilter,
            len: 60,
            l3proto: 0x0800,
            l4proto: 17,
            has_ports: 1,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 40000,
            dport: 5000,
            _pad: 0,
        };
        s.saddr[..4].copy_from_slice(&[198, 18, 0, 1]);
        s.daddr[..4].copy_from_slice(&[198, 18, 0, 2]);
        let line = namer.sample_line(&s, Duration::from_millis(1500));
        for part in [
            "server",
            "NETFILTER_DROP",
            "nft_do_chain",
            "udp",
            "198.18.0.1:40000 -> 198.18.0.2:5000",
            "1.500s",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
        let table = namer.table(
            &[(
                WatchKey {
                    netns: 9,
                    reason: not_specified,
                    location: 0x10,
                },
                WatchValue {
                    packets: 3,
                    bytes: 9,
                },
            )]
            .into(),
            (0, 1),
        );
        assert!(
            table.contains("netns:9")
                && table.contains("NOT_SPECIFIED")
                && table.contains("samples lost"),
            "{table}"
        );
    }
}
