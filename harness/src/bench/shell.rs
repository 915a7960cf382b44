//! The shell way: a scenario done the way people do it today, with `ip netns`,
//! `ip link`, iptables-restore or nft, ping, nc or bash's /dev/udp and /dev/tcp, and the
//! bpftrace one-liner on `tracepoint:skb:kfree_skb`.
//!
//! `shell_way.sh` is the fixed part (trap, bpftrace, phases); [`script_for`] writes the
//! scenario's part as shell functions, one command per kernel object, the way a person
//! would type them. Namespaces are named `dropspec-bench-<pid>-<run>-<host>` and the
//! script deletes them on every exit path; [`reap_own_leftovers`] removes any that a
//! killed run of an earlier bench process left.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dropspec::scenario::{FaultKind, Protocol, Scenario};

pub const SCRIPT: &str = include_str!("shell_way.sh");

/// Prefix of every namespace the shell way names; `dropspec` so cleanup.rs reaps it too.
pub const NETNS_PREFIX: &str = "dropspec-bench-";

/// Longest one shell-way run may take before it is stopped (its trap cleans up).
const TIME_LIMIT: Duration = Duration::from_secs(40);

pub const PHASES: [&str; 6] = [
    "setup", "attach", "traffic", "settle", "collect", "teardown",
];

#[derive(Debug, Clone, Default)]
pub struct ShellRun {
    /// Duration of each of [`PHASES`], in that order.
    pub phases: [Duration; 6],
    /// bpftrace's map: reason number → drops, machine-wide (the one-liner has no filter).
    pub drops: BTreeMap<u32, u64>,
}

impl ShellRun {
    pub fn total(&self) -> Duration {
        self.phases.iter().sum()
    }
}

/// Single-quotes a word for bash.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The scenario's part of the script: `NAMESPACES`, `setup()` and `traffic()`. Rule
/// texts are written next to it in `dir`.
pub fn script_for(scenario: &Scenario, tag: &str, dir: &Path) -> Result<String> {
    let ns: Vec<String> = scenario
        .hosts
        .iter()
        .map(|h| format!("{NETNS_PREFIX}{tag}-{}", h.name))
        .collect();
    let q = |id: usize| quote(&ns[id]);
    let mut s = String::new();
    writeln!(
        s,
        "NAMESPACES=({})",
        ns.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ")
    )?;

    writeln!(s, "setup() {{")?;
    for (id, host) in scenario.hosts.iter().enumerate() {
        writeln!(s, "\tip netns add {}", q(id))?;
        writeln!(s, "\tip -n {} link set lo up", q(id))?;
        // As dropspec does: no IPv6, whose MLD reports would be dropped and counted.
        let mut sysctls = vec![
            "net.ipv6.conf.all.disable_ipv6=1".to_owned(),
            "net.ipv6.conf.default.disable_ipv6=1".to_owned(),
        ];
        if host.forwarding {
            sysctls.push("net.ipv4.ip_forward=1".into());
            sysctls.push("net.ipv4.conf.all.forwarding=1".into());
        }
        writeln!(
            s,
            "\tip netns exec {} sysctl -qw {}",
            q(id),
            sysctls
                .iter()
                .map(|x| quote(x))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    for link in &scenario.links {
        let [a, b] = &link.ends;
        let mtu = link.mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
        writeln!(
            s,
            "\tip -n {} link add {}{mtu} type veth peer name {}{mtu} netns {}",
            q(a.host),
            quote(&a.ifname),
            quote(&b.ifname),
            q(b.host)
        )?;
        for end in [a, b] {
            writeln!(
                s,
                "\tip -n {} addr add {} dev {}",
                q(end.host),
                end.addr,
                quote(&end.ifname)
            )?;
            writeln!(
                s,
                "\tip -n {} link set {} up",
                q(end.host),
                quote(&end.ifname)
            )?;
        }
    }
    for (id, host) in scenario.hosts.iter().enumerate() {
        for route in &host.routes {
            let mut words = vec![route
                .destination
                .map_or_else(|| "default".to_owned(), |d| d.to_string())];
            if let Some(via) = route.via {
                words.push(format!("via {via}"));
            }
            if let Some(dev) = &route.dev {
                words.push(format!("dev {}", quote(dev)));
            }
            writeln!(s, "\tip -n {} route add {}", q(id), words.join(" "))?;
        }
        if !host.sysctls.is_empty() {
            let pairs: Vec<String> = host
                .sysctls
                .iter()
                .map(|(k, v)| quote(&format!("{k}={v}")))
                .collect();
            writeln!(
                s,
                "\tip netns exec {} sysctl -qw {}",
                q(id),
                pairs.join(" ")
            )?;
        }
    }
    for (i, fault) in scenario.faults.iter().enumerate() {
        let file = dir.join(format!("rules{i}"));
        let (command, text) = match &fault.kind {
            FaultKind::Iptables { backend, rules, .. } => (
                format!("{} --noflush --wait=5 <", backend.restore_command()),
                rules,
            ),
            FaultKind::Nft { ruleset, .. } => ("nft -f".to_owned(), ruleset),
            FaultKind::Tc { commands, .. } => ("tc -batch".to_owned(), commands),
            FaultKind::TcDrop { .. } | FaultKind::Qdisc(_) | FaultKind::Command { .. } => {
                anyhow::bail!("the shell way does not model tc_drop, qdisc or command faults: leave such scenarios out of the bench")
            }
        };
        std::fs::write(&file, text).with_context(|| format!("writing {}", file.display()))?;
        writeln!(
            s,
            "\tip netns exec {} {command} {}",
            q(fault.host),
            quote(&file.to_string_lossy())
        )?;
    }
    writeln!(s, "}}\n")?;

    writeln!(s, "traffic() {{")?;
    for t in &scenario.traffic {
        let from = q(t.from);
        let wait_s = t.timeout_ms.div_ceil(1000).max(1);
        if let (true, Some(to), Protocol::Udp | Protocol::Tcp) = (t.listen, t.to_host, t.protocol) {
            writeln!(
                s,
                "\tlisten {} {} {} {}",
                q(to),
                t.protocol.as_str(),
                t.destination,
                t.port
            )?;
        }
        match t.protocol {
            // -i 0.01 instead of ping's 1 s default: as quick as ping lets root go
            // without flooding; -W bounds the wait for the last reply.
            Protocol::Icmp => writeln!(
                s,
                "\tip netns exec {from} ping -q -n -c {} -i 0.01 -W {wait_s} -s {} {} >/dev/null || true",
                t.count, t.payload, t.destination
            )?,
            Protocol::Udp => writeln!(
                s,
                "\tip netns exec {from} bash -c 'for i in $(seq {}); do head -c {} /dev/zero >/dev/udp/{}/{}; done' 2>/dev/null || true",
                t.count, t.payload, t.destination, t.port
            )?,
            // One connection attempt per process, all at once, each given the
            // scenario's timeout: what `nc -z -w` in a loop does, without the loop.
            Protocol::Tcp => {
                writeln!(s, "\tlocal pids=()")?;
                writeln!(s, "\tfor i in $(seq {}); do", t.count)?;
                writeln!(
                    s,
                    "\t\tip netns exec {from} timeout {wait_s} bash -c '</dev/tcp/{}/{}' 2>/dev/null &",
                    t.destination, t.port
                )?;
                writeln!(s, "\t\tpids+=($!)")?;
                writeln!(s, "\tdone")?;
                writeln!(s, "\twait \"${{pids[@]}}\" || true")?;
            }
        }
    }
    writeln!(s, "\t:\n}}")?;
    Ok(s)
}

/// Runs the shell way once for `scenario`, in a fresh subdirectory of `dir`.
pub fn run(scenario: &Scenario, dir: &Path, tag: &str) -> Result<ShellRun> {
    let work = dir.join(format!("shell-{tag}"));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let template = work.join("shell_way.sh");
    std::fs::write(&template, SCRIPT)?;
    let scenario_file = work.join("scenario.sh");
    std::fs::write(&scenario_file, script_for(scenario, tag, &work)?)?;

    let mut command = Command::new("bash");
    command
        .arg(&template)
        .arg(&scenario_file)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().context("starting bash")?;
    let pid = child.id() as i32;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            // SIGTERM to the script alone: its trap stops bpftrace and deletes the
            // namespaces (signalling the whole group could kill `ip netns del`).
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let status = child.wait()?;
            let (mut out, mut err) = (String::new(), String::new());
            use std::io::Read as _;
            child.stdout.take().unwrap().read_to_string(&mut out)?;
            child.stderr.take().unwrap().read_to_string(&mut err)?;
            let last = out.lines().rfind(|l| l.starts_with("phase "));
            bail!(
                "the shell way for {} took over {}s and was stopped ({status}); last phase \
                 line: {last:?}; stderr: {}",
                scenario.name,
                TIME_LIMIT.as_secs(),
                err.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read as _;
    child.stdout.take().unwrap().read_to_string(&mut stdout)?;
    child.stderr.take().unwrap().read_to_string(&mut stderr)?;
    if !status.success() {
        bail!(
            "the shell way for {} failed ({status}): {}",
            scenario.name,
            stderr.trim()
        );
    }
    let leftovers = own_namespaces(Some(tag))?;
    if !leftovers.is_empty() {
        bail!("the shell way left namespaces behind: {leftovers:?}");
    }
    let _ = std::fs::remove_dir_all(&work);
    parse_output(&stdout)
}

fn parse_output(stdout: &str) -> Result<ShellRun> {
    let mut marks: Vec<(String, f64)> = Vec::new();
    let mut run = ShellRun::default();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("phase ") {
            let (name, at) = rest
                .split_once(' ')
                .context("a phase line without a time")?;
            marks.push((name.to_owned(), at.trim().parse()?));
        } else if let Some(rest) = line.strip_prefix("drops @[") {
            let (reason, count) = rest.split_once("]:").context("a bpftrace line")?;
            run.drops
                .insert(reason.trim().parse()?, count.trim().parse()?);
        }
    }
    let names: Vec<&str> = marks.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["start"];
    expected.extend(PHASES);
    if names != expected {
        bail!("the shell way printed phases {names:?}, expected {expected:?}");
    }
    for (i, pair) in marks.windows(2).enumerate() {
        run.phases[i] = Duration::from_secs_f64((pair[1].1 - pair[0].1).max(0.0));
    }
    Ok(run)
}

/// `/run/netns` names the shell way made: this process's run `tag`, or (None) all of
/// this process's.
fn own_namespaces(tag: Option<&str>) -> Result<Vec<String>> {
    let prefix = match tag {
        Some(tag) => format!("{NETNS_PREFIX}{tag}-"),
        None => format!("{NETNS_PREFIX}{}-", std::process::id()),
    };
    let mut found = Vec::new();
    let entries = match std::fs::read_dir("/run/netns") {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).context("reading /run/netns"),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) {
            found.push(name);
        }
    }
    Ok(found)
}

/// Deletes `dropspec-bench-<pid>-…` namespaces whose bench process is gone (a run
/// killed with SIGKILL, which no trap survives). Other names are never touched: other
/// dropspec runs on the machine may be using theirs.
pub fn reap_own_leftovers() -> Result<Vec<String>> {
    let mut reaped = Vec::new();
    let entries = match std::fs::read_dir("/run/netns") {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(reaped),
        Err(e) => return Err(e).context("reading /run/netns"),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let status = Command::new("ip")
            .args(["netns", "del", &name])
            .status()
            .context("running ip netns del")?;
        if status.success() {
            reaped.push(name);
        }
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(text: &str) -> Scenario {
        dropspec::scenario::parse(
            text,
            Path::new("x.toml"),
            "x",
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures")),
        )
        .unwrap()
    }

    #[test]
    fn every_firewall_command_runs_inside_a_named_bench_namespace() {
        let s = scenario(
            r#"
description = "d"
[hosts.client]
[hosts.server]
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
[[faults]]
host = "server"
iptables = "*filter\n-A INPUT -p tcp -j DROP\nCOMMIT\n"
[[traffic]]
from = "client"
to = "server"
protocol = "tcp"
port = 80
count = 2
"#,
        );
        let dir = std::env::temp_dir().join(format!("dropspec-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = script_for(&s, "123-4", &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text
            .contains("NAMESPACES=('dropspec-bench-123-4-client' 'dropspec-bench-123-4-server')"));
        for line in text.lines() {
            if line.contains("iptables") || line.contains("nft ") || line.contains("sysctl") {
                assert!(
                    line.trim_start()
                        .starts_with("ip netns exec 'dropspec-bench-123-4-"),
                    "{line}"
                );
            }
            if line.contains("ip ") && !line.contains("ip netns") {
                assert!(line.contains("ip -n 'dropspec-bench-123-4-"), "{line}");
            }
        }
        assert!(text.contains("listen 'dropspec-bench-123-4-server' tcp 198.18.0.2 80"));
        assert!(text.contains("timeout 1 bash -c '</dev/tcp/198.18.0.2/80'"));
    }

    #[test]
    fn the_script_cleans_up_on_every_exit() {
        assert!(SCRIPT.contains("trap cleanup EXIT"));
        assert!(SCRIPT.contains("trap 'exit 130' INT TERM HUP PIPE"));
        assert!(SCRIPT.contains("tracepoint:skb:kfree_skb { @[args->reason] = count(); }"));
    }

    #[test]
    fn output_is_parsed_into_phases_and_drops() {
        let out = "phase start 10.000\nphase setup 10.050\nphase attach 10.150\n\
                   phase traffic 10.160\nphase settle 10.260\ndrops @[2]: 5\n\
                   drops @[16]: 3\nphase collect 10.270\nphase teardown 10.300\n";
        let run = parse_output(out).unwrap();
        assert_eq!(run.drops, BTreeMap::from([(2, 5), (16, 3)]));
        assert!((run.total().as_secs_f64() - 0.3).abs() < 1e-9);
        assert!((run.phases[1].as_secs_f64() - 0.1).abs() < 1e-9);
        assert!(parse_output("phase start 1\n").is_err());
    }
}
