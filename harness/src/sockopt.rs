//! The socket options that neither nix nor socket2 wraps, set through one raw libc
//! call: `IP_MTU_DISCOVER`, `PACKET_IGNORE_OUTGOING`, the `TCP_REPAIR_QUEUE`
//! and `TCP_QUEUE_SEQ` of a repaired connection, and `TCP_REPAIR`'s "off without a
//! window probe" mode (-1, which nix's `TcpRepair`, a `u32`, cannot express). Every
//! option either crate does wrap is set through it instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// setsockopt(2) with an `int` value.
pub(crate) fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed for the call; value outlives it and the length
    // given is its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
