//! Nothing a run creates may outlive it.
//!
//! Scenario namespaces are anonymous and held only by file descriptors, and the probe's
//! programs and maps are held by descriptors too, so the kernel removes all of them when
//! the process ends, however it ends (success, panic, Ctrl-C, SIGKILL). What can outlive
//! a process is anything given a name in the root namespace: a bind-mounted namespace
//! under /run/netns or a link, as the shell-script comparison in the benchmarks makes.
//! Those always carry the `dropspec` prefix and are reaped here at the start of a run.

use std::io;
use std::path::Path;

pub const PREFIX: &str = "dropspec";

/// What [`reap_leftovers`] removed, for the run's log.
#[derive(Debug, Default)]
pub struct Reaped {
    pub namespaces: Vec<String>,
}

/// Removes `dropspec*` namespaces left under /run/netns by a killed run.
/// Only names with our prefix are touched.
pub fn reap_leftovers() -> io::Result<Reaped> {
    let mut reaped = Reaped::default();
    let dir = Path::new("/run/netns");
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(reaped),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PREFIX) {
            continue;
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
