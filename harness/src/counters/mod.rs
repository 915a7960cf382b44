//! The kernel's own counters for one host, read before and after a scenario so that the
//! report can show what changed: a second opinion on the drop probe from the kernel's
//! bookkeeping, and the firewall rules that did the dropping.
//!
//! Four kinds of counter, all read inside the host's namespace:
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
//! * **qdisc statistics** ([`HostCounters::qdisc`]) from `tc -s -j qdisc show`, for a host
//!   with a `qdisc` fault ([`RuleSource::Qdisc`]): drops, overlimits, requeues, backlog
//!   and packets per qdisc, keyed `eth0/drops` (see `qdisc.rs`).
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
//! [`Netns::run`](crate::netns::Netns::run) must read `/proc/thread-self/net/…` to see that host's counters.
//!
//! ## Cost
//!
//! The `/proc` part of a read is the calling thread entering the namespace
//! ([`Netns::run`](crate::netns::Netns::run)), reading four small files and parses them: about 0.3 ms. Each rule tool is a process
//! that costs 1–2 ms (`iptables-legacy-save` ~1.2 ms, `iptables-nft-save` ~1.7 ms, `nft`
//! ~2 ms on the 2-core machine of `examples/counters_smoke.rs`), so a host without
//! faults starts none (the faults module names only the tools for the kinds
//! of fault the scenario put on that host), and [`read_hosts`] runs the tools of all hosts side by
//! side while it reads `/proc`.

use std::collections::BTreeMap;
use std::io;
use std::process::ExitStatus;

use crate::topology::TopologyError;
use crate::vocab::IptablesBackend;

mod delta;
mod link;
mod over_run;
mod proc;
mod qdisc;
mod read;
mod rules;

pub use delta::delta;
pub use over_run::OverRun;
pub use read::{counter_names, read_host, read_hosts};

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
    /// Qdisc statistics of a host with a `qdisc` fault, `eth0/drops` → value (see
    /// `counters/qdisc.rs` for the keys); expectations write them `qdisc/eth0/drops`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub qdisc: BTreeMap<String, u64>,
    /// Interface statistics, `eth0/tx_dropped` → value (see `counters/link.rs`);
    /// expectations write them `link/eth0/tx_dropped`. Not part of snapshots.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub link: BTreeMap<String, u64>,
}

impl HostCounters {
    /// True when nothing was counted (a [`delta`] in which nothing changed).
    pub fn is_empty(&self) -> bool {
        self.snmp.is_empty()
            && self.conntrack.is_empty()
            && self.rules.is_empty()
            && self.qdisc.is_empty()
            && self.link.is_empty()
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
    /// `tc -s -j qdisc show`: the statistics of the host's qdiscs (not rules, but read
    /// the same way, by a tool started in the host's namespace).
    Qdisc,
}

impl RuleSource {
    /// The name [`RuleCounter::backend`] carries for rules from this source.
    pub fn backend(self) -> &'static str {
        match self {
            RuleSource::Iptables(IptablesBackend::Nft) => "iptables-nft",
            RuleSource::Iptables(IptablesBackend::Legacy) => "iptables-legacy",
            RuleSource::Nft => "nft",
            RuleSource::Qdisc => "tc",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            RuleSource::Iptables(IptablesBackend::Nft) => "iptables-nft-save",
            RuleSource::Iptables(IptablesBackend::Legacy) => "iptables-legacy-save",
            RuleSource::Nft => "nft",
            RuleSource::Qdisc => "tc",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            RuleSource::Iptables(_) => &["-c"],
            RuleSource::Nft => &["list", "ruleset"],
            RuleSource::Qdisc => &["-s", "-j", "qdisc", "show"],
        }
    }

    fn package(self) -> &'static str {
        match self {
            RuleSource::Iptables(_) => "iptables",
            RuleSource::Nft => "nftables",
            RuleSource::Qdisc => "iproute2",
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

/// Saved kernel artefacts and builders the tests of every part share.
#[cfg(test)]
mod testing {
    use super::RuleCounter;
    use std::path::{Path, PathBuf};

    pub const KERNEL: &str = "6.18.44-fc-v595";

    pub fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/proc")
    }

    pub fn fixture(host: &str, file: &str) -> String {
        let path = fixtures().join(KERNEL).join(host).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn rule(
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_sources_name_their_backend() {
        assert_eq!(
            RuleSource::Iptables(IptablesBackend::Legacy).backend(),
            "iptables-legacy"
        );
    }
}
