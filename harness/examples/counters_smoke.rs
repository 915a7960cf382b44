//! Reads the kernel's counters around one scenario, checks them against iproute2's
//! `nstat`, and times the reads (needs root):
//!
//!     cargo run --release --example counters_smoke [SCENARIO.toml] [--reads N] [--dump DIR]
//!
//! SCENARIO defaults to fixtures/proc/capture.toml. The example builds the scenario,
//! loads its faults, reads every host's counters, sends the traffic, reads them again and
//! prints what changed per host. Then, for every host, `nstat -asz` run in the namespace
//! must report the same value for every SNMP counter `counters::read_host` returned (the
//! namespace is quiet by then), or the example fails. Last it reads each host N times
//! (default 50) and prints the median, fastest and slowest read, with and without its
//! rule tools. The firewall tools' own listings (`iptables -nvxL`, `nft list ruleset`) are
//! printed after the changes, to compare by eye.
//!
//! `--dump DIR` saves each host's raw files into DIR/<host>/ as the fixtures for the
//! parsers' unit tests (fixtures/proc/README.md).

use anyhow::{bail, ensure, Context, Result};
use dropspec::counters::{self, RuleSource};
use dropspec::scenario::{self, IptablesBackend};
use dropspec::topology::{Netns, Topology};
use dropspec::{faults, traffic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut path = workspace.join("fixtures/proc/capture.toml");
    let mut reads = 50usize;
    let mut dump: Option<PathBuf> = None;
    let mut ballast = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--reads" => reads = args.next().context("--reads N")?.parse()?,
            // Makes the process as large as the test runner's (which holds the drop probe
            // and the kernel's parsed BTF), to time spawning tools from a large process.
            "--ballast-mb" => {
                let mb: usize = args.next().context("--ballast-mb N")?.parse()?;
                ballast = vec![1u8; mb << 20];
            }
            "--dump" => dump = Some(args.next().context("--dump DIR")?.into()),
            _ => path = arg.into(),
        }
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let scenario = scenario::parse(&text, &path, "counters_smoke", &workspace.join("fixtures"))?;
    let topology = Topology::build(&scenario)?;
    faults::apply(&scenario, &topology)?;
    let hosts = topology.hosts();
    let sources: Vec<Vec<RuleSource>> = (0..hosts.len())
        .map(|host| dropspec::faults::rule_sources(&scenario, host))
        .collect();

    let pairs: Vec<(&Netns, &[RuleSource])> = hosts
        .iter()
        .zip(&sources)
        .map(|(netns, sources)| (netns, sources.as_slice()))
        .collect();
    let read_all = || counters::read_hosts(&pairs);
    let started = Instant::now();
    let before = read_all()?;
    let first_read = started.elapsed();
    let mut quiet = || 0u64;
    let mut completion = dropspec::completion::Completion::new(topology.hosts(), &mut quiet)?;
    let mut sockets = traffic::Sockets::default();
    let outcomes = traffic::run(&scenario, &topology, &mut completion, &mut sockets)?;
    let after = read_all()?;
    for (spec, outcome) in scenario.traffic.iter().zip(&outcomes) {
        println!(
            "traffic {} -> {}:{} {:?}: {outcome:?}",
            scenario.hosts[spec.from].name, spec.destination, spec.port, spec.protocol
        );
    }
    for (netns, (before, after)) in hosts.iter().zip(before.iter().zip(&after)) {
        let change = counters::delta(before, after);
        println!("\n== {}: what changed", netns.label());
        for (key, value) in &change.snmp {
            println!("  snmp       {key:32} {value}");
        }
        for (key, value) in &change.conntrack {
            println!("  conntrack  {key:32} {value}");
        }
        for rule in &change.rules {
            println!(
                "  rule       {} {} {}: {}  -> {} packets {} bytes",
                rule.backend, rule.table, rule.chain, rule.rule, rule.packets, rule.bytes
            );
        }
    }

    println!();
    for (netns, counters) in hosts.iter().zip(&after) {
        let nstat = nstat(netns)?;
        let mut compared = 0;
        for (key, value) in &counters.snmp {
            let name = key.replace('.', "");
            let Some(theirs) = nstat.get(&name) else {
                bail!(
                    "host {}: nstat has no {name} (ours: {key} = {value})",
                    netns.label()
                );
            };
            ensure!(
                theirs == value,
                "host {}: {key} = {value}, but nstat says {name} = {theirs}",
                netns.label()
            );
            compared += 1;
        }
        println!(
            "{}: all {compared} SNMP counters agree with `nstat -asz` in the namespace",
            netns.label()
        );
    }

    // The firewall tools' own tables of the same counters, for a person to compare.
    for (netns, sources) in hosts.iter().zip(&sources) {
        for source in sources {
            let (tool, args): (&str, &[&str]) = match source {
                RuleSource::Iptables(IptablesBackend::Nft) => ("iptables-nft", &["-nvxL"]),
                RuleSource::Iptables(IptablesBackend::Legacy) => ("iptables-legacy", &["-nvxL"]),
                RuleSource::Nft => ("nft", &["list", "ruleset"]),
                RuleSource::Qdisc => ("tc", &["-s", "qdisc", "show"]),
            };
            let output = netns.command(tool).args(args).env("LC_ALL", "C").output()?;
            println!(
                "\n{}: {tool} {}\n{}",
                netns.label(),
                args.join(" "),
                String::from_utf8_lossy(&output.stdout).trim_end()
            );
        }
    }

    if let Some(dir) = &dump {
        for (netns, sources) in hosts.iter().zip(&sources) {
            save_raw(netns, sources, &dir.join(netns.label()))?;
        }
        println!("raw files saved under {}", dir.display());
    }

    println!(
        "\nfirst read of all {} hosts: {:.2} ms",
        hosts.len(),
        ms(first_read)
    );
    let mut all = Vec::with_capacity(reads);
    for _ in 0..reads.max(1) {
        let started = Instant::now();
        read_all()?;
        all.push(started.elapsed());
    }
    all.sort();
    println!(
        "read_hosts of all {} hosts over {reads} reads: median {:.2} ms, min {:.2}, max {:.2}",
        hosts.len(),
        ms(all[all.len() / 2]),
        ms(all[0]),
        ms(all[all.len() - 1]),
    );
    for (netns, sources) in hosts.iter().zip(&sources) {
        let with = time_reads(netns, sources, reads)?;
        let without = time_reads(netns, &[], reads)?;
        println!(
            "{:8} read_host over {reads} reads: with {} ({:?}): median {:.2} ms, min {:.2}, max {:.2}; /proc only: median {:.2} ms, min {:.2}, max {:.2}",
            netns.label(),
            sources.len(),
            sources,
            ms(with[with.len() / 2]),
            ms(with[0]),
            ms(with[with.len() - 1]),
            ms(without[without.len() / 2]),
            ms(without[0]),
            ms(without[without.len() - 1]),
        );
    }
    drop(ballast);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn time_reads(netns: &Netns, sources: &[RuleSource], reads: usize) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(reads);
    for _ in 0..reads.max(1) {
        let started = Instant::now();
        counters::read_host(netns, sources)?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

/// `nstat -asz` in the namespace: absolute values, zeros included, history untouched.
fn nstat(netns: &Netns) -> Result<BTreeMap<String, u64>> {
    let output = netns
        .command("nstat")
        .args(["-asz"])
        .env("LC_ALL", "C")
        .output()
        .context("running nstat (Debian package iproute2)")?;
    ensure!(
        output.status.success(),
        "nstat failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout)?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some((fields.next()?.to_owned(), fields.next()?.parse().ok()?))
        })
        .collect())
}

/// The raw text the counters come from, as fixtures for the parsers' tests.
fn save_raw(netns: &Netns, sources: &[RuleSource], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let files = netns.run(|| {
        ["snmp", "netstat", "snmp6", "stat/nf_conntrack"].map(|name| {
            let text = std::fs::read_to_string(format!("/proc/thread-self/net/{name}"));
            (name.replace("stat/", ""), text)
        })
    })?;
    for (name, text) in files {
        std::fs::write(
            dir.join(&name),
            text.with_context(|| format!("reading {name}"))?,
        )?;
    }
    let mut tools: Vec<(&str, &[&str], &str)> = vec![("nstat", &["-asz"], "nstat-asz.txt")];
    for source in sources {
        tools.push(match source {
            RuleSource::Iptables(IptablesBackend::Nft) => {
                ("iptables-nft-save", &["-c"], "iptables-nft-save-c.txt")
            }
            RuleSource::Iptables(IptablesBackend::Legacy) => (
                "iptables-legacy-save",
                &["-c"],
                "iptables-legacy-save-c.txt",
            ),
            RuleSource::Nft => ("nft", &["list", "ruleset"], "nft-list-ruleset.txt"),
            RuleSource::Qdisc => ("tc", &["-s", "-j", "qdisc", "show"], "tc-s-j-qdisc.json"),
        });
    }
    for (tool, args, file) in tools {
        let output = netns.command(tool).args(args).env("LC_ALL", "C").output()?;
        ensure!(output.status.success(), "{tool} failed");
        std::fs::write(dir.join(file), output.stdout)?;
    }
    Ok(())
}
