//! Nothing a run creates may outlive it.
//!
//! Scenario namespaces are anonymous and held only by file descriptors, and the probe's
//! programs and maps are held by descriptors too, so the kernel removes all of them when
//! the process ends, however it ends (success, panic, Ctrl-C, SIGKILL). What can outlive
//! a process is anything given a name in the root namespace: a bind-mounted namespace
//! under /run/netns or a link, as the shell-script comparison in the benchmarks makes.
//! Those are named `dropspec-<pid>-…` after the process that made them, and are reaped
//! here at the start of a run once that process is gone. A `dropspec` name without a
//! pid, or with the pid of a live process, is left alone: it may be in use.

use std::io;
use std::path::Path;

pub const PREFIX: &str = "dropspec";

/// What [`reap_leftovers`] removed, for the run's log.
#[derive(Debug, Default)]
pub struct Reaped {
    pub namespaces: Vec<String>,
    /// Global sysctls a killed run had changed, now put back.
    pub global_sysctls: Vec<String>,
}

/// The name a dropspec tool gives a namespace it must name: `dropspec-<pid>-<label>`.
pub fn owned_name(label: &str) -> String {
    format!("{PREFIX}-{}-{label}", std::process::id())
}

/// The pid in a `dropspec-<pid>-…` name, if it has one.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes `dropspec-<pid>-…` namespaces under /run/netns whose process has died.
pub fn reap_leftovers() -> io::Result<Reaped> {
    let mut reaped = Reaped {
        global_sysctls: crate::global_sysctls::restore_stale_records(),
        ..Reaped::default()
    };
    let dir = Path::new("/run/netns");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(reaped),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match owner(&name) {
            Some(pid) if !process_alive(pid) => {}
            _ => continue,
        }
        let path = entry.path();
        // A named namespace is a bind mount of its nsfs inode; unmounting it drops the
        // last reference once no process is inside. Removing the file alone would not.
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        std::fs::remove_file(&path)?;
        reaped.namespaces.push(name);
    }
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_with_a_dead_owner_are_reaped() {
        assert_eq!(owner("dropspec-1234-bench-a"), Some(1234));
        assert_eq!(owner("dropspec-smoke-fw"), None);
        assert_eq!(owner("other-1234-x"), None);
        assert!(owned_name("x").starts_with(&format!("dropspec-{}-", std::process::id())));
        assert!(process_alive(std::process::id() as i32));
    }
}
