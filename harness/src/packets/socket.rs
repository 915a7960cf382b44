//! The AF_PACKET socket that puts crafted frames on a host's veth and sees what comes
//! back on it.
//!
//! The builder (`frame.rs`) knows nothing of namespaces; [`PacketSocket`] is
//! opened inside one by [`Netns::run`], because an AF_PACKET socket, like every socket,
//! belongs to the namespace it was created in, and the interface index and MAC address
//! must be asked of that namespace too (`/sys/class/net` would show the root namespace's
//! devices to a thread that only called `setns`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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
        let io_error = |doing| {
            let host = netns.label().to_owned();
            let ifname = ifname.to_owned();
            move |source| PacketError::Io {
                host,
                ifname,
                doing,
                source,
            }
        };
        let fd = netns
            .run(open_packet_socket)
            .map_err(PacketError::Namespace)?
            .map_err(io_error("opening an AF_PACKET socket for"))?;
        // An ioctl on any socket asks that socket's namespace, so these need no thread.
        let ifindex = interface_index(fd.as_raw_fd(), ifname).map_err(io_error("looking up"))?;
        let mac = hardware_address(fd.as_raw_fd(), ifname)
            .map_err(io_error("reading the MAC address of"))?;
        bind_to_interface(fd.as_raw_fd(), ifindex).map_err(io_error("binding to"))?;
        Ok(PacketSocket { fd, ifindex, mac })
    }

    pub fn mac(&self) -> Mac {
        self.mac
    }

    pub fn ifindex(&self) -> i32 {
        self.ifindex
    }

    /// Puts one frame on the wire exactly as given.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: frame is valid for its length; the socket is bound, so no address.
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        match sent {
            n if n < 0 => Err(io::Error::last_os_error()),
            n if n as usize != frame.len() => Err(io::Error::other(format!(
                "AF_PACKET sent {n} of {} bytes",
                frame.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Receives one waiting frame into `buf`, without blocking; `None` when none waits.
    pub fn receive(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(err),
        }
    }

    /// Stops the socket from queueing any further frame. Call it before the last
    /// [`receive`](Self::receive)s: a frame still queued when the socket closes is
    /// purged, and the kernel reports that as a drop (QUEUE_PURGE) in the host.
    pub fn stop_receiving(&self) -> io::Result<()> {
        // A classic BPF program of one instruction: `ret #0`, accept nothing.
        let mut reject_all = [libc::sock_filter {
            code: 0x06, // BPF_RET | BPF_K
            jt: 0,
            jf: 0,
            k: 0,
        }];
        let program = libc::sock_fprog {
            len: 1,
            filter: reject_all.as_mut_ptr(),
        };
        set_option(
            self.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_FILTER,
            &program,
        )
    }
}

/// The MAC address of `ifname` in `netns` (the address a frame to that host must carry).
pub fn interface_mac(netns: &Netns, ifname: &str) -> Result<Mac, PacketError> {
    let io_error = |doing| {
        let host = netns.label().to_owned();
        let ifname = ifname.to_owned();
        move |source| PacketError::Io {
            host,
            ifname,
            doing,
            source,
        }
    };
    let socket = netns
        .run(|| {
            // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        })
        .map_err(PacketError::Namespace)?
        .map_err(io_error("opening a socket to look up"))?;
    hardware_address(socket.as_raw_fd(), ifname).map_err(io_error("reading the MAC address of"))
}

/// From `<linux/if_packet.h>` and `<asm-generic/socket.h>`; libc 0.2 exports them for
/// some targets only.
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const SO_RCVBUFFORCE: libc::c_int = 33;
const SO_ATTACH_FILTER: libc::c_int = 26;

/// Room for every answer an entry can provoke between two drains (see the traffic
/// module), so that the socket itself never overflows and drops.
const RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// socket(AF_PACKET, SOCK_RAW, ETH_P_ALL), on the calling thread's namespace.
fn open_packet_socket() -> io::Result<OwnedFd> {
    let protocol = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd below.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Without this every frame the socket sends would also be queued back to it.
    set_option(
        fd.as_raw_fd(),
        libc::SOL_PACKET,
        PACKET_IGNORE_OUTGOING,
        &1i32,
    )?;
    set_option(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        SO_RCVBUFFORCE,
        &RECEIVE_BUFFER,
    )?;
    Ok(fd)
}

fn set_option<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value is a live T and the length given is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn interface_request(ifname: &str) -> io::Result<libc::ifreq> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(ifname.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(request)
}

fn interface_index(fd: RawFd, ifname: &str) -> io::Result<i32> {
    let mut request = interface_request(ifname)?;
    // SAFETY: request is a valid ifreq; SIOCGIFINDEX fills ifru_ifindex.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the ifindex member.
    Ok(unsafe { request.ifr_ifru.ifru_ifindex })
}

fn hardware_address(fd: RawFd, ifname: &str) -> io::Result<Mac> {
    let mut request = interface_request(ifname)?;
    // SAFETY: request is a valid ifreq; SIOCGIFHWADDR fills ifru_hwaddr.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel wrote the hwaddr member.
    let data = unsafe { request.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data) {
        *dst = src as u8;
    }
    Ok(mac)
}

fn bind_to_interface(fd: RawFd, ifindex: i32) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    address.sll_ifindex = ifindex;
    // SAFETY: address is a valid sockaddr_ll of the length given.
    let rc = unsafe {
        libc::bind(
            fd,
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
