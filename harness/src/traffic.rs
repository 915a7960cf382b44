//! Sends a scenario's traffic and records what came of it.
//!
//! Sockets are created inside the host's namespace (a socket belongs to the namespace it
//! was created in for its whole life) and then driven from the scenario's own thread.
//! Every attempt of one entry is sent at once and then awaited together, so a dropped
//! entry costs one wait, not one wait per packet.
//!
//! How long to wait: on veth the kernel handles a packet — and usually its answer — in
//! softirq context before `sendmsg` returns, so once nothing has changed for a short
//! quiet window (no answer, no new drop) the outcome is final. The entry's `timeout_ms`
//! caps the wait. A TCP attempt still unanswered by then counts as `timed_out`; its
//! socket is closed long before the first SYN retransmission (1 s), so each attempt
//! puts exactly one SYN on the wire.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::scenario::{Protocol, Scenario, Traffic};
use crate::topology::{Netns, Topology, TopologyError};

/// What one traffic entry achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrafficOutcome {
    pub sent: u32,
    /// ICMP echo replies received.
    pub answered: u32,
    /// UDP datagrams read by the listening socket.
    pub delivered: u32,
    /// ICMP errors reported back to the sending socket.
    pub errors: u32,
    pub connected: u32,
    pub refused: u32,
    pub timed_out: u32,
    pub unreachable: u32,
    /// ICMP/UDP sends the sender's own kernel refused (EPERM from an OUTPUT rule,
    /// ENETUNREACH with no route): nothing went on the wire.
    pub blocked: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TrafficError {
    #[error("traffic #{index} ({what}): {source}")]
    Socket {
        index: usize,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("traffic #{index}: {source}")]
    Namespace {
        index: usize,
        #[source]
        source: TopologyError,
    },
}

/// Tells the traffic module whether the kernel is still busy with the scenario: any
/// number that grows while drops are happening (the runner passes the probe's total).
pub trait Activity {
    fn current(&mut self) -> u64;
}

impl<F: FnMut() -> u64> Activity for F {
    fn current(&mut self) -> u64 {
        self()
    }
}

/// How long the scenario's namespaces must stay unchanged before an outcome is final.
pub const QUIET_WINDOW: Duration = Duration::from_millis(10);
const POLL_INTERVAL_MS: i32 = 1;

/// TCP connections still open: the clients' ends and the ends the listener accepted.
#[derive(Default)]
struct OpenConnections {
    clients: Vec<OwnedFd>,
    accepted: Vec<OwnedFd>,
}

/// Sends every traffic entry in order and returns one outcome per entry.
pub fn run(
    scenario: &Scenario,
    topology: &Topology,
    activity: &mut dyn Activity,
) -> Result<Vec<TrafficOutcome>, TrafficError> {
    let mut held = OpenConnections::default();
    let outcomes = scenario
        .traffic
        .iter()
        .enumerate()
        .map(|(i, t)| run_one(i + 1, t, topology, activity, &mut held))
        .collect();
    close_connections(held);
    outcomes
}

fn run_one(
    index: usize,
    traffic: &Traffic,
    topology: &Topology,
    activity: &mut dyn Activity,
    held: &mut OpenConnections,
) -> Result<TrafficOutcome, TrafficError> {
    let sock_err = |what: &str| {
        let what = what.to_owned();
        move |source| TrafficError::Socket {
            index,
            what,
            source,
        }
    };
    let listener = match (traffic.listen, traffic.to_host, traffic.protocol) {
        (true, Some(host), Protocol::Udp | Protocol::Tcp) => Some(
            in_netns(topology.host(host), index, || open_listener(traffic))?
                .map_err(sock_err("opening the listening socket"))?,
        ),
        _ => None,
    };
    let sender = topology.host(traffic.from);
    match traffic.protocol {
        Protocol::Icmp => {
            let socket = in_netns(sender, index, || {
                open_ping_socket().and_then(|s| prepare_sender(s, traffic))
            })?
            .map_err(sock_err("opening an ICMP ping socket"))?;
            echo(&socket, traffic, activity).map_err(sock_err("sending ICMP echo"))
        }
        Protocol::Udp => {
            let socket = in_netns(sender, index, || {
                open_datagram(libc::IPPROTO_UDP).and_then(|s| prepare_sender(s, traffic))
            })?
            .map_err(sock_err("opening a UDP socket"))?;
            datagrams(&socket, listener.as_ref(), traffic, activity)
                .map_err(sock_err("sending UDP datagrams"))
        }
        Protocol::Tcp => {
            let count = traffic.count as usize;
            let sockets = in_netns(sender, index, || {
                (0..count)
                    .map(|_| {
                        socket(libc::SOCK_STREAM, libc::IPPROTO_TCP)
                            .and_then(|s| prepare_sender(s, traffic))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })?
            .map_err(sock_err("opening TCP sockets"))?;
            let (outcome, connections) = connects(sockets, listener.as_ref(), traffic, activity)
                .map_err(sock_err("connecting over TCP"))?;
            if traffic.listener.hold {
                held.clients.extend(connections.clients);
                held.accepted.extend(connections.accepted);
            } else {
                close_connections(connections);
            }
            Ok(outcome)
        }
    }
}

fn in_netns<T: Send>(
    netns: &Netns,
    index: usize,
    f: impl FnOnce() -> T + Send,
) -> Result<T, TrafficError> {
    netns
        .run(f)
        .map_err(|source| TrafficError::Namespace { index, source })
}

/// Waits until `done` holds, or nothing changed for [`QUIET_WINDOW`], or `timeout` passed.
/// `progress` is polled each round and returns a number that grows as answers arrive.
pub(crate) fn await_outcome(
    timeout: Duration,
    activity: &mut dyn Activity,
    mut progress: impl FnMut() -> io::Result<(u64, bool)>,
) -> io::Result<()> {
    let start = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    let mut last_change = start;
    loop {
        let (answers, done) = progress()?;
        if done {
            return Ok(());
        }
        let now_state = (answers, activity.current());
        let now = Instant::now();
        if now_state != last {
            last = now_state;
            last_change = now;
        } else if now.duration_since(last_change) >= QUIET_WINDOW {
            return Ok(());
        }
        if now.duration_since(start) >= timeout {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
    }
}

fn echo(
    socket: &OwnedFd,
    traffic: &Traffic,
    activity: &mut dyn Activity,
) -> io::Result<TrafficOutcome> {
    let mut outcome = TrafficOutcome::default();
    let destination = SocketAddrV4::new(traffic.destination, 0);
    for seq in 1..=traffic.count {
        // Type 8 (echo request); the kernel fills in the identifier and the checksum.
        let mut packet = vec![0u8; 8 + traffic.payload];
        packet[0] = 8;
        packet[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        if send_to(socket.as_raw_fd(), &packet, destination)? == Sent::Blocked {
            outcome.blocked += 1;
        }
        outcome.sent += 1;
    }
    let count = traffic.count;
    await_outcome(Duration::from_millis(traffic.timeout_ms), activity, || {
        outcome.answered += drain(socket.as_raw_fd(), |reply| reply.first() == Some(&0))?;
        outcome.errors += drain_errors(socket.as_raw_fd())?;
        let answers = u64::from(outcome.answered + outcome.errors + outcome.blocked);
        Ok((answers, answers >= u64::from(count)))
    })?;
    Ok(outcome)
}

fn datagrams(
    socket: &OwnedFd,
    listener: Option<&OwnedFd>,
    traffic: &Traffic,
    activity: &mut dyn Activity,
) -> io::Result<TrafficOutcome> {
    let mut outcome = TrafficOutcome::default();
    let destination = SocketAddrV4::new(traffic.destination, traffic.port);
    let payload = vec![0x5au8; traffic.payload];
    for _ in 0..traffic.count {
        if send_to(socket.as_raw_fd(), &payload, destination)? == Sent::Blocked {
            outcome.blocked += 1;
        }
        outcome.sent += 1;
    }
    let count = traffic.count;
    await_outcome(Duration::from_millis(traffic.timeout_ms), activity, || {
        if let (Some(listener), true) = (listener, traffic.listener.reads) {
            outcome.delivered += drain(listener.as_raw_fd(), |_| true)?;
        }
        outcome.errors += drain_errors(socket.as_raw_fd())?;
        let answers = u64::from(outcome.delivered + outcome.errors + outcome.blocked);
        Ok((answers, answers >= u64::from(count)))
    })?;
    // A receiver that never reads is emptied only now, so its queue filled up during
    // the traffic; what it held counts as delivered, and closing it purges nothing.
    if let (Some(listener), false) = (listener, traffic.listener.reads) {
        outcome.delivered += drain(listener.as_raw_fd(), |_| true)?;
    }
    Ok(outcome)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attempt {
    Pending,
    Connected,
    Refused,
    Unreachable,
    TimedOut,
}

fn connects(
    sockets: Vec<OwnedFd>,
    listener: Option<&OwnedFd>,
    traffic: &Traffic,
    activity: &mut dyn Activity,
) -> io::Result<(TrafficOutcome, OpenConnections)> {
    let destination = SocketAddrV4::new(traffic.destination, traffic.port);
    let mut attempts = vec![Attempt::Pending; sockets.len()];
    for (socket, attempt) in sockets.iter().zip(&mut attempts) {
        if let Some(settled) = start_connect(socket.as_raw_fd(), destination)? {
            *attempt = settled;
        }
    }
    let mut accepted = Vec::new();
    await_outcome(Duration::from_millis(traffic.timeout_ms), activity, || {
        for (socket, attempt) in sockets.iter().zip(&mut attempts) {
            if *attempt == Attempt::Pending {
                *attempt = poll_connect(socket.as_raw_fd())?;
            }
        }
        if let (Some(listener), true) = (listener, traffic.listener.reads) {
            accepted.extend(accept_ready(listener.as_raw_fd())?);
        }
        let settled = attempts.iter().filter(|a| **a != Attempt::Pending).count();
        Ok((settled as u64, settled == attempts.len()))
    })?;
    // Accept what completed its handshake before closing, so closing the listener does
    // not reset connections the kernel had already established.
    if let Some(listener) = listener {
        accepted.extend(accept_ready(listener.as_raw_fd())?);
        if traffic.listener.accept_until_empty {
            accepted.extend(accept_until_eagain(listener.as_raw_fd())?);
        }
    }
    let mut outcome = TrafficOutcome {
        sent: traffic.count,
        ..Default::default()
    };
    for attempt in attempts {
        match attempt {
            Attempt::Connected => outcome.connected += 1,
            Attempt::Refused => outcome.refused += 1,
            Attempt::Unreachable => outcome.unreachable += 1,
            Attempt::Pending | Attempt::TimedOut => outcome.timed_out += 1,
        }
    }
    Ok((
        outcome,
        OpenConnections {
            clients: sockets,
            accepted,
        },
    ))
}

/// Closes both ends of the test's connections the way a careful application does, so
/// that closing adds no drops of its own: the client half-closes, the server reads the
/// end of stream and closes, the client reads the server's FIN and closes. The kernel
/// reports a FIN still queued on a socket as it dies as a QUEUE_PURGE drop at
/// sk_stream_kill_queues — it does so whenever an already-closed (orphaned) socket
/// receives its peer's FIN — and that would be the harness's noise, not the scenario's.
fn close_connections(connections: OpenConnections) {
    let OpenConnections { clients, accepted } = connections;
    let connected: Vec<OwnedFd> = clients
        .into_iter()
        .filter(|c| {
            // SAFETY: shutdown(2) on a socket we own; unconnected ones fail with ENOTCONN.
            unsafe { libc::shutdown(c.as_raw_fd(), libc::SHUT_WR) == 0 }
        })
        .collect();
    read_to_end_of_stream(&accepted);
    drop(accepted);
    read_to_end_of_stream(&connected);
}

/// Reads every socket until its peer's FIN (recv returns 0), for at most 200 ms.
fn read_to_end_of_stream(sockets: &[OwnedFd]) {
    let deadline = Instant::now() + Duration::from_millis(200);
    let mut open: Vec<&OwnedFd> = sockets.iter().collect();
    let mut buf = [0u8; 512];
    while !open.is_empty() && Instant::now() < deadline {
        open.retain(|conn| {
            // SAFETY: buf is valid for its length.
            let n = unsafe {
                libc::recv(
                    conn.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            n > 0 || (n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN))
        });
        if !open.is_empty() {
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS as u64));
        }
    }
}

fn socket(kind: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned descriptor is owned by the OwnedFd.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            kind | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt(2) with an int value.
pub(crate) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: value outlives the call; the length matches its type.
    let rc = unsafe {
        libc::setsockopt(
            fd,
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

/// An unprivileged ICMP "ping socket": the kernel hands it the replies, so a reply is
/// not also reported as a NO_SOCKET drop as it is with a raw socket.
fn open_ping_socket() -> io::Result<OwnedFd> {
    let socket = socket(libc::SOCK_DGRAM, libc::IPPROTO_ICMP)?;
    set_int_option(socket.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1)?;
    Ok(socket)
}

/// A datagram socket that collects ICMP errors in its error queue.
fn open_datagram(protocol: libc::c_int) -> io::Result<OwnedFd> {
    let socket = socket(libc::SOCK_DGRAM, protocol)?;
    set_int_option(socket.as_raw_fd(), libc::SOL_IP, libc::IP_RECVERR, 1)?;
    Ok(socket)
}

fn open_listener(traffic: &Traffic) -> io::Result<OwnedFd> {
    let protocol = traffic.protocol;
    let socket = match protocol {
        Protocol::Tcp => socket(libc::SOCK_STREAM, libc::IPPROTO_TCP)?,
        _ => socket(libc::SOCK_DGRAM, libc::IPPROTO_UDP)?,
    };
    set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if let Some(bytes) = traffic.listener.rcvbuf {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        set_int_option(socket.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, bytes)?;
    }
    let sa = sockaddr(SocketAddrV4::new(traffic.destination, traffic.port));
    // SAFETY: sa is a valid sockaddr_in for the length given.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if protocol == Protocol::Tcp {
        let backlog = libc::c_int::try_from(traffic.listener.backlog).unwrap_or(libc::c_int::MAX);
        // SAFETY: listen(2) on a socket we own.
        if unsafe { libc::listen(socket.as_raw_fd(), backlog) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(socket)
}

/// Applies the entry's sender options: source address, TTL, don't-fragment.
fn prepare_sender(socket: OwnedFd, traffic: &Traffic) -> io::Result<OwnedFd> {
    let fd = socket.as_raw_fd();
    if let Some(ttl) = traffic.ttl {
        set_int_option(fd, libc::SOL_IP, libc::IP_TTL, libc::c_int::from(ttl))?;
    }
    if traffic.dont_fragment {
        set_int_option(
            fd,
            libc::SOL_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )?;
    }
    if let Some(source) = traffic.source {
        let sa = sockaddr(SocketAddrV4::new(source, 0));
        // SAFETY: sa is a valid sockaddr_in for the length given.
        let rc = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(socket)
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    OnTheWire,
    Blocked,
}

fn send_to(fd: RawFd, bytes: &[u8], to: SocketAddrV4) -> io::Result<Sent> {
    let sa = sockaddr(to);
    let send = || {
        // SAFETY: buffer and address are valid for the lengths given.
        let rc = unsafe {
            libc::sendto(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if rc >= 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    // An ICMP error for an earlier packet is also reported by failing the next send
    // (sk_err), and that send is then not made. The error itself is counted from the
    // error queue; reading SO_ERROR first clears it, so a failure below is this send's
    // own. Resending after a local refusal would put a second packet into the kernel and
    // change the counts, so only ECONNREFUSED — never a local refusal, only an ICMP error
    // that raced in between the two calls — is retried.
    pending_error(fd)?;
    match send() {
        Ok(()) => Ok(Sent::OnTheWire),
        Err(e) => match e.raw_os_error() {
            // An OUTPUT rule (EPERM), no route, an unreachable NAT target, larger than the
            // known path MTU with DF set, or a qdisc/tc egress drop (ENOBUFS): the sender's
            // own kernel refused it.
            Some(
                libc::EPERM
                | libc::ENETUNREACH
                | libc::EHOSTUNREACH
                | libc::EMSGSIZE
                | libc::ENOBUFS,
            ) => Ok(Sent::Blocked),
            Some(libc::ECONNREFUSED) => send().map(|()| Sent::OnTheWire),
            _ => Err(e),
        },
    }
}

/// Reads and clears a socket's pending error (SO_ERROR).
fn pending_error(fd: RawFd) -> io::Result<i32> {
    let mut code: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: code and len are valid out-parameters.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut code as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(code)
    }
}

/// Reads every queued datagram; returns how many matched `keep`.
fn drain(fd: RawFd, keep: impl Fn(&[u8]) -> bool) -> io::Result<u32> {
    let mut buf = [0u8; 2048];
    let mut kept = 0;
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(kept),
                // The error is also queued in the error queue, where drain_errors counts it.
                Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH) => Ok(kept),
                _ => Err(err),
            };
        }
        if keep(&buf[..n as usize]) {
            kept += 1;
        }
    }
}

/// Counts the ICMP errors queued on a socket with IP_RECVERR. The queue also holds the
/// kernel's local errors (EMSGSIZE when DF meets a known path MTU, for example); those
/// are sends that never left and are counted as `blocked`, not here.
fn drain_errors(fd: RawFd) -> io::Result<u32> {
    let mut count = 0;
    let mut buf = [0u8; 2048];
    let mut control = [0u8; 512];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr fields point at live buffers of the stated lengths.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len();
        // SAFETY: msg is fully initialised above.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) => Ok(count),
                _ => Err(err),
            };
        }
        if error_origin(&msg) == Some(SO_EE_ORIGIN_ICMP) {
            count += 1;
        }
    }
}

/// `SO_EE_ORIGIN_ICMP` from linux/errqueue.h (not exported by the libc crate).
const SO_EE_ORIGIN_ICMP: u8 = 2;

/// The `ee_origin` of the IP_RECVERR control message in `msg`.
fn error_origin(msg: &libc::msghdr) -> Option<u8> {
    // SAFETY: msg was filled by recvmsg; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_IP && (*cmsg).cmsg_type == libc::IP_RECVERR {
                let err = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                return Some(std::ptr::read_unaligned(err).ee_origin);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

fn start_connect(fd: RawFd, to: SocketAddrV4) -> io::Result<Option<Attempt>> {
    let sa = sockaddr(to);
    // SAFETY: sa is a valid sockaddr_in.
    let rc = unsafe {
        libc::connect(
            fd,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        return Ok(Some(Attempt::Connected));
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINPROGRESS) => Ok(None),
        Some(code) => Ok(Some(attempt_from_errno(code).ok_or(err)?)),
        None => Err(err),
    }
}

fn attempt_from_errno(code: i32) -> Option<Attempt> {
    match code {
        0 => Some(Attempt::Connected),
        libc::ECONNREFUSED | libc::ECONNRESET => Some(Attempt::Refused),
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM => {
            Some(Attempt::Unreachable)
        }
        libc::ETIMEDOUT => Some(Attempt::TimedOut),
        _ => None,
    }
}

fn poll_connect(fd: RawFd) -> io::Result<Attempt> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    if unsafe { libc::poll(&mut pfd, 1, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if pfd.revents == 0 {
        return Ok(Attempt::Pending);
    }
    let code = pending_error(fd)?;
    attempt_from_errno(code).ok_or_else(|| io::Error::from_raw_os_error(code))
}

/// Accepts the connections waiting on a listener, and makes no failing accept(2): the
/// kernel's inet_csk_accept failures are something scenarios count (TCP_ACCEPT_BASIC),
/// so the harness's own polling must not add any.
fn accept_ready(fd: RawFd) -> io::Result<Vec<OwnedFd>> {
    let mut accepted = Vec::new();
    loop {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd, without waiting.
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready < 0 {
            return Err(io::Error::last_os_error());
        }
        if ready == 0 || pfd.revents & libc::POLLIN == 0 {
            return Ok(accepted);
        }
        match accept_one(fd)? {
            Some(conn) => accepted.push(conn),
            None => return Ok(accepted),
        }
    }
}

/// Accepts until accept(2) fails with EAGAIN, as a non-blocking server does.
fn accept_until_eagain(fd: RawFd) -> io::Result<Vec<OwnedFd>> {
    let mut accepted = Vec::new();
    while let Some(conn) = accept_one(fd)? {
        accepted.push(conn);
    }
    Ok(accepted)
}

/// One non-blocking accept(2); None when nothing was waiting (EAGAIN).
fn accept_one(fd: RawFd) -> io::Result<Option<OwnedFd>> {
    // SAFETY: accept4 with null address out-parameters.
    let conn = unsafe {
        libc::accept4(
            fd,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    if conn < 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::EAGAIN) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: conn was just returned by accept4 and is owned by nobody else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(conn) }))
}
