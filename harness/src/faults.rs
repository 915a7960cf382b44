//! Faults injected into hosts: iptables (nft or legacy backend) and native nft rulesets.
//!
//! Each fault is loaded by the distribution's own tool (`iptables-nft-restore`,
//! `iptables-legacy-restore` or `nft -f -`) started inside the host's namespace with
//! [`Netns::command`](crate::topology::Netns::command), so the rules can only ever land
//! in that host, never in the machine's own firewall. The rules reach the tool on stdin
//! from an in-memory file, and what the tool says on failure is kept for the error.

use crate::counters::RuleSource;
use crate::kernel_features::KernelFeature;
use crate::scenario::undo::{undo, Undo};
use crate::scenario::{Fault, FaultKind, HostId, IptablesBackend, Scenario, StepAction};
use crate::topology::Topology;
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::fs::File;
use std::io::{self, Seek, Write};
use std::process::ExitStatus;

mod command;
mod qdisc;

/// A fault that could not be loaded, naming where its rules came from (`origin`: the
/// scenario file or the fixture file) and the host it was meant for.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error(
        "{origin}: `{tool}` is not installed (needed for host `{host}`): \
         install the Debian package `{package}` (apt-get install {package})"
    )]
    ToolMissing {
        origin: String,
        host: String,
        tool: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{origin}: cannot run `{tool}` in host `{host}`{}", spawn_hint(source))]
    Spawn {
        origin: String,
        host: String,
        tool: &'static str,
        #[source]
        source: io::Error,
    },
    /// The running kernel lacks what the fault needs: a qdisc kind, a classifier or an
    /// action (a skip, or a failure under `DROPSPEC_REQUIRE_PRIVILEGED=1` unless
    /// `DROPSPEC_MAY_LACK` names the feature: the verdict decides).
    #[error(
        "{origin}: this kernel lacks {} (module {}), which host `{host}` needs; \
         on a modular kernel load the module, or run the scenario in a guest (`dropspec vm`)",
        feature.option,
        feature.name
    )]
    KernelLacks {
        origin: String,
        host: String,
        feature: &'static KernelFeature,
    },
    #[error(
        "{origin}: `{tool}` rejected the rules for host `{host}` ({status}):\n{}\n{}",
        indent(output),
        check_hint(tool, origin)
    )]
    Rejected {
        origin: String,
        host: String,
        tool: &'static str,
        status: ExitStatus,
        /// The tool's own message, with the offending rule quoted when the tool named
        /// its line number (`iptables-restore: line 3 failed`).
        output: String,
    },
    /// A `command` fault exited with a non-zero status.
    #[error("{origin}: `{command}` failed in host `{host}` ({status}):\n{output}")]
    CommandFailed {
        origin: String,
        host: String,
        command: String,
        status: ExitStatus,
        output: String,
    },
}

impl FaultError {
    /// The kernel feature this error says is missing, if that is what it says.
    pub fn lacks(&self) -> Option<&'static KernelFeature> {
        match self {
            FaultError::KernelLacks { feature, .. } => Some(feature),
            _ => None,
        }
    }

    /// True when this machine cannot load faults at all (a tool is not installed, or
    /// the process may not enter namespaces), as opposed to a mistake in the rules.
    pub fn is_unavailable(&self) -> bool {
        match self {
            FaultError::ToolMissing { .. } | FaultError::KernelLacks { .. } => true,
            FaultError::Spawn { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            }
            FaultError::Rejected { .. } | FaultError::CommandFailed { .. } => false,
        }
    }
}

fn spawn_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) => {
            "; entering the host's namespace needs root (CAP_SYS_ADMIN): run dropspec as root"
        }
        Some(libc::EACCES) => "; the tool is not executable by this user",
        _ => "",
    }
}

fn check_hint(tool: &str, origin: &str) -> String {
    let check = if tool == "nft" {
        "`nft -c -f FILE`".to_owned()
    } else {
        format!("`{tool} --test FILE` (as root)")
    };
    format!("fix the rules in {origin}; {check} checks rules without loading them")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Loads every fault into its host, in scenario order (later faults add to earlier ones
/// on the same host).
/// Faults a `[[steps]]` entry applies are left for it ([`apply_one`]).
/// Returns what each `command` fault printed, for the report (`command::ran`).
pub fn apply(scenario: &Scenario, topology: &Topology) -> Result<Vec<String>, FaultError> {
    let mut printed = Vec::new();
    for (i, fault) in scenario.faults.iter().enumerate() {
        if scenario.applied_up_front(i) {
            printed.extend(apply_one(fault, topology)?);
        }
    }
    Ok(printed)
}

/// Loads one fault, for an `apply` step; a `command` fault returns what it printed.
pub fn apply_one(fault: &Fault, topology: &Topology) -> Result<Vec<String>, FaultError> {
    if let FaultKind::Command { argv, origin } = &fault.kind {
        return command::run(topology.host(fault.host), argv, origin);
    }
    apply_fault(fault, topology).map(|()| Vec::new())
}

/// Runs a `run` step's command in the host; returns what it printed, for the report.
pub fn run_command(
    netns: &crate::topology::Netns,
    argv: &[String],
    origin: &str,
) -> Result<Vec<String>, FaultError> {
    command::run(netns, argv, origin)
}

/// Takes a fault back, for a `remove` step: loads its inverse (`scenario::undo`) with
/// the fault's own tool, so a rule of another fault on the same host stays.
pub fn remove(fault: &Fault, topology: &Topology) -> Result<(), FaultError> {
    let origin = |o: &str| format!("{o} (removing)");
    let kind = match (undo(&fault.kind), &fault.kind) {
        (
            Ok(Undo::Iptables(rules)),
            FaultKind::Iptables {
                backend, origin: o, ..
            },
        ) => FaultKind::Iptables {
            backend: *backend,
            rules,
            origin: origin(o),
        },
        (Ok(Undo::Nft(ruleset)), FaultKind::Nft { origin: o, .. }) => FaultKind::Nft {
            ruleset,
            origin: origin(o),
        },
        (Ok(Undo::Tc(commands)), _) => FaultKind::Tc {
            commands,
            origin: "removing a tc_drop or qdisc fault".to_owned(),
        },
        // The validator refuses a `remove` of a fault without an inverse.
        (result, _) => unreachable!("remove of a fault the validator refused: {result:?}"),
    };
    apply_fault(
        &Fault {
            host: fault.host,
            kind,
        },
        topology,
    )
}

/// The counters that evidence this host's faults: the tools to ask for rule counters, one
/// per kind of fault the scenario puts on the host, in the order the faults first use them. Empty when the host has no rules,
/// so [`read_host`](crate::counters::read_host) starts no process for it.
pub fn rule_sources(scenario: &Scenario, host: HostId) -> Vec<RuleSource> {
    let mut sources = Vec::new();
    for fault in scenario.faults.iter().filter(|f| f.host == host) {
        let source = match &fault.kind {
            FaultKind::Iptables { backend, .. } => RuleSource::Iptables(*backend),
            FaultKind::Nft { .. } => RuleSource::Nft,
            // tc filters have no per-rule counters the tools print in a stable form.
            FaultKind::Tc { .. } | FaultKind::TcDrop { .. } => continue,
            // The qdisc's own statistics: drops, overlimits, requeues, backlog.
            FaultKind::Qdisc(_) => RuleSource::Qdisc,
            FaultKind::Command { argv, .. } => match command_source(argv) {
                Some(source) => source,
                None => continue,
            },
        };
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
    // A `run` step's command is read as a `command` fault's.
    for step in &scenario.steps {
        let source = match &step.action {
            StepAction::Run { host: h, argv } if *h == host => command_source(argv),
            _ => None,
        };
        if let Some(source) = source.filter(|s| !sources.contains(s)) {
            sources.push(source);
        }
    }
    sources
}

/// What a command's changes are read by: a `tc` command may add qdiscs, an `nft` or
/// iptables one rules (plain `iptables` is the nft backend on Debian). Other tools'
/// changes have no counters dropspec reads; their output is in the report.
fn command_source(argv: &[String]) -> Option<RuleSource> {
    match argv.first().map(String::as_str) {
        Some("tc") => Some(RuleSource::Qdisc),
        Some("nft") => Some(RuleSource::Nft),
        Some("iptables" | "iptables-nft") => Some(RuleSource::Iptables(IptablesBackend::Nft)),
        Some("iptables-legacy") => Some(RuleSource::Iptables(IptablesBackend::Legacy)),
        _ => None,
    }
}

/// dropspec's tc classifier that drops everything (ebpf/tc_drop.bpf.c).
static TC_DROP_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tc_drop.bpf.o"));

fn apply_fault(fault: &Fault, topology: &Topology) -> Result<(), FaultError> {
    if let FaultKind::TcDrop { dev, ingress } = &fault.kind {
        return apply_tc_drop(fault, topology, dev, *ingress);
    }
    if let FaultKind::Qdisc(q) = &fault.kind {
        return apply_qdisc(fault, topology, q);
    }
    let netns = topology.host(fault.host);
    let host = netns.label().to_owned();
    let (tool, package, args, text, origin): (&'static str, _, &[&str], _, _) = match &fault.kind {
        // --noflush: a second fault on the same host adds to the first instead of
        // replacing its tables (a new namespace has nothing else to flush).
        FaultKind::Iptables {
            backend: IptablesBackend::Nft,
            rules,
            origin,
        } => (
            IptablesBackend::Nft.restore_command(),
            "iptables",
            &["--noflush"],
            rules,
            origin,
        ),
        // The legacy backend serialises on /run/xtables.lock, shared by every namespace
        // on the machine; wait for it a while instead of failing at once.
        FaultKind::Iptables {
            backend: IptablesBackend::Legacy,
            rules,
            origin,
        } => (
            IptablesBackend::Legacy.restore_command(),
            "iptables",
            &["--noflush", "--wait=5"],
            rules,
            origin,
        ),
        FaultKind::Nft { ruleset, origin } => ("nft", "nftables", &["-f", "-"], ruleset, origin),
        FaultKind::Tc { commands, origin } => {
            ("tc", "iproute2", &["-batch", "-"], commands, origin)
        }
        FaultKind::TcDrop { .. } => unreachable!("handled by apply_tc_drop"),
        FaultKind::Qdisc(_) => unreachable!("handled by apply_qdisc"),
        FaultKind::Command { .. } => unreachable!("handled by apply_one"),
    };
    let spawn_error = |source: io::Error| {
        if source.kind() == io::ErrorKind::NotFound {
            FaultError::ToolMissing {
                origin: origin.clone(),
                host: host.clone(),
                tool,
                package,
                source,
            }
        } else {
            FaultError::Spawn {
                origin: origin.clone(),
                host: host.clone(),
                tool,
                source,
            }
        }
    };
    let stdin = rules_file(text).map_err(|source| FaultError::Spawn {
        origin: origin.clone(),
        host: host.clone(),
        tool,
        source,
    })?;
    // Started from the calling thread while it stands in the host (`Netns::run`): the
    // child is born there, with no pre-exec hook, so the standard library can spawn it
    // with posix_spawn (vfork) instead of copying this process's page tables in a fork.
    let output = netns
        .run(|| {
            crate::forks::spawn(
                std::process::Command::new(tool)
                    .args(args)
                    // The tools' messages are quoted in errors and read by people: keep
                    // them English.
                    .env("LC_ALL", "C")
                    .stdin(stdin)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped()),
            )
        })
        .map_err(io::Error::other)
        .and_then(|spawned| spawned)
        .and_then(|child| child.wait_with_output())
        .map_err(spawn_error)?;
    if output.status.success() {
        return Ok(());
    }
    let mut message = String::from_utf8_lossy(&output.stderr)
        .trim_end()
        .to_owned();
    if message.is_empty() {
        message = String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned();
    }
    if let Some(line) = failed_line(&message) {
        if let Some(rule) = text.lines().nth(line.wrapping_sub(1)) {
            message.push_str(&format!("\nline {line} of the rules: {rule}"));
        }
    }
    Err(FaultError::Rejected {
        origin: origin.clone(),
        host,
        tool,
        status: output.status,
        output: message,
    })
}

/// Attaches the drop-everything classifier with `tc`, which loads BPF objects from a file:
/// the embedded object is written to a `dropspec-<pid>-…` file for the load and removed
/// after it. The loaded program lives in the host's tc filter, and goes with the namespace.
fn apply_tc_drop(
    fault: &Fault,
    topology: &Topology,
    dev: &str,
    ingress: bool,
) -> Result<(), FaultError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let object = std::env::temp_dir().join(format!(
        "{}-tc_drop-{n}.bpf.o",
        crate::cleanup::owned_name("fault")
    ));
    let direction = if ingress { "ingress" } else { "egress" };
    let commands = format!(
        "qdisc replace dev {dev} clsact\nfilter add dev {dev} {direction} protocol ip prio 1 bpf direct-action obj {} sec tc\n",
        object.display()
    );
    let origin = format!("tc_drop on {dev} ({direction})");
    let result = std::fs::write(&object, TC_DROP_OBJECT)
        .map_err(|source| FaultError::Spawn {
            origin: origin.clone(),
            host: topology.host(fault.host).label().to_owned(),
            tool: "tc",
            source,
        })
        .and_then(|()| {
            let kind = FaultKind::Tc { commands, origin };
            apply_fault(
                &Fault {
                    host: fault.host,
                    kind,
                },
                topology,
            )
        });
    let _ = std::fs::remove_file(&object);
    result
}

/// Installs a qdisc with `tc -batch`; a kernel without that kind of qdisc (or, for an
/// ingress qdisc, its classifier or action) is [`FaultError::KernelLacks`], not a
/// mistake in the scenario.
fn apply_qdisc(
    fault: &Fault,
    topology: &Topology,
    q: &crate::scenario::Qdisc,
) -> Result<(), FaultError> {
    let kind = qdisc::kind_name(q);
    let origin = format!("qdisc {kind} on {}", q.dev);
    let tc = Fault {
        host: fault.host,
        kind: FaultKind::Tc {
            commands: qdisc::commands(q),
            origin: origin.clone(),
        },
    };
    match apply_fault(&tc, topology) {
        Err(FaultError::Rejected { output, host, .. })
            if qdisc::missing_feature(q, &output).is_some() =>
        {
            Err(FaultError::KernelLacks {
                origin,
                host,
                feature: qdisc::missing_feature(q, &output).expect("checked by the guard"),
            })
        }
        other => other,
    }
}

/// The rules as an in-memory file, positioned at its start: unlike a pipe, the tool
/// can never block us by not reading, and we need no thread to feed it.
fn rules_file(text: &str) -> io::Result<File> {
    let mut file = File::from(memfd_create(c"dropspec-rules", MFdFlags::MFD_CLOEXEC)?);
    file.write_all(text.as_bytes())?;
    file.rewind()?;
    Ok(file)
}

/// The 1-based input line that iptables-restore blames: `iptables-restore: line 3
/// failed` (the legacy backend) or `Error occurred at line: 2` (the nft backend).
fn failed_line(message: &str) -> Option<usize> {
    message.lines().find_map(|line| {
        if let Some(rest) = line.split("Error occurred at line: ").nth(1) {
            return rest.trim().parse().ok();
        }
        let rest = line.split("line ").nth(1)?;
        let number = rest.strip_suffix(" failed")?;
        number.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::path::Path;

    #[test]
    fn failed_line_reads_both_iptables_backends() {
        assert_eq!(failed_line("iptables-restore: line 3 failed"), Some(3));
        assert_eq!(
            failed_line(
                "iptables-nft-restore v1.8.9 (nf_tables): unknown protocol \"icmpx\" specified\n\
                 Error occurred at line: 2\n\
                 Try `iptables-nft-restore -h' for more information."
            ),
            Some(2)
        );
        assert_eq!(failed_line("/dev/stdin:2:69-69: Error: syntax error"), None);
    }

    #[test]
    fn rules_file_reads_back_from_the_start() {
        let mut file = rules_file("*filter\nCOMMIT\n").expect("memfd");
        let mut text = String::new();
        io::Read::read_to_string(&mut file, &mut text).unwrap();
        assert_eq!(text, "*filter\nCOMMIT\n");
    }

    #[test]
    fn errors_name_origin_tool_and_remedy() {
        let missing = FaultError::ToolMissing {
            origin: "fixtures/drop.nft".to_owned(),
            host: "server".to_owned(),
            tool: "nft",
            package: "nftables",
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(missing.is_unavailable());
        assert!(
            missing.to_string().contains("apt-get install nftables"),
            "{missing}"
        );

        let rejected = FaultError::Rejected {
            origin: "scenarios/x.toml (inline)".to_owned(),
            host: "server".to_owned(),
            tool: "iptables-legacy-restore",
            status: ExitStatus::from_raw(1 << 8),
            output: "iptables-restore: line 2 failed".to_owned(),
        };
        assert!(!rejected.is_unavailable());
        let text = rejected.to_string();
        assert!(
            text.starts_with("scenarios/x.toml (inline): `iptables-legacy-restore` rejected"),
            "{text}"
        );
        assert!(text.contains("line 2 failed"), "{text}");
        assert!(text.contains("--test"), "{text}");
    }

    #[test]
    fn rule_sources_follow_the_hosts_faults() {
        let text = r#"
description = "x"
[hosts.a]
[hosts.b]
[hosts.c]
[[links]]
a = { host = "a", addr = "198.18.0.1/24" }
b = { host = "b", addr = "198.18.0.2/24" }
[[faults]]
host = "b"
nft = "table inet t { }"
[[faults]]
host = "b"
iptables = "*filter\nCOMMIT\n"
[[faults]]
host = "b"
backend = "legacy"
iptables = "*filter\nCOMMIT\n"
[[faults]]
host = "b"
nft = "table inet u { }"
"#;
        let scenario =
            crate::scenario::parse(text, Path::new("x.toml"), "x", Path::new("fixtures")).unwrap();
        let id = |name: &str| scenario.hosts.iter().position(|h| h.name == name).unwrap();
        assert_eq!(rule_sources(&scenario, id("a")), vec![]);
        assert_eq!(
            rule_sources(&scenario, id("b")),
            vec![
                RuleSource::Nft,
                RuleSource::Iptables(IptablesBackend::Nft),
                RuleSource::Iptables(IptablesBackend::Legacy)
            ]
        );
        assert_eq!(rule_sources(&scenario, id("c")), vec![]);
    }

    /// A rule a `run` step adds is read like a fault's, or its drops are unexplained.
    #[test]
    fn run_steps_name_the_tools_of_their_rules() {
        let text = r#"
description = "x"
[hosts.a]
[hosts.b]
[[links]]
a = { host = "a", addr = "198.18.0.1/24" }
b = { host = "b", addr = "198.18.0.2/24" }
[[traffic]]
name = "t"
from = "a"
to = "b"
protocol = "icmp"
[[steps]]
run = { host = "b", command = ["iptables", "-A", "INPUT", "-p", "icmp", "-j", "DROP"] }
[[steps]]
run = { host = "b", command = ["ip", "link", "set", "dev", "eth0", "mtu", "1400"] }
[[steps]]
run = { host = "a", command = ["nft", "add", "table", "inet", "t"] }
[[steps]]
traffic = "t"
"#;
        let scenario =
            crate::scenario::parse(text, Path::new("x.toml"), "x", Path::new("fixtures")).unwrap();
        let id = |name: &str| scenario.hosts.iter().position(|h| h.name == name).unwrap();
        assert_eq!(rule_sources(&scenario, id("a")), vec![RuleSource::Nft]);
        assert_eq!(
            rule_sources(&scenario, id("b")),
            vec![RuleSource::Iptables(IptablesBackend::Nft)]
        );
    }
}
