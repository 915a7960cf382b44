//! Probe cost and accuracy under load: a UDP flood that an iptables rule drops, with no
//! probe, with dropspec's probe, and with the bpftrace one-liner.
//!
//! Each measurement runs in a child process (`dropspec bench --flood-worker MODE`), so
//! that "no probe" really has none of this bench's probes attached (dropspec's probe,
//! once loaded, stays attached for the life of its process). The worker builds a
//! two-host topology with the library, loads `-A INPUT -p udp --dport 9 -j DROP` into
//! the receiver, sends a warm-up, attaches the probe under test, reads the rule's own
//! packet counter, floods with `sendmmsg` from the sender, reads the counter again and
//! prints one `flood-result key=value…` line.
//!
//! On veth the receiver's whole path (netif_rx, the backlog softirq, IP input, the
//! netfilter hook, kfree_skb) runs on the sending CPU before `sendmmsg` returns, so the
//! send rate is the drop rate, and what a probe on kfree_skb costs slows it directly.

use std::io::Read as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dropspec::probes::{DropProbe, ReasonTable};
use dropspec::topology::{Netns, Topology};
use dropspec::{faults, scenario};
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrIn};
use nix::sys::time::TimeValLike as _;
use nix::unistd::Pid;

use super::memory;

pub const BPFTRACE_ONE_LINER: &str = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }";

const FLOOD_SCENARIO: &str = r#"
description = "bench flood: UDP to port 9, dropped by an INPUT rule in the receiver"

[hosts.sender]
[hosts.receiver]

[[links]]
a = { host = "sender", addr = "198.18.0.1/24" }
b = { host = "receiver", addr = "198.18.0.2/24" }

[[faults]]
host = "receiver"
backend = "nft"
iptables = """
*filter
-A INPUT -p udp --dport 9 -j DROP
COMMIT
"""
"#;

const DESTINATION: (std::net::Ipv4Addr, u16) = (std::net::Ipv4Addr::new(198, 18, 0, 2), 9);
const PAYLOAD: usize = 18;
const BATCH: usize = 256;
/// A flood stops after this long whatever its count (bounded in time as in count).
const FLOOD_TIME_LIMIT: Duration = Duration::from_secs(60);
/// A worker process is stopped after this long.
const WORKER_TIME_LIMIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No probe on kfree_skb (from this bench).
    None,
    /// dropspec's probe, watching the receiver (and idle namespaces, see --watch).
    Dropspec,
    /// The bpftrace one-liner.
    Bpftrace,
    /// An empty tp_btf program (ebpf/empty.bpf.c): what any program on kfree_skb costs.
    Empty,
    /// dropspec's probe, watching 1, 10, 100 and 1,000 namespaces in turn (up to
    /// --watch), all in one process, with all the idle namespaces existing throughout:
    /// only the number watched changes between measurements.
    Filter,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Dropspec => "dropspec",
            Mode::Bpftrace => "bpftrace",
            Mode::Empty => "empty",
            Mode::Filter => "filter",
        }
    }
}

/// What one worker measured.
#[derive(Debug, Clone, Default)]
pub struct FloodResult {
    pub mode: String,
    /// Namespaces dropspec watched (the receiver and idle ones); 0 without its probe.
    pub watched: usize,
    pub sent: u64,
    pub secs: f64,
    /// CPU time (user + system) of the sending thread over the flood. The kernel's tick
    /// accounting charges the softirq work done in its context (the whole receive path
    /// and the drop) to it too, and time other processes take is not in it, so per
    /// packet it is a steadier measure than the wall-clock rate on a busy machine.
    pub cpu_secs: f64,
    /// The DROP rule's packet counter over the flood.
    pub rule: u64,
    /// dropspec's NETFILTER_DROP count in the receiver over the flood.
    pub dropspec: Option<u64>,
    /// dropspec's count of any other reason in the receiver.
    pub dropspec_other: Option<u64>,
    /// bpftrace's count for NETFILTER_DROP (machine-wide: the one-liner has no filter);
    /// `None` without bpftrace, or when it was killed before printing its map.
    pub bpftrace: Option<u64>,
    /// bpftrace did not exit within [`BPFTRACE_STOP_GRACE`] of SIGINT and was killed.
    pub bpftrace_killed: bool,
    /// kfree_skb programs of other processes loaded during the flood.
    pub foreign: usize,
    /// Bytes of kernel memory charged for the probe's maps (dropspec mode).
    pub maps_memlock: Option<u64>,
}

impl FloodResult {
    pub fn pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    /// Packets per second of the sender's CPU time.
    pub fn cpu_pps(&self) -> f64 {
        self.sent as f64 / self.cpu_secs
    }

    fn line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
        format!(
            "flood-result mode={} watched={} sent={} secs={:.6} cpu_secs={:.6} rule={} dropspec={} dropspec_other={} bpftrace={} bpftrace_killed={} foreign={} maps_memlock={}",
            self.mode,
            self.watched,
            self.sent,
            self.secs,
            self.cpu_secs,
            self.rule,
            opt(self.dropspec),
            opt(self.dropspec_other),
            opt(self.bpftrace),
            self.bpftrace_killed,
            self.foreign,
            opt(self.maps_memlock)
        )
    }

    fn parse(line: &str) -> Result<FloodResult> {
        let rest = line
            .strip_prefix("flood-result ")
            .context("not a flood-result line")?;
        let mut r = FloodResult::default();
        let opt =
            |v: &str| -> Result<Option<u64>> { Ok(if v == "-" { None } else { Some(v.parse()?) }) };
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=').context("key=value")?;
            match k {
                "mode" => r.mode = v.to_owned(),
                "watched" => r.watched = v.parse()?,
                "sent" => r.sent = v.parse()?,
                "secs" => r.secs = v.parse()?,
                "cpu_secs" => r.cpu_secs = v.parse()?,
                "rule" => r.rule = v.parse()?,
                "dropspec" => r.dropspec = opt(v)?,
                "dropspec_other" => r.dropspec_other = opt(v)?,
                "bpftrace" => r.bpftrace = opt(v)?,
                "bpftrace_killed" => r.bpftrace_killed = v.parse()?,
                "foreign" => r.foreign = v.parse()?,
                "maps_memlock" => r.maps_memlock = opt(v)?,
                _ => {}
            }
        }
        Ok(r)
    }
}

/// Numbers of watched namespaces the filter measurement steps through.
pub const FILTER_SIZES: [usize; 4] = [1, 10, 100, 1000];

/// Runs one worker process and returns what it measured (one result per flood).
pub fn spawn_worker(
    exe: &Path,
    mode: Mode,
    packets: u64,
    watch: usize,
    rounds: usize,
) -> Result<Vec<FloodResult>> {
    let mut child = Command::new(exe)
        .args([
            "bench",
            "--flood-worker",
            mode.name(),
            "--packets",
            &packets.to_string(),
            "--watch",
            &watch.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting a flood worker")?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > WORKER_TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "a flood worker ({}) took over {WORKER_TIME_LIMIT:?}",
                mode.name()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout)?;
    child.stderr.take().unwrap().read_to_string(&mut stderr)?;
    if !status.success() {
        bail!(
            "flood worker ({}) failed ({status}): {}",
            mode.name(),
            stderr.trim()
        );
    }
    let results = stdout
        .lines()
        .filter(|l| l.starts_with("flood-result "))
        .map(FloodResult::parse)
        .collect::<Result<Vec<_>>>()?;
    if results.is_empty() {
        bail!("the flood worker printed no result: {stdout}{stderr}");
    }
    Ok(results)
}

/// The worker: measures one flood in `mode` (`rounds` × each size in filter mode) and
/// prints a `flood-result` line per flood. `watch` is how many namespaces dropspec's
/// probe watches (the receiver plus `watch - 1` idle ones); in filter mode, the most.
pub fn worker(mode: Mode, packets: u64, watch: usize, rounds: usize) -> Result<()> {
    raise_fd_limit();
    let fixtures = Path::new(".");
    let spec = scenario::parse(
        FLOOD_SCENARIO,
        Path::new("bench-flood.toml"),
        "bench/flood",
        fixtures,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let topology = Topology::build(&spec).context("building the flood's topology")?;
    faults::apply(&spec, &topology).context("loading the flood's drop rule")?;
    let host = |name: &str| {
        let id = spec.hosts.iter().position(|h| h.name == name);
        topology.host(id.expect("the flood scenario names both hosts"))
    };
    let (sender, receiver) = (host("sender"), host("receiver"));

    let idle: Vec<Netns> = if matches!(mode, Mode::Dropspec | Mode::Filter) {
        (1..watch.max(1))
            .map(|i| Netns::create(&format!("idle{i}")))
            .collect::<Result<_, _>>()
            .context("creating idle namespaces to watch")?
    } else {
        Vec::new()
    };

    let socket = sender
        .run(|| connected_udp(DESTINATION.0, DESTINATION.1))
        .context("entering the sender")??;
    // ARP first, so the flood never meets an unresolved neighbour (whose queue would
    // drop packets in the sender).
    send_packets(&socket, 1_000)?;
    std::thread::sleep(Duration::from_millis(20));

    let reasons = ReasonTable::from_running_kernel().context("reading drop reasons")?;
    let netfilter_drop = reasons
        .number("NETFILTER_DROP")
        .context("this kernel has no NETFILTER_DROP reason")?;

    if mode == Mode::Filter {
        return filter_floods(&socket, receiver, &idle, packets, rounds);
    }
    let mut result = FloodResult {
        mode: mode.name().to_owned(),
        ..FloodResult::default()
    };
    let mut bpftrace = None;
    let mut slots = Vec::new();
    let mut _empty = None;
    match mode {
        Mode::None | Mode::Filter => {}
        Mode::Empty => _empty = Some(attach_empty()?),
        Mode::Dropspec => {
            let probe = DropProbe::shared().context("loading dropspec's probe")?;
            // Read kallsyms now rather than on a thread racing the flood for the CPU.
            probe.kallsyms()?;
            slots.push(probe.watch(receiver.inode())?);
            for netns in &idle {
                slots.push(probe.watch(netns.inode())?);
            }
            result.watched = slots.len();
        }
        Mode::Bpftrace => bpftrace = Some(Bpftrace::start()?),
    }
    let own: Vec<u32> = std::iter::once(std::process::id())
        .chain(bpftrace.as_ref().map(|b| b.pid))
        .collect();
    result.foreign = foreign_kfree_skb_programs(&own);

    let before = rule_counter(receiver)?;
    let cpu = thread_cpu_time();
    let started = Instant::now();
    result.sent = send_packets(&socket, packets)?;
    result.secs = started.elapsed().as_secs_f64();
    result.cpu_secs = (thread_cpu_time() - cpu).as_secs_f64();
    result.rule = rule_counter(receiver)? - before;

    if let Some(slot) = slots.first() {
        let counts = slot.read()?;
        result.dropspec = Some(
            counts
                .iter()
                .filter(|d| d.reason == "NETFILTER_DROP")
                .map(|d| d.packets)
                .sum(),
        );
        result.dropspec_other = Some(
            counts
                .iter()
                .filter(|d| d.reason != "NETFILTER_DROP")
                .map(|d| d.packets)
                .sum(),
        );
        result.maps_memlock = Some(memory::probe_maps()?.iter().map(|m| m.memlock).sum());
    }
    if let Some(bt) = bpftrace {
        let stopped = bt.stop()?;
        result.bpftrace = stopped
            .map
            .map(|map| map.get(&netfilter_drop).copied().unwrap_or(0));
        result.bpftrace_killed = stopped.killed;
    }
    drop(slots);
    println!("{}", result.line());
    Ok(())
}

/// Floods `rounds` times at each of [`FILTER_SIZES`] (up to 1 + idle namespaces), in
/// rotating order, changing only how many namespaces the probe watches.
fn filter_floods(
    socket: &OwnedFd,
    receiver: &Netns,
    idle: &[Netns],
    packets: u64,
    rounds: usize,
) -> Result<()> {
    let probe = DropProbe::shared().context("loading dropspec's probe")?;
    probe.kallsyms()?;
    let own = [std::process::id()];
    let receiver_slot = probe.watch(receiver.inode())?;
    let netfilter_drops = || -> Result<u64> {
        Ok(receiver_slot
            .read()?
            .iter()
            .filter(|d| d.reason == "NETFILTER_DROP")
            .map(|d| d.packets)
            .sum())
    };
    let sizes: Vec<usize> = FILTER_SIZES
        .into_iter()
        .filter(|&n| n <= idle.len() + 1)
        .collect();
    let mut idle_slots = Vec::new();
    for round in 0..rounds.max(1) {
        for k in 0..sizes.len() {
            let watched = sizes[(k + round) % sizes.len()];
            idle_slots.truncate(watched - 1);
            while idle_slots.len() < watched - 1 {
                idle_slots.push(probe.watch(idle[idle_slots.len()].inode())?);
            }
            let counted = netfilter_drops()?;
            let before = rule_counter(receiver)?;
            let cpu = thread_cpu_time();
            let started = Instant::now();
            let sent = send_packets(socket, packets)?;
            let result = FloodResult {
                mode: Mode::Filter.name().to_owned(),
                watched,
                sent,
                secs: started.elapsed().as_secs_f64(),
                cpu_secs: (thread_cpu_time() - cpu).as_secs_f64(),
                rule: rule_counter(receiver)? - before,
                dropspec: Some(netfilter_drops()? - counted),
                dropspec_other: None,
                bpftrace: None,
                bpftrace_killed: false,
                foreign: foreign_kfree_skb_programs(&own),
                maps_memlock: Some(memory::probe_maps()?.iter().map(|m| m.memlock).sum()),
            };
            println!("{}", result.line());
        }
    }
    Ok(())
}

/// The empty program of ebpf/empty.bpf.c, attached to tp_btf/kfree_skb until dropped.
static EMPTY_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/empty.bpf.o"));

fn attach_empty() -> Result<aya::Ebpf> {
    let btf = aya::Btf::from_sys_fs().context("reading the kernel's BTF")?;
    let mut ebpf = aya::Ebpf::load(EMPTY_OBJECT).context("loading ebpf/empty.bpf.c")?;
    let prog: &mut aya::programs::BtfTracePoint = ebpf
        .program_mut("dropspec_tp_empty")
        .context("dropspec_tp_empty missing from empty.bpf.o")?
        .try_into()?;
    prog.load("kfree_skb", &btf)
        .context("loading the empty program")?;
    prog.attach().context("attaching the empty program")?;
    Ok(ebpf)
}

fn thread_cpu_time() -> Duration {
    // RUSAGE_THREAD cannot fail for the calling thread; were it to, a zero would show as
    // an absurd rate in the figures rather than pass unnoticed.
    let Ok(usage) = getrusage(UsageWho::RUSAGE_THREAD) else {
        return Duration::ZERO;
    };
    let micros = usage.user_time().num_microseconds() + usage.system_time().num_microseconds();
    Duration::from_micros(micros.max(0) as u64)
}

/// Every idle namespace the filter mode watches holds descriptors: allow as many as the
/// hard limit does. Best effort: a lower limit shows up as a clear error later.
fn raise_fd_limit() {
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn connected_udp(addr: std::net::Ipv4Addr, port: u16) -> Result<OwnedFd> {
    let socket = sock::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket(2)")?;
    sock::connect(
        socket.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(addr, port)),
    )
    .context("connect(2)")?;
    Ok(socket)
}

/// Sends `packets` datagrams in `sendmmsg` batches; returns how many the kernel took.
///
/// The one raw socket call left in the bench, on purpose: this loop is the instrument.
/// nix's `sendmmsg` is generic, so it is compiled with this crate's settings, and it
/// rebuilds every header and walks every result on each call: in the debug build that
/// added ~75 ns to the ~2.4 µs per packet measured (3 %, interleaved runs). Here the
/// headers are built once and only the call repeats.
fn send_packets(socket: &OwnedFd, packets: u64) -> Result<u64> {
    let payload = [0x64u8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // The socket is connected: no address and no control data per message.
    let header = libc::mmsghdr {
        msg_hdr: libc::msghdr {
            msg_name: std::ptr::null_mut(),
            msg_namelen: 0,
            msg_iov: &mut iov,
            msg_iovlen: 1,
            msg_control: std::ptr::null_mut(),
            msg_controllen: 0,
            msg_flags: 0,
        },
        msg_len: 0,
    };
    let mut headers = vec![header; BATCH];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut refused = 0u64;
    while sent < packets {
        if started.elapsed() > FLOOD_TIME_LIMIT {
            bail!("the flood sent only {sent} of {packets} packets in {FLOOD_TIME_LIMIT:?}");
        }
        let n = (packets - sent).min(BATCH as u64) as libc::c_uint;
        // SAFETY: `headers` holds BATCH valid headers pointing at `iov` and `payload`,
        // which outlive the call; n <= BATCH.
        let rc = unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), n, 0) };
        match Errno::result(rc) {
            Ok(rc) => sent += rc as u64,
            Err(e @ (Errno::ENOBUFS | Errno::EAGAIN | Errno::EINTR)) => {
                refused += 1;
                if refused > 1_000_000 {
                    bail!("the sender keeps getting {e}");
                }
            }
            Err(e) => return Err(e).context("sendmmsg(2)"),
        }
    }
    Ok(sent)
}

/// The DROP rule's packet counter, from `iptables -nvxL INPUT` in the receiver.
fn rule_counter(receiver: &Netns) -> Result<u64> {
    let output = receiver
        .command("iptables-nft")
        .args(["-w", "-nvxL", "INPUT"])
        .env("LC_ALL", "C")
        .output()
        .context("running iptables-nft -nvxL INPUT in the receiver")?;
    if !output.status.success() {
        bail!(
            "iptables-nft -nvxL failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_rule_counter(&String::from_utf8_lossy(&output.stdout))
}

fn parse_rule_counter(listing: &str) -> Result<u64> {
    listing
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("DROP"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no DROP rule with a counter in:\n{listing}"))
}

/// How long bpftrace gets to print its map and exit after SIGINT. Under load it once
/// took over 30 s (issue 10), and a slow exit says nothing about the flood it counted:
/// the bench waits, and past this takes what bpftrace printed and kills it.
const BPFTRACE_STOP_GRACE: Duration = Duration::from_secs(60);

/// The one-liner running in the background, attached.
struct Bpftrace {
    child: std::process::Child,
    pid: u32,
    /// Readers of its output, started with it so a full pipe can never hold it up.
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

/// What bpftrace left when stopped.
struct Stopped {
    /// Its map, reason → count; `None` when it printed none before it had to be killed.
    map: Option<std::collections::BTreeMap<u32, u64>>,
    /// It did not exit within [`BPFTRACE_STOP_GRACE`] of SIGINT and was killed.
    killed: bool,
}

/// Reads a pipe to its end on a thread of its own.
fn read_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits up to `limit` for `child` to exit; whether it did.
fn exits_within(child: &mut std::process::Child, limit: Duration) -> Result<bool> {
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(true)
}

impl Bpftrace {
    fn start() -> Result<Bpftrace> {
        let mut command = Command::new("bpftrace");
        command
            .args(["-e", BPFTRACE_ONE_LINER])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: runs in the forked child before exec and only calls prctl(2): bpftrace
        // dies with this worker.
        unsafe {
            command.pre_exec(|| {
                let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .context("starting bpftrace (apt-get install bpftrace)")?;
        let pid = child.id();
        let stdout = read_in_background(child.stdout.take().expect("stdout is piped"));
        let stderr = read_in_background(child.stderr.take().expect("stderr is piped"));
        let started = Instant::now();
        // bpftrace prints "Attaching 1 probe..." before attaching; wait for the kernel to
        // list its program on the tracepoint instead.
        while !perf_attached(pid) {
            if let Some(status) = child.try_wait()? {
                let err = stderr.join().unwrap_or_default();
                bail!("bpftrace exited ({status}): {}", err.trim());
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("bpftrace did not attach within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Bpftrace {
            child,
            pid,
            stdout,
            stderr,
        })
    }

    /// Stops it with SIGINT (as Ctrl-C), which makes it print its map and exit; if it is
    /// still running [`BPFTRACE_STOP_GRACE`] later, kills it and keeps what it printed.
    fn stop(mut self) -> Result<Stopped> {
        kill(Pid::from_raw(self.pid as i32), Signal::SIGINT)?;
        let killed = !exits_within(&mut self.child, BPFTRACE_STOP_GRACE)?;
        if killed {
            eprintln!(
                "bench: bpftrace still running {BPFTRACE_STOP_GRACE:?} after SIGINT; killing it"
            );
            let _ = self.child.kill();
            // SIGKILL cannot be ignored, but a task stuck in the kernel dies only when it
            // leaves it: don't wait on its pipes then (PDEATHSIG ends it with the worker).
            if !exits_within(&mut self.child, Duration::from_secs(10))? {
                return Ok(Stopped { map: None, killed });
            }
        }
        let out = self.stdout.join().unwrap_or_default();
        let _ = self.stderr.join();
        let mut map = std::collections::BTreeMap::new();
        for line in out.lines() {
            if let Some((reason, count)) = line
                .strip_prefix("@[")
                .and_then(|rest| rest.split_once("]:"))
            {
                map.insert(reason.trim().parse()?, count.trim().parse()?);
            }
        }
        // The flood made drops, so a map that printed is never empty.
        let map = (!(killed && map.is_empty())).then_some(map);
        Ok(Stopped { map, killed })
    }
}

fn perf_attached(pid: u32) -> bool {
    Command::new("bpftool")
        .args(["perf", "show"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with(&format!("pid {pid} ")) && l.contains("kfree_skb"))
        })
        .unwrap_or(false)
}

/// kfree_skb programs (bpftrace's `kfree_skb`, dropspec's `dropspec_tp*`) that processes
/// other than `own` hold: other runs on this shared machine that tax every drop too.
pub fn foreign_kfree_skb_programs(own: &[u32]) -> usize {
    let Ok(output) = Command::new("bpftool").args(["prog", "show"]).output() else {
        return 0;
    };
    count_foreign(&String::from_utf8_lossy(&output.stdout), own)
}

fn count_foreign(listing: &str, own: &[u32]) -> usize {
    let mut count = 0;
    let mut current: Option<bool> = None; // Some(is a kfree_skb program)
    let mut owned = false;
    let mut finish = |current: Option<bool>, owned: bool| {
        if current == Some(true) && !owned {
            count += 1;
        }
    };
    for line in listing.lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            finish(current, owned);
            let name = line
                .split("name ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            current =
                Some(name.is_some_and(|n| n.contains("kfree_skb") || n.starts_with("dropspec_tp")));
            owned = false;
        } else if let Some(pids) = line.trim_start().strip_prefix("pids ") {
            owned = pids.split(", ").any(|p| {
                p.rsplit_once('(')
                    .and_then(|(_, pid)| pid.trim_end_matches(')').parse::<u32>().ok())
                    .is_some_and(|pid| own.contains(&pid))
            });
        }
    }
    finish(current, owned);
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_round_trip() {
        let r = FloodResult {
            mode: "dropspec".into(),
            watched: 10,
            sent: 1_000_000,
            secs: 1.5,
            cpu_secs: 1.25,
            rule: 1_000_000,
            dropspec: Some(1_000_000),
            dropspec_other: Some(0),
            bpftrace: None,
            bpftrace_killed: false,
            foreign: 2,
            maps_memlock: Some(4096),
        };
        let back = FloodResult::parse(&r.line()).unwrap();
        assert_eq!(back.line(), r.line());
        assert!((back.pps() - 666_666.67).abs() < 1.0);
    }

    #[test]
    fn the_drop_rules_counter_is_read_from_the_listing() {
        let listing = "Chain INPUT (policy ACCEPT 12 packets, 504 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n 1001000 46046000 DROP       17   --  *      *       0.0.0.0/0            0.0.0.0/0            udp dpt:9\n";
        assert_eq!(parse_rule_counter(listing).unwrap(), 1_001_000);
        assert!(parse_rule_counter("Chain INPUT (policy ACCEPT)\n").is_err());
    }

    #[test]
    fn foreign_programs_are_counted_by_name_and_owner() {
        let listing = "\
423: tracepoint  name kfree_skb  tag c0d3104b248dafa7  gpl
\tloaded_at 2026-11-24T05:39:41+0000  uid 0
\tpids bpftrace(1127)
500: tracing  name dropspec_tpbtf  tag 00  gpl
\tpids dropspec(77)
501: tracing  name dropspec_tpbtf  tag 00  gpl
\tpids dropspec(78)
502: cgroup_skb  name other  tag 00
";
        assert_eq!(count_foreign(listing, &[]), 3);
        assert_eq!(count_foreign(listing, &[77]), 2);
        assert_eq!(count_foreign(listing, &[77, 1127]), 1);
    }
}
