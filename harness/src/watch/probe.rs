//! Loads `ebpf/watch.bpf.c` and reads what it gathered.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Ebpf, EbpfLoader};

use super::abi::{WatchKey, WatchSample, WatchValue, LOST_COUNTERS};
use crate::kernel::btf::Btf;
use crate::kernel::{self as kernel_info};
use crate::probes::ReasonTable;

static WATCH_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watch.bpf.o"));
static WATCH_OBJECT_ALLOC_ON_INSERT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/watch.bpf.alloc_on_insert.o"));

const TRACEPOINT: &str = "kfree_skb";

/// The attached watch probe and its maps.
pub struct WatchProbe {
    pub reasons: ReasonTable,
    counts: PerCpuHashMap<MapData, WatchKey, WatchValue>,
    samples: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    // The program stays attached while the object lives.
    _ebpf: Ebpf,
}

/// Which namespaces to watch: by inode, or every one.
pub enum Scope<'a> {
    All,
    Inodes(&'a [u64]),
}

impl WatchProbe {
    /// `samples_per_second` bounds the per-packet lines over all CPUs together.
    pub fn attach(scope: Scope<'_>, samples_per_second: u32) -> Result<WatchProbe> {
        // Reasons, the tracepoint's arguments: read from the running kernel, never compiled in.
        let btf_bytes = kernel_info::read_file(Path::new(kernel_info::VMLINUX_BTF))
            .context("reading the kernel's BTF (dropspec watch needs CONFIG_DEBUG_INFO_BTF)")?;
        let btf = Btf::parse(&btf_bytes).context("parsing the kernel's BTF")?;
        let reasons = ReasonTable::from_parsed_btf(&btf).context("reading drop reasons")?;
        let program = match btf.tracepoint_args(TRACEPOINT)? {
            Some(4) => "watch_tpbtf",
            Some(3) => "watch_tpbtf3",
            Some(n) => bail!("kfree_skb passes {n} arguments here; dropspec watch knows 3 (5.17 to 6.11) and 4 (6.12 on)"),
            None => bail!("this kernel's BTF has no btf_trace_kfree_skb: dropspec watch needs BTF tracepoints (5.5 on) with drop reasons (5.17 on)"),
        };
        let aya_btf = aya::Btf::parse(&btf_bytes, aya::Endianness::default())
            .context("parsing the kernel's BTF for aya")?;
        drop(btf);

        let absent = u32::MAX;
        let not_dropped = reasons.number("NOT_DROPPED_YET").unwrap_or(absent);
        let consumed = reasons.number("CONSUMED").unwrap_or(absent);
        let all = u32::from(matches!(scope, Scope::All));
        let cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| e)
            .context("counting possible CPUs")? as u64;
        let per_second = u64::from(samples_per_second.max(1));
        // Per CPU: a sample each `cpus / rate` seconds, bursts up to rate/cpus at once,
        // so all CPUs together stay at about the rate asked for.
        let interval_ns = 1_000_000_000 * cpus / per_second;
        let burst = (per_second / cpus).max(1);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&aya_btf))
            .override_global("cfg_reason_not_dropped", &not_dropped, true)
            .override_global("cfg_reason_consumed", &consumed, true)
            .override_global("cfg_all_namespaces", &all, true)
            .override_global("cfg_sample_interval_ns", &interval_ns, true)
            .override_global("cfg_sample_burst", &burst, true)
            .load(crate::probes::loader::object_for_kernel(
                WATCH_OBJECT,
                WATCH_OBJECT_ALLOC_ON_INSERT,
            ))
            .context("loading ebpf/watch.bpf.c")?;

        if let Scope::Inodes(inodes) = scope {
            let mut netns: HashMap<_, u32, u32> = HashMap::try_from(
                ebpf.map_mut("dropspec_netns")
                    .context("map dropspec_netns")?,
            )?;
            for (slot, inode) in inodes.iter().enumerate() {
                let inode = u32::try_from(*inode).context("a namespace inode above 2^32")?;
                netns.insert(inode, slot as u32, 0)?;
            }
        }
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .context("the watch program is missing from its object: rebuild")?
            .try_into()?;
        prog.load(TRACEPOINT, &aya_btf)
            .with_context(|| format!("loading {program}"))?;
        prog.attach()
            .with_context(|| format!("attaching {program} to tp_btf/{TRACEPOINT}"))?;
        crate::probes::attach_timer_marks(&mut ebpf)
            .map_err(|(what, e)| anyhow::Error::new(e).context(what))?;

        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from ebpf/watch.bpf.c"))
        };
        let counts = PerCpuHashMap::try_from(take(&mut ebpf, "watch_counts")?)?;
        let samples = RingBuf::try_from(take(&mut ebpf, "watch_samples")?)?;
        let lost = PerCpuArray::try_from(take(&mut ebpf, "dropspec_lost")?)?;
        Ok(WatchProbe {
            reasons,
            counts,
            samples,
            lost,
            _ebpf: ebpf,
        })
    }

    /// Every sample waiting in the ring buffer.
    pub fn drain_samples(&mut self) -> Vec<WatchSample> {
        let mut out = Vec::new();
        while let Some(item) = self.samples.next() {
            if let Some(sample) = WatchSample::from_bytes(&item) {
                out.push(sample);
            }
        }
        out
    }

    /// The counts so far, summed over CPUs.
    pub fn counts(&self) -> BTreeMap<WatchKey, WatchValue> {
        let mut out = BTreeMap::new();
        for (key, values) in self.counts.iter().flatten() {
            let entry: &mut WatchValue = out.entry(key).or_default();
            for v in values.iter() {
                entry.packets += v.packets;
                entry.bytes += v.bytes;
            }
        }
        out
    }

    /// (drops not aggregated because the map was full, samples lost to a full ring buffer).
    pub fn lost(&self) -> (u64, u64) {
        let sum = |i: u32| {
            self.lost
                .get(&i, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        let _ = LOST_COUNTERS;
        (sum(super::abi::LOST_COUNTS), sum(super::abi::LOST_SAMPLES))
    }
}
