//! The kernel's own counters for one host, read before and after a scenario so that the
//! report can show what changed: a second opinion on the drop probe from the kernel's
//! bookkeeping, and the firewall rules that did the dropping.
//!
//! Three kinds of counter, all read inside the host's namespace:
//!
//! * **SNMP counters** ([`HostCounters::snmp`]) from `/proc/net/snmp`, `/proc/net/netstat`
//!   and `/proc/net/snmp6` — what `nstat -az` shows. Keys are `Group.Field`:
//!   `Ip.InHdrErrors`, `Udp.NoPorts`, `Icmp.OutDestUnreachs`, `IcmpMsg.OutType3`,
//!   `TcpExt.ListenOverflows`, `IpExt.InCsumErrors`. The first two files print a header
//!   line of field names and a line of values per group, and the group is the word
//!   before the colon. `snmp6` prints one `Ip6InReceives 0` per line with the group
//!   glued on: it ends at the group's first digit, the `6` (`Ip6`, `Icmp6`, `Udp6`,
//!   `UdpLite6`), so the keys read `Ip6.InReceives`, `Icmp6.InCsumErrors`,
//!   `Icmp6.OutType133`, `Udp6.RcvbufErrors`. (`nstat` names the same counters without
//!   the dot: `IpInHdrErrors`, `Ip6InReceives`.) A host's IPv6 counters exist even
//!   though the topology turns IPv6 off; they just stay at zero.
//! * **conntrack statistics** ([`HostCounters::conntrack`]) from
//!   `/proc/net/stat/nf_conntrack` — what `conntrack -S` shows, summed over CPUs. The
//!   file has one row per possible CPU of 32-bit hex numbers under a header line, and is
//!   read by that header, never by position: columns have been renamed between kernels
//!   (`searched` is now `clashres`, `delete_list` now `chainlength`).
//!   Keys are the header's names: `invalid`, `insert_failed`, `drop`, `early_drop`,
//!   `icmp_error`, … On a kernel with conntrack built in (like ours) the file exists in
//!   every namespace from the start; with conntrack as a module it may be missing until
//!   something loads it, and a missing file means every statistic is zero, not an error.
//! * **firewall rule counters** ([`HostCounters::rules`]) from the tool that loaded the
//!   scenario's faults (see [`RuleSource`]): `iptables-nft-save -c`,
//!   `iptables-legacy-save -c`, or `nft list ruleset`. Each [`RuleCounter`] carries the
//!   rule as the tool prints it back, which identifies it between two reads. Two
//!   blind spots, both the tools' own: an nft rule only has a counter if it contains
//!   the `counter` statement (iptables-nft gives every rule one), and iptables-nft counts
//!   what a built-in chain's policy did only if the rules declared that chain
//!   (`:INPUT ACCEPT [0:0]`); otherwise the policy reads `[0:0]` forever. The legacy
//!   backend always counts policies.
//!
//! Gauges and settings are left out, because a difference of two readings of them means
//! nothing a drop report could use and some can go down: `Ip.Forwarding`,
//! `Ip.DefaultTTL`, `Tcp.RtoAlgorithm`, `Tcp.RtoMin`, `Tcp.RtoMax`, `Tcp.MaxConn`
//! (printed as -1), `Tcp.CurrEstab`, `MPTcpExt.MPCurrEstab`, and conntrack's `entries`
//! (the namespace's table size, repeated on every CPU row rather than a per-CPU count).
//! Every value kept only grows, so [`delta`] is a plain difference.
//!
//! ## Reading another namespace's `/proc/net`
//!
//! `/proc/net` is a link to `/proc/self/net`, and `/proc/self` is the *process*: the
//! files under it show the network namespace of the process's main thread, whatever
//! namespace the reading thread has entered. So a thread that entered a host with
//! [`Netns::run`] must read `/proc/thread-self/net/…` to see that host's counters.
//!
//! ## Cost
//!
//! The `/proc` part of a read is one short-lived thread that enters the namespace,
//! reads four small files and parses them: about 0.3 ms. Each rule tool is a process
//! that costs 1–2 ms (`iptables-legacy-save` ~1.2 ms, `iptables-nft-save` ~1.7 ms, `nft`
//! ~2 ms on the 2-core machine of `examples/counters_smoke.rs`), so a host without
//! faults starts none ([`crate::faults::rule_sources`] names only the tools for the kinds
//! of fault the scenario put on that host), and [`read_hosts`] runs the tools of all hosts side by
//! side while it reads `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::process::{Child, ExitStatus, Output, Stdio};

use crate::topology::{Netns, TopologyError};
use crate::vocab::IptablesBackend;

/// Everything counted for one host at one moment, or — from [`delta`] — what changed
/// between two moments.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostCounters {
    /// `Group.Field` → value; see the module docs for the key scheme.
    pub snmp: BTreeMap<String, u64>,
    /// conntrack statistic (header name of `/proc/net/stat/nf_conntrack`) → sum over CPUs.
    pub conntrack: BTreeMap<String, u64>,
    /// Rules in the order the tools list them, tool by tool.
    pub rules: Vec<RuleCounter>,
}

impl HostCounters {
    /// True when nothing was counted (a [`delta`] in which nothing changed).
    pub fn is_empty(&self) -> bool {
        self.snmp.is_empty() && self.conntrack.is_empty() && self.rules.is_empty()
    }
}

/// The packet and byte counters of one firewall rule.
///
/// A rule is identified by backend, table, chain and its text. The text is what the tool
/// prints, which is not always what the scenario wrote: iptables adds the implied match
/// (`-p udp --dport 5000` comes back as `-A INPUT -p udp -m udp --dport 5000 -j DROP`),
/// nft normalises (`priority 10` becomes `priority filter + 10`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct RuleCounter {
    /// `iptables-nft`, `iptables-legacy` or `nft`.
    pub backend: String,
    /// iptables: the table (`filter`, `nat`, …). nft: family and name (`inet dropspec`).
    pub table: String,
    pub chain: String,
    /// iptables: the rule as `iptables -S` prints it (`-A INPUT -p icmp -j DROP`), and a
    /// built-in chain's policy as `-P INPUT DROP` — packets that reached the end of the
    /// chain and met its policy are counted there. nft: the rule as `nft list ruleset`
    /// prints it with the numbers taken out of its counter (`udp dport 5000 counter
    /// drop`). Only nft rules with a `counter` statement have counters, so rules without
    /// one, and nft chain policies (which never have a counter), are not listed.
    pub rule: String,
    pub packets: u64,
    pub bytes: u64,
}

/// A tool to ask for rule counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleSource {
    /// `iptables-nft-save -c` or `iptables-legacy-save -c`.
    Iptables(IptablesBackend),
    /// `nft list ruleset`, without the tables that belong to iptables-nft when the host
    /// also has an [`IptablesBackend::Nft`] source (both tools would list those).
    Nft,
}

impl RuleSource {
    /// The name [`RuleCounter::backend`] carries for rules from this source.
    pub fn backend(self) -> &'static str {
        match self {
            RuleSource::Iptables(IptablesBackend::Nft) => "iptables-nft",
            RuleSource::Iptables(IptablesBackend::Legacy) => "iptables-legacy",
            RuleSource::Nft => "nft",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            RuleSource::Iptables(IptablesBackend::Nft) => "iptables-nft-save",
            RuleSource::Iptables(IptablesBackend::Legacy) => "iptables-legacy-save",
            RuleSource::Nft => "nft",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            RuleSource::Iptables(_) => &["-c"],
            RuleSource::Nft => &["list", "ruleset"],
        }
    }

    fn package(self) -> &'static str {
        match self {
            RuleSource::Iptables(_) => "iptables",
            RuleSource::Nft => "nftables",
        }
    }

    /// How the tool is invoked, for messages.
    fn command_line(self) -> String {
        format!("{} {}", self.tool(), self.args().join(" "))
    }
}

/// Counters that could not be read, naming the host and what was being read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("host `{host}`: cannot read {path}{}", read_hint(source))]
    Read {
        host: String,
        path: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "host `{host}`: cannot make sense of {what}, line {line}: {message}\n\
         (a format dropspec does not know; please report it with the text it printed)"
    )]
    Parse {
        host: String,
        /// The file, or the tool's output.
        what: String,
        line: usize,
        message: String,
    },
    #[error(
        "host `{host}`: `{tool}` is not installed (needed to read the counters of the host's rules): \
         install the Debian package `{package}` (apt-get install {package})"
    )]
    ToolMissing {
        host: String,
        tool: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("host `{host}`: cannot run `{command}`{}", spawn_hint(source))]
    Spawn {
        host: String,
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("host `{host}`: `{command}` failed ({status}):\n{output}")]
    ToolFailed {
        host: String,
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error("reading counters: {0}")]
    Namespace(#[source] TopologyError),
}

impl CountersError {
    /// True when this machine cannot read counters at all (a tool is missing, the
    /// process may not enter namespaces), as opposed to something wrong with the host.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CountersError::ToolMissing { .. } => true,
            CountersError::Read { source, .. } | CountersError::Spawn { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES))
            }
            CountersError::Namespace(e) => e.is_unavailable(),
            CountersError::Parse { .. } | CountersError::ToolFailed { .. } => false,
        }
    }
}

fn read_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "; is /proc mounted, and is this kernel built with CONFIG_PROC_FS?",
        Some(libc::EPERM | libc::EACCES) => "; run dropspec as root",
        _ => "",
    }
}

fn spawn_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => "; the tool is not executable by this user",
        Some(libc::EAGAIN | libc::ENOMEM) => "; the process is out of processes or memory",
        _ => "",
    }
}

/// Which rule counters to read for a host is the faults' decision
/// ([`crate::faults::rule_sources`]); re-exported here for callers that still ask
/// `counters` for it, so this module never looks at fault kinds.
pub use crate::faults::rule_sources;

/// Where the files are read from, and what they are called in messages.
const SNMP: (&str, &str) = ("/proc/thread-self/net/snmp", "/proc/net/snmp");
const NETSTAT: (&str, &str) = ("/proc/thread-self/net/netstat", "/proc/net/netstat");
const SNMP6: (&str, &str) = ("/proc/thread-self/net/snmp6", "/proc/net/snmp6");
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
                let child = std::process::Command::new(source.tool())
                    .args(source.args())
                    // Parsed below, and quoted in errors: keep the tools' words English.
                    .env("LC_ALL", "C")
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn();
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
            }
        }
        // iptables-nft keeps its rules in nf_tables tables of family ip, which `nft list
        // ruleset` lists too; they are already counted under iptables-nft.
        nft_rules.retain(|r| !iptables_nft_tables.contains(&r.table));
        counters.rules.extend(nft_rules);
        Ok(counters)
    }
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

/// What changed from `before` to `after`: only counters that grew, by how much.
///
/// A counter or rule that exists only in `after` counts from zero (the `IcmpMsg` group
/// only lists message types that have been seen; a rule may be added mid-scenario). One
/// that exists only in `before` is left out. Rules are matched by identity — backend,
/// table, chain and text — and, when a chain holds the same rule more than once, by
/// which of those copies it is. Rules come out in `after`'s order.
pub fn delta(before: &HostCounters, after: &HostCounters) -> HostCounters {
    HostCounters {
        snmp: map_delta(&before.snmp, &after.snmp),
        conntrack: map_delta(&before.conntrack, &after.conntrack),
        rules: rules_delta(&before.rules, &after.rules),
    }
}

fn map_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(key, &value)| {
            // Saturating: every value kept is a counter that only grows, and a 32-bit
            // per-CPU conntrack statistic that wrapped is not worth a huge bogus number.
            let change = value.saturating_sub(before.get(key).copied().unwrap_or(0));
            (change != 0).then(|| (key.clone(), change))
        })
        .collect()
}

/// A rule's identity: backend, table, chain, text, and which copy of that rule it is.
type RuleKey<'a> = (&'a str, &'a str, &'a str, &'a str, usize);

fn rule_keys(rules: &[RuleCounter]) -> impl Iterator<Item = (RuleKey<'_>, &RuleCounter)> {
    let mut seen: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    rules.iter().map(move |r| {
        let identity = (
            r.backend.as_str(),
            r.table.as_str(),
            r.chain.as_str(),
            r.rule.as_str(),
        );
        let copy = seen.entry(identity).or_insert(0);
        let key = (identity.0, identity.1, identity.2, identity.3, *copy);
        *copy += 1;
        (key, r)
    })
}

fn rules_delta(before: &[RuleCounter], after: &[RuleCounter]) -> Vec<RuleCounter> {
    let before: HashMap<RuleKey<'_>, &RuleCounter> = rule_keys(before).collect();
    rule_keys(after)
        .filter_map(|(key, rule)| {
            let (packets, bytes) = before.get(&key).map_or((0, 0), |b| (b.packets, b.bytes));
            let packets = rule.packets.saturating_sub(packets);
            let bytes = rule.bytes.saturating_sub(bytes);
            (packets != 0 || bytes != 0).then(|| RuleCounter {
                packets,
                bytes,
                ..rule.clone()
            })
        })
        .collect()
}

/// A line of a file or of a tool's output that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParseError {
    /// 1-based.
    line: usize,
    message: String,
}

fn parse_error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line: line + 1,
        message: message.into(),
    }
}

/// Values that are settings or gauges rather than counters (see the module docs).
const NOT_COUNTERS: &[&str] = &[
    "Ip.Forwarding",
    "Ip.DefaultTTL",
    "Tcp.RtoAlgorithm",
    "Tcp.RtoMin",
    "Tcp.RtoMax",
    "Tcp.MaxConn",
    "Tcp.CurrEstab",
    "MPTcpExt.MPCurrEstab",
];

/// `/proc/net/snmp` and `/proc/net/netstat`: per group, a line `Group: Name Name …`
/// followed by a line `Group: value value …`.
fn parse_snmp(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    // Collected first and sorted into a map at once: cheaper than inserting one by one.
    let mut counters = Vec::with_capacity(512);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    while let Some((n, header)) = lines.next() {
        let (group, names) = header
            .split_once(':')
            .ok_or_else(|| parse_error(n, format!("expected `Group: Name …`, found {header:?}")))?;
        let (m, values_line) = lines.next().ok_or_else(|| {
            parse_error(n, format!("group `{group}` has names but no values line"))
        })?;
        let (value_group, values) = values_line.split_once(':').ok_or_else(|| {
            parse_error(
                m,
                format!("expected `{group}: value …`, found {values_line:?}"),
            )
        })?;
        if value_group != group {
            return Err(parse_error(
                m,
                format!("names of group `{group}` are followed by values of group `{value_group}`"),
            ));
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(parse_error(
                m,
                format!(
                    "group `{group}` names {} fields but has {} values",
                    names.len(),
                    values.len()
                ),
            ));
        }
        for (name, value) in names.into_iter().zip(values) {
            let mut key = String::with_capacity(group.len() + 1 + name.len());
            key.push_str(group);
            key.push('.');
            key.push_str(name);
            if NOT_COUNTERS.contains(&key.as_str()) {
                continue;
            }
            let value = value
                .parse()
                .map_err(|_| parse_error(m, format!("`{key}` is {value:?}, not a counter")))?;
            counters.push((key, value));
        }
    }
    Ok(BTreeMap::from_iter(counters))
}

/// `/proc/net/snmp6`: one `Ip6InReceives <spaces> 0` per line.
fn parse_snmp6(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut counters = Vec::with_capacity(128);
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(parse_error(
                n,
                format!("expected `Name value`, found {line:?}"),
            ));
        };
        let value = value
            .parse()
            .map_err(|_| parse_error(n, format!("`{name}` is {value:?}, not a counter")))?;
        counters.push((snmp6_key(name), value));
    }
    Ok(BTreeMap::from_iter(counters))
}

/// `Ip6InReceives` → `Ip6.InReceives`, `Icmp6OutType133` → `Icmp6.OutType133`: the group
/// ends at its first digit. A name without one is kept as it is.
fn snmp6_key(name: &str) -> String {
    match name.find(|c: char| c.is_ascii_digit()) {
        Some(i) if i + 1 < name.len() => {
            let mut key = String::with_capacity(name.len() + 1);
            key.push_str(&name[..=i]);
            key.push('.');
            key.push_str(&name[i + 1..]);
            key
        }
        _ => name.to_owned(),
    }
}

/// `/proc/net/stat/nf_conntrack`: a header of names, then one row of hex numbers per
/// possible CPU. Summed by name over the rows; `entries` is left out.
fn parse_conntrack_stat(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(parse_error(
            0,
            "the file is empty: expected a header line of names",
        ));
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for (n, row) in lines {
        let values: Vec<&str> = row.split_whitespace().collect();
        if values.len() != names.len() {
            return Err(parse_error(
                n,
                format!(
                    "the header names {} columns but this row has {}",
                    names.len(),
                    values.len()
                ),
            ));
        }
        for ((sum, value), name) in sums.iter_mut().zip(values).zip(&names) {
            *sum += u64::from_str_radix(value, 16)
                .map_err(|_| parse_error(n, format!("`{name}` is {value:?}, not a hex number")))?;
        }
    }
    Ok(names
        .into_iter()
        .zip(sums)
        .filter(|(name, _)| *name != "entries")
        .map(|(name, sum)| (name.to_owned(), sum))
        .collect())
}

/// `iptables-save -c` (either backend): `*table`, `:CHAIN POLICY [packets:bytes]`,
/// `[packets:bytes] -A CHAIN …`, `COMMIT`, and `#` comments.
fn parse_iptables_save(text: &str, backend: &str) -> Result<Vec<RuleCounter>, ParseError> {
    let mut rules = Vec::new();
    let mut table: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim());
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let Some(table) = table else {
            return Err(parse_error(
                n,
                format!("{line:?} is outside any `*table` … `COMMIT`"),
            ));
        };
        let rule = |chain: &str, rule: String, (packets, bytes)| RuleCounter {
            backend: backend.to_owned(),
            table: table.to_owned(),
            chain: chain.to_owned(),
            rule,
            packets,
            bytes,
        };
        if let Some(declaration) = line.strip_prefix(':') {
            // `:INPUT ACCEPT [0:0]`; a user-defined chain has `-` and no policy.
            let mut fields = declaration.split_whitespace();
            let (Some(chain), Some(policy), Some(counts)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(parse_error(
                    n,
                    format!("expected `:CHAIN POLICY [packets:bytes]`, found {line:?}"),
                ));
            };
            let counts = bracketed_counts(counts).ok_or_else(|| {
                parse_error(
                    n,
                    format!("expected `[packets:bytes]` after the policy, found {counts:?}"),
                )
            })?;
            if policy != "-" {
                rules.push(rule(chain, format!("-P {chain} {policy}"), counts));
            }
        } else if line.starts_with('[') {
            let (counts, spec) = line.split_once(' ').unwrap_or((line, ""));
            let counts = bracketed_counts(counts).ok_or_else(|| {
                parse_error(n, format!("expected `[packets:bytes]`, found {counts:?}"))
            })?;
            let spec = spec.trim();
            let mut fields = spec.split_whitespace();
            let (Some("-A"), Some(chain)) = (fields.next(), fields.next()) else {
                return Err(parse_error(
                    n,
                    format!("expected `-A CHAIN …` after the counters, found {spec:?}"),
                ));
            };
            rules.push(rule(chain, spec.to_owned(), counts));
        } else {
            return Err(parse_error(
                n,
                format!("expected a rule with counters `[packets:bytes] -A …` (was the tool run without -c?), found {line:?}"),
            ));
        }
    }
    Ok(rules)
}

/// `[12:345]` → (12, 345).
fn bracketed_counts(text: &str) -> Option<(u64, u64)> {
    let (packets, bytes) = text.strip_prefix('[')?.strip_suffix(']')?.split_once(':')?;
    Some((packets.parse().ok()?, bytes.parse().ok()?))
}

/// `nft list ruleset`: `table FAMILY NAME {` blocks holding `chain NAME {` blocks (and
/// sets, maps, named counters, flowtables, which are skipped), one rule per line. A
/// rule's counter prints as `counter packets N bytes M`; if a rule has several, the
/// first one's numbers are taken (and all are taken out of the text).
fn parse_nft_ruleset(text: &str) -> Result<Vec<RuleCounter>, ParseError> {
    let mut rules = Vec::new();
    let mut depth = 0usize;
    let mut table: Option<String> = None;
    let mut chain: Option<String> = None;
    // A rule that spans lines (an anonymous set printed over several lines), and the
    // depth of braces still open in it.
    let mut pending = String::new();
    let mut pending_first_line = 0;
    let mut pending_depth = 0isize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (opens, closes) = count_braces(line);
        if let (Some(table_name), Some(chain_name)) = (&table, &chain) {
            if pending.is_empty() && line == "}" {
                chain = None;
                depth -= 1;
                continue;
            }
            if pending.is_empty() {
                pending_first_line = n;
            } else {
                pending.push(' ');
            }
            pending.push_str(line);
            pending_depth += opens as isize - closes as isize;
            if pending_depth < 0 {
                return Err(parse_error(
                    n,
                    format!("unbalanced `}}` in a rule of chain `{chain_name}`"),
                ));
            }
            if pending_depth == 0 {
                if let Some((rule, packets, bytes)) = nft_rule_counter(&pending) {
                    rules.push(RuleCounter {
                        backend: "nft".to_owned(),
                        table: table_name.clone(),
                        chain: chain_name.clone(),
                        rule,
                        packets,
                        bytes,
                    });
                }
                pending.clear();
            }
            continue;
        }
        if closes > opens + depth {
            return Err(parse_error(n, "`}` closes a block that was never opened"));
        }
        let opened_one = opens == closes + 1 && line.ends_with('{');
        match (depth, line.split_whitespace().next()) {
            (0, Some("table")) if opened_one => {
                let name = line.trim_end_matches('{').trim();
                table = Some(name.strip_prefix("table").unwrap_or(name).trim().to_owned());
            }
            (1, Some("chain")) if opened_one => {
                let name = line.trim_end_matches('{').trim();
                chain = Some(name.strip_prefix("chain").unwrap_or(name).trim().to_owned());
            }
            (0, _) if opens > closes => {
                return Err(parse_error(
                    n,
                    format!("expected `table FAMILY NAME {{`, found {line:?}"),
                ));
            }
            _ => {}
        }
        depth = depth + opens - closes;
        if depth == 0 {
            table = None;
        }
    }
    if !pending.is_empty() || depth != 0 {
        return Err(parse_error(
            if pending.is_empty() {
                text.lines().count().saturating_sub(1)
            } else {
                pending_first_line
            },
            "the ruleset ends inside a block",
        ));
    }
    Ok(rules)
}

/// `{` and `}` outside double-quoted strings (a comment may hold either).
fn count_braces(line: &str) -> (usize, usize) {
    let (mut opens, mut closes, mut quoted, mut escaped) = (0, 0, false, false);
    for c in line.chars() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, _, '"') => quoted = !quoted,
            (false, _, '{') => opens += 1,
            (false, _, '}') => closes += 1,
            _ => {}
        }
    }
    (opens, closes)
}

/// Words of an nft rule, with a double-quoted string (and any spaces in it) as one word.
fn nft_words(rule: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in rule.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&rule[s..i]);
            }
        } else {
            start.get_or_insert(i);
            quoted = c == '"';
        }
    }
    if let Some(s) = start {
        words.push(&rule[s..]);
    }
    words
}

/// The rule's text without its counter's numbers, and those numbers; `None` when the
/// rule has no inline counter (none at all, or `counter name "x"`).
fn nft_rule_counter(rule: &str) -> Option<(String, u64, u64)> {
    let words = nft_words(rule);
    let mut kept = Vec::with_capacity(words.len());
    let mut counts = None;
    let mut i = 0;
    while i < words.len() {
        kept.push(words[i]);
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
        {
            let bytes = words.get(i + 4).map(|w| w.parse::<u64>());
            if let (Ok(packets), Some(Ok(bytes))) = (words[i + 2].parse::<u64>(), bytes) {
                counts.get_or_insert((packets, bytes));
                i += 5;
                continue;
            }
        }
        i += 1;
    }
    let (packets, bytes) = counts?;
    Some((kept.join(" "), packets, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};

    const KERNEL: &str = "6.18.44-fc-v595";

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proc")
    }

    fn fixture(host: &str, file: &str) -> String {
        let path = fixtures().join(KERNEL).join(host).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every saved host of every saved kernel: (kernel/host, directory).
    fn saved_hosts() -> Vec<(String, PathBuf)> {
        let mut hosts = Vec::new();
        for kernel in std::fs::read_dir(fixtures()).unwrap().flatten() {
            if !kernel.path().is_dir() {
                continue;
            }
            for host in std::fs::read_dir(kernel.path()).unwrap().flatten() {
                let name = format!(
                    "{}/{}",
                    kernel.file_name().to_string_lossy(),
                    host.file_name().to_string_lossy()
                );
                hosts.push((name, host.path()));
            }
        }
        assert!(
            !hosts.is_empty(),
            "no saved hosts under {}",
            fixtures().display()
        );
        hosts
    }

    /// `nstat -asz`: `Name value rate` per line after a `#kernel` header.
    fn parse_nstat(text: &str) -> BTreeMap<String, u64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next().unwrap().to_owned();
                (name, fields.next().unwrap().parse().unwrap())
            })
            .collect()
    }

    fn snmp_of(dir: &Path) -> BTreeMap<String, u64> {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let mut snmp = parse_snmp(&read("snmp")).unwrap();
        snmp.extend(parse_snmp(&read("netstat")).unwrap());
        snmp.extend(parse_snmp6(&read("snmp6")).unwrap());
        snmp
    }

    #[test]
    fn snmp_counters_agree_with_nstat_on_every_saved_host() {
        for (name, dir) in saved_hosts() {
            let ours = snmp_of(&dir);
            let nstat = parse_nstat(&std::fs::read_to_string(dir.join("nstat-asz.txt")).unwrap());
            for (key, value) in &ours {
                let nstat_name = key.replace('.', "");
                assert_eq!(nstat.get(&nstat_name), Some(value), "{name}: {key}");
            }
            // nstat leaves out the same settings and TCP gauges we do, but keeps the
            // MPTCP gauge; anything else missing would be a counter we lost.
            let ours_as_nstat: Vec<String> = ours.keys().map(|k| k.replace('.', "")).collect();
            let missing: Vec<&String> = nstat
                .keys()
                .filter(|k| !ours_as_nstat.contains(k) && k.as_str() != "MPTcpExtMPCurrEstab")
                .collect();
            assert!(
                missing.is_empty(),
                "{name}: nstat has {missing:?} and we do not"
            );
        }
    }

    #[test]
    fn snmp_counters_of_the_capture_follow_from_its_traffic() {
        let dir = fixtures().join(KERNEL);
        let server = snmp_of(&dir.join("server"));
        let client = snmp_of(&dir.join("client"));
        // Two datagrams to 5004 (accepted by nft, nobody listening), each answered with
        // a port unreachable; 5000–5003 were dropped by rules before UDP saw them.
        assert_eq!(server["Udp.NoPorts"], 2);
        assert_eq!(server["Icmp.OutDestUnreachs"], 2);
        assert_eq!(server["IcmpMsg.OutType3"], 2);
        assert_eq!(server["Udp.InDatagrams"], 2);
        assert_eq!(server["Tcp.PassiveOpens"], 1);
        assert_eq!(client["Icmp.InDestUnreachs"], 2);
        assert_eq!(client["Icmp.InEchoReps"], 2);
        assert_eq!(client["Udp.OutDatagrams"], 17);
        assert_eq!(client["Tcp.ActiveOpens"], 3);
        for key in [
            "Ip.InHdrErrors",
            "IpExt.InCsumErrors",
            "Tcp.InCsumErrors",
            "Udp.InCsumErrors",
            "Udp.RcvbufErrors",
            "Icmp.InCsumErrors",
            "TcpExt.ListenOverflows",
            "Ip6.InHdrErrors",
            "Icmp6.InCsumErrors",
            "Udp6.RcvbufErrors",
            "UdpLite6.InDatagrams",
        ] {
            assert_eq!(server.get(key), Some(&0), "{key}");
        }
        for gauge in NOT_COUNTERS {
            assert!(!server.contains_key(*gauge), "{gauge}");
        }
    }

    #[test]
    fn snmp6_names_split_after_the_groups_digit() {
        assert_eq!(snmp6_key("Ip6InReceives"), "Ip6.InReceives");
        assert_eq!(snmp6_key("Icmp6OutType133"), "Icmp6.OutType133");
        assert_eq!(snmp6_key("UdpLite6InCsumErrors"), "UdpLite6.InCsumErrors");
        assert_eq!(snmp6_key("Weird"), "Weird");
        assert_eq!(snmp6_key("Ip6"), "Ip6");
        let parsed =
            parse_snmp6("Ip6InReceives                   \t7\n\nIcmp6InType1 3\n").unwrap();
        assert_eq!(
            parsed,
            BTreeMap::from([
                ("Icmp6.InType1".to_owned(), 3),
                ("Ip6.InReceives".to_owned(), 7)
            ])
        );
        let error = parse_snmp6("Ip6InReceives 1\nIp6InHdrErrors x\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error.message.contains("Ip6InHdrErrors"),
            "{}",
            error.message
        );
        assert_eq!(parse_snmp6("Ip6InReceives 1 2\n").unwrap_err().line, 1);
    }

    #[test]
    fn snmp_groups_are_read_by_name_and_checked() {
        let text = "Tcp: RtoMin MaxConn InErrs\nTcp: 200 -1 4\nIcmpMsg: OutType3\nIcmpMsg: 2\n";
        assert_eq!(
            parse_snmp(text).unwrap(),
            BTreeMap::from([
                ("IcmpMsg.OutType3".to_owned(), 2),
                ("Tcp.InErrs".to_owned(), 4)
            ])
        );
        let cases = [
            ("Udp: A B\nUdp: 1\n", 2, "names 2 fields but has 1 values"),
            ("Udp: A\nTcp: 1\n", 2, "followed by values of group `Tcp`"),
            ("Udp: A\n", 1, "no values line"),
            ("Udp: A\nUdp: -3\n", 2, "`Udp.A` is \"-3\""),
            ("Udp A\nUdp 1\n", 1, "expected `Group: Name …`"),
        ];
        for (text, line, message) in cases {
            let error = parse_snmp(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}");
            assert!(
                error.message.contains(message),
                "{text:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn conntrack_statistics_are_summed_over_cpus_by_name() {
        let client = parse_conntrack_stat(&fixture("client", "nf_conntrack")).unwrap();
        // The two `invalid` RSTs were counted on the second CPU's row.
        assert_eq!(client["invalid"], 2);
        assert_eq!(client["insert_failed"], 0);
        assert_eq!(client["drop"], 0);
        assert_eq!(client["early_drop"], 0);
        assert_eq!(client["icmp_error"], 0);
        assert!(!client.contains_key("entries"), "a gauge, repeated per CPU");
        assert_eq!(client.len(), 16);

        // Columns in another order (an older kernel's), more CPUs, values in hex.
        let text = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a  00000000 00000000 00000000 0000000f 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a  00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000000  00000000 00000000 00000000 ffffffff\n";
        let stats = parse_conntrack_stat(text).unwrap();
        assert_eq!(stats["invalid"], 16);
        assert_eq!(stats["insert_failed"], 1);
        assert_eq!(stats["drop"], 2);
        assert_eq!(stats["early_drop"], 3);
        assert_eq!(stats["search_restart"], 0xffff_ffff);
        assert!(stats.contains_key("searched") && !stats.contains_key("clashres"));

        assert_eq!(parse_conntrack_stat("").unwrap_err().line, 1);
        let short = parse_conntrack_stat("entries drop\n00000000\n").unwrap_err();
        assert_eq!((short.line, short.message.contains("2 columns")), (2, true));
        let hex = parse_conntrack_stat("entries drop\n00000000 0000000g\n").unwrap_err();
        assert!(hex.message.contains("`drop`"), "{}", hex.message);
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

    #[test]
    fn iptables_nft_save_gives_rules_and_declared_policies() {
        let rules = parse_iptables_save(
            &fixture("server", "iptables-nft-save-c.txt"),
            "iptables-nft",
        )
        .unwrap();
        let r = |table, chain, text, packets, bytes| {
            rule("iptables-nft", table, chain, text, packets, bytes)
        };
        assert_eq!(
            rules,
            vec![
                r("raw", "PREROUTING", "-P PREROUTING ACCEPT", 0, 0),
                r("raw", "OUTPUT", "-P OUTPUT ACCEPT", 0, 0),
                r(
                    "raw",
                    "PREROUTING",
                    "-A PREROUTING -p udp -m udp --dport 5003 -j DROP",
                    1,
                    60
                ),
                // 2 echo requests, 2 datagrams to 5004 and 2 to 5005, 11 TCP segments.
                r("filter", "INPUT", "-P INPUT ACCEPT", 17, 1044),
                r("filter", "FORWARD", "-P FORWARD ACCEPT", 0, 0),
                r("filter", "OUTPUT", "-P OUTPUT ACCEPT", 0, 0),
                r(
                    "filter",
                    "INPUT",
                    "-A INPUT -p udp -m udp --dport 5000 -j DROP",
                    3,
                    180
                ),
                r(
                    "filter",
                    "INPUT",
                    "-A INPUT -p icmp -j dropspec_log",
                    2,
                    168
                ),
                r(
                    "filter",
                    "dropspec_log",
                    "-A dropspec_log -j RETURN",
                    2,
                    168
                ),
            ]
        );
    }

    #[test]
    fn iptables_legacy_save_keeps_a_duplicated_rule_twice() {
        let rules = parse_iptables_save(
            &fixture("server", "iptables-legacy-save-c.txt"),
            "iptables-legacy",
        )
        .unwrap();
        let r = |chain, text, packets, bytes| {
            rule("iptables-legacy", "filter", chain, text, packets, bytes)
        };
        assert_eq!(
            rules,
            vec![
                r("INPUT", "-P INPUT ACCEPT", 20, 1224),
                r("FORWARD", "-P FORWARD ACCEPT", 0, 0),
                r("OUTPUT", "-P OUTPUT ACCEPT", 8, 536),
                r(
                    "INPUT",
                    "-A INPUT -p udp -m udp --dport 5001 -j DROP",
                    4,
                    240
                ),
                r("INPUT", "-A INPUT -p udp -m udp --dport 5001 -j DROP", 0, 0),
            ]
        );
    }

    #[test]
    fn iptables_save_without_counters_or_table_is_an_error() {
        let no_counters = parse_iptables_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(no_counters.line, 3);
        assert!(
            no_counters.message.contains("without -c"),
            "{}",
            no_counters.message
        );
        assert_eq!(
            parse_iptables_save("[1:2] -A INPUT -j DROP\n", "x")
                .unwrap_err()
                .line,
            1
        );
        let bad = parse_iptables_save("*filter\n[1:x] -A INPUT -j DROP\n", "x").unwrap_err();
        assert_eq!(bad.line, 2);
        let policy = parse_iptables_save("*filter\n:INPUT ACCEPT\n", "x").unwrap_err();
        assert_eq!(policy.line, 2);
        assert!(parse_iptables_save("", "x").unwrap().is_empty());
        assert_eq!(bracketed_counts("[12:345]"), Some((12, 345)));
        assert_eq!(bracketed_counts("[12:]"), None);
    }

    #[test]
    fn nft_ruleset_gives_rules_with_counters_only() {
        let rules = parse_nft_ruleset(&fixture("server", "nft-list-ruleset.txt")).unwrap();
        let r =
            |table, chain, text, packets, bytes| rule("nft", table, chain, text, packets, bytes);
        assert_eq!(
            rules,
            vec![
                r("ip raw", "PREROUTING", "udp dport 5003 counter drop", 1, 60),
                r("ip filter", "INPUT", "udp dport 5000 counter drop", 3, 180),
                r("ip filter", "INPUT", "meta l4proto icmp counter jump dropspec_log", 2, 168),
                r("ip filter", "dropspec_log", "counter return", 2, 168),
                r("inet dropspec_filter", "input", "udp dport 5002 counter drop", 5, 300),
                // The comment is quoted: its braces and its "counter packets" are text.
                r(
                    "inet dropspec_filter",
                    "input",
                    "udp dport { 5004, 5005 } counter accept comment \"two {ports}, counter packets 9 bytes 9\"",
                    4,
                    240
                ),
                // Not listed: `counter name "named"` (a named counter object) and
                // `tcp dport 80 drop` (no counter).
                r("inet dropspec_filter", "input", "tcp dport 6001 counter counter accept", 4, 216),
            ]
        );
    }

    #[test]
    fn nft_rules_over_several_lines_and_broken_rulesets() {
        let text = "table ip t {\n\tchain c {\n\t\tip saddr { 198.18.0.1,\n\t\t\t198.18.0.2 } counter packets 7 bytes 8 drop\n\t}\n}\n";
        assert_eq!(
            parse_nft_ruleset(text).unwrap(),
            vec![rule(
                "nft",
                "ip t",
                "c",
                "ip saddr { 198.18.0.1, 198.18.0.2 } counter drop",
                7,
                8
            )]
        );
        let unclosed =
            parse_nft_ruleset("table ip t {\n\tchain c {\n\t\tcounter packets 1 bytes 2 drop\n")
                .unwrap_err();
        assert!(
            unclosed.message.contains("ends inside a block"),
            "{}",
            unclosed.message
        );
        let stray = parse_nft_ruleset("}\n").unwrap_err();
        assert_eq!(stray.line, 1);
        let outside = parse_nft_ruleset("chain c {\n}\n").unwrap_err();
        assert!(
            outside.message.contains("table FAMILY NAME"),
            "{}",
            outside.message
        );
        assert!(parse_nft_ruleset("").unwrap().is_empty());
        assert_eq!(nft_rule_counter("tcp dport 80 drop"), None);
        assert_eq!(nft_rule_counter("counter name \"x\" accept"), None);
        assert_eq!(nft_rule_counter("counter packets 1 bytes"), None);
        assert_eq!(
            nft_words(r#"iifname "a b" comment "x \" y" drop"#),
            vec!["iifname", r#""a b""#, "comment", r#""x \" y""#, "drop"]
        );
        assert_eq!(count_braces(r#"{ "}\"{" }"#), (1, 1));
    }

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

    fn counters(
        snmp: &[(&str, u64)],
        conntrack: &[(&str, u64)],
        rules: Vec<RuleCounter>,
    ) -> HostCounters {
        HostCounters {
            snmp: snmp.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            conntrack: conntrack.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rules,
        }
    }

    #[test]
    fn delta_keeps_what_grew_and_counts_newcomers_from_zero() {
        let before = counters(
            &[
                ("Udp.NoPorts", 5),
                ("Ip.InReceives", 10),
                ("Tcp.OutRsts", 1),
                ("Gone.Away", 3),
            ],
            &[("invalid", 2), ("drop", 0)],
            vec![],
        );
        let after = counters(
            &[
                ("Udp.NoPorts", 8),
                ("Ip.InReceives", 10),
                ("Tcp.OutRsts", 0),
                ("IcmpMsg.OutType3", 3),
            ],
            &[("invalid", 2), ("drop", 4)],
            vec![],
        );
        let change = delta(&before, &after);
        assert_eq!(
            change,
            counters(
                &[("IcmpMsg.OutType3", 3), ("Udp.NoPorts", 3)],
                &[("drop", 4)],
                vec![]
            )
        );
        assert!(delta(&after, &after).is_empty());
    }

    #[test]
    fn delta_matches_rules_by_identity_and_copy() {
        let r = |chain, text, packets, bytes| {
            rule("iptables-legacy", "filter", chain, text, packets, bytes)
        };
        let dup = "-A INPUT -p udp -m udp --dport 5001 -j DROP";
        let before = counters(
            &[],
            &[],
            vec![
                r("INPUT", "-P INPUT ACCEPT", 10, 1000),
                r("INPUT", dup, 4, 240),
                r("INPUT", dup, 0, 0),
                r("INPUT", "-A INPUT -j gone", 9, 9),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    1,
                    60,
                ),
            ],
        );
        let after = counters(
            &[],
            &[],
            vec![
                // Same text in another backend or table is another rule.
                rule("iptables-nft", "filter", "INPUT", "-P INPUT ACCEPT", 3, 300),
                r("INPUT", "-P INPUT ACCEPT", 10, 1000),
                r("INPUT", dup, 4, 240),
                r("INPUT", dup, 2, 120),
                r("INPUT", "-A INPUT -j new", 1, 50),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    6,
                    360,
                ),
            ],
        );
        assert_eq!(
            delta(&before, &after).rules,
            vec![
                rule("iptables-nft", "filter", "INPUT", "-P INPUT ACCEPT", 3, 300),
                r("INPUT", dup, 2, 120),
                r("INPUT", "-A INPUT -j new", 1, 50),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    5,
                    300
                ),
            ]
        );
    }

    #[test]
    fn rule_sources_name_their_backend() {
        assert_eq!(
            RuleSource::Iptables(IptablesBackend::Legacy).backend(),
            "iptables-legacy"
        );
    }
}
