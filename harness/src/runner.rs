//! Runs one scenario from start to finish: probe → topology → faults → traffic → settle
//! → collect → teardown, timing each phase.

use std::time::{Duration, Instant};

use crate::crafted::{self, CraftedError};
use crate::faults::{self, FaultError};
use crate::probes::{DropProbe, ProbeError, WatchSlot};
use crate::report::{DropRow, PacketRow, Report, Timings, TrafficRow};
use crate::scenario::Scenario;
use crate::topology::{Topology, TopologyError};
use crate::traffic::{self, TrafficError, QUIET_WINDOW};

/// Longest the runner keeps watching after traffic for the kernel to go quiet.
const SETTLE_CAP: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// This machine cannot run the scenario (privileges, kernel feature, tool): a skip.
    #[error("{0}")]
    Unavailable(String),
    #[error("setting up the topology: {0}")]
    Topology(#[source] TopologyError),
    #[error("injecting faults: {0}")]
    Faults(#[source] FaultError),
    #[error("drop probe: {0}")]
    Probe(#[source] ProbeError),
    #[error("sending traffic: {0}")]
    Traffic(#[source] TrafficError),
    #[error("sending crafted packets: {0}")]
    Packets(#[source] CraftedError),
}

impl From<ProbeError> for RunError {
    fn from(e: ProbeError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Probe(e)
        }
    }
}

impl From<TopologyError> for RunError {
    fn from(e: TopologyError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Topology(e)
        }
    }
}

impl From<FaultError> for RunError {
    fn from(e: FaultError) -> Self {
        if e.is_unavailable() {
            RunError::Unavailable(e.to_string())
        } else {
            RunError::Faults(e)
        }
    }
}

/// Why a scenario cannot run on this machine at all, checked before anything is made.
pub fn unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "privileged scenario: needs root (network namespaces, netfilter and eBPF); run `sudo -E cargo test` or as root in CI"
                .into(),
        );
    }
    None
}

pub fn run(scenario: &Scenario) -> Result<Report, RunError> {
    if let Some(why) = unavailable_reason() {
        return Err(RunError::Unavailable(why));
    }
    let mut timings = Timings::default();

    // The probe first: if it cannot load, nothing has been built yet.
    let started = Instant::now();
    let probe = DropProbe::shared()?;
    timings.attach = started.elapsed();

    let started = Instant::now();
    let topology = Topology::build(scenario)?;
    faults::apply(scenario, &topology)?;
    timings.setup = started.elapsed();

    // Watching starts after set-up, so only what the traffic causes is counted.
    let started = Instant::now();
    let slots = topology
        .hosts()
        .iter()
        .map(|netns| probe.watch(netns.inode()))
        .collect::<Result<Vec<WatchSlot>, _>>()?;
    timings.attach += started.elapsed();

    let started = Instant::now();
    let mut total_drops = || total_packets(probe, &slots);
    let outcomes =
        traffic::run(scenario, &topology, &mut total_drops).map_err(RunError::Traffic)?;
    let (packet_outcomes, unread) =
        crafted::run(scenario, &topology, &mut total_drops).map_err(RunError::Packets)?;
    timings.traffic = started.elapsed();

    let started = Instant::now();
    settle(probe, &slots, Duration::from_millis(scenario.settle_min_ms));
    let drops = collect(probe, scenario, &slots)?;
    timings.settle = started.elapsed();

    let started = Instant::now();
    drop(slots);
    unread.close(&topology);
    drop(topology);
    timings.teardown = started.elapsed();

    let traffic = scenario
        .traffic
        .iter()
        .zip(outcomes)
        .map(|(spec, outcome)| TrafficRow {
            from: scenario.hosts[spec.from].name.clone(),
            to: match spec.protocol {
                crate::scenario::Protocol::Icmp => spec.destination.to_string(),
                _ => format!("{}:{}", spec.destination, spec.port),
            },
            protocol: spec.protocol,
            outcome,
        })
        .collect();
    let packets = scenario
        .packets
        .iter()
        .zip(packet_outcomes)
        .map(|(spec, outcome)| packet_row(scenario, spec, outcome))
        .collect();
    Ok(Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        kernel: kernel_release(),
        probe: probe.mode().to_string(),
        drops,
        traffic,
        packets,
        timings,
    })
}

fn packet_row(
    scenario: &Scenario,
    spec: &crate::scenario::PacketEntry,
    outcome: crafted::PacketOutcome,
) -> PacketRow {
    use crate::scenario::PacketProtocol;
    let to = match spec.protocol {
        PacketProtocol::Udp | PacketProtocol::Tcp => {
            std::net::SocketAddr::new(spec.destination, spec.port).to_string()
        }
        _ => spec.destination.to_string(),
    };
    let mut what = spec.protocol.name(spec.destination.is_ipv6());
    if spec.protocol == PacketProtocol::Tcp {
        what.push(' ');
        what.push_str(&tcp_flags_text(spec.tcp_flags));
    }
    what.push_str(&format!(" x{}, payload {}", outcome.sent, spec.payload));
    if spec.ttl != 64 {
        what.push_str(&format!(", ttl {}", spec.ttl));
    }
    if spec.corrupt != crate::packets::Corruption::None {
        what.push_str(&format!(", corrupt {}", spec.corrupt.as_str()));
    }
    if matches!(spec.protocol, PacketProtocol::Udp | PacketProtocol::Tcp) {
        what.push_str(&format!(", receiver {}", spec.receiver.as_str()));
    }
    PacketRow {
        from: scenario.hosts[spec.from].name.clone(),
        to,
        what,
        protocol: spec.protocol,
        receiver: spec.receiver,
        outcome,
    }
}

/// TCP flags as tcpdump prints them: `S`, `PA`, `R`.
fn tcp_flags_text(flags: u8) -> String {
    use crate::packets::*;
    let names = [
        (TCP_FIN, 'F'),
        (TCP_SYN, 'S'),
        (TCP_RST, 'R'),
        (TCP_PSH, 'P'),
        (TCP_ACK, 'A'),
        (TCP_URG, 'U'),
        (TCP_ECE, 'E'),
        (TCP_CWR, 'C'),
    ];
    let text: String = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, c)| *c)
        .collect();
    if text.is_empty() {
        "none".into()
    } else {
        text
    }
}

fn total_packets(probe: &DropProbe, slots: &[WatchSlot]) -> u64 {
    slots
        .iter()
        .filter_map(|slot| probe.read(slot).ok())
        .flatten()
        .map(|d| d.packets)
        .sum()
}

/// Waits until no new drop has been counted for a quiet window (and at least `minimum`),
/// so late drops of the traffic are still seen without a long fixed sleep.
fn settle(probe: &DropProbe, slots: &[WatchSlot], minimum: Duration) {
    let start = Instant::now();
    let mut last = total_packets(probe, slots);
    let mut last_change = start;
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let now = Instant::now();
        let total = total_packets(probe, slots);
        if total != last {
            last = total;
            last_change = now;
        }
        let quiet = now.duration_since(last_change) >= QUIET_WINDOW;
        if (quiet && now.duration_since(start) >= minimum)
            || now.duration_since(start) >= SETTLE_CAP
        {
            return;
        }
    }
}

fn collect(
    probe: &DropProbe,
    scenario: &Scenario,
    slots: &[WatchSlot],
) -> Result<Vec<DropRow>, RunError> {
    let mut rows = Vec::new();
    for (host, slot) in scenario.hosts.iter().zip(slots) {
        for d in probe.read(slot)? {
            let protocol = if d.l4.is_empty() {
                d.l3.to_string()
            } else {
                format!("{}/{}", d.l3, d.l4)
            };
            rows.push(DropRow {
                host: host.name.clone(),
                reason: d.reason,
                function: d.function,
                protocol,
                packets: d.packets,
                bytes: d.bytes,
            });
        }
    }
    rows.sort();
    Ok(rows)
}

pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}
