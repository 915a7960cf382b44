//! `dropspec run --keep`: a scenario's namespaces left up under recognisable names, for
//! `ip netns exec`, and `dropspec cleanup --kept` to remove them.
//!
//! A run's namespaces are anonymous (held by file descriptors, gone with the process).
//! Keeping one bind-mounts it at `/run/netns/dropspec-keep-<scenario>-<host>`, where
//! iproute2 looks. The name has no pid on purpose: `cleanup::reap_before_run` removes
//! `dropspec-<pid>-…` namespaces of dead processes before every run, and a kept
//! namespace must outlive its process until a person removes it. Only the namespaces
//! are kept: the probes, receivers and global sysctls go with the run as always. What
//! lives inside a kept namespace (veths, rules, routes) goes when it is removed.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::topology::Topology;

pub const NETNS_DIR: &str = "/run/netns";
pub const KEEP_PREFIX: &str = "dropspec-keep-";

/// One kept namespace.
#[derive(Debug, Clone)]
pub struct Kept {
    pub host: String,
    pub name: String,
}

/// `dropspec-keep-<scenario>-<host>`, the scenario's `/` as `__` (its snapshot's stem).
pub fn kept_name(scenario: &str, host: &str) -> String {
    format!(
        "{KEEP_PREFIX}{}-{host}",
        crate::scenario::snapshot_name(scenario)
    )
}

/// Names every host's namespace under /run/netns, replacing a namespace kept under the
/// same name by an earlier run.
pub fn keep(scenario: &str, topology: &Topology) -> io::Result<Vec<Kept>> {
    prepare_netns_dir()?;
    let mut kept = Vec::new();
    for netns in topology.hosts() {
        let name = kept_name(scenario, netns.label());
        let path = Path::new(NETNS_DIR).join(&name);
        remove(&path)?;
        std::fs::File::create(&path)?;
        // The fd is this process's; /proc/self/fd/N is a link to the nsfs inode, and a
        // bind mount of it holds the namespace as `ip netns add` does.
        let source = format!("/proc/self/fd/{}", netns.fd().as_raw_fd());
        if let Err(e) = mount(
            Some(source.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = std::fs::remove_file(&path);
            return Err(io::Error::other(format!(
                "bind-mounting host {}'s namespace at {}: {e}",
                netns.label(),
                path.display()
            )));
        }
        kept.push(Kept {
            host: netns.label().to_owned(),
            name,
        });
    }
    Ok(kept)
}

/// What to tell the person who asked to keep them.
pub fn describe(scenario: &str, kept: &[Kept]) -> String {
    let mut out = format!("kept the namespaces of {scenario}:\n");
    for k in kept {
        out.push_str(&format!(
            "  {:<8} ip netns exec {} ip addr\n",
            k.host, k.name
        ));
    }
    if let Some(first) = kept.first() {
        out.push_str(&format!(
            "  a shell in one: ip netns exec {} bash; live drops: dropspec watch --netns {}\n",
            first.name,
            kept.iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    out.push_str("  remove them: dropspec cleanup --kept\n");
    out
}

/// Removes every kept namespace (`dropspec cleanup --kept`); returns their names.
pub fn remove_kept() -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(KEEP_PREFIX))
        })
        .collect();
    paths.sort();
    for path in paths {
        remove(&path)?;
        removed.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    Ok(removed)
}

/// Unmounts and removes a named namespace, if there is one.
fn remove(path: &Path) -> io::Result<()> {
    // Unmounting drops the reference the name held; removing the file alone would not.
    let _ = umount2(path, MntFlags::MNT_DETACH);
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// /run/netns as iproute2 makes it: a shared mount of its own, so a name made here is
/// seen in mount namespaces made later (`ip netns exec` makes one per command).
fn prepare_netns_dir() -> io::Result<()> {
    std::fs::create_dir_all(NETNS_DIR)?;
    let shared = |flags| mount(Some(""), NETNS_DIR, Some("none"), flags, None::<&str>);
    match shared(MsFlags::MS_SHARED | MsFlags::MS_REC) {
        Ok(()) => Ok(()),
        // Not a mount point yet: bind it on itself first, as `ip netns add` does.
        Err(nix::errno::Errno::EINVAL) => {
            mount(
                Some(NETNS_DIR),
                NETNS_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            shared(MsFlags::MS_SHARED | MsFlags::MS_REC).map_err(io::Error::from)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_names_are_recognisable_and_never_taken_for_a_dead_run() {
        let name = kept_name("iptables/input_drop", "server");
        assert_eq!(name, "dropspec-keep-iptables__input_drop-server");
        // The reaper takes the word after `dropspec-` for a pid; `keep` is none.
        let after = name.strip_prefix("dropspec-").unwrap();
        assert!(after.split('-').next().unwrap().parse::<i32>().is_err());
    }
}
