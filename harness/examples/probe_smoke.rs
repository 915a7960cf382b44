//! Smoke test of the drop probe on this machine (needs root):
//!
//!     cargo run --example probe_smoke
//!     DROPSPEC_PROBE=tracepoint cargo run --example probe_smoke
//!
//! Makes two namespaces, `dropspec-smoke-fw` with `iptables -A INPUT -p udp --dport 9
//! -j DROP` (and the same for ip6tables) and `dropspec-smoke-ctl` without, watches both,
//! sends 5 UDP datagrams to 127.0.0.1:9 and 5 to [::1]:9 in each, and 5 in the root
//! namespace (unwatched, its firewall untouched), then checks the counts: exactly 5
//! NETFILTER_DROP per IP version in the first and nothing else, 5 NO_SOCKET per IP
//! version in the control, nothing from the root namespace anywhere; then that a
//! released slot leaves no counters and a namespace watched again starts from zero.
//! Exits non-zero on a mismatch. The namespaces are deleted on the way out, also on
//! failure.

use anyhow::{bail, ensure, Context, Result};
use dropspec::probes::{DropCount, DropProbe};
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

const PACKETS: u64 = 5;

/// A named namespace (`ip netns add`), deleted on drop.
struct NamedNetns(&'static str);

impl NamedNetns {
    fn create(name: &'static str) -> Result<NamedNetns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output(); // stale from a crash
        run("ip", &["netns", "add", name])?;
        let ns = NamedNetns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn inode(&self) -> Result<u64> {
        let path = format!("/run/netns/{}", self.0);
        Ok(std::fs::metadata(&path)
            .with_context(|| format!("stat {path}"))?
            .ino())
    }

    fn exec(&self, argv: &[&str]) -> Result<()> {
        let mut args = vec!["netns", "exec", self.0];
        args.extend_from_slice(argv);
        run("ip", &args)
    }

    /// Sends UDP datagrams from a thread that has entered this namespace.
    fn send_udp(&self, to: &str, count: u64) -> Result<()> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<()> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the test namespace")?;
                send_udp(to, count)
            })
            .join()
            .expect("sender thread panicked")
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", self.0]) {
            eprintln!("warning: {e:#}");
        }
    }
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn send_udp(to: &str, count: u64) -> Result<()> {
    let to: std::net::SocketAddr = to.parse()?;
    let from = if to.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let socket = std::net::UdpSocket::bind(from).with_context(|| format!("bind {from}"))?;
    for i in 0..count {
        // Port unreachable errors from the previous datagram come back on send: ignore.
        let _ = socket.send_to(format!("dropspec {i}").as_bytes(), to);
    }
    Ok(())
}

fn show(label: &str, counts: &[DropCount]) {
    println!("{label}:");
    for c in counts {
        println!(
            "  {:>3} x {} ({}) in {} {}/{} {} bytes",
            c.packets, c.reason, c.reason_number, c.function, c.l3, c.l4, c.bytes
        );
    }
}

fn main() -> Result<()> {
    let started = Instant::now();
    let probe = match DropProbe::shared() {
        Ok(probe) => probe,
        Err(e) if e.is_unavailable() => bail!("skipped: {e}"),
        Err(e) => bail!("probe failed to load: {e}"),
    };
    println!(
        "probe: {} loaded in {:?} (first call {:?})",
        probe.mode(),
        probe.load_time(),
        started.elapsed()
    );
    if let Some(why) = probe.fallback_reason() {
        println!("  (tp_btf not used: {why})");
    }

    let fw = NamedNetns::create("dropspec-smoke-fw")?;
    let ctl = NamedNetns::create("dropspec-smoke-ctl")?;
    fw.exec(&[
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
    fw.exec(&[
        "ip6tables-nft",
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        "9",
        "-j",
        "DROP",
    ])?;

    let t = Instant::now();
    let fw_slot = probe.watch(fw.inode()?)?;
    let ctl_slot = probe.watch(ctl.inode()?)?;
    let watch_time = t.elapsed() / 2;

    for to in ["127.0.0.1:9", "[::1]:9"] {
        fw.send_udp(to, PACKETS)?;
        ctl.send_udp(to, PACKETS)?;
        send_udp(to, PACKETS)?; // root namespace: must show up nowhere
    }
    std::thread::sleep(Duration::from_millis(50)); // loopback delivery is in softirq

    let t = Instant::now();
    let fw_counts = fw_slot.read()?;
    let read_time = t.elapsed();
    let ctl_counts = ctl_slot.read()?;
    show("dropspec-smoke-fw (iptables DROP udp/9)", &fw_counts);
    show("dropspec-smoke-ctl (no rule)", &ctl_counts);
    println!("watch {watch_time:?} per slot, first read {read_time:?}");

    for l3 in ["ipv4", "ipv6"] {
        let nf: Vec<_> = fw_counts.iter().filter(|c| c.l3 == l3).collect();
        ensure!(
            nf.len() == 1,
            "expected one {l3} row in the firewalled namespace: {nf:?}"
        );
        let nf = nf[0];
        ensure!(
            (nf.reason.as_str(), nf.packets, nf.l4) == ("NETFILTER_DROP", PACKETS, "udp"),
            "expected {PACKETS} NETFILTER_DROP {l3}/udp, got {nf:?}"
        );
        let ctl: Vec<_> = ctl_counts.iter().filter(|c| c.l3 == l3).collect();
        ensure!(
            ctl.len() == 1 && (ctl[0].reason.as_str(), ctl[0].packets) == ("NO_SOCKET", PACKETS),
            "expected {PACKETS} NO_SOCKET {l3} in the control namespace, got {ctl:?}"
        );
    }
    let total = |counts: &[DropCount]| counts.iter().map(|c| c.packets).sum::<u64>();
    ensure!(
        total(&fw_counts) == 2 * PACKETS,
        "other drops in the firewalled namespace"
    );
    ensure!(
        total(&ctl_counts) == 2 * PACKETS,
        "other drops in the control namespace"
    );

    // Released slots leave nothing behind; watching again starts from zero.
    drop((fw_slot, ctl_slot));
    let stats = probe.stats()?;
    ensure!(
        stats.watched == 0 && stats.keys == 0,
        "left behind: {stats:?}"
    );
    let again = probe.watch(fw.inode()?)?;
    ensure!(again.read()?.is_empty(), "a new slot started with counts");
    drop(again);

    println!(
        "OK: {PACKETS} NETFILTER_DROP per IP version in nft_do_chain, control clean, \
         root namespace not counted, slots released cleanly ({:?})",
        probe.stats()?
    );
    Ok(())
}
