//! A program under test (`[[programs]]`): its object found, loaded (the verifier's log
//! on refusal), its maps prefilled, attached at tc (tcx on 6.6+, cls_bpf before) or XDP,
//! and its own drop accounting read back: a metrics map (Retina's
//! `retina_dropreason_metrics` shape, or a per-CPU array of counters) and/or an event
//! channel (perf event array or ring buffer) whose records carry a type and a code.
//!
//! Attaching by interface name and detaching a netlink-attached filter happen in the
//! host's namespace: the caller runs [`attach`] and drops the [`Attached`] there.

use crate::scenario::{Attach, Events, EventsKind, Metrics, MetricsKind, Prefill, Program};
use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap, PerfEventArray, RingBuf};
use aya::programs::{tc, SchedClassifier, TcAttachType, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

include!(concat!(env!("OUT_DIR"), "/datapath_fixtures.rs"));

#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(
        "program under test `{program}`: object `{object}` not found (looked in {looked}); \
         objects are paths relative to the scenario or fixtures/, or one dropspec builds: {built}"
    )]
    ObjectMissing {
        program: String,
        object: String,
        looked: String,
        built: String,
    },
    #[error("program under test `{program}`: {what}: {detail}")]
    Failed {
        program: String,
        what: String,
        detail: String,
    },
    #[error(
        "program under test `{program}` was refused by the verifier (nothing was attached):\n{log}"
    )]
    Verifier { program: String, log: String },
}

/// A program loaded and attached; dropping it detaches it (in the host's namespace).
pub struct Attached {
    pub attach: Attach,
    /// `tcx`, `cls_bpf`, `xdp (driver)`, `xdp (skb)`.
    pub how: String,
    channel: Option<Channel>,
    metrics: Option<(Metrics, Map)>,
    events: Option<Events>,
    /// Owns the program and its link; None only once dropped.
    ebpf: Option<Ebpf>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // A tcx or XDP link is its descriptor: it stays attached while any copy is open,
        // and a child between fork and exec (another scenario's `ip`, `tc`, ...) holds a
        // copy of every descriptor. Closed under the forks' write lock (forks.rs), the
        // program is detached when this returns. The maps first, the links last.
        crate::forks::close_now((self.channel.take(), self.metrics.take(), self.ebpf.take()));
    }
}

enum Channel {
    Perf(Vec<aya::maps::perf::PerfEventArrayBuffer<MapData>>),
    Ring(RingBuf<MapData>),
}

/// What a program said about its drops.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// From the metrics map: (code, count, bytes); bytes 0 where the map has none.
    pub metrics: Option<Vec<(u32, u64, u64)>>,
    /// Drop events: (code, the packet's first bytes if the record carries them).
    pub events: Option<Vec<(u32, Option<Vec<u8>>)>>,
    /// Events the channel lost (perf buffer full).
    pub events_lost: u64,
}

/// Where `program.object` is: a file beside the scenario or in fixtures/, else one of the
/// fixtures dropspec builds.
pub fn object_bytes(program: &Program, scenario_path: &Path) -> Result<Vec<u8>, ProgramError> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut looked = Vec::new();
    let candidates: Vec<PathBuf> = [scenario_path.parent(), Some(fixtures.as_path())]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(&program.object))
        .collect();
    for path in candidates {
        if path.is_file() {
            return std::fs::read(&path).map_err(|e| ProgramError::Failed {
                program: program.program.clone(),
                what: format!("reading {}", path.display()),
                detail: e.to_string(),
            });
        }
        looked.push(path.display().to_string());
    }
    if let Some((_, bytes)) = DATAPATH_FIXTURES.iter().find(|(n, _)| *n == program.object) {
        return Ok(bytes.to_vec());
    }
    Err(ProgramError::ObjectMissing {
        program: program.program.clone(),
        object: program.object.clone(),
        looked: looked.join(", "),
        built: DATAPATH_FIXTURES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Loads, prefills and attaches the program. Run in the host's namespace.
pub fn attach(program: &Program, object: &[u8]) -> Result<Attached, ProgramError> {
    let fail = |what: &str, detail: String| ProgramError::Failed {
        program: program.program.clone(),
        what: what.to_owned(),
        detail,
    };
    let mut ebpf = EbpfLoader::new()
        .load(object)
        .map_err(|e| fail("loading the object (maps, relocations)", chain(&e)))?;
    for p in &program.prefill {
        prefill(&mut ebpf, p)
            .map_err(|detail| fail(&format!("prefilling map {}", p.map), detail))?;
    }
    let name = program.program.as_str();
    let prog = ebpf.program_mut(name).ok_or_else(|| {
        fail(
            "finding the program",
            "no program of that name in the object".into(),
        )
    })?;
    let verifier = |e: aya::programs::ProgramError| match e {
        aya::programs::ProgramError::LoadError { verifier_log, .. } => ProgramError::Verifier {
            program: program.program.clone(),
            log: verifier_log.to_string(),
        },
        other => fail("loading", chain(&other)),
    };
    let how = match program.attach {
        Attach::TcIngress | Attach::TcEgress => {
            let prog: &mut SchedClassifier = prog
                .try_into()
                .map_err(|e| fail("loading as a tc program", chain(&e)))?;
            prog.load().map_err(verifier)?;
            let direction = if program.attach == Attach::TcIngress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            // tcx needs no qdisc; cls_bpf (before 6.6) needs clsact. Adding it is harmless
            // either way, and already there is fine.
            let _ = tc::qdisc_add_clsact(&program.interface);
            prog.attach(&program.interface, direction)
                .map_err(|e| fail(&format!("attaching to {}", program.interface), chain(&e)))?;
            if kernel_has_tcx() { "tcx" } else { "cls_bpf" }.to_owned()
        }
        Attach::Xdp | Attach::XdpGeneric => {
            let prog: &mut Xdp = prog
                .try_into()
                .map_err(|e| fail("loading as an XDP program", chain(&e)))?;
            prog.load().map_err(verifier)?;
            let (mode, how) = if program.attach == Attach::Xdp {
                (XdpMode::Driver, "xdp (driver)")
            } else {
                (XdpMode::Skb, "xdp (generic)")
            };
            prog.attach(&program.interface, mode)
                .map_err(|e| fail(&format!("attaching to {}", program.interface), chain(&e)))?;
            how.to_owned()
        }
    };
    // Owned from here by `attached`: an error below detaches the program as its drop does.
    let mut attached = Attached {
        attach: program.attach,
        how,
        channel: None,
        metrics: None,
        events: program.events.clone(),
        ebpf: None,
    };
    let ebpf = attached.ebpf.insert(ebpf);
    attached.metrics = match &program.metrics {
        None => None,
        Some(m) => {
            let map = ebpf
                .take_map(&m.map)
                .ok_or_else(|| fail("finding the metrics map", format!("no map `{}`", m.map)))?;
            Some((m.clone(), map))
        }
    };
    attached.channel = match &program.events {
        None => None,
        Some(e) => {
            let map = ebpf
                .take_map(&e.map)
                .ok_or_else(|| fail("finding the events map", format!("no map `{}`", e.map)))?;
            Some(match e.kind {
                EventsKind::PerfEventArray => {
                    let mut array = PerfEventArray::try_from(map)
                        .map_err(|err| fail("opening the perf event array", chain(&err)))?;
                    let cpus = aya::util::online_cpus()
                        .map_err(|(what, err)| fail(what, err.to_string()))?;
                    let mut buffers = Vec::new();
                    for cpu in cpus {
                        buffers.push(
                            array
                                .open(cpu, Some(64))
                                .map_err(|err| fail("opening a perf buffer", chain(&err)))?,
                        );
                    }
                    Channel::Perf(buffers)
                }
                EventsKind::RingBuf => Channel::Ring(
                    RingBuf::try_from(map)
                        .map_err(|err| fail("opening the ring buffer", chain(&err)))?,
                ),
            })
        }
    };
    Ok(attached)
}

impl Attached {
    /// Reads the metrics map and drains the event channel.
    pub fn read(&mut self) -> Result<Accounting, String> {
        let mut accounting = Accounting::default();
        if let Some((metrics, map)) = &self.metrics {
            accounting.metrics = Some(read_metrics(metrics, map)?);
        }
        if let (Some(events), Some(channel)) = (&self.events, &mut self.channel) {
            let mut records: Vec<Vec<u8>> = Vec::new();
            match channel {
                Channel::Perf(buffers) => {
                    for buffer in buffers {
                        buffer.for_each(|event| match event {
                            aya::maps::perf::PerfEvent::Sample { head, tail } => {
                                let mut bytes = head.to_vec();
                                bytes.extend_from_slice(tail);
                                records.push(bytes);
                            }
                            aya::maps::perf::PerfEvent::Lost { count } => {
                                accounting.events_lost += count;
                            }
                        });
                    }
                }
                Channel::Ring(ring) => {
                    while let Some(item) = ring.next() {
                        records.push(item.to_vec());
                    }
                }
            }
            let mut drops = Vec::new();
            for r in records {
                if r.get(events.type_offset) != Some(&events.type_value) {
                    continue;
                }
                let Some(code) =
                    r.get(events.reason_offset..events.reason_offset + events.reason_size)
                else {
                    continue;
                };
                let mut bytes = [0u8; 4];
                bytes[..code.len()].copy_from_slice(code);
                let code = match events.reason_size {
                    1 => u32::from(code[0]),
                    2 => u32::from(u16::from_ne_bytes([code[0], code[1]])),
                    _ => u32::from_ne_bytes(bytes),
                };
                let packet = events
                    .packet_offset
                    .and_then(|o| r.get(o..))
                    .map(<[u8]>::to_vec);
                drops.push((code, packet));
            }
            accounting.events = Some(drops);
        }
        Ok(accounting)
    }
}

fn read_metrics(metrics: &Metrics, map: &Map) -> Result<Vec<(u32, u64, u64)>, String> {
    let mut rows: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    match metrics.kind {
        MetricsKind::Retina => {
            let map: PerCpuHashMap<&MapData, [u32; 2], [u64; 2]> = PerCpuHashMap::try_from(map)
                .map_err(|e| {
                    format!(
                        "metrics map {} is not a per-CPU hash of {{u32, u32}} -> {{u64, u64}}: {}",
                        metrics.map,
                        chain(&e)
                    )
                })?;
            for entry in map.iter() {
                let (key, values) = entry.map_err(|e| chain(&e))?;
                let row = rows.entry(key[0]).or_default();
                for v in values.iter() {
                    row.0 += v[0];
                    row.1 += v[1];
                }
            }
        }
        MetricsKind::PerCpuArray => {
            let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(|e| {
                format!(
                    "metrics map {} is not a per-CPU array of u64: {}",
                    metrics.map,
                    chain(&e)
                )
            })?;
            for (index, values) in map.iter().enumerate() {
                let values = values.map_err(|e| chain(&e))?;
                let count: u64 = values.iter().sum();
                if count > 0 {
                    rows.insert(index as u32, (count, 0));
                }
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|(code, (c, b))| (code, c, b))
        .collect())
}

/// Writes one key/value into a map by its raw bytes (BPF_MAP_UPDATE_ELEM).
fn prefill(ebpf: &mut Ebpf, p: &Prefill) -> Result<(), String> {
    let map = ebpf
        .map(&p.map)
        .ok_or_else(|| format!("the object has no map `{}`", p.map))?;
    let data: &MapData = match map {
        Map::Array(d) | Map::HashMap(d) | Map::LruHashMap(d) | Map::LpmTrie(d) => d,
        _ => {
            return Err(format!(
                "`{}` is not an array, hash or LPM trie map: only those can be prefilled",
                p.map
            ))
        }
    };
    let info = data.info().map_err(|e| chain(&e))?;
    if info.key_size() as usize != p.key.len() || info.value_size() as usize != p.value.len() {
        return Err(format!(
            "the map's keys are {} bytes and values {} bytes; the scenario gives {} and {}",
            info.key_size(),
            info.value_size(),
            p.key.len(),
            p.value.len()
        ));
    }
    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = UpdateAttr {
        map_fd: data.fd().as_fd().as_raw_fd() as u32,
        pad: 0,
        key: p.key.as_ptr() as u64,
        value: p.value.as_ptr() as u64,
        flags: 0,
    };
    const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
    // SAFETY: attr points at live key and value buffers of the map's sizes (checked above).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            &attr as *const UpdateAttr,
            std::mem::size_of::<UpdateAttr>(),
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(())
}

/// tcx links (6.6 on) are what aya uses for tc when the kernel has them.
fn kernel_has_tcx() -> bool {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    crate::scenario::parse_kernel_version(&release).is_some_and(|v| v >= (6, 6))
}

fn chain(e: &dyn std::error::Error) -> String {
    super::error_text(e)
}
