//! What a scenario run produced, how it is printed, and how it is held against the
//! scenario's expectations.
//!
//! `render_snapshot` is the part that goes into `snapshots/`: only what is stable from
//! one run to the next on the same kernel (names and counts; no namespace inodes,
//! addresses of kernel code or timings). `render` adds the rest for people.

use std::fmt::Write as _;
use std::time::Duration;

use crate::crafted::PacketOutcome;
use crate::scenario::{PacketExpect, PacketProtocol, Protocol, Receiver, Scenario, TrafficExpect};
use crate::traffic::TrafficOutcome;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    /// `uname -r` of the kernel the scenario ran on.
    pub kernel: String,
    /// Which attachment of the drop probe counted the drops.
    pub probe: String,
    /// Why every drop's reason is `UNAVAILABLE` (a kernel before 5.17, whose kfree_skb
    /// passes none); None where the kernel reports reasons. Expectations by reason, and
    /// the causes named from reasons, cannot be checked then: see [`unchecked_without_reasons`].
    #[serde(default)]
    pub reasons_unavailable: Option<String>,
    pub drops: Vec<DropRow>,
    pub traffic: Vec<TrafficRow>,
    /// Auxiliary tracepoints that fired, per host: (host, event, count).
    pub events: Vec<(String, String, u64)>,
    /// Which mechanism dropped the packets, per host (see `classify`).
    pub causes: Vec<crate::classify::Cause>,
    /// The kernel's own counters that grew during the scenario, per host name.
    pub counters: Vec<(String, crate::counters::HostCounters)>,
    /// Machine-wide sysctls changed for the traffic: (key, value, original).
    pub global_sysctls: Vec<(String, String, String)>,
    /// One row per `[[packets]]` entry.
    pub packets: Vec<PacketRow>,
    /// Retina's hook points (the second probe family). Not in the snapshot: whether they
    /// can be counted depends on kernel features (kprobes, fexit), not on behaviour.
    #[serde(default)]
    pub hooks: HookReport,
    /// Programs under test: what the kernel saw each drop, what it reported, the difference.
    #[serde(default)]
    pub datapath: Vec<DatapathRow>,
    /// One row per `[[steps]]` entry, in order (empty without steps).
    #[serde(default)]
    pub steps: Vec<crate::steps::StepRow>,
    /// Whether the probe counted `icmp:icmp_send` on this run's kernel: then every ICMP
    /// error the kernel counts as sent must be among the events ([`probe_missed`]).
    #[serde(default)]
    pub icmp_send_watched: bool,
    /// Earlier attempts of this scenario in the same run, each discarded because the
    /// probe was shown to have missed events ([`probe_missed`]), with what it missed.
    #[serde(default)]
    pub reruns: Vec<String>,
    /// What each `command` fault printed (`command on HOST: ARGV: exit 0` and its
    /// output): not in the snapshot, the output of a tool follows its version.
    #[serde(default)]
    pub commands: Vec<String>,
    pub timings: Timings,
}

/// One program under test (`[[programs]]`): the kernel's drops at its attach point
/// against the program's own accounting (see `watchers::datapath`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatapathRow {
    pub host: String,
    pub interface: String,
    /// `tc_ingress`, `tc_egress`, `xdp`, `xdp_generic`.
    pub attach: String,
    pub program: String,
    pub object: String,
    /// How it was attached on this kernel (`tcx`, `cls_bpf`, `xdp (driver)`): not in the
    /// snapshot, since it follows the kernel version, not the program's behaviour.
    pub how: String,
    /// The kernel's name for the program's drops here: `TC_INGRESS at
    /// __netif_receive_skb_core`, `NOT_SPECIFIED at veth_xdp_rcv_skb`.
    pub kernel_names: Vec<String>,
    pub kernel_drops: u64,
    pub kernel_bytes: u64,
    /// The dropped packets, grouped: (description, count).
    pub kernel_packets: Vec<(String, u64)>,
    /// Which channel the comparison uses: `events` (per packet when the records carry
    /// it) or `metrics`.
    pub channel: String,
    /// What the program reported, per code: (channel, code, name, count, bytes).
    pub reported: Vec<ReportedDrops>,
    pub reported_drops: u64,
    /// Kernel drops the program did not report.
    pub unreported_drops: u64,
    /// The unreported packets, grouped: (description, count); when the program's reports
    /// carry no packet, every dropped packet is a candidate and `matched_by_packet` is false.
    pub unreported_packets: Vec<(String, u64)>,
    pub matched_by_packet: bool,
    /// Reports without a kernel drop (double counting, or a drop the kernel did not make).
    pub overreported_drops: u64,
    /// Other drops on the same interface (not the program's): (reason at function, count).
    pub other_drops: Vec<(String, u64)>,
    /// Events the program's channel lost (perf buffer full).
    pub events_lost: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReportedDrops {
    /// `events` or `metrics`.
    pub channel: String,
    pub code: u32,
    /// The scenario's name for the code, if it gives one.
    pub name: Option<String>,
    pub count: u64,
    pub bytes: u64,
}

/// `ipv4/udp 198.18.0.1:41750 > 198.18.0.2:7` → `ipv4/udp > 198.18.0.2:7`.
fn without_source(packet: &str) -> String {
    match packet
        .split_once(' ')
        .and_then(|(proto, rest)| rest.split_once(" > ").map(|(_, dst)| (proto, dst)))
    {
        Some((proto, dst)) => format!("{proto} > {dst}"),
        None => packet.to_owned(),
    }
}

impl DatapathRow {
    fn render(&self, out: &mut String, full: bool) {
        writeln!(
            out,
            "  {} {} {}: {} ({})",
            self.host, self.interface, self.attach, self.program, self.object
        )
        .unwrap();
        let names = if self.kernel_names.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.kernel_names.join(", "))
        };
        writeln!(
            out,
            "    kernel dropped {} packets, {} bytes{names}",
            self.kernel_drops, self.kernel_bytes
        )
        .unwrap();
        // In the snapshot, packets by protocol and destination only: a socket's source
        // port is ephemeral. The unreported packets below are named in full.
        let mut packets: Vec<(String, u64)> = Vec::new();
        for (packet, count) in &self.kernel_packets {
            let text = if full {
                packet.clone()
            } else {
                without_source(packet)
            };
            match packets.iter_mut().find(|(p, _)| *p == text) {
                Some((_, c)) => *c += count,
                None => packets.push((text, *count)),
            }
        }
        for (packet, count) in packets {
            writeln!(out, "      {packet} x{count}").unwrap();
        }
        writeln!(
            out,
            "    program reported {} ({})",
            self.reported_drops, self.channel
        )
        .unwrap();
        for r in &self.reported {
            let name = r.name.as_deref().map_or(String::new(), |n| format!("{n} "));
            let bytes = if r.bytes > 0 {
                format!(", {} bytes", r.bytes)
            } else {
                String::new()
            };
            writeln!(
                out,
                "      {}: {name}({}) x{}{bytes}",
                r.channel, r.code, r.count
            )
            .unwrap();
        }
        writeln!(out, "    unreported {}", self.unreported_drops).unwrap();
        if !self.matched_by_packet && !self.unreported_packets.is_empty() {
            writeln!(
                out,
                "      (the reports carry no packet: which of these is not known)"
            )
            .unwrap();
        }
        for (packet, count) in &self.unreported_packets {
            writeln!(out, "      {packet} x{count}").unwrap();
        }
        if self.overreported_drops > 0 {
            writeln!(
                out,
                "    reported without a kernel drop {}",
                self.overreported_drops
            )
            .unwrap();
        }
        for (what, count) in &self.other_drops {
            writeln!(
                out,
                "    other drops on {}: {what} x{count}",
                self.interface
            )
            .unwrap();
        }
        if self.events_lost > 0 {
            writeln!(
                out,
                "    events lost by the program's channel: {}",
                self.events_lost
            )
            .unwrap();
        }
    }
}

/// What the hook-point family saw, and which of its points this kernel let it watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookReport {
    /// One per hook point: how it was attached, or why it could not be.
    pub points: Vec<HookPointRow>,
    pub counts: Vec<HookRow>,
    /// Kernel modules the family loaded to reach their functions.
    pub modules_loaded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookPointRow {
    /// Retina's name for the point's failure (`IPTABLE_RULE_DROP`, …).
    pub hook: String,
    pub function: String,
    /// `fentry/fexit` or `kprobe/kretprobe` when counted; the reason when not.
    pub attached: Result<String, String>,
    /// Why a preferred attachment was passed over.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// Failed calls of one hook point in one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct HookRow {
    pub host: String,
    pub hook: String,
    pub function: String,
    /// The failing return: a negative errno, or 0 for an NF_DROP verdict.
    pub ret: i32,
    /// `ipv4`, `ipv6` for the netfilter points; empty for the socket calls.
    pub protocol: String,
    pub count: u64,
    pub bytes: u64,
}

impl HookReport {
    /// Why `hook` was not counted, or None if it was.
    pub fn unavailable(&self, hook: &str) -> Option<&str> {
        self.points
            .iter()
            .find(|p| p.hook == hook)
            .and_then(|p| p.attached.as_ref().err())
            .map(String::as_str)
    }

    fn render(&self, out: &mut String) {
        let counted: Vec<&HookPointRow> =
            self.points.iter().filter(|p| p.attached.is_ok()).collect();
        if counted.is_empty() {
            if let Some(p) = self.points.first() {
                let why = p.attached.as_ref().err().map_or("", String::as_str);
                writeln!(out, "hook points (Retina): unavailable: {why}").unwrap();
            }
            return;
        }
        let how: Vec<String> = self
            .points
            .iter()
            .map(|p| match &p.attached {
                Ok(how) => format!("{} {how}", p.function),
                Err(_) => format!("{} unavailable", p.function),
            })
            .collect();
        writeln!(out, "hook points (Retina): {}", how.join(", ")).unwrap();
        for p in &self.points {
            if let Err(why) = &p.attached {
                writeln!(out, "  {} ({}) not counted: {why}", p.hook, p.function).unwrap();
            }
            if let Some(why) = &p.fallback {
                writeln!(out, "  {} attached by kprobe because {why}", p.function).unwrap();
            }
        }
        if !self.modules_loaded.is_empty() {
            writeln!(out, "  loaded modules: {}", self.modules_loaded.join(", ")).unwrap();
        }
        for r in &self.counts {
            let protocol = if r.protocol.is_empty() {
                String::new()
            } else {
                format!("  {}", r.protocol)
            };
            writeln!(
                out,
                "  {}  {}  {} returned {}{protocol}  {} calls  {} bytes",
                r.host, r.hook, r.function, r.ret, r.count, r.bytes
            )
            .unwrap();
        }
    }
}

/// Drops of one reason at one kernel function in one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct DropRow {
    pub host: String,
    pub reason: String,
    /// The reason's number on this kernel (numbers differ between kernels; names do not).
    pub reason_number: u32,
    pub function: String,
    /// `ipv4/icmp`, `ipv4/udp`, `arp`, …
    pub protocol: String,
    /// Where in the path it happened: the first stack frame that runs a netfilter hook or
    /// a device entry point (`ip_local_deliver`, `ip_forward`, `__ip_local_out`, …).
    pub hook: Option<String>,
    pub packets: u64,
    pub bytes: u64,
    /// A short kernel stack, innermost first (the drops with the most packets, when
    /// several stacks lead to the same row).
    pub stack: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrafficRow {
    pub from: String,
    pub to: String,
    pub protocol: Protocol,
    pub outcome: TrafficOutcome,
}

/// What one `[[packets]]` entry sent and what came of it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PacketRow {
    pub from: String,
    /// `198.18.0.2:5000`, `[2001:db8::2]:5000`, `198.18.0.2`.
    pub to: String,
    /// `udp x3, payload 100, corrupt checksum, receiver reads`.
    pub what: String,
    pub protocol: PacketProtocol,
    pub receiver: Receiver,
    pub outcome: PacketOutcome,
}

impl PacketRow {
    /// The outcomes that mean something for this entry, in a fixed order.
    fn fields(&self) -> Vec<(&'static str, u32)> {
        let o = &self.outcome;
        let mut fields = Vec::new();
        if self.receiver == Receiver::Reads {
            fields.push(("delivered", o.delivered));
        }
        if self.protocol == PacketProtocol::Echo {
            fields.push(("answered", o.answered));
        }
        fields.push(("errors", o.errors));
        if self.protocol == PacketProtocol::Tcp {
            fields.push(("resets", o.resets));
        }
        fields
    }
}

/// What the watchers saw over one scenario, per host name: each watcher fills its part
/// (each in its module under `watchers/`), and [`Report::new`] makes the report of it.
#[derive(Debug, Default)]
pub struct Observations {
    /// Which attachment of the drop probe counted the drops.
    pub probe: String,
    /// Why the drops have no reasons (a kernel before 5.17), when they have none.
    pub reasons_unavailable: Option<String>,
    pub drops: Vec<DropRow>,
    /// Auxiliary tracepoints that fired: (host, event, count).
    pub events: Vec<(String, String, u64)>,
    /// The kernel's own counters that moved: (host, delta).
    pub counters: Vec<(String, crate::counters::HostCounters)>,
    /// The same counters' values at the end, per host, with every rule the host had
    /// during the run (which rules a host has, a removed one included).
    pub counter_totals: Vec<(String, crate::counters::HostCounters)>,
    pub hooks: HookReport,
    pub datapath: Vec<DatapathRow>,
    /// Whether `icmp:icmp_send` was counted (see [`Report::icmp_send_watched`]).
    pub icmp_send_watched: bool,
}

impl Observations {
    /// Which mechanism dropped the packets, per host, from the drops and the counters.
    pub fn causes(&self) -> Vec<crate::classify::Cause> {
        self.counters
            .iter()
            .zip(&self.counter_totals)
            .flat_map(|((host, delta), (_, total))| {
                let drops: Vec<crate::classify::Drop<'_>> = self
                    .drops
                    .iter()
                    .filter(|d| &d.host == host)
                    .map(|d| crate::classify::Drop {
                        reason: &d.reason,
                        function: &d.function,
                        protocol: &d.protocol,
                        packets: d.packets,
                    })
                    .collect();
                crate::classify::classify_host(host, &drops, delta, total)
            })
            .collect()
    }
}

/// Where a scenario's time went, phase by phase.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Timings {
    pub setup: Duration,
    pub attach: Duration,
    pub traffic: Duration,
    pub settle: Duration,
    pub teardown: Duration,
    /// The waits that reached their cap instead of a signal from the kernel
    /// (`completion`): the results of these entries relied on a window.
    #[serde(default)]
    pub relied_on_window: Vec<String>,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.setup + self.attach + self.traffic + self.settle + self.teardown
    }
}

impl Report {
    /// The report of one run: what the watchers saw, and what came of each traffic and
    /// `[[packets]]` entry.
    pub fn new(
        scenario: &Scenario,
        kernel: String,
        seen: Observations,
        traffic: Vec<TrafficOutcome>,
        packets: Vec<PacketOutcome>,
        global_sysctls: Vec<(String, String, String)>,
        timings: Timings,
    ) -> Report {
        let traffic = scenario
            .traffic
            .iter()
            .zip(traffic)
            .map(|(spec, outcome)| TrafficRow {
                from: scenario.hosts[spec.from].name.clone(),
                to: match spec.protocol {
                    Protocol::Icmp => spec.destination.to_string(),
                    _ => std::net::SocketAddr::new(spec.destination, spec.port).to_string(),
                },
                protocol: spec.protocol,
                outcome,
            })
            .collect();
        let packets = scenario
            .packets
            .iter()
            .zip(packets)
            .map(|(spec, outcome)| packet_row(scenario, spec, outcome))
            .collect();
        Report {
            scenario: scenario.name.clone(),
            description: scenario.description.clone(),
            kernel,
            causes: seen.causes(),
            probe: seen.probe,
            reasons_unavailable: seen.reasons_unavailable,
            drops: seen.drops,
            traffic,
            events: seen.events,
            counters: seen.counters,
            global_sysctls,
            packets,
            hooks: seen.hooks,
            datapath: seen.datapath,
            steps: Vec::new(),
            icmp_send_watched: seen.icmp_send_watched,
            reruns: Vec::new(),
            commands: Vec::new(),
            timings,
        }
    }

    /// The stable text kept under `snapshots/`.
    pub fn render_snapshot(&self) -> String {
        let mut out = String::new();
        writeln!(out, "scenario: {}", self.scenario).unwrap();
        // The original value differs between machines, so only the change is kept here.
        for (key, value, _) in &self.global_sysctls {
            writeln!(
                out,
                "global sysctl: {key} = {value} during the traffic, then restored"
            )
            .unwrap();
        }
        if self.drops.is_empty() {
            writeln!(out, "drops: none").unwrap();
        } else {
            // Said once per snapshot of such a kernel, so its rows' UNAVAILABLE reads
            // right; a scenario without drops reads the same on every kernel.
            match self.reasons_unavailable {
                Some(_) => writeln!(out, "drops (no drop reasons on this kernel: before 5.17):"),
                None => writeln!(out, "drops:"),
            }
            .unwrap();
            let rows: Vec<[String; 7]> = self
                .drops
                .iter()
                .map(|d| {
                    [
                        d.host.clone(),
                        d.reason.clone(),
                        d.function.clone(),
                        d.hook
                            .as_ref()
                            .map_or_else(|| "-".to_owned(), |h| format!("via {h}")),
                        d.protocol.clone(),
                        format!("{} packets", d.packets),
                        format!("{} bytes", d.bytes),
                    ]
                })
                .collect();
            write_table(&mut out, &rows);
        }
        if !self.events.is_empty() {
            writeln!(out, "events:").unwrap();
            for (host, event, count) in &self.events {
                writeln!(out, "  {host}  {event}  {count}").unwrap();
            }
        }
        if !self.causes.is_empty() {
            writeln!(out, "causes:").unwrap();
            for c in &self.causes {
                writeln!(
                    out,
                    "  {}  {}  {} packets  ({})",
                    c.host, c.cause, c.packets, c.detail
                )
                .unwrap();
            }
        }
        let counters: Vec<String> = self
            .counters
            .iter()
            .flat_map(|(host, c)| drop_counters(c).map(move |line| format!("  {host}  {line}")))
            .collect();
        if !counters.is_empty() {
            writeln!(out, "counters:").unwrap();
            for line in counters {
                writeln!(out, "{line}").unwrap();
            }
        }
        if !self.traffic.is_empty() {
            writeln!(out, "traffic:").unwrap();
            for (i, t) in self.traffic.iter().enumerate() {
                writeln!(
                    out,
                    "  #{} {} -> {} {} x{}: {}",
                    i + 1,
                    t.from,
                    t.to,
                    t.protocol.as_str(),
                    t.outcome.sent,
                    outcome_text(t.protocol, &t.outcome)
                )
                .unwrap();
            }
        }
        if !self.packets.is_empty() {
            writeln!(out, "packets:").unwrap();
            for (i, p) in self.packets.iter().enumerate() {
                let outcome: Vec<String> = p
                    .fields()
                    .iter()
                    .map(|(name, value)| format!("{name} {value}"))
                    .collect();
                writeln!(
                    out,
                    "  #{} {} -> {} {}: {}",
                    i + 1,
                    p.from,
                    p.to,
                    p.what,
                    outcome.join(", ")
                )
                .unwrap();
            }
        }
        if !self.steps.is_empty() {
            writeln!(out, "steps:").unwrap();
            for (i, step) in self.steps.iter().enumerate() {
                let result = match (&step.again, step.accepted) {
                    (Some((Protocol::Tcp, o)), _) => {
                        format!(": sent on {}, delivered {}", o.sent, o.delivered)
                    }
                    (Some((protocol, o)), _) => {
                        format!(": x{}: {}", o.sent, outcome_text(*protocol, o))
                    }
                    (None, Some(n)) => format!(": accepted {n}"),
                    (None, None) => String::new(),
                };
                writeln!(out, "  {}. {}{result}", i + 1, step.label).unwrap();
            }
        }
        if !self.datapath.is_empty() {
            writeln!(out, "programs under test:").unwrap();
            for row in &self.datapath {
                row.render(&mut out, false);
            }
        }
        out
    }

    /// The snapshot text plus what varies between runs: kernel, probe, timings.
    pub fn render(&self, with_timings: bool) -> String {
        let mut out = format!(
            "== {} — {}\nkernel {}, probe {}\n",
            self.scenario, self.description, self.kernel, self.probe
        );
        for (key, _, original) in &self.global_sysctls {
            writeln!(out, "restored global sysctl {key} to {original}").unwrap();
        }
        out.push_str(&self.render_snapshot());
        for line in &self.commands {
            writeln!(out, "{line}").unwrap();
        }
        self.hooks.render(&mut out);
        for row in &self.datapath {
            writeln!(
                out,
                "program {} attached to {} of {} by {}; the packets it dropped:",
                row.program, row.interface, row.host, row.how
            )
            .unwrap();
            for (packet, count) in &row.kernel_packets {
                writeln!(out, "  {packet} x{count}").unwrap();
            }
        }
        for d in self.drops.iter().filter(|d| !d.stack.is_empty()) {
            writeln!(
                out,
                "stack of {} {} at {}: {}",
                d.host,
                d.reason,
                d.function,
                d.stack.join(" <- ")
            )
            .unwrap();
        }
        if with_timings {
            let t = &self.timings;
            writeln!(
                out,
                "timings: setup {} attach {} traffic {} settle {} teardown {} total {}",
                ms(t.setup),
                ms(t.attach),
                ms(t.traffic),
                ms(t.settle),
                ms(t.teardown),
                ms(t.total())
            )
            .unwrap();
        }
        for rerun in &self.reruns {
            writeln!(out, "discarded (run again): {rerun}").unwrap();
        }
        if !self.timings.relied_on_window.is_empty() {
            writeln!(
                out,
                "relied on a window (no signal from the kernel before the cap): {}",
                self.timings.relied_on_window.join(", ")
            )
            .unwrap();
        }
        out
    }
}

/// The counter deltas that speak of drops and errors, for the snapshot: every conntrack
/// statistic and rule counter that moved, and the SNMP counters whose names say error,
/// drop, discard or overflow. Plain traffic counters (InReceives, OutSegs…) move with
/// every packet and say nothing a drop row does not.
fn drop_counters(c: &crate::counters::HostCounters) -> impl Iterator<Item = String> + '_ {
    let kernel = kernel_drop_counters(c).map(|(k, v)| format!("{k} +{v}"));
    let rules = c.rules.iter().filter(|r| r.packets > 0).map(|r| {
        format!(
            "{} {} {}: {} +{} packets",
            r.backend, r.table, r.chain, r.rule, r.packets
        )
    });
    // A qdisc's packet count moves with every packet it passes, and tbf's overlimits
    // with every time its watchdog found the bucket short (a matter of timer timing);
    // its drops, requeues and left-over backlog are the stable evidence.
    let qdisc = c
        .qdisc
        .iter()
        .filter(|(k, _)| !k.ends_with("/packets") && !k.ends_with("/overlimits"))
        .map(|(k, v)| format!("qdisc/{k} +{v}"));
    kernel.chain(rules).chain(qdisc)
}

/// The kernel's own drop-speaking counters (SNMP and conntrack, not the rules the
/// scenario installed), by their expectation names (`Udp.InErrors`, `conntrack.found`).
pub fn kernel_drop_counters(
    c: &crate::counters::HostCounters,
) -> impl Iterator<Item = (String, u64)> + '_ {
    const DROP_WORDS: &[&str] = &[
        "Err",
        "Drop",
        "Discard",
        "Overflow",
        "NoPorts",
        "NoRoutes",
        "Fails",
        "RPFilter",
        "TimeExcds",
        "DestUnreach",
        "OutRsts",
        "Csum",
    ];
    let snmp = c
        .snmp
        .iter()
        .filter(|(k, _)| DROP_WORDS.iter().any(|w| k.contains(w)))
        .map(|(k, v)| (k.clone(), *v));
    let conntrack = c
        .conntrack
        .iter()
        .map(|(k, v)| (format!("conntrack.{k}"), *v));
    snmp.chain(conntrack)
}

/// The delta of one counter by its expectation name: `Group.Field`, `conntrack.<stat>`
/// `qdisc/<dev>/<stat>` or `link/<dev>/<stat>`.
fn counter_delta(c: &crate::counters::HostCounters, name: &str) -> u64 {
    if let Some(key) = name.strip_prefix("qdisc/") {
        return c.qdisc.get(key).copied().unwrap_or(0);
    }
    if let Some(key) = name.strip_prefix("link/") {
        return c.link.get(key).copied().unwrap_or(0);
    }
    match name.strip_prefix("conntrack.") {
        Some(stat) => c.conntrack.get(stat).copied().unwrap_or(0),
        None => c.snmp.get(name).copied().unwrap_or(0),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

fn outcome_text(protocol: Protocol, o: &TrafficOutcome) -> String {
    match protocol {
        Protocol::Icmp => format!(
            "answered {}, errors {}, blocked {}",
            o.answered, o.errors, o.blocked
        ),
        Protocol::Udp => format!(
            "delivered {}, errors {}, blocked {}",
            o.delivered, o.errors, o.blocked
        ),
        Protocol::Tcp => format!(
            "connected {}, refused {}, timed_out {}, unreachable {}",
            o.connected, o.refused, o.timed_out, o.unreachable
        ),
    }
}

/// Left-aligned columns, numbers right-aligned, two-space indent.
fn write_table(out: &mut String, rows: &[[String; 7]]) {
    let mut widths = [0usize; 7];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i >= 5 {
                write!(line, "  {cell:>w$}").unwrap();
            } else {
                write!(line, "  {cell:<w$}").unwrap();
            }
        }
        writeln!(out, "{}", line.trim_end()).unwrap();
    }
}

/// One way a run differed from the scenario's expectations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub String);

/// Whether the scenario's inline expectations describe the kernel the report came from
/// (`since_kernel`); when they do not, only the kernel's own baseline is asserted.
pub fn expectations_apply(scenario: &Scenario, report: &Report) -> bool {
    match (
        scenario.expect.since_kernel,
        crate::scenario::parse_kernel_version(&report.kernel),
    ) {
        (Some(since), Some(running)) => running >= since,
        _ => true,
    }
}

/// Hook-point expectations this run could not hold the kernel to, each with why: the
/// kernel would not let the point be attached. A caller must show these as skipped.
pub fn skipped_hook_expectations(scenario: &Scenario, report: &Report) -> Vec<String> {
    if !expectations_apply(scenario, report) {
        return Vec::new();
    }
    // Hooks unavailable for the same reason (all of them, on a kernel without kprobes)
    // are named together, the reason once.
    let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
    for e in &scenario.expect.hooks {
        let Some(why) = report.hooks.unavailable(&e.hook) else {
            continue;
        };
        match by_reason.iter_mut().find(|(w, _)| *w == why) {
            Some((_, hooks)) if hooks.contains(&e.hook.as_str()) => {}
            Some((_, hooks)) => hooks.push(&e.hook),
            None => by_reason.push((why, vec![&e.hook])),
        }
    }
    by_reason
        .into_iter()
        .map(|(why, hooks)| format!("{}: {why}", hooks.join(", ")))
        .collect()
}

/// Counted hook points are held to the expectations exactly; a scenario that expects
/// any hook point also may not see unexpected failures at the others it can count.
fn check_hooks(scenario: &Scenario, report: &Report, mismatches: &mut Vec<Mismatch>) {
    let mut matched = vec![false; report.hooks.counts.len()];
    for expect in &scenario.expect.hooks {
        if report.hooks.unavailable(&expect.hook).is_some() {
            continue;
        }
        let host = &scenario.hosts[expect.host].name;
        let mut actual = 0;
        for (row, seen) in report.hooks.counts.iter().zip(&mut matched) {
            if &row.host == host
                && row.hook == expect.hook
                && expect.ret.is_none_or(|r| r == row.ret)
            {
                actual += row.count;
                *seen = true;
            }
        }
        if actual != expect.count {
            let ret = expect
                .ret
                .map(|r| format!(" returning {r}"))
                .unwrap_or_default();
            mismatches.push(Mismatch(format!(
                "host {host}: expected {} {} call(s){ret}, got {actual}",
                expect.count, expect.hook
            )));
        }
    }
    if scenario.expect.hooks.is_empty() || !scenario.expect.no_other_drops {
        return;
    }
    for (row, seen) in report.hooks.counts.iter().zip(&matched) {
        if !seen {
            mismatches.push(Mismatch(format!(
                "host {}: unexpected {} {} call(s) ({} returned {}); expect them with [[expect.hooks]] or set expect.allow_other_drops = true",
                row.host, row.count, row.hook, row.function, row.ret
            )));
        }
    }
}

/// `[[expect.datapath]]`: the unreported (and optionally kernel-seen and reported) drops
/// of one program or all of them. A failure lists the unreported packets.
fn check_datapath(scenario: &Scenario, report: &Report, mismatches: &mut Vec<Mismatch>) {
    for expect in &scenario.expect.datapath {
        let rows: Vec<&DatapathRow> = report
            .datapath
            .iter()
            .filter(|r| expect.program.as_ref().is_none_or(|p| *p == r.program))
            .collect();
        let which = expect.program.as_ref().map_or_else(
            || "programs under test".to_owned(),
            |p| format!("program {p}"),
        );
        let sum = |f: fn(&DatapathRow) -> u64| rows.iter().map(|r| f(r)).sum::<u64>();
        let fields = [
            (
                "unreported",
                expect.unreported_drops,
                sum(|r| r.unreported_drops),
            ),
            ("kernel-seen", expect.kernel_drops, sum(|r| r.kernel_drops)),
            ("reported", expect.reported_drops, sum(|r| r.reported_drops)),
        ];
        for (what, expected, actual) in fields {
            let Some(expected) = expected else { continue };
            if expected == actual {
                continue;
            }
            let mut message = format!("{which}: expected {expected} {what} drop(s), got {actual}");
            if what == "unreported" {
                for r in &rows {
                    for (packet, count) in &r.unreported_packets {
                        message.push_str(&format!(
                            "\n  unreported by {} at {} {}: {packet} x{count}",
                            r.program, r.interface, r.attach
                        ));
                    }
                }
            }
            mismatches.push(Mismatch(message));
        }
    }
}

fn check_drops_and_causes(scenario: &Scenario, report: &Report, mismatches: &mut Vec<Mismatch>) {
    let mut matched = vec![false; report.drops.len()];
    for expect in &scenario.expect.drops {
        let host = &scenario.hosts[expect.host].name;
        let mut actual = 0;
        for (row, seen) in report.drops.iter().zip(&mut matched) {
            let function_matches = expect.function.as_ref().is_none_or(|f| *f == row.function);
            if &row.host == host && row.reason == expect.reason && function_matches {
                actual += row.packets;
                *seen = true;
            }
        }
        if actual != expect.count {
            let at = expect
                .function
                .as_ref()
                .map(|f| format!(" at {f}"))
                .unwrap_or_default();
            mismatches.push(Mismatch(format!(
                "host {host}: expected {} {} drop(s){at}, got {actual}",
                expect.count, expect.reason
            )));
        }
    }
    if scenario.expect.no_other_drops {
        for (row, seen) in report.drops.iter().zip(&matched) {
            if !seen {
                mismatches.push(Mismatch(format!(
                    "host {}: unexpected {} {} drop(s) at {} ({}); expect them with [[expect.drops]] or set expect.allow_other_drops = true",
                    row.host, row.packets, row.reason, row.function, row.protocol
                )));
            }
        }
    }
    for expect in &scenario.expect.causes {
        let host = &scenario.hosts[expect.host].name;
        let actual: u64 = report
            .causes
            .iter()
            .filter(|c| &c.host == host && c.cause == expect.cause)
            .map(|c| c.packets)
            .sum();
        if actual != expect.count {
            mismatches.push(Mismatch(format!(
                "host {host}: expected {} packet(s) dropped by cause {}, got {actual}",
                expect.count, expect.cause
            )));
        }
    }
}

/// On a kernel without drop reasons: expectations that name a function hold the drops
/// at that function (whatever their reasons would have been; several expectations at one
/// function hold their sum), expectations by reason alone and by cause cannot be held
/// (see [`unchecked_without_reasons`]), and with `no_other_drops` a drop at a function
/// no expectation names is unexpected, unless the host has expectations by reason alone
/// (it may be theirs): then the drops at no named function must add up to those.
fn check_drops_without_reasons(
    scenario: &Scenario,
    report: &Report,
    mismatches: &mut Vec<Mismatch>,
) {
    use std::collections::BTreeMap;
    // (host, function) → expected count; host → expected count of reason-only entries.
    let mut at_function: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut reason_only: BTreeMap<&str, u64> = BTreeMap::new();
    for expect in &scenario.expect.drops {
        let host = scenario.hosts[expect.host].name.as_str();
        match &expect.function {
            Some(f) => *at_function.entry((host, f.as_str())).or_default() += expect.count,
            None => *reason_only.entry(host).or_default() += expect.count,
        }
    }
    for (&(host, function), &expected) in &at_function {
        let actual: u64 = report
            .drops
            .iter()
            .filter(|d| d.host == host && d.function == function)
            .map(|d| d.packets)
            .sum();
        if actual != expected {
            mismatches.push(Mismatch(format!(
                "host {host}: expected {expected} drop(s) at {function} (reasons unavailable on this kernel), got {actual}"
            )));
        }
    }
    if !scenario.expect.no_other_drops {
        return;
    }
    let mut elsewhere: BTreeMap<&str, Vec<&DropRow>> = BTreeMap::new();
    for d in &report.drops {
        if !at_function.contains_key(&(d.host.as_str(), d.function.as_str())) {
            elsewhere.entry(d.host.as_str()).or_default().push(d);
        }
    }
    for host in scenario.hosts.iter().map(|h| h.name.as_str()) {
        let rows = elsewhere.remove(host).unwrap_or_default();
        let actual: u64 = rows.iter().map(|d| d.packets).sum();
        match reason_only.get(host) {
            Some(&expected) if expected != actual => mismatches.push(Mismatch(format!(
                "host {host}: expected {expected} drop(s) by reason (unavailable on this kernel) at functions no expectation names, got {actual}"
            ))),
            Some(_) => {}
            None => {
                for row in rows {
                    mismatches.push(Mismatch(format!(
                        "host {}: unexpected {} drop(s) at {} ({}); expect them with [[expect.drops]] or set expect.allow_other_drops = true",
                        row.host, row.packets, row.function, row.protocol
                    )));
                }
            }
        }
    }
}

/// The inline expectations a kernel without drop reasons cannot check, one line each:
/// drops expected by reason alone (no `function`) and causes that did not hold (most are
/// named from reasons; one named from counters alone holds as on any kernel).
/// Empty where the kernel reports reasons. The verdict holds such a scenario to the
/// kernel's own baseline instead, or skips it (`verdict.rs`, rule 6).
pub fn unchecked_without_reasons(scenario: &Scenario, report: &Report) -> Vec<String> {
    if report.reasons_unavailable.is_none() || !expectations_apply(scenario, report) {
        return Vec::new();
    }
    let drops = scenario
        .expect
        .drops
        .iter()
        .filter(|e| e.function.is_none())
        .map(|e| {
            format!(
                "{} {} drop(s) at {}",
                e.count, e.reason, scenario.hosts[e.host].name
            )
        });
    // A cause named from the counters alone (a listen overflow) still holds: only one
    // that does not is left to the baseline, since it may need the reason.
    let causes = scenario
        .expect
        .causes
        .iter()
        .filter(|e| {
            let host = &scenario.hosts[e.host].name;
            let actual: u64 = report
                .causes
                .iter()
                .filter(|c| &c.host == host && c.cause == e.cause)
                .map(|c| c.packets)
                .sum();
            actual != e.count
        })
        .map(|e| {
            format!(
                "{} packet(s) of cause {} at {}",
                e.count, e.cause, scenario.hosts[e.host].name
            )
        });
    drops.chain(causes).collect()
}

/// Holds a report against the scenario's inline expectations.
/// Counter that grows when a SYN is retransmitted (`/proc/net/netstat`).
const SYN_RETRANSMITS: &str = "TcpExt.TCPSynRetrans";

/// Signs that the run measured the harness rather than the scenario, whatever the
/// expectations say. The harness closes an unanswered TCP attempt once the kernel is done
/// with its SYN, long before the 1 s retransmission timer; a retransmitted SYN means it
/// was held off the CPU past that, and every count of those SYNs' drops is too high.
/// A scenario that means to retransmit says so by expecting the counter on that host.
pub fn harness_interference(scenario: &Scenario, report: &Report) -> Vec<String> {
    let expected = |host: &str| {
        scenario
            .expect
            .counters
            .iter()
            .any(|e| e.counter == SYN_RETRANSMITS && scenario.hosts[e.host].name == host)
    };
    report
        .counters
        .iter()
        .filter(|(host, _)| !expected(host))
        .filter_map(|(host, counters)| {
            let n = counter_delta(counters, SYN_RETRANSMITS);
            (n > 0).then(|| {
                format!(
                    "host {host}: {n} SYN retransmission(s) ({SYN_RETRANSMITS} +{n}): the harness \
                     was held off the CPU for over a second before it could close its unanswered \
                     TCP attempts, so drop counts include retransmitted SYNs and prove nothing; \
                     run again on a less loaded machine (a scenario that means to retransmit \
                     expects the counter on that host)"
                )
            })
        })
        .collect()
}

/// The kernel's counters of ICMP errors sent (IPv4): each is incremented by
/// `icmp_push_reply`, right after `__icmp_send` fired the `icmp:icmp_send` tracepoint.
const ICMP_ERRORS_SENT: [&str; 5] = [
    "Icmp.OutDestUnreachs",
    "Icmp.OutTimeExcds",
    "Icmp.OutParmProbs",
    "Icmp.OutSrcQuenchs",
    "Icmp.OutRedirects",
];

/// Signs that the probe was not run for tracepoint calls the kernel made during the
/// scenario, so its counts prove nothing: a host whose kernel counters say it sent more
/// ICMP errors than the probe saw `icmp_send` events. (On 6.18 a whole neighbour-timer
/// or reassembly-timer run, its `icmp_send` calls and the `kfree_skb` calls right after
/// them, once in about 15 suite runs went uncounted with no recursion miss recorded and
/// the namespace still watched; cause open, docs/kernel-findings.md.) Where the
/// tracepoint is counted the two agree exactly: 292 of 292 host runs of the suite.
pub fn probe_missed(report: &Report) -> Vec<String> {
    let mut missed = devices_dropped_more(report);
    if !report.icmp_send_watched {
        return missed;
    }
    missed.extend(report.counters.iter().filter_map(|(host, counters)| {
        let sent: u64 = ICMP_ERRORS_SENT
            .iter()
            .map(|name| counter_delta(counters, name))
            .sum();
        let seen: u64 = report
            .events
            .iter()
            .filter(|(h, event, _)| h == host && event.starts_with("icmp_send"))
            .map(|(_, _, n)| n)
            .sum();
        (sent != seen).then(|| {
            format!(
                "host {host}: the kernel counted {sent} ICMP error(s) sent ({}), the probe \
                     saw {seen} icmp_send event(s): the probe missed tracepoint calls, so its \
                     drop counts for this run prove nothing",
                ICMP_ERRORS_SENT.join(", ")
            )
        })
    }));
    missed
}

/// The second witness: every packet a device counts in its `tx_dropped` (the noop qdisc
/// of a device without carrier, a veth that cannot forward, `__dev_queue_xmit` on a
/// device that is down) is freed as a drop on that device, in its host. A host whose
/// devices' `tx_dropped` grew by more than the probe counted drops there lost tracepoint
/// calls (`links/end_down` once counted 2 of its 3 ARP requests while bpftrace lost the
/// same timer callback: docs/kernel-findings.md, "Tracepoint calls the probe never
/// sees"). It covers the drops that send no ICMP error, which the first witness cannot.
fn devices_dropped_more(report: &Report) -> Vec<String> {
    report
        .counters
        .iter()
        .filter_map(|(host, counters)| {
            let tx_dropped: u64 = counters
                .link
                .iter()
                .filter(|(key, _)| key.ends_with("/tx_dropped"))
                .map(|(_, n)| n)
                .sum();
            let seen: u64 = report
                .drops
                .iter()
                .filter(|d| &d.host == host)
                .map(|d| d.packets)
                .sum();
            (tx_dropped > seen).then(|| {
                format!(
                    "host {host}: its devices counted {tx_dropped} packet(s) in tx_dropped, the \
                     probe saw {seen} drop(s) there: the probe missed tracepoint calls, so its \
                     drop counts for this run prove nothing"
                )
            })
        })
        .collect()
}

pub fn check(scenario: &Scenario, report: &Report) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    if !expectations_apply(scenario, report) {
        return mismatches;
    }
    if report.reasons_unavailable.is_some() {
        check_drops_without_reasons(scenario, report, &mut mismatches);
    } else {
        check_drops_and_causes(scenario, report, &mut mismatches);
    }
    check_hooks(scenario, report, &mut mismatches);
    check_datapath(scenario, report, &mut mismatches);
    for expect in &scenario.expect.counters {
        let host = &scenario.hosts[expect.host].name;
        let actual = report
            .counters
            .iter()
            .find(|(h, _)| h == host)
            .map_or(0, |(_, c)| counter_delta(c, &expect.counter));
        if actual != expect.delta {
            mismatches.push(Mismatch(format!(
                "host {host}: expected counter {} to grow by {}, it grew by {actual}",
                expect.counter, expect.delta
            )));
        }
    }
    for (i, (spec, row)) in scenario.traffic.iter().zip(&report.traffic).enumerate() {
        for (field, expected, actual) in traffic_fields(&spec.expect, &row.outcome) {
            if let Some(expected) = expected {
                if expected != actual {
                    mismatches.push(Mismatch(format!(
                        "traffic #{} ({} -> {} {}): expected {field} {expected}, got {actual}",
                        i + 1,
                        row.from,
                        row.to,
                        row.protocol.as_str()
                    )));
                }
            }
        }
    }
    for (i, row) in report.steps.iter().enumerate() {
        let (Some(expect), Some((_, outcome))) =
            (crate::steps::again_expect(scenario, i), &row.again)
        else {
            continue;
        };
        for (field, expected, actual) in traffic_fields(expect, outcome) {
            if let Some(expected) = expected {
                if expected != actual {
                    mismatches.push(Mismatch(format!(
                        "step {} ({}): expected {field} {expected}, got {actual}",
                        i + 1,
                        row.label
                    )));
                }
            }
        }
    }
    for (i, (spec, row)) in scenario.packets.iter().zip(&report.packets).enumerate() {
        for (field, expected, actual) in packet_fields(&spec.expect, &row.outcome) {
            if let Some(expected) = expected {
                if expected != actual {
                    mismatches.push(Mismatch(format!(
                        "packets #{} ({} -> {} {}): expected {field} {expected}, got {actual}",
                        i + 1,
                        row.from,
                        row.to,
                        row.what
                    )));
                }
            }
        }
    }
    mismatches
}

fn packet_fields(e: &PacketExpect, o: &PacketOutcome) -> [(&'static str, Option<u32>, u32); 4] {
    [
        ("delivered", e.delivered, o.delivered),
        ("answered", e.answered, o.answered),
        ("errors", e.errors, o.errors),
        ("resets", e.resets, o.resets),
    ]
}

fn traffic_fields(e: &TrafficExpect, o: &TrafficOutcome) -> [(&'static str, Option<u32>, u32); 8] {
    [
        ("answered", e.answered, o.answered),
        ("delivered", e.delivered, o.delivered),
        ("errors", e.errors, o.errors),
        ("connected", e.connected, o.connected),
        ("refused", e.refused, o.refused),
        ("timed_out", e.timed_out, o.timed_out),
        ("unreachable", e.unreachable, o.unreachable),
        ("blocked", e.blocked, o.blocked),
    ]
}

fn packet_row(
    scenario: &Scenario,
    spec: &crate::scenario::PacketEntry,
    outcome: PacketOutcome,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SCENARIO: &str = r#"
description = "report test"
[hosts.client]
[hosts.server]
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
[[traffic]]
from = "client"
to = "server"
protocol = "icmp"
count = 3
expect = { answered = 0 }
[[expect.drops]]
host = "server"
reason = "NETFILTER_DROP"
count = 3
"#;

    fn scenario() -> Scenario {
        crate::scenario::parse(SCENARIO, Path::new("t.toml"), "t", Path::new(".")).unwrap()
    }

    fn report(drops: Vec<DropRow>, answered: u32) -> Report {
        Report {
            scenario: "t".into(),
            description: "report test".into(),
            kernel: "6.18".into(),
            probe: "tp_btf/kfree_skb".into(),
            reasons_unavailable: None,
            drops,
            traffic: vec![TrafficRow {
                from: "client".into(),
                to: "198.18.0.2".into(),
                protocol: Protocol::Icmp,
                outcome: TrafficOutcome {
                    sent: 3,
                    answered,
                    ..Default::default()
                },
            }],
            events: Vec::new(),
            causes: Vec::new(),
            counters: Vec::new(),
            global_sysctls: Vec::new(),
            packets: vec![],
            hooks: Default::default(),
            datapath: Vec::new(),
            steps: Vec::new(),
            icmp_send_watched: false,
            reruns: Vec::new(),
            commands: Vec::new(),
            timings: Timings::default(),
        }
    }

    fn drop_row(host: &str, reason: &str, packets: u64) -> DropRow {
        DropRow {
            host: host.into(),
            reason: reason.into(),
            reason_number: 0,
            function: "nft_do_chain".into(),
            protocol: "ipv4/icmp".into(),
            hook: Some("ip_local_deliver".into()),
            packets,
            bytes: packets * 84,
            stack: vec![],
        }
    }

    /// Every ICMP error the kernel counted must be among the probe's icmp_send events
    /// where that tracepoint is watched; elsewhere nothing is claimed.
    #[test]
    fn icmp_errors_the_probe_did_not_see_are_missed_events() {
        let mut r = report(vec![], 0);
        let mut counters = crate::counters::HostCounters::default();
        counters.snmp.insert("Icmp.OutDestUnreachs".into(), 3);
        r.counters = vec![("server".into(), counters)];
        r.events = vec![("server".into(), "icmp_send type=3 code=3".into(), 3)];
        r.icmp_send_watched = true;
        assert!(probe_missed(&r).is_empty());
        r.events.clear();
        let missed = probe_missed(&r);
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(missed[0].starts_with("host server: the kernel counted 3 ICMP error(s)"));
        r.icmp_send_watched = false;
        assert!(probe_missed(&r).is_empty());
    }

    #[test]
    fn device_drops_the_probe_did_not_see_are_missed_events() {
        // links/end_down: the noop qdisc dropped 3 ARP requests (tx_dropped +3).
        let mut r = report(vec![drop_row("client", "QDISC_DROP", 3)], 0);
        let mut counters = crate::counters::HostCounters::default();
        counters.link.insert("eth0/tx_dropped".into(), 3);
        counters.link.insert("eth0/rx_dropped".into(), 9);
        r.counters = vec![("client".into(), counters)];
        assert!(probe_missed(&r).is_empty());
        r.drops = vec![drop_row("client", "QDISC_DROP", 2)];
        let missed = probe_missed(&r);
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(missed[0].starts_with("host client: its devices counted 3 packet(s) in tx_dropped"));
        // Drops of another host do not count for this one.
        r.drops = vec![drop_row("server", "QDISC_DROP", 3)];
        assert_eq!(probe_missed(&r).len(), 1);
    }

    #[test]
    fn matching_report_has_no_mismatch() {
        let r = report(vec![drop_row("server", "NETFILTER_DROP", 3)], 0);
        assert_eq!(check(&scenario(), &r), vec![]);
    }

    #[test]
    fn wrong_count_missing_and_unexpected_drops_are_reported() {
        let r = report(
            vec![
                drop_row("server", "NETFILTER_DROP", 2),
                drop_row("client", "NO_SOCKET", 1),
            ],
            1,
        );
        let text: Vec<String> = check(&scenario(), &r).into_iter().map(|m| m.0).collect();
        assert_eq!(
            text,
            vec![
                "host server: expected 3 NETFILTER_DROP drop(s), got 2",
                "host client: unexpected 1 NO_SOCKET drop(s) at nft_do_chain (ipv4/icmp); expect them with [[expect.drops]] or set expect.allow_other_drops = true",
                "traffic #1 (client -> 198.18.0.2 icmp): expected answered 0, got 1",
            ]
        );
    }

    /// A kernel before 5.17: drops by function still assert, by reason alone they are
    /// listed as unchecked (the verdict holds them to the kernel's own baseline).
    #[test]
    fn without_reasons_functions_assert_and_reasons_are_unchecked() {
        let text = SCENARIO.replace(
            "reason = \"NETFILTER_DROP\"\ncount = 3",
            "reason = \"NETFILTER_DROP\"\ncount = 3\n[[expect.drops]]\nhost = \"server\"\n\
             reason = \"IP_INHDR\"\nfunction = \"ip_rcv_core\"\ncount = 1",
        );
        let scenario =
            crate::scenario::parse(&text, Path::new("t.toml"), "t", Path::new(".")).unwrap();
        let mut at_core = drop_row("server", crate::kernel::reasons::NO_REASON, 1);
        at_core.function = "ip_rcv_core".into();
        let mut r = report(
            vec![
                drop_row("server", crate::kernel::reasons::NO_REASON, 3),
                at_core,
            ],
            0,
        );
        r.reasons_unavailable = Some("no reasons before 5.17".into());
        assert_eq!(check(&scenario, &r), vec![]);
        assert_eq!(
            unchecked_without_reasons(&scenario, &r),
            ["3 NETFILTER_DROP drop(s) at server"]
        );
        assert!(r
            .render_snapshot()
            .starts_with("scenario: t\ndrops (no drop reasons on this kernel: before 5.17):\n"));

        // The function's count is held; drops elsewhere must add up to the reason-only ones.
        r.drops[1].packets = 2;
        r.drops[0].packets = 4;
        let text: Vec<String> = check(&scenario, &r).into_iter().map(|m| m.0).collect();
        assert_eq!(
            text,
            [
                "host server: expected 1 drop(s) at ip_rcv_core (reasons unavailable on this kernel), got 2",
                "host server: expected 3 drop(s) by reason (unavailable on this kernel) at functions no expectation names, got 4",
            ]
        );
        // With reasons, nothing is left unchecked.
        r.reasons_unavailable = None;
        assert!(unchecked_without_reasons(&scenario, &r).is_empty());
    }

    #[test]
    fn snapshot_text_is_aligned_and_has_no_run_specific_values() {
        let r = report(
            vec![
                drop_row("server", "NETFILTER_DROP", 3),
                drop_row("client", "NO_SOCKET", 12),
            ],
            0,
        );
        insta::assert_snapshot!(r.render_snapshot(), @r"
        scenario: t
        drops:
          server  NETFILTER_DROP  nft_do_chain  via ip_local_deliver  ipv4/icmp   3 packets   252 bytes
          client  NO_SOCKET       nft_do_chain  via ip_local_deliver  ipv4/icmp  12 packets  1008 bytes
        traffic:
          #1 client -> 198.18.0.2 icmp x3: answered 0, errors 0, blocked 0
        ");
        assert!(!r.render_snapshot().contains("6.18"));
        assert!(r
            .render(true)
            .contains("kernel 6.18, probe tp_btf/kfree_skb"));
    }

    #[test]
    fn packet_rows_show_the_outcomes_that_apply() {
        let mut r = report(vec![], 0);
        r.traffic.clear();
        let row = |what: &str, protocol, receiver| PacketRow {
            from: "client".into(),
            to: "198.18.0.2:5000".into(),
            what: what.into(),
            protocol,
            receiver,
            outcome: PacketOutcome {
                sent: 3,
                delivered: 2,
                answered: 1,
                errors: 0,
                resets: 0,
            },
        };
        r.packets = vec![
            row("udp x3", PacketProtocol::Udp, Receiver::Reads),
            row("tcp S x3", PacketProtocol::Tcp, Receiver::Nobody),
            row("icmp x3", PacketProtocol::Echo, Receiver::Nobody),
        ];
        insta::assert_snapshot!(r.render_snapshot(), @r"
        scenario: t
        drops: none
        packets:
          #1 client -> 198.18.0.2:5000 udp x3: delivered 2, errors 0
          #2 client -> 198.18.0.2:5000 tcp S x3: errors 0, resets 0
          #3 client -> 198.18.0.2:5000 icmp x3: answered 1, errors 0
        ");
    }
}
