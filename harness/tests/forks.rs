//! `forks::close_now` against children started through `forks` by another thread. In a
//! test binary of its own: a child another test of the same process started without
//! `forks` (unit tests may) would hold a copy of the socket, which is just what this
//! shows cannot happen when every child starts through `forks`.

use dropspec::forks::{close_now, status};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// An address closed with close_now is free again at once, however many children
/// other threads start meanwhile. (An abstract Unix socket name, which is released on
/// close as a port is: no address of the machine's own is touched.)
#[test]
fn an_address_closed_now_is_free_while_children_start() {
    let name = format!("dropspec-forks-test-{}", std::process::id());
    let at = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let (stop, started) = (AtomicBool::new(false), AtomicU32::new(0));
    let failed = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let _ = status(&mut Command::new("true"));
                started.fetch_add(1, Ordering::Relaxed);
            }
        });
        // While the other thread starts 100 children (5 s at most): with a plain
        // drop, about one bind in six fails here.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut failed = None;
        while failed.is_none() && started.load(Ordering::Relaxed) < 100 && Instant::now() < deadline
        {
            match UnixDatagram::bind_addr(&at) {
                Ok(socket) => close_now(socket),
                Err(e) => failed = Some(e),
            }
        }
        stop.store(true, Ordering::Relaxed);
        failed
    });
    if let Some(e) = failed {
        panic!("binding {name} again after close_now: {e}");
    }
}
