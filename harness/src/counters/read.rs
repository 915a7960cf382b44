//! Reading one or several hosts: a thread per host enters its namespace, starts the
//! rule tools, reads the `/proc` files while they run, and the outputs are collected
//! and parsed once every host has been started.

use std::collections::BTreeSet;
use std::io;
use std::process::{Child, Output, Stdio};

use super::proc::{parse_conntrack_stat, parse_snmp, parse_snmp6};
use super::rules::{parse_iptables_save, parse_nft_ruleset};
use super::{CountersError, HostCounters, ParseError, RuleSource};
use crate::topology::{Netns, TopologyError};
use crate::vocab::IptablesBackend;

/// Where the files are read from, and what they are called in messages.
const SNMP: (&str, &str) = ("/proc/thread-self/net/snmp", "/proc/net/snmp");
const NETSTAT: (&str, &str) = ("/proc/thread-self/net/netstat", "/proc/net/netstat");
const SNMP6: (&str, &str) = ("/proc/thread-self/net/snmp6", "/proc/net/snmp6");
const DEV: (&str, &str) = ("/proc/thread-self/net/dev", "/proc/net/dev");
const CONNTRACK: (&str, &str) = (
    "/proc/thread-self/net/stat/nf_conntrack",
    "/proc/net/stat/nf_conntrack",
);

/// The raw text of the host's `/proc/net` files.
struct ProcFiles {
    snmp: String,
    netstat: String,
    /// `None` on a kernel without IPv6.
    snmp6: Option<String>,
    /// `None` while conntrack is not active in the namespace.
    conntrack: Option<String>,
    /// Interface statistics.
    dev: String,
}

/// Reads the counters of one host now. See [`read_hosts`] for several at once.
pub fn read_host(
    netns: &Netns,
    rule_sources: &[RuleSource],
) -> Result<HostCounters, CountersError> {
    let mut counters = read_hosts(&[(netns, rule_sources)])?;
    Ok(counters.pop().expect("one host in, one out"))
}

/// Reads the counters of several hosts, one result per host in the same order.
///
/// Faster than one [`read_host`] after another: each host's rule tools are started from
/// a thread inside its namespace, which then reads its `/proc` files while the tools
/// run, and only when every host has been started are the tools' outputs collected, so
/// the tools of all hosts run side by side.
pub fn read_hosts(hosts: &[(&Netns, &[RuleSource])]) -> Result<Vec<HostCounters>, CountersError> {
    let started: Vec<Started> = hosts
        .iter()
        .map(|&(netns, sources)| start_reading(netns, sources))
        .collect();
    // Every tool is waited for before any error is returned, so none is left a zombie.
    let collected: Vec<Collected> = started.into_iter().map(Started::collect).collect();
    collected.into_iter().map(Collected::parse).collect()
}

/// One host's reading under way. `T` is where its tools are: [`Child`] while they may
/// still run, [`Output`] once they have exited.
struct Reading<T> {
    host: String,
    /// `Err` when no thread could enter the namespace (then no tool was started).
    read: Result<HostRead<T>, TopologyError>,
}

type Started = Reading<Child>;
type Collected = Reading<Output>;

struct HostRead<T> {
    files: Result<ProcFiles, ProcError>,
    tools: Vec<(RuleSource, io::Result<T>)>,
}

/// The file (as named in messages) that could not be read, and why.
type ProcError = (&'static str, io::Error);

fn start_reading(netns: &Netns, rule_sources: &[RuleSource]) -> Started {
    let mut sources: Vec<RuleSource> = Vec::with_capacity(rule_sources.len());
    for source in rule_sources {
        if !sources.contains(source) {
            sources.push(*source);
        }
    }
    let read = netns.run(|| {
        // A process started from this thread is born in the thread's namespace. That
        // spares the fork-and-setns of `Netns::command`: without a pre-exec hook the
        // standard library spawns with posix_spawn (vfork), which does not copy the page
        // tables of a large test process.
        let children = sources
            .iter()
            .map(|&source| {
                let child = crate::forks::spawn(
                    std::process::Command::new(source.tool())
                        .args(source.args())
                        // Parsed below, and quoted in errors: keep the tools' words English.
                        .env("LC_ALL", "C")
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped()),
                );
                (source, child)
            })
            .collect::<Vec<_>>();
        HostRead {
            files: read_proc_files(),
            tools: children,
        }
    });
    Started {
        host: netns.label().to_owned(),
        read,
    }
}

impl Started {
    fn collect(self) -> Collected {
        Collected {
            host: self.host,
            read: self.read.map(|HostRead { files, tools }| HostRead {
                files,
                tools: tools
                    .into_iter()
                    .map(|(source, child)| (source, child.and_then(Child::wait_with_output)))
                    .collect(),
            }),
        }
    }
}

impl Collected {
    fn parse(self) -> Result<HostCounters, CountersError> {
        let host = self.host.as_str();
        let HostRead {
            files,
            tools: outputs,
        } = self.read.map_err(CountersError::Namespace)?;
        let files = files.map_err(|(path, source)| CountersError::Read {
            host: host.to_owned(),
            path,
            source,
        })?;
        let parse_error = |what: &str| {
            let what = what.to_owned();
            move |e: ParseError| CountersError::Parse {
                host: host.to_owned(),
                what: what.clone(),
                line: e.line,
                message: e.message,
            }
        };

        let mut counters = HostCounters {
            snmp: parse_snmp(&files.snmp).map_err(parse_error(SNMP.1))?,
            ..HostCounters::default()
        };
        counters
            .snmp
            .append(&mut parse_snmp(&files.netstat).map_err(parse_error(NETSTAT.1))?);
        if let Some(text) = &files.snmp6 {
            counters
                .snmp
                .append(&mut parse_snmp6(text).map_err(parse_error(SNMP6.1))?);
        }
        counters.link = super::link::parse_proc_net_dev(&files.dev).map_err(parse_error(DEV.1))?;
        if let Some(text) = &files.conntrack {
            counters.conntrack = parse_conntrack_stat(text).map_err(parse_error(CONNTRACK.1))?;
        }

        let mut iptables_nft_tables = Vec::new();
        let mut nft_rules = Vec::new();
        for (source, output) in outputs {
            let command = source.command_line();
            let output = output.map_err(|e| spawn_error(host, source, e))?;
            if !output.status.success() {
                return Err(CountersError::ToolFailed {
                    host: host.to_owned(),
                    command,
                    status: output.status,
                    output: tool_message(&output),
                });
            }
            let text = String::from_utf8_lossy(&output.stdout);
            let what = format!("the output of `{command}`");
            match source {
                RuleSource::Iptables(backend) => {
                    let rules =
                        parse_iptables_save(&text, source.backend()).map_err(parse_error(&what))?;
                    if backend == IptablesBackend::Nft {
                        iptables_nft_tables.extend(rules.iter().map(|r| format!("ip {}", r.table)));
                    }
                    counters.rules.extend(rules);
                }
                RuleSource::Nft => {
                    nft_rules = parse_nft_ruleset(&text).map_err(parse_error(&what))?
                }
                RuleSource::Qdisc => {
                    counters.qdisc =
                        super::qdisc::parse_tc_qdisc_json(&text).map_err(parse_error(&what))?
                }
            }
        }
        // iptables-nft keeps its rules in nf_tables tables of family ip, which `nft list
        // ruleset` lists too; they are already counted under iptables-nft.
        nft_rules.retain(|r| !iptables_nft_tables.contains(&r.table));
        counters.rules.extend(nft_rules);
        Ok(counters)
    }
}

/// The counter names this kernel has, as expectations spell them
/// (`TcpExt.ListenOverflows`, `Ip6.InReceives`, `conntrack.drop`), read in the calling
/// thread's namespace (names are the kernel's, the same in every namespace); and the
/// groups whose file is absent here (`conntrack` while nf_conntrack is not loaded, IPv6's
/// on a kernel without IPv6), whose names are unknown rather than wrong. `None` when
/// even `/proc/net/snmp` cannot be read.
pub fn counter_names() -> Option<(BTreeSet<String>, Vec<&'static str>)> {
    let files = read_proc_files().ok()?;
    let mut names: BTreeSet<String> = parse_snmp(&files.snmp).ok()?.into_keys().collect();
    names.extend(parse_snmp(&files.netstat).ok()?.into_keys());
    let mut unread = Vec::new();
    match files.snmp6.as_deref().map(parse_snmp6) {
        Some(Ok(v6)) => names.extend(v6.into_keys()),
        _ => unread.extend(["Ip6", "Icmp6", "Udp6", "UdpLite6"]),
    }
    match files.conntrack.as_deref().map(parse_conntrack_stat) {
        Some(Ok(stats)) => names.extend(stats.into_keys().map(|k| format!("conntrack.{k}"))),
        _ => unread.push("conntrack"),
    }
    Some((names, unread))
}

/// Runs on a thread inside the host's namespace.
fn read_proc_files() -> Result<ProcFiles, ProcError> {
    let read =
        |(path, name): (&str, &'static str)| std::fs::read_to_string(path).map_err(|e| (name, e));
    let optional = |file: (&str, &'static str)| match read(file) {
        Ok(text) => Ok(Some(text)),
        Err((_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    };
    Ok(ProcFiles {
        snmp: read(SNMP)?,
        netstat: read(NETSTAT)?,
        snmp6: optional(SNMP6)?,
        conntrack: optional(CONNTRACK)?,
        dev: read(DEV)?,
    })
}

fn spawn_error(host: &str, source: RuleSource, e: io::Error) -> CountersError {
    if e.kind() == io::ErrorKind::NotFound {
        CountersError::ToolMissing {
            host: host.to_owned(),
            tool: source.tool(),
            package: source.package(),
            source: e,
        }
    } else {
        CountersError::Spawn {
            host: host.to_owned(),
            command: source.command_line(),
            source: e,
        }
    }
}

/// What a failed tool said: its stderr, or its stdout if stderr was empty.
fn tool_message(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&output.stdout)
    } else {
        stderr
    };
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::testing::fixture;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn output(stdout: &str, status: i32) -> io::Result<Output> {
        Ok(Output {
            status: ExitStatus::from_raw(status << 8),
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"something went wrong\n".to_vec(),
        })
    }

    fn collected(host: &str, outputs: Vec<(RuleSource, io::Result<Output>)>) -> Collected {
        let files = ProcFiles {
            snmp: fixture(host, "snmp"),
            netstat: fixture(host, "netstat"),
            snmp6: Some(fixture(host, "snmp6")),
            conntrack: Some(fixture(host, "nf_conntrack")),
            dev: "Inter-|\n face |\n".to_owned(),
        };
        Collected {
            host: host.to_owned(),
            read: Ok(HostRead {
                files: Ok(files),
                tools: outputs,
            }),
        }
    }

    #[test]
    fn a_host_reading_leaves_iptables_nft_tables_to_iptables_nft() {
        let server = collected(
            "server",
            vec![
                (
                    RuleSource::Nft,
                    output(&fixture("server", "nft-list-ruleset.txt"), 0),
                ),
                (
                    RuleSource::Iptables(IptablesBackend::Nft),
                    output(&fixture("server", "iptables-nft-save-c.txt"), 0),
                ),
            ],
        )
        .parse()
        .unwrap();
        assert_eq!(server.snmp["Udp.NoPorts"], 2);
        assert_eq!(server.conntrack.len(), 16);
        let count = |backend: &str| server.rules.iter().filter(|r| r.backend == backend).count();
        assert_eq!(count("iptables-nft"), 9);
        assert_eq!(
            count("nft"),
            3,
            "only table inet dropspec_filter: {:#?}",
            server.rules
        );
        assert!(server
            .rules
            .iter()
            .all(|r| r.backend != "nft" || r.table == "inet dropspec_filter"));

        // Without an iptables-nft source, nft's view of those tables is all there is.
        let nft_only = collected(
            "server",
            vec![(
                RuleSource::Nft,
                output(&fixture("server", "nft-list-ruleset.txt"), 0),
            )],
        )
        .parse()
        .unwrap();
        assert_eq!(nft_only.rules.len(), 7);
    }

    #[test]
    fn a_failing_or_missing_tool_is_reported_with_its_words() {
        let failed = collected("server", vec![(RuleSource::Nft, output("", 1))])
            .parse()
            .unwrap_err();
        let text = failed.to_string();
        assert!(
            text.starts_with("host `server`: `nft list ruleset` failed"),
            "{text}"
        );
        assert!(text.contains("something went wrong"), "{text}");
        assert!(!failed.is_unavailable());

        let missing = collected(
            "client",
            vec![(
                RuleSource::Iptables(IptablesBackend::Legacy),
                Err(io::Error::from(io::ErrorKind::NotFound)),
            )],
        )
        .parse()
        .unwrap_err();
        assert!(missing.is_unavailable());
        assert!(
            missing.to_string().contains("apt-get install iptables"),
            "{missing}"
        );

        let garbled = collected(
            "client",
            vec![(
                RuleSource::Iptables(IptablesBackend::Nft),
                output("*filter\nnonsense\n", 0),
            )],
        )
        .parse()
        .unwrap_err();
        let text = garbled.to_string();
        assert!(
            text.contains("the output of `iptables-nft-save -c`, line 2"),
            "{text}"
        );
    }

    #[test]
    fn missing_proc_files_are_errors_or_zero() {
        let mut host = collected("client", Vec::new());
        if let Ok(HostRead {
            files: Ok(files), ..
        }) = &mut host.read
        {
            files.snmp6 = None;
            files.conntrack = None;
        }
        let counters = host.parse().unwrap();
        assert!(counters.conntrack.is_empty());
        assert!(!counters.snmp.keys().any(|k| k.starts_with("Ip6.")));

        let unreadable = Collected {
            host: "client".to_owned(),
            read: Ok(HostRead {
                files: Err((SNMP.1, io::Error::from_raw_os_error(libc::EACCES))),
                tools: Vec::new(),
            }),
        }
        .parse()
        .unwrap_err();
        assert!(unreadable.is_unavailable());
        assert!(
            unreadable
                .to_string()
                .starts_with("host `client`: cannot read /proc/net/snmp"),
            "{unreadable}"
        );
    }
}
