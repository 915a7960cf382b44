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
//!   (success, failure, panic) or from a signal handler (Ctrl-C, SIGTERM, SIGHUP);
//! - starts a guardian process before the change ([`guardian`]) that puts the value back
//!   within milliseconds if the harness dies any other way (SIGKILL of it or of its whole
//!   process group, a crash), with no later dropspec command needed;
//! - writes a record file before the change, naming its owner by pid and start time, for
//!   the one case left: the guardian killed too. [`restore_stale_records`] (called by every
//!   entry point through `cleanup::reap_before_run`, and before every change) puts it back.
//!
//! The exclusive lock is what keeps anyone from taking a lowered value for the original:
//! the guardian shares it and releases it only after restoring, and stale records are
//! read only under it.
//!
//! A process that holds the exclusive lock can hand it down to a dropspec process it
//! starts ([`RunLock::hand_down`], through the `DROPSPEC_LOCK_FD` variable): the
//! interrupt tests do, so that between killing their child and checking the value no
//! other dropspec process can change it.

mod guardian;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::owner::Owner;
use guardian::Guardian;

pub use crate::vocab::GLOBAL_SYSCTLS as ALLOWED;

const LOCK_FILE: &str = "/run/dropspec.lock";
const RECORD_DIR: &str = "/run/dropspec";
/// The descriptor number of an exclusive lock handed down by the parent process.
pub const LOCK_FD_ENV: &str = "DROPSPEC_LOCK_FD";

#[derive(Debug, thiserror::Error)]
pub enum GlobalSysctlError {
    #[error("taking the dropspec lock {LOCK_FILE}: {0}")]
    Lock(#[source] io::Error),
    #[error(
        "{LOCK_FD_ENV}={value} does not name an exclusive lock on {LOCK_FILE} this process inherited: {why} (it is set only by a dropspec process that starts another; unset it)"
    )]
    HandedDownLock { value: String, why: String },
    #[error("starting the process that restores {key} if this one dies: {source}")]
    Guardian {
        key: String,
        #[source]
        source: io::Error,
    },
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
    guardian: RawFd,
}

/// The change in force, if any. Only one can be: changes are made under the exclusive lock.
static IN_FORCE: AtomicPtr<Restore> = AtomicPtr::new(std::ptr::null_mut());

/// Scenarios share this; one that changes a global sysctl takes it alone.
static SCENARIOS: RwLock<()> = RwLock::new(());

/// The descriptor of this process's exclusive lock while it is held (-1 otherwise): the
/// guardian keeps a copy of it, so the lock outlives us until the value is back.
static EXCLUSIVE_FD: AtomicI32 = AtomicI32::new(-1);

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
        let file = match handed_down_lock()? {
            Some(file) => file,
            None => flock(libc::LOCK_EX)?,
        };
        EXCLUSIVE_FD.store(file.as_raw_fd(), Ordering::SeqCst);
        Ok(RunLock::Exclusive {
            _threads: threads,
            _processes: file,
        })
    } else {
        let threads = SCENARIOS.read().unwrap_or_else(|e| e.into_inner());
        // A handed-down exclusive lock covers shared use; asking for the shared side on
        // it would turn the parent's exclusive lock into a shared one.
        let file = match handed_down_lock()? {
            Some(file) => file,
            None => flock(libc::LOCK_SH)?,
        };
        Ok(RunLock::Shared {
            _threads: threads,
            _processes: file,
        })
    }
}

impl RunLock {
    /// Lets `command` (a dropspec process) run under this exclusive lock: it inherits
    /// the lock's descriptor, and its own `lock` uses it instead of waiting for a lock we
    /// hold. We keep holding it after the child ends, however the child ends.
    ///
    /// # Panics
    /// On a shared lock: a child could not change anything under it.
    pub fn hand_down(&self, command: &mut std::process::Command) {
        let RunLock::Exclusive { _processes, .. } = self else {
            panic!("only an exclusive lock can be handed down");
        };
        let fd = _processes.as_raw_fd();
        command.env(LOCK_FD_ENV, fd.to_string());
        use std::os::unix::process::CommandExt;
        // SAFETY: fcntl(2) is async-signal-safe; it clears close-on-exec in the child only.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if let RunLock::Exclusive { _processes, .. } = self {
            let _ = EXCLUSIVE_FD.compare_exchange(
                _processes.as_raw_fd(),
                -1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }
}

/// A new descriptor of the exclusive lock our parent handed down, if it did.
fn handed_down_lock() -> Result<Option<File>, GlobalSysctlError> {
    static HANDED_DOWN: OnceLock<Result<Option<RawFd>, GlobalSysctlError>> = OnceLock::new();
    let fd = match HANDED_DOWN.get_or_init(adopt_handed_down_lock) {
        Ok(Some(fd)) => *fd,
        Ok(None) => return Ok(None),
        Err(GlobalSysctlError::HandedDownLock { value, why }) => {
            return Err(GlobalSysctlError::HandedDownLock {
                value: value.clone(),
                why: why.clone(),
            })
        }
        Err(e) => return Err(GlobalSysctlError::Lock(io::Error::other(e.to_string()))),
    };
    // SAFETY: fcntl(2) duplicating a descriptor we checked and keep open.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(GlobalSysctlError::Lock(io::Error::last_os_error()));
    }
    // SAFETY: the duplicate is new and ours alone.
    Ok(Some(unsafe { File::from_raw_fd(copy) }))
}

/// Reads `DROPSPEC_LOCK_FD` once and checks that it names the lock file, held
/// exclusively; then marks it close-on-exec so no tool we start inherits it.
fn adopt_handed_down_lock() -> Result<Option<RawFd>, GlobalSysctlError> {
    let Some(value) = std::env::var_os(LOCK_FD_ENV) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    let fail = |why: String| GlobalSysctlError::HandedDownLock {
        value: value.clone(),
        why,
    };
    let fd: RawFd = value
        .parse()
        .ok()
        .filter(|fd| *fd > 2)
        .ok_or_else(|| fail("not a descriptor number above 2".into()))?;
    let handed = nix::sys::stat::fstat(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
        .map_err(|e| fail(format!("no open descriptor {fd} ({e})")))?;
    let file = nix::sys::stat::stat(LOCK_FILE).map_err(|e| fail(format!("{LOCK_FILE}: {e}")))?;
    if (handed.st_dev, handed.st_ino) != (file.st_dev, file.st_ino) {
        return Err(fail(format!("descriptor {fd} is another file")));
    }
    // On the description the parent locked, this succeeds at once if (and only if) that
    // lock is exclusive or nobody else holds one.
    // SAFETY: flock(2) and fcntl(2) on the descriptor just checked.
    unsafe {
        if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) != 0 {
            return Err(fail(format!(
                "the lock is not held exclusively ({})",
                io::Error::last_os_error()
            )));
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    Ok(Some(fd))
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
    guardian: Guardian,
}

impl Drop for Change {
    fn drop(&mut self) {
        let restore = IN_FORCE.swap(std::ptr::null_mut(), Ordering::SeqCst);
        if !restore.is_null() {
            // SAFETY: the pointer came from Box::into_raw in `apply` and was swapped out,
            // so nobody else can free it; the signal handler only reads it while in force.
            drop(unsafe { Box::from_raw(restore) });
        }
        // The value, then the record, then the guardian's dismissal: killed anywhere in
        // between, the guardian sees end-of-file and finishes, so no record outlives a
        // restored value. If we cannot write, the guardian tries once more when dropped.
        if std::fs::write(sysctl_path(&self.key), &self.original).is_ok() {
            let _ = std::fs::remove_file(record_path());
            self.guardian.dismiss();
        }
    }
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn record_path() -> PathBuf {
    Path::new(RECORD_DIR).join(format!("global-sysctls-{}", std::process::id()))
}

/// A record's first line names its owner; the rest are `key=original`.
const OWNER_LINE: &str = "owner=";

/// Lowers `key` to `value` after checking that no namespace is near the new limit.
/// Must be called under an exclusive [`RunLock`].
pub fn apply(key: &str, value: &str, our_namespaces: &[u64]) -> Result<Change, GlobalSysctlError> {
    // Under our exclusive lock: a dead owner's value goes back before we read "the
    // original", and no live owner can be changing it.
    restore_records_of_dead_owners();
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

    // The guardian first, then the record: killed between the two, we leave a guardian
    // that rewrites the unchanged value and no record; killed later, the guardian restores
    // the value and removes the record, which only outlives it if it is killed too.
    let record = record_path();
    let sysctl = CString::new(path.to_string_lossy().as_bytes()).expect("no NUL in a path");
    let record_c = CString::new(record.to_string_lossy().as_bytes()).expect("no NUL in a path");
    let guardian = Guardian::spawn(
        &sysctl,
        original.as_bytes(),
        &record_c,
        EXCLUSIVE_FD.load(Ordering::SeqCst),
    )
    .map_err(|source| GlobalSysctlError::Guardian {
        key: key.to_owned(),
        source,
    })?;
    let owner = Owner::current().encode();
    std::fs::create_dir_all(RECORD_DIR)
        .and_then(|()| std::fs::write(&record, format!("{OWNER_LINE}{owner}\n{key}={original}\n")))
        .map_err(|source| GlobalSysctlError::Record {
            path: record.clone(),
            source,
        })?;
    let restore = Box::new(Restore {
        path: sysctl,
        original: original.clone().into_bytes(),
        record: record_c,
        guardian: guardian.socket(),
    });
    install_signal_handlers();
    IN_FORCE.store(Box::into_raw(restore), Ordering::SeqCst);
    let change = Change {
        key: key.to_owned(),
        original,
        value: value.to_owned(),
        guardian,
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

/// Puts back global sysctls that a killed dropspec process (and its guardian) left
/// changed. Only under the exclusive lock: taken here if nobody holds it, or already held
/// by this process. Another holder is alive and may be changing a value right now (or is
/// a guardian restoring one), and it reaps these records itself before its next change.
/// So this never waits, and may be called from any thread or process at any time.
pub fn restore_stale_records() -> Vec<String> {
    // A record of a live owner is skipped anyway, so while any thread of ours holds the
    // lock, the records left are those of dead owners whose guardians are done.
    if EXCLUSIVE_FD.load(Ordering::SeqCst) != -1 {
        return restore_records_of_dead_owners();
    }
    match flock(libc::LOCK_EX | libc::LOCK_NB) {
        Ok(_unlocked_on_return) => restore_records_of_dead_owners(),
        Err(_) => Vec::new(),
    }
}

/// Must be called under the exclusive lock.
fn restore_records_of_dead_owners() -> Vec<String> {
    // Threads of one process share its exclusive lock: without this, a reaping thread
    // could read a record, and write its value after the thread holding the lock had
    // restored the same record and lowered the value for its own scenario.
    static READING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = READING.lock().unwrap_or_else(|e| e.into_inner());
    let mut restored = Vec::new();
    let Ok(entries) = std::fs::read_dir(RECORD_DIR) else {
        return restored;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("global-sysctls-") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let owner_alive = record_owner_alive(&text, pid);
        if owner_alive {
            continue;
        }
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

/// Whether the process that wrote a record (`global-sysctls-<pid>`) still runs.
fn record_owner_alive(record: &str, pid: &str) -> bool {
    match record
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(OWNER_LINE))
    {
        Some(owner) => Owner::decode(owner).is_some_and(|o| o.alive()),
        // Written before records named their owner's start time: the pid is all there
        // is to go by.
        None => Path::new("/proc").join(pid).exists(),
    }
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
                // In the order `Change::drop` follows, for the same reason.
                if libc::write(fd, r.original.as_ptr().cast(), r.original.len())
                    == r.original.len() as isize
                {
                    libc::unlink(r.record.as_ptr());
                    guardian::dismiss(r.guardian);
                }
                libc::close(fd);
            }
        }
    }
    // SAFETY: raise(3) is async-signal-safe.
    unsafe {
        libc::raise(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_whose_pid_was_reused_is_not_taken_for_its_owners() {
        let me = Owner::current();
        let pid = me.pid.to_string();
        let record =
            |owner: Owner| format!("{OWNER_LINE}{}\n{}=262144\n", owner.encode(), ALLOWED[0]);
        assert!(record_owner_alive(&record(me), &pid));
        // Our pid, but another process's start time: its owner died and the pid is ours now.
        let earlier = Owner {
            start_time: me.start_time.saturating_sub(1),
            ..me
        };
        assert!(!record_owner_alive(&record(earlier), &pid));
        // A record without an owner line has only its file name's pid to go by.
        assert!(record_owner_alive(
            &format!("{}=262144\n", ALLOWED[0]),
            &pid
        ));
        assert!(!record_owner_alive(
            &format!("{}=262144\n", ALLOWED[0]),
            "0"
        ));
    }
}
