//! Sysctls that exist only globally, changed for one scenario and always put back.
//!
//! `net.netfilter.nf_conntrack_max` is read-only inside a child namespace, yet the kernel
//! compares it with each namespace's own entry count: lowering it affects every namespace
//! on the machine. So a scenario that declares it:
//! - runs alone: it holds the exclusive side of a lock every other scenario holds shared,
//!   within this process (an RwLock) and across dropspec processes (flock on
//!   /run/dropspec.lock);
//! - refuses to start if any namespace already holds as many entries as the lowered limit;
//! - changes the value only for its traffic, and puts it back when the guard is dropped
//!   (success, failure, panic), from a signal handler (Ctrl-C, SIGTERM, SIGHUP), or — after
//!   SIGKILL — at the next run, from a record file written before the change.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use crate::vocab::GLOBAL_SYSCTLS as ALLOWED;

const LOCK_FILE: &str = "/run/dropspec.lock";
const RECORD_DIR: &str = "/run/dropspec";

#[derive(Debug, thiserror::Error)]
pub enum GlobalSysctlError {
    #[error("taking the dropspec lock {LOCK_FILE}: {0}")]
    Lock(#[source] io::Error),
    #[error("reading global sysctl {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: io::Error,
    },
    #[error("setting global sysctl {key} to {value}: {source}")]
    Write {
        key: String,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("writing the restore record {path}: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "not lowering {key} to {limit}: network namespace {netns} already holds {entries} conntrack entries and would start dropping new connections; run this scenario on a machine where no namespace is that busy"
    )]
    NamespaceTooBusy {
        key: String,
        limit: u64,
        netns: String,
        entries: u64,
    },
}

/// One global change in force, as the signal handler sees it: the file to write and the
/// bytes to write, prepared before the change so the handler only makes system calls.
struct Restore {
    path: CString,
    original: Vec<u8>,
    record: CString,
}

/// The change in force, if any. Only one can be: changes are made under the exclusive lock.
static IN_FORCE: AtomicPtr<Restore> = AtomicPtr::new(std::ptr::null_mut());

/// Scenarios share this; one that changes a global sysctl takes it alone.
static SCENARIOS: RwLock<()> = RwLock::new(());

/// Held for a scenario's whole run.
pub enum RunLock {
    Shared {
        _threads: RwLockReadGuard<'static, ()>,
        _processes: File,
    },
    Exclusive {
        _threads: RwLockWriteGuard<'static, ()>,
        _processes: File,
    },
}

/// Takes the lock a scenario runs under: exclusive when it changes global sysctls.
pub fn lock(exclusive: bool) -> Result<RunLock, GlobalSysctlError> {
    // Threads first, then processes: a thread never waits on the flock while holding the
    // file lock another thread of ours needs.
    if exclusive {
        let threads = SCENARIOS.write().unwrap_or_else(|e| e.into_inner());
        let file = flock(libc::LOCK_EX)?;
        Ok(RunLock::Exclusive {
            _threads: threads,
            _processes: file,
        })
    } else {
        let threads = SCENARIOS.read().unwrap_or_else(|e| e.into_inner());
        let file = flock(libc::LOCK_SH)?;
        Ok(RunLock::Shared {
            _threads: threads,
            _processes: file,
        })
    }
}

/// Keeps every other scenario of this process from starting, without taking the
/// cross-process lock: for tests that drive another dropspec process which changes
/// global sysctls, so this process's scenarios never run under its changed values.
pub fn exclusive_in_process() -> RwLockWriteGuard<'static, ()> {
    SCENARIOS.write().unwrap_or_else(|e| e.into_inner())
}

/// Reads a global sysctl while no dropspec process can have it changed: under the
/// shared side of the cross-process lock, which every change is made under the
/// exclusive side of. (A process killed mid-change leaves a record for `cleanup`.)
pub fn read_settled(key: &str) -> Result<String, GlobalSysctlError> {
    let _shared = flock(libc::LOCK_SH)?;
    std::fs::read_to_string(sysctl_path(key))
        .map(|v| v.trim().to_owned())
        .map_err(|source| GlobalSysctlError::Read {
            key: key.to_owned(),
            source,
        })
}

fn flock(mode: libc::c_int) -> Result<File, GlobalSysctlError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .map_err(GlobalSysctlError::Lock)?;
    loop {
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), mode) } == 0 {
            return Ok(file);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(GlobalSysctlError::Lock(e));
        }
    }
}

/// A global sysctl lowered for a scenario; dropping it restores the original value.
#[derive(Debug)]
pub struct Change {
    pub key: String,
    pub original: String,
    pub value: String,
}

impl Drop for Change {
    fn drop(&mut self) {
        let restore = IN_FORCE.swap(std::ptr::null_mut(), Ordering::SeqCst);
        let _ = std::fs::write(sysctl_path(&self.key), &self.original);
        if !restore.is_null() {
            // SAFETY: the pointer came from Box::into_raw in `apply` and was swapped out,
            // so nobody else can free it; the signal handler only reads it while in force.
            let restore = unsafe { Box::from_raw(restore) };
            let _ = std::fs::remove_file(Path::new(restore.record.to_str().unwrap_or("")));
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn record_path() -> PathBuf {
    Path::new(RECORD_DIR).join(format!("global-sysctls-{}", std::process::id()))
}

/// Lowers `key` to `value` after checking that no namespace is near the new limit.
/// Must be called under an exclusive [`RunLock`].
pub fn apply(key: &str, value: &str, our_namespaces: &[u64]) -> Result<Change, GlobalSysctlError> {
    restore_stale_records();
    let path = sysctl_path(key);
    let original = std::fs::read_to_string(&path)
        .map_err(|source| GlobalSysctlError::Read {
            key: key.to_owned(),
            source,
        })?
        .trim()
        .to_owned();
    if key == "net.netfilter.nf_conntrack_max" {
        let limit: u64 = value.parse().unwrap_or(0);
        check_conntrack_headroom(key, limit, our_namespaces)?;
    }

    // The record goes to disk before the change, so even SIGKILL leaves a way back.
    let record = record_path();
    std::fs::create_dir_all(RECORD_DIR)
        .and_then(|()| std::fs::write(&record, format!("{key}={original}\n")))
        .map_err(|source| GlobalSysctlError::Record {
            path: record.clone(),
            source,
        })?;
    let restore = Box::new(Restore {
        path: CString::new(path.to_string_lossy().as_bytes()).expect("no NUL in a path"),
        original: original.clone().into_bytes(),
        record: CString::new(record.to_string_lossy().as_bytes()).expect("no NUL in a path"),
    });
    install_signal_handlers();
    IN_FORCE.store(Box::into_raw(restore), Ordering::SeqCst);
    let change = Change {
        key: key.to_owned(),
        original,
        value: value.to_owned(),
    };
    std::fs::write(&path, value).map_err(|source| GlobalSysctlError::Write {
        key: key.to_owned(),
        value: value.to_owned(),
        source,
    })?;
    Ok(change)
}

/// Every namespace of a process on this machine except the scenario's own must hold
/// fewer entries than the lowered limit (ours start empty and are the point).
fn check_conntrack_headroom(
    key: &str,
    limit: u64,
    our_namespaces: &[u64],
) -> Result<(), GlobalSysctlError> {
    let mut seen = std::collections::BTreeSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Ok(());
    };
    for entry in procs.flatten() {
        let ns_path = entry.path().join("ns/net");
        let Ok(meta) = std::fs::metadata(&ns_path) else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        if our_namespaces.contains(&meta.ino()) || !seen.insert(meta.ino()) {
            continue;
        }
        let Some(entries) = conntrack_count_in(&ns_path) else {
            continue;
        };
        if entries >= limit {
            return Err(GlobalSysctlError::NamespaceTooBusy {
                key: key.to_owned(),
                limit,
                netns: format!(
                    "net:[{}] (of pid {})",
                    meta.ino(),
                    entry.file_name().to_string_lossy()
                ),
                entries,
            });
        }
    }
    Ok(())
}

/// Reads nf_conntrack_count inside the namespace at `ns_path`, on a thread made for it.
fn conntrack_count_in(ns_path: &Path) -> Option<u64> {
    let file = File::open(ns_path).ok()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
                std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .join()
            .ok()
            .flatten()
    })
}

/// Puts back global sysctls that a killed dropspec process left changed.
pub fn restore_stale_records() -> Vec<String> {
    let mut restored = Vec::new();
    let Ok(entries) = std::fs::read_dir(RECORD_DIR) else {
        return restored;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("global-sysctls-") else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Some((key, original)) = line.split_once('=') {
                if ALLOWED.contains(&key) && std::fs::write(sysctl_path(key), original).is_ok() {
                    restored.push(format!("{key}={original} (left changed by pid {pid})"));
                }
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    restored
}

fn install_signal_handlers() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let action = SigAction::new(
            SigHandler::Handler(restore_and_reraise),
            SaFlags::SA_RESETHAND,
            SigSet::empty(),
        );
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only makes async-signal-safe system calls.
            unsafe {
                let _ = sigaction(signal, &action);
            }
        }
    });
}

/// Writes the original value back, removes the record, then lets the signal do what it
/// would have done (SA_RESETHAND restored the default action).
extern "C" fn restore_and_reraise(signal: libc::c_int) {
    let restore = IN_FORCE.swap(std::ptr::null_mut(), Ordering::SeqCst);
    if !restore.is_null() {
        // SAFETY: the Restore outlives this call (it is leaked once swapped out here);
        // open/write/close/unlink are async-signal-safe.
        unsafe {
            let r = &*restore;
            let fd = libc::open(r.path.as_ptr(), libc::O_WRONLY);
            if fd >= 0 {
                libc::write(fd, r.original.as_ptr().cast(), r.original.len());
                libc::close(fd);
            }
            libc::unlink(r.record.as_ptr());
        }
    }
    // SAFETY: raise(3) is async-signal-safe.
    unsafe {
        libc::raise(signal);
    }
}
