//! `[[faults]] command = ["tc", "qdisc", …]`: the escape hatch. One program from a short
//! list of network tools, run inside the host's namespace without a shell; anything that
//! could reach outside that namespace (another namespace, /proc or /sys, an address
//! outside the test ranges) is refused here, before anything runs.

use super::{is_test_address, Spanned, Validator};
use crate::scenario::ScenarioError;
use std::net::IpAddr;

/// The programs a `command` may run: each acts only on the namespace it runs in.
pub const ALLOWED: &[&str] = &[
    "ip",
    "tc",
    "nft",
    "iptables",
    "iptables-nft",
    "iptables-legacy",
    "ip6tables",
    "ip6tables-nft",
    "ip6tables-legacy",
    "ethtool",
    "conntrack",
    "bridge",
];

/// Why a well-known program that is not allowed is refused, and what to use instead.
fn why_not(program: &str) -> Option<&'static str> {
    Some(match program {
        "sh" | "bash" | "dash" | "zsh" | "busybox" | "env" => {
            "a `command` runs without a shell: give one program and its arguments as the array"
        }
        "nsenter" | "unshare" | "ip-netns" => {
            "it enters or makes another namespace; the command already runs inside the host's own"
        }
        "sysctl" => {
            "a sysctl may be global to the machine: use the host's `sysctls` key, which is checked to be per-namespace"
        }
        "bpftool" => {
            "BPF programs and maps are not confined to a namespace: use `tc_drop`, or a `[[programs]]` entry"
        }
        "modprobe" | "insmod" | "rmmod" => "modules are global to the machine",
        _ => return None,
    })
}

/// Whether an argument of `ip`, `tc` or `bridge` names or enters another namespace.
/// iproute2 takes any prefix of a keyword or option (`ip net` is `ip netns`, `ip link
/// set eth0 n 1` moves eth0 away, `-ne` is `-netns`), so prefixes count too.
fn names_netns(arg: &str) -> bool {
    let bare = arg.trim_start_matches('-');
    arg.contains("netns")
        || (!bare.is_empty() && "netns".starts_with(bare))
        || (arg.starts_with('-') && !bare.is_empty() && "all".starts_with(bare))
}

/// Whether an option of `ip`, `tc` or `bridge` reads further commands from a file
/// (`-b`, `-batch`, any prefix).
fn reads_batch(arg: &str) -> bool {
    let bare = arg.trim_start_matches('-');
    arg.starts_with('-') && !bare.is_empty() && "batch".starts_with(bare)
}

impl Validator<'_> {
    pub(super) fn command(
        &self,
        spec: Spanned<Vec<Spanned<String>>>,
    ) -> Result<Vec<String>, ScenarioError> {
        let span = spec.span();
        let argv = spec.into_inner();
        let Some(program) = argv.first() else {
            return Err(self.at.error(
                span,
                format!(
                    "`command` is empty: give a program and its arguments, like [\"tc\", \"qdisc\", \"show\"] (allowed programs: {})",
                    ALLOWED.join(", ")
                ),
            ));
        };
        let name = program.get_ref().as_str();
        if name.contains('/') {
            return Err(self.at.error(
                program.span(),
                format!(
                    "`command` names the program `{name}` by a path: give its bare name, one of {}",
                    ALLOWED.join(", ")
                ),
            ));
        }
        if !ALLOWED.contains(&name) {
            let reason = why_not(name).map(|r| format!(" ({r})")).unwrap_or_default();
            return Err(self.at.error(
                program.span(),
                format!(
                    "`command` may not run `{name}`{reason}: it may run {}, which act only on the host's own namespace",
                    ALLOWED.join(", ")
                ),
            ));
        }
        let iproute = matches!(name, "ip" | "tc" | "bridge");
        for arg in &argv[1..] {
            let text = arg.get_ref().as_str();
            if iproute && names_netns(text) {
                return Err(self.at.error(
                    arg.span(),
                    format!(
                        "`{name}` with `{text}` names or enters another network namespace: the command already runs inside the host's own; move an interface with a `[[links]]` entry instead"
                    ),
                ));
            }
            if iproute && reads_batch(text) {
                return Err(self.at.error(
                    arg.span(),
                    format!(
                        "`{name} {text}` reads commands from a file dropspec cannot check: give one command per fault (or `tc` commands in the `tc` key)"
                    ),
                ));
            }
            if text.contains("/proc/") || text.contains("/sys/") {
                return Err(self.at.error(
                    arg.span(),
                    format!(
                        "`command` argument `{text}` names a file under /proc or /sys, which may be global to the machine: use the host's `sysctls` key"
                    ),
                ));
            }
            if let Some(addr) = address_of(text) {
                if !addr.is_unspecified() && !is_test_address(addr) {
                    self.check_range(addr, arg.span())?;
                }
            }
        }
        Ok(argv.into_iter().map(Spanned::into_inner).collect())
    }
}

/// The address an argument names (`198.18.0.1`, `2001:db8::1/64`), if it is one.
fn address_of(text: &str) -> Option<IpAddr> {
    let addr = text.split_once('/').map_or(text, |(a, _)| a);
    addr.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iproute_prefixes_of_netns_all_and_batch_are_caught() {
        for arg in [
            "netns",
            "net",
            "n",
            "-n",
            "-ne",
            "-netns",
            "--netns",
            "link-netns",
            "-a",
            "-all",
        ] {
            assert!(names_netns(arg), "{arg}");
        }
        for arg in [
            "eth0", "root", "pfifo", "limit", "2", "add", "-s", "-4", "nexthop", "all",
        ] {
            assert!(!names_netns(arg), "{arg}");
        }
        assert!(reads_batch("-b") && reads_batch("-batch") && !reads_batch("batch"));
    }
}
