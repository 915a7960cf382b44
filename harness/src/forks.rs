//! Child processes and the descriptors they copy.
//!
//! A new child starts with a copy of this process's whole descriptor table and holds it
//! until it execs (the harness's descriptors are close-on-exec) or, for a fork that never
//! execs, until it closes them. While a child holds that copy, a socket another thread
//! closes is not released: its port stays bound and its connection established. Scenario
//! threads start children all the time (`ip`, `nft`, `iptables-restore`, `nstat` of the
//! scenarios running beside them), and a crafted-packet entry closes its receiving socket
//! so the next entry can bind the same port: a CI rehearsal saw that bind fail with
//! EADDRINUSE (`checksum/control_v6`) and a suite run saw a repaired TCP connection's
//! connect fail with EADDRNOTAVAIL (`checksum/control_v4`). Measured here: one thread
//! spawning `/bin/true` in a loop made 17 % of another thread's close-then-bind pairs of
//! one UDP port fail with EADDRINUSE.
//!
//! So every child is started under [`FORKS`]' read lock, held until the child has
//! exec'd (std's `Command::spawn` returns only then) or, for a fork that never execs,
//! until it has closed what it inherited; and a socket whose address is used again is
//! closed under the write lock ([`close_now`]): no child can hold a copy of it then.
//! Children start in parallel with each other; only those closes wait for them.

use std::io;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{RwLock, RwLockReadGuard};

static FORKS: RwLock<()> = RwLock::new(());

/// Held while a child may still hold a copy of the descriptor table.
pub fn starting() -> RwLockReadGuard<'static, ()> {
    // A panic while holding it leaves nothing inconsistent: the lock guards no data.
    FORKS.read().unwrap_or_else(|p| p.into_inner())
}

/// `command.spawn()`, returning once the child has exec'd.
pub fn spawn(command: &mut Command) -> io::Result<Child> {
    let _starting = starting();
    command.spawn()
}

/// `command.output()`: its stdout and stderr captured, waited for.
pub fn output(command: &mut Command) -> io::Result<Output> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    spawn(command)?.wait_with_output()
}

/// `command.status()`, waited for.
pub fn status(command: &mut Command) -> io::Result<ExitStatus> {
    spawn(command)?.wait()
}

/// Drops `descriptors` (sockets, or anything owning them) when no child is starting, so
/// each is really closed when this returns and its address is free again.
pub fn close_now<T>(descriptors: T) {
    close_now_with(|| drop(descriptors));
}

/// Runs `close` when no child is starting: for descriptors closed by a call rather than
/// by a drop (aya's `unload`, which closes the links a program owns).
pub fn close_now_with<R>(close: impl FnOnce() -> R) -> R {
    let _no_child_starting = FORKS.write().unwrap_or_else(|p| p.into_inner());
    close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_close_waits_for_a_child_starting() {
        let starting = starting();
        let closed = Arc::new(AtomicBool::new(false));
        let closer = {
            let closed = Arc::clone(&closed);
            std::thread::spawn(move || close_now_with(|| closed.store(true, Ordering::SeqCst)))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !closed.load(Ordering::SeqCst),
            "closed while a child was starting"
        );
        drop(starting);
        closer.join().unwrap();
        assert!(closed.load(Ordering::SeqCst));
    }
}
