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
//! The NETFILTER_DROP rows must show the stack nft_do_chain <- nft_do_chain_ipv4/6 <-
//! nf_hook_slow <- ip_local_deliver / ip6_input, and the control namespace exactly 5
//! `icmp_send type=3 code=3` (ports unreachable; IPv6 has no such tracepoint).
//!
//! Then, with fresh namespaces: an OUTPUT drop (hook __ip_local_out), 3 TCP connects
//! to a closed port (3 `tcp_send_reset reason=NO_SOCKET`, 3 NO_SOCKET drops in
//! tcp_v4_rcv), and a FORWARD drop in a router namespace (`dropspec-smoke-rt`, fed by
//! `dropspec-smoke-cl` over a veth, forwarding to a second veth): hook ip_forward.
//!
//! Last, in `dropspec-smoke-sk`: 3 TCP segments with a wrong checksum from a raw
//! socket (3 `tcp_bad_csum`, 3 TCP_CSUM drops) and 50 datagrams to a UDP socket with the
//! smallest receive buffer (one `udp_fail_queue_rcv_skb rc=-ENOMEM` per
//! SOCKET_RCVBUFF drop).
//!
//! Exits non-zero on a mismatch. The namespaces are deleted on the way out, also on
//! failure.

use anyhow::{bail, ensure, Context, Result};
use dropspec::probes::{DropCount, DropProbe, EventCount};
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
        self.run_inside(|| send_udp(to, count))
    }

    /// Runs `f` on a thread that has entered this namespace.
    fn run_inside<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let file = std::fs::File::open(format!("/run/netns/{}", self.0))?;
        std::thread::scope(|s| {
            s.spawn(|| -> Result<T> {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .context("setns into the test namespace")?;
                f()
            })
            .join()
            .expect("thread in namespace panicked")
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
    let from = match to {
        std::net::SocketAddr::V4(v4) if v4.ip().is_loopback() => "127.0.0.1:0",
        std::net::SocketAddr::V4(_) => "0.0.0.0:0",
        std::net::SocketAddr::V6(_) => "[::1]:0",
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
        println!("        hook {:?} stack {}", c.hook, c.stack.join(" <- "));
    }
}

fn show_events(label: &str, events: &[EventCount]) {
    println!("{label} events: {events:?}");
}

/// The single row of this L3/L4 in `counts`.
fn only_row<'a>(counts: &'a [DropCount], l3: &str, l4: &str) -> Result<&'a DropCount> {
    let rows: Vec<_> = counts.iter().filter(|c| c.l3 == l3 && c.l4 == l4).collect();
    ensure!(rows.len() == 1, "expected one {l3}/{l4} row: {rows:#?}");
    Ok(rows[0])
}

fn ensure_stack_prefix(row: &DropCount, prefix: &[&str], hook: &str) -> Result<()> {
    ensure!(
        row.stack.len() >= prefix.len() && row.stack[..prefix.len()] == *prefix,
        "expected a stack starting {prefix:?}, got {:?}",
        row.stack
    );
    ensure!(
        row.stack[0] == row.function,
        "the stack must start at the function the drop is attributed to: {row:?}"
    );
    ensure!(
        row.hook == Some(hook),
        "expected hook {hook}, got {:?}",
        row.hook
    );
    Ok(())
}

fn tcp_connect_refused(to: &str) -> Result<()> {
    let to: std::net::SocketAddr = to.parse()?;
    match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
        other => bail!("connect to the closed port {to}: expected refused, got {other:?}"),
    }
}

/// A TCP SYN with checksum 0xdead, sent through a raw socket so nothing fixes it.
fn send_bad_tcp_checksum(to_port: u16, count: usize) -> Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP) };
    ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut segment = Vec::new();
    segment.extend_from_slice(&40000u16.to_be_bytes()); // source port
    segment.extend_from_slice(&to_port.to_be_bytes());
    segment.extend_from_slice(&1u32.to_be_bytes()); // seq
    segment.extend_from_slice(&0u32.to_be_bytes()); // ack
    segment.extend_from_slice(&[5 << 4, 0x02]); // 20-byte header, SYN
    segment.extend_from_slice(&65535u16.to_be_bytes()); // window
    segment.extend_from_slice(&0xdeadu16.to_be_bytes()); // checksum: wrong
    segment.extend_from_slice(&0u16.to_be_bytes()); // urgent
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    for _ in 0..count {
        // SAFETY: valid buffer and sockaddr_in of the stated lengths.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                segment.as_ptr().cast(),
                segment.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        ensure!(sent >= 0, "raw sendto: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Bad TCP checksums and a full UDP receive buffer: tcp_bad_csum and
/// udp_fail_queue_rcv_skb, each against the drops they come with.
fn checksums_and_full_buffers(probe: &'static DropProbe) -> Result<()> {
    let sk = NamedNetns::create("dropspec-smoke-sk")?;
    let slot = probe.watch(sk.inode()?)?;
    sk.run_inside(|| {
        let _listener = std::net::TcpListener::bind("127.0.0.1:5001")?;
        send_bad_tcp_checksum(5001, 3)?;
        let receiver = std::net::UdpSocket::bind("127.0.0.1:5002")?;
        let one: libc::c_int = 1; // the kernel raises it to its minimum
                                  // SAFETY: setsockopt with a c_int option value of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&receiver),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        ensure!(rc == 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let sender = std::net::UdpSocket::bind("127.0.0.1:0")?;
        for _ in 0..50 {
            sender.send_to(&[0u8; 1000], "127.0.0.1:5002")?;
        }
        Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(50));
    let counts = slot.read()?;
    let events = slot.read_events()?;
    show(
        "dropspec-smoke-sk (bad TCP checksums, full UDP buffer)",
        &counts,
    );
    show_events("dropspec-smoke-sk", &events);

    // The raw socket also got a copy of each segment (raw sockets see every TCP
    // packet before TCP does) and, never read, purges them on close: QUEUE_PURGE.
    let csum: Vec<_> = counts.iter().filter(|c| c.reason == "TCP_CSUM").collect();
    ensure!(
        csum.len() == 1 && (csum[0].packets, csum[0].l4) == (3, "tcp"),
        "bad checksums: {csum:?}"
    );
    // More than DROPSPEC_STACK_SAMPLES drops: the first ones per CPU in rows with their
    // stack, the rest in one without.
    let full: Vec<_> = counts
        .iter()
        .filter(|c| (c.l3, c.l4) == ("ipv4", "udp"))
        .collect();
    ensure!(
        full.iter().all(|c| c.reason == "SOCKET_RCVBUFF")
            && full.iter().map(|c| c.packets).sum::<u64>() >= 40,
        "full buffer: {full:?}"
    );
    ensure!(
        events
            == [
                EventCount {
                    event: "tcp_bad_csum".into(),
                    count: 3
                },
                EventCount {
                    event: "udp_fail_queue_rcv_skb rc=-ENOMEM".into(),
                    count: full.iter().map(|c| c.packets).sum()
                }
            ],
        "expected 3 tcp_bad_csum and one udp_fail_queue_rcv_skb per SOCKET_RCVBUFF drop: \
         {events:?}"
    );
    Ok(())
}

/// OUTPUT and FORWARD drops, TCP resets: the hooks and events the first part does not
/// reach.
fn output_forward_and_resets(probe: &'static DropProbe) -> Result<()> {
    let out = NamedNetns::create("dropspec-smoke-out")?;
    out.exec(&[
        "iptables-nft",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "10",
        "-j",
        "DROP",
    ])?;
    let cl = NamedNetns::create("dropspec-smoke-cl")?;
    let rt = NamedNetns::create("dropspec-smoke-rt")?;
    // Made inside the namespaces: nothing is added to the root namespace.
    cl.exec(&[
        "ip",
        "link",
        "add",
        "dropspec-c0",
        "type",
        "veth",
        "peer",
        "name",
        "dropspec-r0",
        "netns",
        rt.0,
    ])?;
    cl.exec(&["ip", "addr", "add", "198.18.1.1/24", "dev", "dropspec-c0"])?;
    cl.exec(&["ip", "link", "set", "dropspec-c0", "up"])?;
    cl.exec(&["ip", "route", "add", "198.18.2.0/24", "via", "198.18.1.2"])?;
    rt.exec(&["ip", "addr", "add", "198.18.1.2/24", "dev", "dropspec-r0"])?;
    rt.exec(&["ip", "link", "set", "dropspec-r0", "up"])?;
    // The far side: a veth pair with both ends in the router (no dummy driver here).
    rt.exec(&[
        "ip",
        "link",
        "add",
        "dropspec-r1",
        "type",
        "veth",
        "peer",
        "name",
        "dropspec-r2",
    ])?;
    rt.exec(&["ip", "addr", "add", "198.18.2.1/24", "dev", "dropspec-r1"])?;
    rt.exec(&["ip", "link", "set", "dropspec-r1", "up"])?;
    rt.exec(&["ip", "link", "set", "dropspec-r2", "up"])?;
    rt.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?; // this namespace's own
    rt.exec(&[
        "iptables-nft",
        "-A",
        "FORWARD",
        "-d",
        "198.18.2.2",
        "-j",
        "DROP",
    ])?;

    let out_slot = probe.watch(out.inode()?)?;
    let rt_slot = probe.watch(rt.inode()?)?;
    out.run_inside(|| {
        for i in 0..PACKETS {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            // The OUTPUT rule makes sendto fail with EPERM.
            let sent = socket.send_to(format!("dropspec {i}").as_bytes(), "127.0.0.1:10");
            ensure!(sent.is_err(), "OUTPUT DROP let a datagram through");
        }
        for _ in 0..3 {
            tcp_connect_refused("127.0.0.1:7")?;
        }
        Ok(())
    })?;
    cl.send_udp("198.18.2.2:9", PACKETS)?;
    std::thread::sleep(Duration::from_millis(200)); // ARP, then the queued datagram

    let out_counts = out_slot.read()?;
    let out_events = out_slot.read_events()?;
    let rt_counts = rt_slot.read()?;
    let rt_events = rt_slot.read_events()?;
    show(
        "dropspec-smoke-out (OUTPUT DROP udp/10, TCP to a closed port)",
        &out_counts,
    );
    show_events("dropspec-smoke-out", &out_events);
    show("dropspec-smoke-rt (FORWARD DROP to 198.18.2.2)", &rt_counts);
    show_events("dropspec-smoke-rt", &rt_events);

    let udp = only_row(&out_counts, "ipv4", "udp")?;
    ensure!(
        (udp.reason.as_str(), udp.packets) == ("NETFILTER_DROP", PACKETS),
        "OUTPUT: {udp:?}"
    );
    ensure_stack_prefix(
        udp,
        &[
            "nft_do_chain",
            "nft_do_chain_ipv4",
            "nf_hook_slow",
            "__ip_local_out",
        ],
        "__ip_local_out",
    )?;
    let tcp = only_row(&out_counts, "ipv4", "tcp")?;
    ensure!(
        (tcp.reason.as_str(), tcp.packets, tcp.function.as_str()) == ("NO_SOCKET", 3, "tcp_v4_rcv"),
        "SYN to a closed port: {tcp:?}"
    );
    ensure_stack_prefix(tcp, &["tcp_v4_rcv"], "ip_local_deliver_finish")?;
    ensure!(
        out_counts.len() == 2,
        "other drops in dropspec-smoke-out: {out_counts:#?}"
    );
    ensure!(
        out_events
            == [EventCount {
                event: "tcp_send_reset reason=NO_SOCKET".into(),
                count: 3
            }],
        "expected 3 resets and nothing else: {out_events:?}"
    );

    let fwd = only_row(&rt_counts, "ipv4", "udp")?;
    ensure!(
        (fwd.reason.as_str(), fwd.packets) == ("NETFILTER_DROP", PACKETS),
        "FORWARD: {fwd:?}"
    );
    ensure_stack_prefix(
        fwd,
        &[
            "nft_do_chain",
            "nft_do_chain_ipv4",
            "nf_hook_slow",
            "ip_forward",
        ],
        "ip_forward",
    )?;
    ensure!(
        rt_events.is_empty(),
        "a FORWARD DROP sends nothing: {rt_events:?}"
    );
    Ok(())
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
    for (event, program) in probe.event_programs() {
        match program {
            Ok(program) => println!("  {event}: {program}"),
            Err(why) => println!("  {event}: unavailable: {why}"),
        }
    }
    for (event, available) in probe.events_available() {
        ensure!(
            available.is_ok(),
            "{event} is not counted on this kernel, which has it: {available:?}"
        );
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
    let fw_events = fw_slot.read_events()?;
    let ctl_events = ctl_slot.read_events()?;
    show("dropspec-smoke-fw (iptables DROP udp/9)", &fw_counts);
    show_events("dropspec-smoke-fw", &fw_events);
    show("dropspec-smoke-ctl (no rule)", &ctl_counts);
    show_events("dropspec-smoke-ctl", &ctl_events);
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
    ensure_stack_prefix(
        only_row(&fw_counts, "ipv4", "udp")?,
        &[
            "nft_do_chain",
            "nft_do_chain_ipv4",
            "nf_hook_slow",
            "ip_local_deliver",
        ],
        "ip_local_deliver",
    )?;
    ensure_stack_prefix(
        only_row(&fw_counts, "ipv6", "udp")?,
        &[
            "nft_do_chain",
            "nft_do_chain_ipv6",
            "nf_hook_slow",
            "ip6_input",
        ],
        "ip6_input",
    )?;
    ensure!(
        fw_events.is_empty(),
        "a DROP rule sends no ICMP: {fw_events:?}"
    );
    // Port unreachable for each IPv4 datagram; ICMPv6 errors have no tracepoint.
    ensure!(
        ctl_events
            == [EventCount {
                event: "icmp_send type=3 code=3".into(),
                count: PACKETS
            }],
        "expected {PACKETS} ports unreachable in the control namespace: {ctl_events:?}"
    );
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
        stats.watched == 0 && stats.keys == 0 && stats.event_keys == 0,
        "left behind: {stats:?}"
    );
    let again = probe.watch(fw.inode()?)?;
    ensure!(again.read()?.is_empty(), "a new slot started with counts");
    ensure!(
        again.read_events()?.is_empty(),
        "a new slot started with events"
    );
    drop(again);
    drop((fw, ctl));

    output_forward_and_resets(probe)?;
    checksums_and_full_buffers(probe)?;
    let stats = probe.stats()?;
    ensure!(
        stats.watched == 0 && stats.keys == 0 && stats.event_keys == 0,
        "left behind: {stats:?}"
    );
    ensure!(
        stats.stacks_missing == 0,
        "drops without a stack: {stats:?}"
    );

    println!(
        "OK: {PACKETS} NETFILTER_DROP per IP version in nft_do_chain at ip_local_deliver / \
         ip6_input, control clean with {PACKETS} ports unreachable, root namespace not \
         counted, OUTPUT at __ip_local_out, FORWARD at ip_forward, one reset per SYN to a \
         closed port, checksum and buffer failures with their events, slots released \
         cleanly ({:?})",
        probe.stats()?
    );
    Ok(())
}
