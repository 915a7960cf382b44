//! The ground truth for programs under test: every packet the kernel drops on an
//! interface a scenario attached a program to, one record each (`ebpf/datapath.bpf.c`,
//! `tp_btf/kfree_skb`), with its reason, the function that freed it and its first bytes.
//! Which of those the program caused is decided by [`caused_by`]: what the kernel says
//! for a tc program's `TC_ACT_SHOT` and an XDP program's `XDP_DROP` was measured on 6.18
//! and is written down in docs/kernel-findings.md ("Programs under test").
//!
//! The probe loads on first use only (a scenario without `[[programs]]` costs nothing),
//! and watches interfaces, not whole namespaces: (watch slot, ifindex) pairs. It is
//! attached only while a slot is watched, and detached when the last one is released:
//! a second program on `skb:kfree_skb` changes how the tracepoint calls its programs
//! (through `__traceiter_kfree_skb` instead of one static call), which adds a frame
//! above every other probe's call site (docs/kernel-findings.md, "6.16.12").

use super::abi::{DatapathDrop, DatapathIface, DATAPATH_LOST_COUNTERS};
use super::slots::{LostCounters, Slot, SlotOwner, SlotTable};
use super::{check_privileges, error_text, ProbeError, ProbeMode};
use crate::kernel::kallsyms::Kallsyms;
use crate::kernel::reasons::{ReasonTable, NO_REASON};
use crate::scenario::Attach;
use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use aya::programs::tp_btf::BtfTracePointLinkId;
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, MutexGuard, OnceLock};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.bpf.o"));

/// One packet the kernel dropped on a watched interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDrop {
    pub ifindex: u32,
    pub reason: String,
    /// The function that freed it (kallsyms, without compiler suffixes).
    pub function: String,
    pub len: u32,
    pub packet: Packet,
}

/// What can be read of a packet from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Packet {
    /// `ipv4/tcp`, `ipv6/udp`, `arp`, …
    pub protocol: String,
    /// `198.18.0.1:40000`, or the address alone without ports; empty when unreadable.
    pub source: String,
    pub destination: String,
    /// TCP flags as tcpdump writes them (`S`, `.`, `P.`), when TCP.
    pub tcp_flags: String,
}

impl Packet {
    /// Reads a frame from its Ethernet header.
    pub fn from_frame(frame: &[u8]) -> Packet {
        if frame.len() < 14 {
            return Packet::default();
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        Packet::from_l3(ethertype, &frame[14..])
    }

    fn from_l3(ethertype: u16, l3: &[u8]) -> Packet {
        let (l3_name, l4proto, source, destination, l4) = match ethertype {
            0x0800 if l3.len() >= 20 => {
                let ihl = usize::from(l3[0] & 0x0f) * 4;
                let src = Ipv4Addr::new(l3[12], l3[13], l3[14], l3[15]);
                let dst = Ipv4Addr::new(l3[16], l3[17], l3[18], l3[19]);
                (
                    "ipv4",
                    l3[9],
                    src.to_string(),
                    dst.to_string(),
                    l3.get(ihl..).unwrap_or(&[]),
                )
            }
            0x86dd if l3.len() >= 40 => {
                let addr = |at: usize| {
                    let bytes: [u8; 16] = l3[at..at + 16].try_into().unwrap();
                    format!("[{}]", Ipv6Addr::from(bytes))
                };
                ("ipv6", l3[6], addr(8), addr(24), &l3[40..])
            }
            0x0806 => {
                return Packet {
                    protocol: "arp".into(),
                    ..Packet::default()
                }
            }
            other => {
                return Packet {
                    protocol: format!("ethertype 0x{other:04x}"),
                    ..Packet::default()
                }
            }
        };
        let l4_name = super::names::l4_name(ethertype, l4proto);
        let mut packet = Packet {
            protocol: if l4_name.is_empty() {
                format!("{l3_name}/{l4proto}")
            } else {
                format!("{l3_name}/{l4_name}")
            },
            source: source.clone(),
            destination: destination.clone(),
            tcp_flags: String::new(),
        };
        // TCP (6), UDP (17), SCTP (132): ports first.
        if matches!(l4proto, 6 | 17 | 132) && l4.len() >= 4 {
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            packet.source = format!("{source}:{sport}");
            packet.destination = format!("{destination}:{dport}");
            if l4proto == 6 && l4.len() >= 14 {
                packet.tcp_flags = tcp_flags(l4[13]);
            }
        }
        packet
    }

    /// `ipv4/tcp 198.18.0.1:40000 > 198.18.0.2:80 [S]`
    pub fn describe(&self) -> String {
        let mut text = self.protocol.clone();
        if !self.source.is_empty() {
            text.push_str(&format!(" {} > {}", self.source, self.destination));
        }
        if !self.tcp_flags.is_empty() {
            text.push_str(&format!(" [{}]", self.tcp_flags));
        }
        text
    }
}

fn tcp_flags(bits: u8) -> String {
    let mut flags: String = [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ]
    .iter()
    .filter(|(bit, _)| bits & bit != 0)
    .map(|(_, c)| *c)
    .collect();
    if bits & 0x10 != 0 {
        flags.push('.');
    }
    flags
}

/// Whether a drop on the program's interface is the program's: the reason and function
/// the kernel gives a tc program's TC_ACT_SHOT and an XDP program's XDP_DROP. Measured on
/// 6.18 (the guests' 6.1 and 6.12 agree):
///
/// | attach        | reason        | function                   |
/// |---------------|---------------|----------------------------|
/// | `tc_ingress`  | `TC_INGRESS`  | `__netif_receive_skb_core` (tcx or cls_bpf) |
/// | `tc_egress`   | `TC_EGRESS`   | `__dev_queue_xmit`         |
/// | `xdp` on veth | NOT_SPECIFIED | `veth_xdp_rcv_skb`         |
/// | `xdp_generic` | NOT_SPECIFIED | `do_xdp_generic`           |
///
/// No XDP drop reason (`XDP`, 6.8 on) is given for either XDP mode, and no `xdp:*`
/// tracepoint fires for XDP_DROP (`xdp_exception` is for XDP_ABORTED and unknown
/// actions), so for XDP the function is the evidence. Native XDP on a driver other than
/// veth frees frames without an skb and is not seen at all: dropspec's links are veth.
///
/// Before 5.17 there are no reasons ([`NO_REASON`]): the function alone decides.
/// Measured in Debian's 5.10.0-32 (bpftrace on `skb:kfree_skb` by caller agreeing):
/// tc's drops are freed in the same functions as above (`sch_handle_ingress` and
/// `sch_handle_egress` are inlined into them); native XDP's in `veth_poll`
/// (`veth_xdp_rcv_skb` and `veth_xdp_rcv` are inlined there) and generic XDP's in
/// `netif_receive_generic_xdp` (not inlined there). Which of these functions a build
/// keeps is the compiler's choice, so each attach point accepts its function and the
/// callers it was inlined into, and nothing else. The other drops these functions
/// make are a frame of a protocol nobody handles (ingress; dropspec's traffic is
/// IPv4, IPv6 and ARP) and veth's own failures (allocation, a page it cannot build).
pub fn caused_by(attach: Attach, reason: &str, function: &str) -> bool {
    if reason == NO_REASON {
        let functions: &[&str] = match attach {
            Attach::TcIngress => &["__netif_receive_skb_core"],
            Attach::TcEgress => &["__dev_queue_xmit"],
            Attach::Xdp => &["veth_xdp_rcv_skb", "veth_xdp_rcv", "veth_poll"],
            Attach::XdpGeneric => &["netif_receive_generic_xdp", "do_xdp_generic"],
        };
        return functions.contains(&function);
    }
    match attach {
        Attach::TcIngress => reason == "TC_INGRESS",
        Attach::TcEgress => reason == "TC_EGRESS",
        Attach::Xdp => reason == "NOT_SPECIFIED" && function == "veth_xdp_rcv_skb",
        Attach::XdpGeneric => reason == "NOT_SPECIFIED" && function == "do_xdp_generic",
    }
}

/// The loaded probe.
pub struct DatapathProbe {
    loaded: Loaded,
    reasons: ReasonTable,
    kallsyms: Option<std::sync::Arc<Kallsyms>>,
}

struct Loaded {
    maps: Mutex<Maps>,
}

struct Maps {
    slots: SlotTable,
    ifaces: BpfHashMap<MapData, DatapathIface, u32>,
    ring: RingBuf<MapData>,
    lost: LostCounters,
    /// Records drained for slots other than the reader's, kept until their turn.
    pending: BTreeMap<u32, Vec<DatapathDrop>>,
    /// The entry point this kernel's kfree_skb takes: [`PROGRAM`] or [`PROGRAM_NO_REASON`].
    program: &'static str,
    /// The tracepoint link while any slot is watched.
    link: Option<BtfTracePointLinkId>,
    ebpf: Ebpf,
}

const PROGRAM: &str = "dropspec_datapath_kfree_skb";
/// Kernels whose kfree_skb passes no reason (before 5.17).
const PROGRAM_NO_REASON: &str = "dropspec_datapath_kfree_skb2";

impl Maps {
    fn program(&mut self) -> Result<&mut BtfTracePoint, ProbeError> {
        let name = self.program;
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| ProbeError::Unsupported {
                mode: ProbeMode::BtfTracepoint,
                detail: format!("{name} missing from datapath.bpf.o: rebuild"),
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| bpf_error("loading", &e))
    }

    /// Attaches the probe to the tracepoint unless it is already.
    fn attach(&mut self) -> Result<(), ProbeError> {
        if self.link.is_none() {
            let link = self
                .program()?
                .attach()
                .map_err(|e| bpf_error("attaching the datapath probe", &e))?;
            self.link = Some(link);
        }
        Ok(())
    }

    /// Detaches the probe when no slot is watched any more.
    fn detach_if_idle(&mut self) -> Result<(), ProbeError> {
        if self.slots.len() > 0 {
            return Ok(());
        }
        if let Some(link) = self.link.take() {
            let link = self
                .program()?
                .take_link(link)
                .map_err(|e| bpf_error("detaching the datapath probe", &e))?;
            // The link is its descriptor: it stays attached while any copy of it is open,
            // and a child between fork and exec (another scenario's `ip`, `tc`, ...) holds
            // a copy of every descriptor. Closed under the forks' write lock it is gone
            // when this returns. Closed plainly, it could outlive the detach, and the next
            // scenario's `watch` attached a second link beside it: every drop recorded
            // twice (datapath/retina_metrics in a `dropspec run --jobs 2` under load,
            // 10 drops for the kernel's 5).
            crate::forks::close_now(link);
        }
        Ok(())
    }
}

impl Loaded {
    fn lock(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SlotOwner for Loaded {
    fn release(&self, id: u32) -> Result<(), ProbeError> {
        let mut maps = self.lock();
        maps.slots.remove(id)?;
        let keys: Vec<DatapathIface> = maps
            .ifaces
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.slot == id)
            .collect();
        for key in keys {
            let _ = maps.ifaces.remove(&key);
        }
        maps.pending.remove(&id);
        maps.detach_if_idle()
    }
}

/// Interfaces of one namespace being watched; dropping it stops the watching.
#[derive(Debug)]
pub struct DatapathSlot {
    slot: Slot<Loaded>,
    lost_at_start: u64,
}

fn bpf_error(what: &str, e: &(dyn std::error::Error + 'static)) -> ProbeError {
    ProbeError::Bpf {
        mode: ProbeMode::BtfTracepoint,
        what: format!("{what} (ebpf/datapath.bpf.c)"),
        detail: error_text(e),
        errno: super::errno_of(e),
    }
}

impl DatapathProbe {
    /// The probe, loaded and attached on first use.
    pub fn shared() -> Result<&'static DatapathProbe, ProbeError> {
        static PROBE: OnceLock<Result<DatapathProbe, ProbeError>> = OnceLock::new();
        PROBE
            .get_or_init(|| crate::spans::span("datapath probe load", DatapathProbe::load))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn load() -> Result<DatapathProbe, ProbeError> {
        check_privileges()?;
        // Before 5.17 there are none: drops are still recorded, and told apart by
        // function (`caused_by`).
        let reasons = ReasonTable::from_running_kernel_or_none()?;
        // The read the drop probe shares (once per set of loaded modules).
        let kallsyms = Kallsyms::shared_from_proc().ok();
        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Unsupported {
            mode: ProbeMode::BtfTracepoint,
            detail: format!(
                "the kernel's BTF (/sys/kernel/btf/vmlinux) could not be read ({e}): programs under test need a kernel built with CONFIG_DEBUG_INFO_BTF"
            ),
        })?;
        // Which frees are not drops, by this kernel's numbers (CONSUMED is 1 from 6.3;
        // on 6.1, 1 is NOT_SPECIFIED, the reason of every XDP drop).
        let arity = crate::kernel::read_file(std::path::Path::new(crate::kernel::VMLINUX_BTF))
            .and_then(|bytes| {
                crate::kernel::btf::Btf::parse(&bytes)?.tracepoint_args("kfree_skb")
            })?;
        let program = match arity {
            Some(2) => PROGRAM_NO_REASON,
            Some(3..) => PROGRAM,
            other => {
                return Err(ProbeError::Unsupported {
                    mode: ProbeMode::BtfTracepoint,
                    detail: format!(
                        "the kernel's BTF describes kfree_skb with {other:?} arguments; the datapath probe knows 2 (before 5.17) and 3 or more"
                    ),
                })
            }
        };
        let not_dropped = reasons.number("NOT_DROPPED_YET").unwrap_or(u32::MAX);
        let consumed = reasons.number("CONSUMED").unwrap_or(u32::MAX);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("cfg_reason_not_dropped", &not_dropped, true)
            .override_global("cfg_reason_consumed", &consumed, true)
            .load(OBJECT)
            .map_err(|e| bpf_error("loading the probe object", &e))?;
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(program)
            .ok_or_else(|| ProbeError::Unsupported {
                mode: ProbeMode::BtfTracepoint,
                detail: format!("{program} missing from datapath.bpf.o: rebuild"),
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| bpf_error("loading", &e))?;
        // Loaded now, attached by `watch` while a slot is watched.
        prog.load("kfree_skb", &btf)
            .map_err(|e| bpf_error(&format!("loading {program}"), &e))?;
        super::slots::attach_timer_marks(&mut ebpf).map_err(|(what, e)| bpf_error(&what, &e))?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or_else(|| ProbeError::Map {
                map: name,
                op: "finding",
                detail: "missing from datapath.bpf.o: rebuild".into(),
            })
        };
        let slots = SlotTable::new(
            take(&mut ebpf, "dropspec_netns")?,
            "dropspec_netns (datapath.bpf.c)",
        )?;
        let lost = LostCounters::new(
            take(&mut ebpf, "dropspec_lost")?,
            "dropspec_lost (datapath.bpf.c)",
            DATAPATH_LOST_COUNTERS,
        )?;
        let map_error = |map: &'static str| {
            move |e: aya::maps::MapError| ProbeError::Map {
                map,
                op: "opening",
                detail: error_text(&e),
            }
        };
        let ifaces = BpfHashMap::try_from(take(&mut ebpf, "datapath_ifaces")?)
            .map_err(map_error("datapath_ifaces"))?;
        let ring = RingBuf::try_from(take(&mut ebpf, "datapath_drops")?)
            .map_err(map_error("datapath_drops"))?;
        Ok(DatapathProbe {
            loaded: Loaded {
                maps: Mutex::new(Maps {
                    slots,
                    ifaces,
                    ring,
                    lost,
                    pending: BTreeMap::new(),
                    program,
                    link: None,
                    ebpf,
                }),
            },
            reasons,
            kallsyms,
        })
    }

    /// Starts recording drops on `ifindexes` of the namespace `netns_inode`.
    pub fn watch(
        &'static self,
        netns_inode: u64,
        ifindexes: &[u32],
    ) -> Result<DatapathSlot, ProbeError> {
        let mut maps = self.loaded.lock();
        let lost_at_start = maps.lost.total()?;
        maps.attach()?;
        let id = match maps.slots.add(netns_inode) {
            Ok(id) => id,
            Err(e) => {
                let _ = maps.detach_if_idle();
                return Err(e);
            }
        };
        drop(maps);
        // From here the slot's release (on drop) detaches the probe when it is the last.
        let slot = Slot::new(&self.loaded, id, netns_inode);
        let mut maps = self.loaded.lock();
        for &ifindex in ifindexes {
            let key = DatapathIface { slot: id, ifindex };
            maps.ifaces.insert(key, 1, 0).map_err(|e| ProbeError::Map {
                map: "datapath_ifaces",
                op: "adding an interface",
                detail: error_text(&e),
            })?;
        }
        Ok(DatapathSlot {
            slot,
            lost_at_start,
        })
    }

    /// The drops recorded so far on the slot's interfaces (and forgets them).
    pub fn take(&self, slot: &DatapathSlot) -> Result<Vec<KernelDrop>, ProbeError> {
        let mut maps = self.loaded.lock();
        let maps = &mut *maps;
        while let Some(item) = maps.ring.next() {
            if item.len() < std::mem::size_of::<DatapathDrop>() {
                continue;
            }
            // SAFETY: DatapathDrop is plain data, and the record is at least its size.
            let record: DatapathDrop =
                unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DatapathDrop>()) };
            maps.pending.entry(record.slot).or_default().push(record);
        }
        let lost = maps.lost.total()?.saturating_sub(slot.lost_at_start);
        if lost > 0 {
            return Err(ProbeError::Map {
                map: "datapath_drops (datapath.bpf.c)",
                op: "reading the drops of programs under test",
                detail: format!(
                    "{lost} drops could not be recorded (ring buffer full): run fewer scenarios at once"
                ),
            });
        }
        let records = maps.pending.remove(&slot.slot.id()).unwrap_or_default();
        Ok(records
            .into_iter()
            .map(|r| {
                let function = self
                    .kallsyms
                    .as_ref()
                    .and_then(|k| k.function_at(r.location))
                    .map(|f| crate::kernel::stacks::base_name(f).to_owned())
                    .unwrap_or_else(|| format!("{:#x}", r.location));
                let packet = if r.from_mac == 1 {
                    Packet::from_frame(&r.head)
                } else {
                    Packet::default()
                };
                KernelDrop {
                    ifindex: r.ifindex,
                    reason: self.reasons.describe(r.reason).into_owned(),
                    function,
                    len: r.len,
                    packet,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_v4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend([0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0];
        ip.extend([198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend(ip);
        f.extend(l4);
        f
    }

    #[test]
    fn frames_are_read_to_protocol_addresses_ports_and_flags() {
        let syn = frame_v4(6, &[0x9c, 0x40, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x10]);
        assert_eq!(
            Packet::from_frame(&syn).describe(),
            "ipv4/tcp 198.18.0.1:40000 > 198.18.0.2:80 [.]"
        );
        let udp = frame_v4(17, &[0x13, 0x88, 0x13, 0x89, 0, 8, 0, 0]);
        assert_eq!(
            Packet::from_frame(&udp).describe(),
            "ipv4/udp 198.18.0.1:5000 > 198.18.0.2:5001"
        );
        let icmp = frame_v4(1, &[8, 0, 0, 0]);
        assert_eq!(
            Packet::from_frame(&icmp).describe(),
            "ipv4/icmp 198.18.0.1 > 198.18.0.2"
        );
        let mut arp = vec![0u8; 12];
        arp.extend([0x08, 0x06, 0, 1]);
        assert_eq!(Packet::from_frame(&arp).describe(), "arp");
    }

    #[test]
    fn the_kernel_names_tc_and_xdp_drops_as_measured() {
        assert!(caused_by(
            Attach::TcIngress,
            "TC_INGRESS",
            "__netif_receive_skb_core"
        ));
        assert!(!caused_by(Attach::TcIngress, "NO_SOCKET", "__udp4_lib_rcv"));
        assert!(caused_by(Attach::Xdp, "NOT_SPECIFIED", "veth_xdp_rcv_skb"));
        assert!(!caused_by(Attach::Xdp, "NOT_SPECIFIED", "do_xdp_generic"));
        assert!(caused_by(
            Attach::XdpGeneric,
            "NOT_SPECIFIED",
            "do_xdp_generic"
        ));
    }

    #[test]
    fn without_reasons_the_function_decides_as_measured_on_5_10() {
        assert!(caused_by(
            Attach::TcIngress,
            NO_REASON,
            "__netif_receive_skb_core"
        ));
        assert!(!caused_by(Attach::TcIngress, NO_REASON, "__udp4_lib_rcv"));
        assert!(caused_by(Attach::TcEgress, NO_REASON, "__dev_queue_xmit"));
        assert!(!caused_by(
            Attach::TcEgress,
            NO_REASON,
            "__netif_receive_skb_core"
        ));
        assert!(caused_by(Attach::Xdp, NO_REASON, "veth_poll"));
        assert!(!caused_by(
            Attach::Xdp,
            NO_REASON,
            "netif_receive_generic_xdp"
        ));
        assert!(caused_by(
            Attach::XdpGeneric,
            NO_REASON,
            "netif_receive_generic_xdp"
        ));
        assert!(!caused_by(Attach::XdpGeneric, NO_REASON, "veth_poll"));
        // With reasons, the function alone is not enough.
        assert!(!caused_by(
            Attach::TcIngress,
            "NO_SOCKET",
            "__netif_receive_skb_core"
        ));
    }
}
