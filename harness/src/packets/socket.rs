//! The AF_PACKET socket that puts crafted frames on a host's veth and sees what comes
//! back on it.
//!
//! The builder (`frame.rs`) knows nothing of namespaces; [`PacketSocket`] is
//! opened inside one by [`Netns::run`], because an AF_PACKET socket, like every socket,
//! belongs to the namespace it was created in, and the interface index and MAC address
//! must be asked of that namespace too (`/sys/class/net` would show the root namespace's
//! devices to a thread that only called `setns`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use socket2::{SockFilter, SockRef};

use super::Mac;
use crate::topology::{Netns, TopologyError};

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("{0}")]
    Namespace(#[source] TopologyError),
    #[error("host `{host}`: {doing} `{ifname}`{}", io_hint(source))]
    Io {
        host: String,
        ifname: String,
        /// "opening an AF_PACKET socket on", "reading the MAC address of", …
        doing: &'static str,
        #[source]
        source: io::Error,
    },
}

fn io_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => {
            "; raw packet sockets need CAP_NET_RAW: run dropspec as root"
        }
        Some(libc::ENODEV) => "; the host has no interface of that name",
        _ => "",
    }
}

/// An AF_PACKET socket bound to one interface of one host: it sends whole Ethernet
/// frames as they are, and receives the frames that arrive on that interface (its own
/// outgoing frames are not looped back to it).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    mac: Mac,
}

impl PacketSocket {
    /// Opens the socket inside `netns` and binds it to `ifname` there.
    pub fn open(netns: &Netns, ifname: &str) -> Result<PacketSocket, PacketError> {
        netns
            .run(|| open_bound(ifname))
            .map_err(PacketError::Namespace)?
            .map_err(|(doing, source)| io_error(netns, ifname, doing, source))
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Puts one frame on the wire exactly as given (the socket is bound: no address).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        match sock::send(self.fd.as_raw_fd(), frame, MsgFlags::empty())? {
            n if n != frame.len() => Err(io::Error::other(format!(
                "AF_PACKET sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Receives one waiting frame into `buf`, without blocking; `None` when none waits.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match sock::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => Ok(Some(n)),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stops the socket from queueing any further frame. Call it before the last
    /// [`receive`](Self::receive)s: a frame still queued when the socket closes is
    /// purged, and the kernel reports that as a drop (QUEUE_PURGE) in the host.
    pub fn stop_receiving(&self) -> io::Result<()> {
        // A classic BPF program of one instruction: `ret #0`, accept nothing.
        let reject_all = SockFilter::new(0x06 /* BPF_RET | BPF_K */, 0, 0, 0);
        SockRef::from(&self.fd).attach_filter(&[reject_all])
    }
}

fn io_error(netns: &Netns, ifname: &str, doing: &'static str, source: io::Error) -> PacketError {
    PacketError::Io {
        host: netns.label().to_owned(),
        ifname: ifname.to_owned(),
        doing,
        source,
    }
}

/// The MAC address of `ifname` in `netns` (the address a frame to that host must carry).
pub fn interface_mac(netns: &Netns, ifname: &str) -> Result<Mac, PacketError> {
    netns
        .run(|| hardware_address(ifname))
        .map_err(PacketError::Namespace)?
        .map_err(|source| io_error(netns, ifname, "reading the MAC address of", source))
}

/// From `<linux/if_packet.h>`; libc 0.2 exports it for some targets only.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// Room for every answer an entry can provoke between two drains (see the traffic
/// module), so that the socket itself never overflows and drops.
const RECEIVE_BUFFER: usize = 4 << 20;

/// The socket, opened and bound to `ifname` on the calling thread's namespace, with the
/// interface's index and MAC address; on failure, what was being done. Every step asks
/// the calling thread's namespace, so this runs on a thread inside the host.
fn open_bound(ifname: &str) -> Result<PacketSocket, (&'static str, io::Error)> {
    let fd = open_packet_socket().map_err(|e| ("opening an AF_PACKET socket for", e))?;
    let ifindex = interface_index(ifname).map_err(|e| ("looking up", e))?;
    let mac = hardware_address(ifname).map_err(|e| ("reading the MAC address of", e))?;
    bind_to_interface(&fd, ifindex).map_err(|e| ("binding to", e))?;
    Ok(PacketSocket { fd, ifindex, mac })
}

/// socket(AF_PACKET, SOCK_RAW, ETH_P_ALL), on the calling thread's namespace.
fn open_packet_socket() -> io::Result<OwnedFd> {
    let fd = sock::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::EthAll,
    )?;
    // Without this every frame the socket sends would also be queued back to it.
    crate::sockopt::set_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    sock::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER)?;
    Ok(fd)
}

/// An interface name the kernel could hold (`IFNAMSIZ`); anything else is no interface.
fn check_name(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    Ok(())
}

/// The index of `ifname` in the calling thread's namespace.
fn interface_index(ifname: &str) -> io::Result<i32> {
    check_name(ifname)?;
    let index = nix::net::if_::if_nametoindex(ifname)?;
    i32::try_from(index).map_err(io::Error::other)
}

/// The MAC address of `ifname` in the calling thread's namespace, from its AF_PACKET
/// entry in getifaddrs(3) (a netlink dump, so it asks that namespace, not the root one).
fn hardware_address(ifname: &str) -> io::Result<Mac> {
    check_name(ifname)?;
    nix::ifaddrs::getifaddrs()?
        .filter(|entry| entry.interface_name == ifname)
        .find_map(|entry| entry.address?.as_link_addr()?.addr())
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
}

/// Binds to one interface, for every protocol. nix has no safe way to build a
/// `sockaddr_ll` (its `LinkAddr` is made only by the kernel), nor has socket2.
fn bind_to_interface(fd: &OwnedFd, ifindex: i32) -> io::Result<()> {
    let address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: (libc::ETH_P_ALL as u16).to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: address is a valid sockaddr_ll of the length given, and fd is a socket we
    // own for the duration of the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
