//! What the drop probe costs per drop (needs root). Prints figures; asserts nothing
//! about speed.
//!
//!     cargo run --release --example probe_cost -- none        # no probe loaded
//!     cargo run --release --example probe_cost -- unwatched   # loaded, namespace not watched
//!     cargo run --release --example probe_cost -- watched     # counted, with stacks
//!     DROPSPEC_STACKS=off cargo run --release --example probe_cost -- watched
//!     DROPSPEC_PROBE=tracepoint cargo run --release --example probe_cost -- watched
//!
//! In namespace `dropspec-cost` with `iptables -A INPUT -p udp --dport 9 -j DROP`, one
//! thread sends 32-byte UDP datagrams to 127.0.0.1:9 for 2 s, 5 rounds (at most
//! 20 million datagrams a round). On loopback the receive path, and so the drop and
//! the probe, mostly runs in the sender's own softirq, so datagrams per second fall as
//! the per-drop cost rises: cost = 1/rate(probe) - 1/rate(none). Prints each round and
//! the median; in `watched` mode also checks that every datagram was counted.
//!
//! With the probe loaded it also prints the probe's own run time per kfree_skb
//! (run_time_ns / run_cnt from `bpftool prog show`, for this process's program), which
//! is far less disturbed by other load on the machine than the send rate. The kernel
//! keeps those statistics only while someone asks: this process holds a
//! BPF_ENABLE_STATS descriptor, and they stop when it exits.

use anyhow::{bail, ensure, Context, Result};
use dropspec::probes::DropProbe;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

const NETNS: &str = "dropspec-cost";
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(2);
const MAX_PER_ROUND: u64 = 20_000_000;

struct NamedNetns;

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NETNS]).status();
    }
}

fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Sends datagrams from a thread inside the namespace; returns how many were sent.
fn flood(duration: Duration) -> Result<u64> {
    let file = std::fs::File::open(format!("/run/netns/{NETNS}"))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<u64> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            socket.connect("127.0.0.1:9")?;
            let payload = [0u8; 32];
            let start = Instant::now();
            let mut sent = 0u64;
            while sent < MAX_PER_ROUND {
                for _ in 0..256 {
                    if socket.send(&payload).is_ok() {
                        sent += 1;
                    }
                }
                if start.elapsed() >= duration {
                    break;
                }
            }
            Ok(sent)
        })
        .join()
        .expect("sender panicked")
    })
}

/// Ids of the BPF programs this process holds, from /proc/self/fdinfo (`prog_id:`).
fn own_program_ids() -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fdinfo") else {
        return Vec::new();
    };
    dir.filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// (run count, run time in ns) of this process's kfree_skb program, from bpftool.
fn probe_run_stats() -> Result<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .context("running bpftool")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ours = own_program_ids();
    // One JSON object per program; pick ours without a JSON dependency: the kfree_skb
    // programs are dropspec_tpbtf, dropspec_tpbtf3 and dropspec_tp.
    for object in text.split("},{") {
        let number = |key: &str| -> Option<u64> {
            let at = object.find(&format!("\"{key}\":"))? + key.len() + 3;
            let digits: String = object[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        };
        let kfree_skb = ["\"name\":\"dropspec_tp\"", "\"name\":\"dropspec_tpbtf"]
            .iter()
            .any(|n| object.contains(n));
        if kfree_skb && number("id").is_some_and(|id| ours.contains(&id)) {
            return Ok((
                number("run_cnt").unwrap_or(0),
                number("run_time_ns").unwrap_or(0),
            ));
        }
    }
    bail!("bpftool lists no kfree_skb program of this process")
}

fn main() -> Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "watched".into());
    if !matches!(mode.as_str(), "none" | "unwatched" | "watched") {
        bail!("usage: probe_cost none|unwatched|watched");
    }
    let _ = Command::new("ip").args(["netns", "del", NETNS]).output();
    run(&["ip", "netns", "add", NETNS])?;
    let _netns = NamedNetns;
    run(&["ip", "-n", NETNS, "link", "set", "lo", "up"])?;
    run(&[
        "ip",
        "netns",
        "exec",
        NETNS,
        "iptables-nft",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-j",
        "DROP",
    ])?;
    let inode = std::fs::metadata(format!("/run/netns/{NETNS}"))?.ino();

    let probe = match mode.as_str() {
        "none" => None,
        _ => Some(DropProbe::shared()?),
    };
    if let Some(probe) = probe {
        println!(
            "probe {} stacks {}",
            probe.mode(),
            std::env::var("DROPSPEC_STACKS").unwrap_or_else(|_| "on".into())
        );
    }
    // Dropped at exit, which turns the statistics off again.
    let _stats = match probe {
        Some(_) => Some(aya::sys::enable_stats(aya::sys::Stats::RunTime)?),
        None => None,
    };
    let mut rates = Vec::new();
    let mut per_run = Vec::new();
    for round in 1..=ROUNDS {
        let slot = match (probe, mode.as_str()) {
            (Some(probe), "watched") => Some(probe.watch(inode)?),
            _ => None,
        };
        let before = probe.map(|_| probe_run_stats()).transpose()?;
        let start = Instant::now();
        let sent = flood(ROUND)?;
        let secs = start.elapsed().as_secs_f64();
        let rate = sent as f64 / secs;
        rates.push(rate);
        let mut line = format!(
            "round {round}: {sent} datagrams in {secs:.2} s = {:.0} /s ({:.0} ns each)",
            rate,
            1e9 / rate
        );
        if let Some((count0, ns0)) = before {
            let (count1, ns1) = probe_run_stats()?;
            let runs = count1.saturating_sub(count0).max(1);
            let ns = (ns1.saturating_sub(ns0)) as f64 / runs as f64;
            per_run.push(ns);
            line.push_str(&format!(", probe {ns:.0} ns per run over {runs} runs"));
        }
        if let Some(slot) = &slot {
            std::thread::sleep(Duration::from_millis(100));
            let counted: u64 = slot.read()?.iter().map(|c| c.packets).sum();
            let keys = probe.unwrap().stats()?.keys;
            line.push_str(&format!(", {counted} drops counted in {keys} keys"));
            ensure!(counted == sent, "counted {counted} of {sent} drops");
        }
        println!("{line}");
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[ROUNDS / 2];
    println!(
        "median ({mode}): {median:.0} datagrams/s, {:.0} ns per datagram",
        1e9 / median
    );
    if !per_run.is_empty() {
        per_run.sort_by(f64::total_cmp);
        println!("median probe run time: {:.0} ns", per_run[ROUNDS / 2]);
    }
    Ok(())
}
