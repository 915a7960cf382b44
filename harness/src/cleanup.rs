//! Nothing a run creates may outlive it.
//!
//! Scenario namespaces are anonymous and held only by file descriptors, and the probe's
//! programs and maps are held by descriptors too, so the kernel removes all of them when
//! the process ends, however it ends (success, panic, Ctrl-C, SIGKILL). What can outlive
//! a process is anything given a name in the root namespace: a bind-mounted namespace
//! under /run/netns or a link, as the shell-script comparison in the benchmarks makes,
//! and files under the temporary directory. Those are named `dropspec-<pid>-…` after the
//! process that made them, and are reaped by [`reap_before_run`] once that process is
//! gone. A `dropspec` name without a pid, or with the pid of a live process, is left
//! alone: it may be in use. Machine-wide sysctls have their own guard (a guardian
//! process, see `global_sysctls`); their restore records are the last line of defence
//! and are reaped here too.

use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

pub use crate::owner::{start_time, Owner};

pub const PREFIX: &str = "dropspec";

/// What [`reap_before_run`] removed, for the run's log.
#[derive(Debug, Default)]
pub struct Reaped {
    pub namespaces: Vec<String>,
    /// Global sysctls a killed run had changed, now put back.
    pub global_sysctls: Vec<String>,
    /// `dropspec-<pid>-…` files and directories under the temporary directory.
    pub temporary: Vec<String>,
}

impl Reaped {
    /// One line per thing removed, worded the same by every entry point.
    pub fn lines(&self) -> Vec<String> {
        let namespaces = self
            .namespaces
            .iter()
            .map(|n| format!("removed namespace {n}"));
        let sysctls = self
            .global_sysctls
            .iter()
            .map(|c| format!("restored global sysctl {c}"));
        let temporary = self
            .temporary
            .iter()
            .map(|t| format!("removed temporary {t}"));
        namespaces.chain(sysctls).chain(temporary).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.global_sysctls.is_empty() && self.temporary.is_empty()
    }
}

/// The name a dropspec tool gives a namespace or temporary file it must name:
/// `dropspec-<pid>-<label>`.
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

/// When the process with this pid started, on the wall clock (to second precision).
fn started_at(pid: i32) -> Option<SystemTime> {
    let ticks = start_time(pid)?;
    // SAFETY: sysconf has no preconditions.
    let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(boot + ticks / per_second.max(1)))
}

/// Whether the process that made a `dropspec-<pid>-…` file may still be using it. A
/// file records no start time, but its owner started before it last changed it: a live
/// process with that pid that started later is another process given a reused pid.
fn owner_may_use(pid: i32, modified: Option<SystemTime>) -> bool {
    if !process_alive(pid) {
        return false;
    }
    match (started_at(pid), modified) {
        // btime and starttime are whole seconds apart from the file's clock: a second of
        // slack keeps a live owner from looking younger than its own file.
        (Some(started), Some(modified)) => started <= modified + Duration::from_secs(1),
        _ => true,
    }
}

/// Reaps what dead dropspec processes left on this machine; every entry point calls it
/// before it starts (`dropspec run`, `bench`, `cleanup`, the test binaries). Without root
/// there is nothing of ours it could remove, so it returns nothing: a caller need not
/// ask first. Safe to call from several threads and processes at once.
pub fn reap_before_run() -> io::Result<Reaped> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(Reaped::default());
    }
    Ok(Reaped {
        global_sysctls: crate::global_sysctls::restore_stale_records(),
        namespaces: reap_namespaces()?,
        temporary: [std::env::temp_dir(), "/run".into()]
            .iter()
            .flat_map(|dir| reap_temporary(dir))
            .collect(),
    })
}

/// Removes `dropspec-<pid>-…` namespaces under /run/netns whose process has died.
fn reap_namespaces() -> io::Result<Vec<String>> {
    let mut reaped = Vec::new();
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
        match std::fs::remove_file(&path) {
            Ok(()) => reaped.push(name),
            // Another process reaping at the same time got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reaped)
}

/// Removes `dropspec-<pid>-…` files and directories in `dir` whose process has died.
/// Failures are left for the next reaper: a leftover temporary file harms no run.
fn reap_temporary(dir: &Path) -> Vec<String> {
    let mut reaped = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return reaped;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner(&name) else { continue };
        // symlink_metadata: a link is removed as a link, never followed.
        let Ok(meta) = entry.path().symlink_metadata() else {
            continue;
        };
        if owner_may_use(pid, meta.modified().ok()) {
            continue;
        }
        let removed = if meta.is_dir() {
            std::fs::remove_dir_all(entry.path())
        } else {
            std::fs::remove_file(entry.path())
        };
        if removed.is_ok() {
            reaped.push(entry.path().display().to_string());
        }
    }
    reaped
}

/// A `dropspec-<pid>-<label>` directory under the temporary directory, removed with
/// everything in it when dropped (and by [`reap_before_run`] if its process is killed).
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> io::Result<TempDir> {
        let path = std::env::temp_dir().join(owned_name(label));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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

    #[test]
    fn start_time_is_field_22_even_after_a_name_with_parentheses() {
        let stat = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(crate::owner::parse_start_time(stat), Some(987654));
        assert_eq!(crate::owner::parse_start_time("4242 (cut"), None);
    }

    #[test]
    fn an_owner_is_this_process_not_its_pid() {
        let me = Owner::current();
        assert!(me.alive());
        assert_eq!(Owner::decode(&me.encode()), Some(me));
        // The same pid with another start time is a later process that reused the pid.
        let reused = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.alive());
        assert_eq!(Owner::decode("12"), None);
    }

    #[test]
    fn temporary_files_of_dead_or_younger_processes_are_reaped() {
        let dir = TempDir::new("reap-test").unwrap();
        let me = std::process::id();
        // pid 0 never names a process in /proc; a file older than our start names a
        // process that died before this one was given the same pid.
        let dead = dir.path().join("dropspec-0-x");
        let ours = dir.path().join(format!("dropspec-{me}-y"));
        let reused = dir.path().join(format!("dropspec-{me}-z"));
        let other = dir.path().join("unrelated-0-x");
        for path in [&dead, &ours, &reused, &other] {
            std::fs::create_dir_all(path.join("inside")).unwrap();
        }
        let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        std::fs::File::open(&reused)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let mut reaped = reap_temporary(dir.path());
        reaped.sort();
        let mut expected = vec![dead.display().to_string(), reused.display().to_string()];
        expected.sort();
        assert_eq!(reaped, expected);
        assert!(ours.exists() && other.exists());
        let path = dir.path().to_owned();
        drop(dir);
        assert!(!path.exists());
    }
}
