//! The kernel's counters read around real traffic (needs root): each case builds two
//! hosts, loads its faults, reads both hosts' counters, sends the traffic, reads them
//! again and checks the exact change against what the traffic must have caused. The
//! control is the other host, whose counters show nothing of the kind — which also shows
//! each read saw its own namespace, not the process's. One more case holds every SNMP
//! counter read against iproute2's `nstat` run in the same namespace.
//!
//! A case that cannot run here (no root, missing tool) is shown as ignored with the
//! reason; with `DROPSPEC_REQUIRE_PRIVILEGED=1` (CI) it fails instead.

use std::collections::BTreeMap;
use std::path::Path;

use dropspec::counters::{self, HostCounters, RuleCounter, RuleSource};
use dropspec::scenario::{self, Scenario};
use dropspec::topology::{Netns, Topology};
use dropspec::traffic::Sockets;
use dropspec::{faults, runner, traffic};
use libtest_mimic::{Arguments, Completion, Failed, Trial};

const TWO_HOSTS: &str = r#"
description = "counters"
[hosts.client]
[hosts.server]
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
"#;

/// 4 UDP datagrams of 32 bytes (60 on the wire at layer 3) to the server's port 5000.
const UDP_TO_5000: &str = r#"
[[traffic]]
from = "client"
to = "server"
protocol = "udp"
port = 5000
count = 4
payload = 32
"#;

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        Trial::ignorable_test("counters/closed_ports", || run(closed_ports)),
        Trial::ignorable_test("counters/iptables_nft_drop", || {
            run(|| rule_drop("", "iptables-nft"))
        }),
        Trial::ignorable_test("counters/iptables_legacy_drop", || {
            run(|| rule_drop("backend = \"legacy\"", "iptables-legacy"))
        }),
        Trial::ignorable_test("counters/nft_counter_drop", || run(nft_counter_drop)),
        Trial::ignorable_test("counters/conntrack_invalid", || run(conntrack_invalid)),
        Trial::ignorable_test("counters/agree_with_nstat", || run(agree_with_nstat)),
    ];
    libtest_mimic::run(&args, trials).exit();
}

/// Why a case did not finish: it could not run on this machine, or it found a problem.
enum Outcome {
    Unavailable(String),
    Failed(String),
}

impl From<String> for Outcome {
    fn from(problem: String) -> Self {
        Outcome::Failed(problem)
    }
}

fn run(case: impl FnOnce() -> Result<(), Outcome>) -> Result<Completion, Failed> {
    let require = dropspec::policy::Policy::current()
        .map_err(|e| e.to_string())?
        .require_privileged;
    let outcome = match runner::unavailable_reason() {
        Some(why) => Err(Outcome::Unavailable(why)),
        None => case(),
    };
    match outcome {
        Ok(()) => Ok(Completion::Completed),
        Err(Outcome::Unavailable(why)) if !require => Ok(Completion::ignored_with(why)),
        Err(Outcome::Unavailable(why)) => Err(format!(
            "could not run: {why}\n(DROPSPEC_REQUIRE_PRIVILEGED=1: a privileged test may not be skipped)"
        )
        .into()),
        Err(Outcome::Failed(problem)) => Err(problem.into()),
    }
}

/// What changed on each host (client, server) while the scenario's traffic ran.
fn changes(toml: &str) -> Result<(HostCounters, HostCounters), Outcome> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario: Scenario = scenario::parse(
        toml,
        Path::new("harness/tests/counters.rs"),
        "counters",
        &workspace.join("fixtures"),
    )
    .map_err(|e| e.to_string())?;
    let topology = Topology::build(&scenario).map_err(|e| unavailable_or(e.is_unavailable(), e))?;
    faults::apply(&scenario, &topology).map_err(|e| unavailable_or(e.is_unavailable(), e))?;
    let sources: Vec<Vec<RuleSource>> = (0..scenario.hosts.len())
        .map(|host| dropspec::faults::rule_sources(&scenario, host))
        .collect();
    let hosts: Vec<(&Netns, &[RuleSource])> = topology
        .hosts()
        .iter()
        .zip(&sources)
        .map(|(netns, sources)| (netns, sources.as_slice()))
        .collect();
    let read = || counters::read_hosts(&hosts).map_err(|e| unavailable_or(e.is_unavailable(), e));
    let before = read()?;
    let mut quiet = || 0u64;
    let mut completion = dropspec::completion::Completion::new(topology.hosts(), &mut quiet)
        .map_err(|e| e.to_string())?;
    let mut sockets = Sockets::default();
    traffic::run(&scenario, &topology, &mut completion, &mut sockets).map_err(|e| e.to_string())?;
    let after = read()?;
    let change = |name: &str| {
        let i = scenario.hosts.iter().position(|h| h.name == name).unwrap();
        counters::delta(&before[i], &after[i])
    };
    Ok((change("client"), change("server")))
}

fn unavailable_or(unavailable: bool, e: impl std::fmt::Display) -> Outcome {
    if unavailable {
        Outcome::Unavailable(e.to_string())
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// Checks `expected` keys exactly (0 = must not have changed).
fn expect(
    host: &str,
    got: &BTreeMap<String, u64>,
    expected: &[(&str, u64)],
) -> Result<(), Outcome> {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(key, value)| got.get(*key).copied().unwrap_or(0) != *value)
        .map(|(key, value)| {
            format!(
                "{key}: expected {value}, got {}",
                got.get(*key).copied().unwrap_or(0)
            )
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("{host}: {}\nall changes: {got:#?}", wrong.join("; ")).into())
    }
}

fn expect_rules(host: &str, got: &[RuleCounter], expected: &[RuleCounter]) -> Result<(), Outcome> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{host}: rule counters changed by\n{got:#?}\nexpected\n{expected:#?}").into())
    }
}

fn rule(
    backend: &str,
    table: &str,
    chain: &str,
    text: &str,
    packets: u64,
    bytes: u64,
) -> RuleCounter {
    RuleCounter {
        backend: backend.to_owned(),
        table: table.to_owned(),
        chain: chain.to_owned(),
        rule: text.to_owned(),
        packets,
        bytes,
    }
}

/// UDP and TCP to ports nobody listens on: the server's UDP counts no-port datagrams
/// and answers each with a port unreachable; its TCP answers each SYN with a RST.
fn closed_ports() -> Result<(), Outcome> {
    let toml = format!(
        "{TWO_HOSTS}{}",
        r#"
[[traffic]]
from = "client"
to = "server"
protocol = "udp"
port = 5000
count = 3
listen = false
[[traffic]]
from = "client"
to = "server"
protocol = "tcp"
port = 5001
count = 2
listen = false
"#
    );
    let (client, server) = changes(&toml)?;
    expect(
        "server",
        &server.snmp,
        &[
            ("Udp.NoPorts", 3),
            ("Icmp.OutDestUnreachs", 3),
            ("IcmpMsg.OutType3", 3),
            ("Tcp.OutRsts", 2),
            ("Tcp.InSegs", 2),
            ("Udp.InDatagrams", 0),
            ("Icmp.InDestUnreachs", 0),
        ],
    )?;
    expect(
        "client",
        &client.snmp,
        &[
            ("Icmp.InDestUnreachs", 3),
            ("IcmpMsg.InType3", 3),
            ("Udp.OutDatagrams", 3),
            ("Tcp.ActiveOpens", 2),
            ("Tcp.AttemptFails", 2),
            ("Udp.NoPorts", 0),
            ("Icmp.OutDestUnreachs", 0),
            ("Tcp.OutRsts", 0),
        ],
    )?;
    expect_rules("server", &server.rules, &[])?;
    expect_rules("client", &client.rules, &[])
}

/// An iptables INPUT DROP rule counts every datagram; none reaches UDP.
fn rule_drop(backend_line: &str, backend: &str) -> Result<(), Outcome> {
    let toml = format!(
        "{TWO_HOSTS}{UDP_TO_5000}{}",
        format_args!(
            r#"
[[faults]]
host = "server"
{backend_line}
iptables = """
*filter
-A INPUT -p udp --dport 5000 -j DROP
-A INPUT -p udp --dport 5001 -j DROP
COMMIT
"""
"#
        )
    );
    let (client, server) = changes(&toml)?;
    expect_rules(
        "server",
        &server.rules,
        &[rule(
            backend,
            "filter",
            "INPUT",
            "-A INPUT -p udp -m udp --dport 5000 -j DROP",
            4,
            240,
        )],
    )?;
    expect(
        "server",
        &server.snmp,
        &[
            ("Ip.InReceives", 4),
            ("Ip.InDelivers", 0),
            ("Udp.NoPorts", 0),
            ("Udp.InDatagrams", 0),
        ],
    )?;
    expect(
        "client",
        &client.snmp,
        &[("Udp.OutDatagrams", 4), ("Icmp.InDestUnreachs", 0)],
    )?;
    expect_rules("client", &client.rules, &[])
}

/// A native nft rule with `counter` is listed; one without is not.
fn nft_counter_drop() -> Result<(), Outcome> {
    let toml = format!(
        "{TWO_HOSTS}{UDP_TO_5000}{}",
        r#"
[[faults]]
host = "server"
nft = """
table inet dropspec_counters {
  chain input {
    type filter hook input priority filter; policy accept;
    ip protocol udp
    udp dport 5000 counter drop
  }
}
"""
"#
    );
    let (_, server) = changes(&toml)?;
    expect_rules(
        "server",
        &server.rules,
        &[rule(
            "nft",
            "inet dropspec_counters",
            "input",
            "udp dport 5000 counter drop",
            4,
            240,
        )],
    )?;
    expect(
        "server",
        &server.snmp,
        &[("Ip.InReceives", 4), ("Udp.NoPorts", 0)],
    )
}

/// The client's SYNs are untracked, so conntrack meets each RST that answers one without
/// a connection: `invalid`, and dropped by the rule that matches INVALID.
fn conntrack_invalid() -> Result<(), Outcome> {
    let toml = format!(
        "{TWO_HOSTS}{}",
        r#"
[[faults]]
host = "client"
iptables = """
*raw
-A OUTPUT -p tcp -j CT --notrack
COMMIT
*filter
-A INPUT -m conntrack --ctstate INVALID -j DROP
COMMIT
"""
[[traffic]]
from = "client"
to = "server"
protocol = "tcp"
port = 6000
count = 2
listen = false
timeout_ms = 100
"#
    );
    let (client, server) = changes(&toml)?;
    expect(
        "client",
        &client.conntrack,
        &[("invalid", 2), ("drop", 0), ("insert_failed", 0)],
    )?;
    expect_rules(
        "client",
        &client.rules,
        &[
            rule(
                "iptables-nft",
                "raw",
                "OUTPUT",
                "-A OUTPUT -p tcp -j CT --notrack",
                2,
                120,
            ),
            rule(
                "iptables-nft",
                "filter",
                "INPUT",
                "-A INPUT -m conntrack --ctstate INVALID -j DROP",
                2,
                80,
            ),
        ],
    )?;
    expect("client", &client.snmp, &[("Tcp.ActiveOpens", 2)])?;
    expect("server", &server.snmp, &[("Tcp.OutRsts", 2)])?;
    expect("server", &server.conntrack, &[("invalid", 0)])
}

/// Every SNMP counter read equals what iproute2's `nstat` reads in the same namespace
/// (after traffic, so most are not zero; the namespace is quiet by then).
fn agree_with_nstat() -> Result<(), Outcome> {
    let toml = format!(
        "{TWO_HOSTS}{UDP_TO_5000}{}",
        r#"
[[traffic]]
from = "client"
to = "server"
protocol = "tcp"
port = 5001
count = 2
listen = false
[[traffic]]
from = "client"
to = "server"
protocol = "icmp"
count = 2
"#
    );
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario = scenario::parse(
        &toml,
        Path::new("counters.rs"),
        "counters",
        &workspace.join("fixtures"),
    )
    .map_err(|e| e.to_string())?;
    let topology = Topology::build(&scenario).map_err(|e| unavailable_or(e.is_unavailable(), e))?;
    let mut quiet = || 0u64;
    let mut completion = dropspec::completion::Completion::new(topology.hosts(), &mut quiet)
        .map_err(|e| e.to_string())?;
    let mut sockets = Sockets::default();
    traffic::run(&scenario, &topology, &mut completion, &mut sockets).map_err(|e| e.to_string())?;
    for netns in topology.hosts() {
        let ours =
            counters::read_host(netns, &[]).map_err(|e| unavailable_or(e.is_unavailable(), e))?;
        let output = netns
            .command("nstat")
            .arg("-asz")
            .env("LC_ALL", "C")
            .output()
            .map_err(|e| {
                unavailable_or(
                    e.kind() == std::io::ErrorKind::NotFound,
                    format!("running nstat (iproute2): {e}"),
                )
            })?;
        let text = String::from_utf8_lossy(&output.stdout);
        let nstat: BTreeMap<&str, u64> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                Some((fields.next()?, fields.next()?.parse().ok()?))
            })
            .collect();
        let mut differ = Vec::new();
        for (key, value) in &ours.snmp {
            let name = key.replace('.', "");
            if nstat.get(name.as_str()) != Some(value) {
                differ.push(format!(
                    "{key} = {value}, nstat {name} = {:?}",
                    nstat.get(name.as_str())
                ));
            }
        }
        if !differ.is_empty() || ours.snmp.len() < 300 {
            return Err(format!(
                "{}: {} counters read, these differ from nstat -asz: {differ:#?}",
                netns.label(),
                ours.snmp.len()
            )
            .into());
        }
        if ours.snmp.get("Icmp.InEchos").copied().unwrap_or(0)
            + ours.snmp.get("Icmp.InEchoReps").copied().unwrap_or(0)
            != 2
        {
            return Err(format!(
                "{}: expected 2 echo requests or replies: {:#?}",
                netns.label(),
                ours.snmp
            )
            .into());
        }
    }
    Ok(())
}
