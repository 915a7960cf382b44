//! `dropspec new NAME [--kind …]`: a commented starting scenario that passes `check`
//! and, as root, `run` — each kind is a shipped scenario's shape with its why written out.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What the starting scenario shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// An iptables rule drops ICMP in a server's INPUT chain (NETFILTER_DROP).
    Firewall,
    /// A router DNATs to an address it has no route to (IP_INNOROUTES after the rewrite).
    Nat,
    /// A router has no route to the destination (IP_INNOROUTES).
    Routing,
    /// Hand-made packets with a broken IPv4 header (IP_INHDR).
    Crafted,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Firewall, Kind::Nat, Kind::Routing, Kind::Crafted];

    pub fn template(self) -> &'static str {
        match self {
            Kind::Firewall => FIREWALL,
            Kind::Nat => NAT,
            Kind::Routing => ROUTING,
            Kind::Crafted => CRAFTED,
        }
    }
}

/// Where `dropspec new NAME` writes: NAME itself when it ends in `.toml` (a path), else
/// `scenarios/NAME.toml` of the project (NAME may have directories: `nat/my_case`), else
/// `NAME.toml` here when there is no project.
pub fn target(name: &str, project: Option<&Path>) -> PathBuf {
    if name.ends_with(".toml") {
        return PathBuf::from(name);
    }
    match project {
        Some(root) => root.join("scenarios").join(format!("{name}.toml")),
        None => PathBuf::from(format!("{name}.toml")),
    }
}

/// The file's text: the `#:schema` line when the file is in a project (the schema is
/// shipped there), then the kind's template.
pub fn text(kind: Kind, file: &Path) -> String {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.to_owned()))
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default());
    let schema = super::place::project_above(&dir)
        .filter(|root| root.join(crate::scenario::SCHEMA_PATH).is_file())
        .map(|root| format!("{}\n", crate::scenario::schema_line(&dir.join("x"), &root)))
        .unwrap_or_default();
    schema + kind.template()
}

/// Writes the starting scenario; refuses to overwrite.
pub fn write(name: &str, kind: Kind, project: Option<&Path>) -> Result<PathBuf> {
    let file = target(name, project);
    if file.exists() {
        bail!(
            "{} exists already: choose another name, or remove it first",
            file.display()
        );
    }
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&file, text(kind, &file))
        .with_context(|| format!("writing {}", file.display()))?;
    Ok(file)
}

// The templates. Addresses are from 198.18.0.0/15 (RFC 2544 benchmarking), which the
// validator requires, so a scenario can never collide with a real network.

const FIREWALL: &str = r#"# A firewall drop: the server's iptables INPUT chain drops ICMP, so every echo request
# the client sends dies in the server with reason NETFILTER_DROP.
description = "iptables INPUT DROP of ICMP: every echo request dies in the server's INPUT chain"

# Each host is a fresh network namespace (lo up, IPv6 off).
[hosts.client]
[hosts.server]

# A veth pair between two hosts; each end gets an address (and is eth0, eth1… in order).
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }

# The fault, applied inside the host's namespace: iptables-restore input (or nft, tc …).
[[faults]]
host = "server"
backend = "nft"
iptables = """
*filter
-A INPUT -p icmp -j DROP
COMMIT
"""

# What is sent, and what the sender must see.
[[traffic]]
from = "client"
to = "server"
protocol = "icmp"
count = 3
expect = { answered = 0, errors = 0 }

# The drops the kernel must report: exactly these, and no others (unless
# expect.allow_other_drops = true). `dropspec run --propose` prints blocks like this one
# from what a run saw.
[[expect.drops]]
host = "server"
reason = "NETFILTER_DROP"
count = 3
"#;

const NAT: &str = r#"# A NAT drop: the router DNATs the client's datagrams to an address it has no route to,
# so after the rewrite routing fails with IP_INNOROUTES (and ICMP unreachable goes back,
# rate-limited by the kernel: 2 of 3).
description = "DNAT on a router to an address it has no route to: IP_INNOROUTES after the rewrite"

[hosts.client]
routes = [{ to = "default", via = "198.18.1.1" }]

# A router: forwarding on, one link on each side (eth0 to the client, eth1 to the server).
[hosts.router]
forwarding = true

[hosts.server]
routes = [{ to = "default", via = "198.18.2.1" }]

[[links]]
a = { host = "client", addr = "198.18.1.2/24" }
b = { host = "router", addr = "198.18.1.1/24" }

[[links]]
a = { host = "router", addr = "198.18.2.1/24" }
b = { host = "server", addr = "198.18.2.2/24" }

[[faults]]
host = "router"
iptables = """
*nat
-A PREROUTING -i eth0 -p udp --dport 5000 -j DNAT --to-destination 198.19.99.99
COMMIT
"""

# UDP to the server's port 5000 (a receiver listens there unless listen = false).
[[traffic]]
from = "client"
to = "server"
protocol = "udp"
port = 5000
count = 3
expect = { delivered = 0, errors = 2 }

[[expect.drops]]
host = "router"
reason = "IP_INNOROUTES"
count = 3
"#;

const ROUTING: &str = r#"# A routing drop: the router has no route to the destination, so datagrams die there
# with IP_INNOROUTES (ICMP net-unreachable back, rate-limited by the kernel: 2 of 3).
description = "No route on a router: datagrams to an unknown subnet die as IP_INNOROUTES"

[hosts.client]
routes = [{ to = "default", via = "198.18.1.1" }]

[hosts.router]
forwarding = true

[hosts.server]
routes = [{ to = "default", via = "198.18.2.1" }]

[[links]]
a = { host = "client", addr = "198.18.1.2/24" }
b = { host = "router", addr = "198.18.1.1/24" }

[[links]]
a = { host = "router", addr = "198.18.2.1/24" }
b = { host = "server", addr = "198.18.2.2/24" }

# To an address no host owns and no route covers; nobody listens.
[[traffic]]
from = "client"
to = "198.18.7.7"
protocol = "udp"
port = 5000
count = 3
listen = false
expect = { delivered = 0, errors = 2 }

[[expect.drops]]
host = "router"
reason = "IP_INNOROUTES"
count = 3
"#;

const CRAFTED: &str = r#"# A crafted-packet drop: frames built by dropspec with an IPv4 header length of 4 words
# (the minimum is 5) die in the server's IP receive path as IP_INHDR.
description = "IPv4 header length below the minimum: IP_INHDR in the receive path"

[hosts.client]
[hosts.server]

[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }

# [[packets]] are written as raw frames on the client's link (not through its stack), so
# they can be wrong in ways a socket would refuse; `corrupt` says how.
[[packets]]
from = "client"
to = "server"
protocol = "udp"
port = 5000
count = 3
payload = 32
corrupt = "ihl"
receiver = "reads"
expect = { delivered = 0 }

[[expect.drops]]
host = "server"
reason = "IP_INHDR"
count = 3
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_a_valid_scenario_with_the_names_the_kernel_tables_know() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let known = crate::kernel::known::bundled_reasons();
        for kind in Kind::ALL {
            let s = crate::scenario::parse(
                kind.template(),
                Path::new("new.toml"),
                "new",
                &root.join("fixtures"),
            )
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            for expect in &s.expect.drops {
                assert!(
                    known.contains_key(&expect.reason),
                    "{kind:?}: reason {} unknown to every bundled kernel",
                    expect.reason
                );
            }
        }
    }

    #[test]
    fn the_readme_shows_the_firewall_template_as_it_is_written() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let shown = format!(
            "```toml\n{}\n{}```",
            crate::scenario::schema_line(&root.join("scenarios/nft/x.toml"), root),
            FIREWALL
        );
        assert!(
            readme.contains(&shown),
            "README.md's `dropspec new` example is not the firewall template as written:\n{shown}"
        );
    }

    #[test]
    fn target_paths() {
        let root = Path::new("/p");
        assert_eq!(
            target("nat/x", Some(root)),
            Path::new("/p/scenarios/nat/x.toml")
        );
        assert_eq!(target("a/b.toml", Some(root)), Path::new("a/b.toml"));
        assert_eq!(target("x", None), Path::new("x.toml"));
    }
}
