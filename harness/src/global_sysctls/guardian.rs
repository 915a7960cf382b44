//! A process that outlives the harness to put one machine-wide sysctl back.
//!
//! Signal handlers cannot run on SIGKILL, and a record on disk waits for a later dropspec
//! command, so neither protects a machine whose harness was killed. The guardian is a
//! second process holding the original value and one end of a socket pair whose other
//! end only the harness holds (close-on-exec, so no tool the harness starts inherits it).
//! However the harness ends, the kernel closes its end and the guardian's read returns
//! at once; unless the harness said it restored the value itself, the guardian writes it.
//!
//! How it is started: the harness forks and the child never calls exec. Re-executing
//! `/proc/self/exe` with a marker would make every binary that links this library
//! (`dropspec`, each test binary, tests yet to be written) check that marker first, and
//! one that forgot would run itself again as root — the whole test suite, say. A fork
//! needs nothing from the binary. The price is the rule for forking a threaded process:
//! until it exits the child may only make async-signal-safe calls (no allocation, no
//! locks, nothing std might lock). So everything it needs (paths, the value) is prepared
//! before the fork, and the child only makes system calls.
//!
//! The child keeps two descriptors: its end of the socket pair, and the harness's
//! exclusive lock on /run/dropspec.lock. flock(2) locks belong to the open file
//! description, which the fork shares, so the lock stays held until the guardian has
//! restored the value and exited: no other dropspec process can read the lowered value
//! as "the original" in between. It closes every other descriptor, so it keeps no
//! namespace, probe or pipe of the harness alive, and moves to its own session so that a
//! signal to the harness's process group or terminal does not reach it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The harness says this after writing the original value itself.
const RESTORED: u8 = b'd';
/// The guardian says this once it runs in its own session with its signals ignored.
const READY: u8 = b'r';

/// A running guardian, owned by the harness.
#[derive(Debug)]
pub(super) struct Guardian {
    pid: libc::pid_t,
    socket: OwnedFd,
}

impl Guardian {
    /// Starts a guardian that writes `original` to `sysctl` (and then removes `record`)
    /// when this process ends without calling [`Guardian::dismiss`]. `lock` (or -1) is a
    /// descriptor of the exclusive lock, held by the guardian until it is done. Returns
    /// once the guardian is in its own session, so from then on a signal to our process
    /// group cannot take it with us.
    pub(super) fn spawn(
        sysctl: &CStr,
        original: &[u8],
        record: &CStr,
        lock: RawFd,
    ) -> io::Result<Guardian> {
        let mut fds = [-1; 2];
        // SAFETY: socketpair(2) writes two descriptors into the array we pass.
        if unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are new and ours alone.
        let (ours, theirs) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // The child holds a copy of every descriptor until `guard` closes them, just
        // before it says READY: no socket may be closed for reuse until then (forks.rs).
        let _starting = crate::forks::starting();
        // SAFETY: the child runs only `guard`, which makes async-signal-safe system calls
        // on memory prepared before the fork, and never returns.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => unsafe { guard(theirs.as_raw_fd(), lock, sysctl, original, record) },
            pid => {
                drop(theirs);
                let guardian = Guardian { pid, socket: ours };
                match guardian.receive()? {
                    Some(READY) => Ok(guardian),
                    _ => Err(io::Error::other(
                        "the guardian process ended before it was ready",
                    )),
                }
            }
        }
    }

    /// Tells the guardian the value is back, so it exits without writing.
    pub(super) fn dismiss(&self) {
        dismiss(self.socket.as_raw_fd());
    }

    /// The descriptor the signal handler passes to [`dismiss`].
    pub(super) fn socket(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn receive(&self) -> io::Result<Option<u8>> {
        let mut byte = 0u8;
        loop {
            // SAFETY: reads one byte into a local.
            let n = unsafe { libc::read(self.socket.as_raw_fd(), (&raw mut byte).cast(), 1) };
            match n {
                1 => return Ok(Some(byte)),
                0 => return Ok(None),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// Async-signal-safe: callable from the harness's signal handler.
pub(super) fn dismiss(socket: RawFd) {
    // SAFETY: send(2) of one byte; MSG_NOSIGNAL because a guardian that is already gone
    // must not turn into a SIGPIPE for the harness.
    unsafe {
        libc::send(
            socket,
            std::ptr::from_ref(&RESTORED).cast(),
            1,
            libc::MSG_NOSIGNAL,
        );
    }
}

impl Drop for Guardian {
    /// Closes our end (a guardian not dismissed restores now) and waits for the guardian
    /// to exit, so its copy of the lock is released before ours and no zombie is left.
    fn drop(&mut self) {
        // SAFETY: shutdown(2) on our socket: the guardian sees end-of-file even while a
        // forked-but-not-yet-exec'd child of another thread briefly shares the socket.
        unsafe {
            libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR);
        }
        loop {
            // SAFETY: waits for our own child.
            let r = unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
            if r != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
    }
}

/// The guardian's whole life, in the forked child. Only system calls from here on.
unsafe fn guard(socket: RawFd, lock: RawFd, sysctl: &CStr, original: &[u8], record: &CStr) -> ! {
    // Its own session and process group: kill(-pgid) of the harness's group, and the
    // SIGHUP of a closing terminal, are not for it. Ctrl-C and SIGTERM are ignored too:
    // its life is bounded by the harness's anyway, and it must not die before restoring.
    libc::setsid();
    let mut ignore: libc::sigaction = std::mem::zeroed();
    ignore.sa_sigaction = libc::SIG_IGN;
    for signal in [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGQUIT,
        libc::SIGPIPE,
    ] {
        libc::sigaction(signal, &ignore, std::ptr::null_mut());
    }
    // So `ps` says what it is, rather than showing a second copy of the test binary.
    libc::prctl(libc::PR_SET_NAME, c"dropspec-guard".as_ptr());

    // Standard streams to /dev/null: whoever reads the harness's output (cargo, a test
    // that captures it) must see it end when the harness does, not when we do.
    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
    if null >= 0 {
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
    }
    close_all_but(&mut [0, 1, 2, socket, lock]);

    libc::send(
        socket,
        std::ptr::from_ref(&READY).cast(),
        1,
        libc::MSG_NOSIGNAL,
    );
    let mut byte = 0u8;
    loop {
        match libc::read(socket, (&raw mut byte).cast(), 1) {
            1 if byte == RESTORED => libc::_exit(0),
            1 => continue,
            -1 if *libc::__errno_location() == libc::EINTR => continue,
            // End of file (or an error): the harness is gone without restoring.
            _ => break,
        }
    }
    let fd = libc::open(sysctl.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd >= 0 {
        let written = libc::write(fd, original.as_ptr().cast(), original.len());
        libc::close(fd);
        // The record is the way back if we could not write; keep it then.
        if written == original.len() as isize {
            libc::unlink(record.as_ptr());
        }
    }
    libc::_exit(0)
}

/// Closes every descriptor not in `keep` (which it sorts; -1 entries are ignored).
unsafe fn close_all_but(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut next: libc::c_uint = 0;
    for &fd in keep.iter() {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd > next {
            close_range(next, fd - 1);
        }
        next = next.max(fd + 1);
    }
    close_range(next, libc::c_uint::MAX);
}

unsafe fn close_range(first: libc::c_uint, last: libc::c_uint) {
    if first > last {
        return;
    }
    // close_range(2) arrived in Linux 5.9; every kernel dropspec supports has it, and on
    // one without it we close what a process can have open, one by one.
    if libc::syscall(libc::SYS_close_range, first, last, 0) == 0 {
        return;
    }
    let limit = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, 1 << 20) as libc::c_uint;
    for fd in first..=last.min(limit) {
        libc::close(fd as RawFd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// A guardian over a plain file (no root needed) instead of a sysctl.
    fn guarded_file(name: &str) -> (crate::cleanup::TempDir, CString, CString) {
        let dir = crate::cleanup::TempDir::new(&format!("guardian-{name}")).unwrap();
        let value = dir.path().join("value");
        let record = dir.path().join("record");
        std::fs::write(&value, "4").unwrap();
        std::fs::write(&record, "owner=…").unwrap();
        let c = |p: &std::path::Path| CString::new(p.to_str().unwrap()).unwrap();
        let (value, record) = (c(&value), c(&record));
        (dir, value, record)
    }

    #[test]
    fn a_guardian_left_without_a_word_restores_and_removes_the_record() {
        let (dir, value, record) = guarded_file("restores");
        let guardian = Guardian::spawn(&value, b"262144", &record, -1).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("value")).unwrap(),
            "4"
        );
        // Dropping without dismissing is what the kernel does to a killed harness's
        // socket; Drop waits for the guardian to exit.
        drop(guardian);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("value")).unwrap(),
            "262144"
        );
        assert!(!dir.path().join("record").exists());
    }

    #[test]
    fn a_dismissed_guardian_writes_nothing() {
        let (dir, value, record) = guarded_file("dismissed");
        let guardian = Guardian::spawn(&value, b"262144", &record, -1).unwrap();
        guardian.dismiss();
        drop(guardian);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("value")).unwrap(),
            "4"
        );
        assert!(dir.path().join("record").exists());
    }
}
