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
use nix::sys::socket::{self as sock, sockopt, AddressFamily, MsgFlags, SockFlag, SockType};
use socket2::{SockFilter, SockRef};

use super::Mac;
use crate::topology::netns::{check_interface_name, interface_request};
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
///
/// Both ends of its life would wait for an RCU grace period (`synchronize_net`, several
/// milliseconds on a loaded machine) if done plainly: binding a socket that was created
/// with a protocol first unhooks it, and `packet_release` always waits. So it is created
/// with protocol 0 (hooked only by the bind), and dropping it hands the fd to a closer
/// thread ([`close_later`]) instead of closing it on the scenario's path. Nothing can be
/// queued on it by then (see [`PacketSocket::stop_receiving`]), so the close frees
/// nothing, whenever it happens.
#[derive(Debug)]
pub struct PacketSocket {
    fd: Option<OwnedFd>,
    ifindex: i32,
    mac: Mac,
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
            close_later(fd);
        }
    }
}

/// Closes `fd` on a thread of its own, one for the process, in the order given. If that
/// thread cannot be made, it is closed here.
fn close_later(fd: OwnedFd) {
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};
    static CLOSER: OnceLock<Option<Mutex<Sender<OwnedFd>>>> = OnceLock::new();
    let closer = CLOSER.get_or_init(|| {
        let (sender, receiver) = channel::<OwnedFd>();
        std::thread::Builder::new()
            .name("dropspec closer".into())
            .spawn(move || receiver.into_iter().for_each(drop))
            .ok()
            .map(|_| Mutex::new(sender))
    });
    let fd = match closer {
        Some(sender) => match sender.lock() {
            Ok(sender) => match sender.send(fd) {
                Ok(()) => return,
                Err(unsent) => unsent.0,
            },
            Err(_) => fd,
        },
        None => fd,
    };
    drop(fd);
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
        match sock::send(self.raw(), frame, MsgFlags::empty())? {
            n if n != frame.len() => Err(io::Error::other(format!(
                "AF_PACKET sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Receives one waiting frame into `buf`, without blocking; `None` when none waits.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match sock::recv(self.raw(), buf, MsgFlags::MSG_DONTWAIT) {
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
        let fd = self.fd.as_ref().expect("only Drop takes the fd");
        SockRef::from(fd).attach_filter(&[reject_all])
    }

    fn raw(&self) -> std::os::fd::RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
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
    Ok(PacketSocket {
        fd: Some(fd),
        ifindex,
        mac,
    })
}

/// socket(AF_PACKET, SOCK_RAW, 0), on the calling thread's namespace: protocol 0, so
/// it receives nothing until [`bind_to_interface`] hooks it (for ETH_P_ALL) at once on
/// the interface, with no unhooking and no grace period to wait for.
fn open_packet_socket() -> io::Result<OwnedFd> {
    let fd = sock::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // Without this every frame the socket sends would also be queued back to it.
    crate::sockopt::set_int(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)?;
    sock::setsockopt(&fd, sockopt::RcvBufForce, &RECEIVE_BUFFER)?;
    Ok(fd)
}

/// The index of `ifname` in the calling thread's namespace.
fn interface_index(ifname: &str) -> io::Result<i32> {
    check_interface_name(ifname)?;
    let index = nix::net::if_::if_nametoindex(ifname)?;
    i32::try_from(index).map_err(io::Error::other)
}

/// The MAC address of `ifname` in the calling thread's namespace: SIOCGIFHWADDR on a
/// socket made there (one ioctl, where getifaddrs(3) dumps every link and address).
fn hardware_address(ifname: &str) -> io::Result<Mac> {
    let (socket, mut request) = interface_request(ifname)?;
    // SAFETY: request is a valid ifreq with a NUL-terminated name (checked shorter than
    // IFNAMSIZ), and the kernel writes only within it.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled in the hwaddr member of the union.
    let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (to, from) in mac.iter_mut().zip(data) {
        *to = from as u8;
    }
    Ok(mac)
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
