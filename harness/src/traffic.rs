//! Sends a scenario's traffic and records what came of it.
//!
//! Sockets are created inside the host's namespace (a socket belongs to the namespace it
//! was created in for its whole life) and then driven from the scenario's own thread.
//! Every attempt of one entry is sent at once and then awaited together, so a dropped
//! entry costs one wait, not one wait per packet.
//!
//! How long to wait: until every answer came, or the kernel has finished with what the
//! entry sent ([`crate::completion`]: marker packets through every CPU's backlog, the
//! neighbour tables read), capped by the entry's `timeout_ms`. A TCP attempt still
//! unanswered then counts as `timed_out`; its socket stays open but the scenario ends
//! long before the first SYN retransmission (1 s), so each attempt puts exactly one SYN
//! on the wire.
//!
//! Every socket opened here stays open until the watchers have finished reading
//! ([`Sockets::close`]): closing one earlier can make drops of its own (a listener's
//! unaccepted children are reset and purged in `tcp_disconnect`; a closed listener
//! answers a late datagram with NO_SOCKET), and they would be counted as the scenario's.

use std::collections::BTreeMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrStorage,
};
use socket2::SockRef;

use crate::completion::Completion;
use crate::scenario::{Accept, HostId, Protocol, Scenario, SetOption, Traffic};
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

/// Every socket the harness opened for a scenario, by host, closed only once the
/// watchers stopped watching ([`Sockets::close`]).
#[derive(Default)]
pub struct Sockets {
    open: Vec<(HostId, OwnedFd)>,
    /// The sockets of each traffic entry that ran, by entry index (positions in `open`),
    /// for a later step: running it again, or accepting on its listener.
    flows: BTreeMap<usize, Flow>,
}

/// One traffic entry's sockets, as positions in [`Sockets`]'s list.
#[derive(Default)]
struct Flow {
    /// The ping or UDP socket, or the TCP clients that connected.
    senders: Vec<usize>,
    listener: Option<usize>,
    /// The server ends of the connections the listener accepted.
    accepted: Vec<usize>,
}

impl Sockets {
    /// Keeps `socket` open until [`Sockets::close`]; returns where it is kept.
    pub(crate) fn keep(&mut self, host: HostId, socket: OwnedFd) -> usize {
        self.open.push((host, socket));
        self.open.len() - 1
    }

    fn flow(&mut self, entry: usize) -> &mut Flow {
        self.flows.entry(entry).or_default()
    }

    fn fds(&self, at: &[usize]) -> Vec<&OwnedFd> {
        at.iter().map(|i| &self.open[*i].1).collect()
    }

    /// Closes every socket from inside its own host's namespace (`Netns::run`). Call it
    /// after the watchers finished and before the topology goes: whatever closing frees
    /// (a reset, a purged queue) is then in no watched namespace, and a drop the probe
    /// can only place by the current task lands in the (unwatched) host, never in
    /// another scenario running alongside.
    pub fn close(self, topology: &Topology) {
        let mut by_host: Vec<(HostId, Vec<OwnedFd>)> = Vec::new();
        for (host, socket) in self.open {
            match by_host.iter_mut().find(|(h, _)| *h == host) {
                Some((_, sockets)) => sockets.push(socket),
                None => by_host.push((host, vec![socket])),
            }
        }
        for (host, sockets) in by_host {
            // If the host cannot be entered, the sockets close here instead, just as unwatched.
            let _ = topology.host(host).run(move || drop(sockets));
        }
    }
}

/// Sends every traffic entry in order and returns one outcome per entry; the sockets
/// go into `sockets`.
pub fn run(
    scenario: &Scenario,
    topology: &Topology,
    completion: &mut Completion,
    sockets: &mut Sockets,
) -> Result<Vec<TrafficOutcome>, TrafficError> {
    scenario
        .traffic
        .iter()
        .enumerate()
        .map(|(i, t)| run_one(i + 1, t, topology, completion, sockets))
        .collect()
}

/// Runs traffic entry `index` (1-based), keeping its sockets for later steps.
pub(crate) fn run_one(
    index: usize,
    traffic: &Traffic,
    topology: &Topology,
    completion: &mut Completion,
    sockets: &mut Sockets,
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
    let sender = traffic.from;
    let sender_ns = topology.host(sender);
    let outcome = match traffic.protocol {
        Protocol::Icmp => {
            let socket = in_netns(sender_ns, index, || {
                open_ping_socket(traffic.destination).and_then(|s| prepare_sender(s, traffic))
            })?
            .map_err(sock_err("opening an ICMP ping socket"))?;
            let outcome = echo(&socket, traffic, completion);
            let at = sockets.keep(sender, socket);
            sockets.flow(index).senders.push(at);
            outcome.map_err(sock_err("sending ICMP echo"))
        }
        Protocol::Udp => {
            let socket = in_netns(sender_ns, index, || {
                open_datagram(traffic.destination, SockProtocol::Udp)
                    .and_then(|s| prepare_sender(s, traffic))
            })?
            .map_err(sock_err("opening a UDP socket"))?;
            let outcome = datagrams(&socket, listener.as_ref(), traffic, completion);
            let at = sockets.keep(sender, socket);
            sockets.flow(index).senders.push(at);
            outcome.map_err(sock_err("sending UDP datagrams"))
        }
        Protocol::Tcp => {
            let count = traffic.count as usize;
            let clients = in_netns(sender_ns, index, || {
                (0..count)
                    .map(|_| {
                        socket(traffic.destination, SockType::Stream, SockProtocol::Tcp)
                            .and_then(|s| prepare_sender(s, traffic))
                    })
                    .collect::<io::Result<Vec<_>>>()
            })?
            .map_err(sock_err("opening TCP sockets"))?;
            let result = connects(&clients, listener.as_ref(), traffic, completion);
            let (outcome, accepted, attempts) = result.map_err(sock_err("connecting over TCP"))?;
            for (client, attempt) in clients.into_iter().zip(attempts) {
                if matches!(attempt, Attempt::Pending | Attempt::TimedOut) {
                    // Still in SYN_SENT: its retransmission timer would put a second SYN
                    // on the wire after 1 s, and the scenario may take that long on a
                    // loaded machine. Closing it now sends nothing (SYN_SENT -> CLOSE)
                    // and frees its SYN with __kfree_skb, which is no drop; the kernel
                    // has already finished with the first one (completion). Closed
                    // while no child holds a copy of it (forks.rs), or it could live on
                    // long enough to retransmit.
                    crate::forks::close_now(client);
                } else {
                    let connected = attempt == Attempt::Connected;
                    let at = sockets.keep(sender, client);
                    if connected {
                        sockets.flow(index).senders.push(at);
                    }
                }
            }
            if let Some(server) = traffic.to_host {
                for conn in accepted {
                    let at = sockets.keep(server, conn);
                    sockets.flow(index).accepted.push(at);
                }
            }
            Ok(outcome)
        }
    };
    if let (Some(listener), Some(server)) = (listener, traffic.to_host) {
        let at = sockets.keep(server, listener);
        sockets.flow(index).listener = Some(at);
    }
    outcome
}

/// Runs traffic entry `index` (1-based) again from the sockets of its first run, so
/// the packets belong to the same flow (the same ports, the same conntrack entry):
/// ICMP and UDP send `count` more; TCP sends `payload` bytes on every connection of
/// the first run, and `delivered` counts the connections whose bytes were read.
pub(crate) fn run_again(
    index: usize,
    traffic: &Traffic,
    completion: &mut Completion,
    sockets: &mut Sockets,
) -> Result<TrafficOutcome, TrafficError> {
    let sock_err = |what: &'static str| {
        move |source| TrafficError::Socket {
            index,
            what: what.to_owned(),
            source,
        }
    };
    let flow = sockets.flow(index);
    let (senders, listener, accepted) =
        (flow.senders.clone(), flow.listener, flow.accepted.clone());
    let senders = sockets.fds(&senders);
    let listener = listener.map(|at| &sockets.open[at].1);
    match traffic.protocol {
        Protocol::Icmp => match senders.first() {
            Some(socket) => {
                echo(socket, traffic, completion).map_err(sock_err("sending ICMP echo"))
            }
            None => Ok(TrafficOutcome::default()),
        },
        Protocol::Udp => match senders.first() {
            Some(socket) => datagrams(socket, listener, traffic, completion)
                .map_err(sock_err("sending UDP datagrams")),
            None => Ok(TrafficOutcome::default()),
        },
        Protocol::Tcp => {
            let servers = sockets.fds(&accepted);
            stream_data(&senders, &servers, traffic, completion)
                .map_err(sock_err("sending data on the TCP connections"))
        }
    }
}

/// Accepts the connections waiting on traffic entry `index`'s listener (an `accept`
/// step) and keeps them; returns how many.
pub(crate) fn accept_waiting(
    index: usize,
    traffic: &Traffic,
    sockets: &mut Sockets,
) -> Result<u32, TrafficError> {
    let (Some(listener), Some(server)) = (sockets.flow(index).listener, traffic.to_host) else {
        return Ok(0);
    };
    let accepted =
        accept_ready(&sockets.open[listener].1).map_err(|source| TrafficError::Socket {
            index,
            what: "accepting waiting connections".to_owned(),
            source,
        })?;
    let count = accepted.len() as u32;
    for conn in accepted {
        let at = sockets.keep(server, conn);
        sockets.flow(index).accepted.push(at);
    }
    Ok(count)
}

/// Writes `payload` bytes on every client and reads them at the server ends.
fn stream_data(
    clients: &[&OwnedFd],
    servers: &[&OwnedFd],
    traffic: &Traffic,
    completion: &mut Completion,
) -> io::Result<TrafficOutcome> {
    let payload = vec![0x5au8; traffic.payload.max(1)];
    let mut outcome = TrafficOutcome::default();
    for client in clients {
        // MSG_NOSIGNAL: a reset connection fails the send instead of killing the process.
        match sock::send(client.as_raw_fd(), &payload, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => outcome.sent += 1,
            Err(Errno::EPIPE | Errno::ECONNRESET) => outcome.blocked += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let wanted = u64::from(outcome.sent) * payload.len() as u64;
    let mut read = 0u64;
    let what = format!("data to {}:{} (tcp)", traffic.destination, traffic.port);
    await_outcome(
        Duration::from_millis(traffic.timeout_ms),
        completion,
        &what,
        || {
            let mut buf = [0u8; 2048];
            for server in servers {
                loop {
                    match sock::recv(server.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                        Ok(0) | Err(Errno::EAGAIN) => break,
                        Ok(n) => read += n as u64,
                        Err(Errno::ECONNRESET) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok((read, read >= wanted))
        },
    )?;
    outcome.delivered = (read / payload.len() as u64) as u32;
    Ok(outcome)
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

/// Waits until `done` holds, or the kernel has finished with what was sent, or
/// `timeout` passed. `progress` is polled each round and returns a number that grows
/// as answers arrive, and whether all came.
pub(crate) fn await_outcome(
    timeout: Duration,
    completion: &mut Completion,
    what: &str,
    progress: impl FnMut() -> io::Result<(u64, bool)>,
) -> io::Result<()> {
    completion.drain(Instant::now() + timeout, what, progress)?;
    Ok(())
}

fn echo(
    socket: &OwnedFd,
    traffic: &Traffic,
    completion: &mut Completion,
) -> io::Result<TrafficOutcome> {
    let mut outcome = TrafficOutcome::default();
    let destination = SocketAddr::new(traffic.destination, 0);
    // Echo request and reply: ICMP types 8 and 0, ICMPv6 types 128 and 129.
    let (request, reply) = if traffic.destination.is_ipv6() {
        (128, 129)
    } else {
        (8, 0)
    };
    for seq in 1..=traffic.count {
        // The kernel fills in the identifier and the checksum.
        let mut packet = vec![0u8; 8 + traffic.payload];
        packet[0] = request;
        packet[6..8].copy_from_slice(&(seq as u16).to_be_bytes());
        if send_to(socket, &packet, destination)? == Sent::Blocked {
            outcome.blocked += 1;
        }
        outcome.sent += 1;
    }
    let count = traffic.count;
    let what = format!("traffic to {} (icmp)", traffic.destination);
    let reply = &reply;
    await_outcome(
        Duration::from_millis(traffic.timeout_ms),
        completion,
        &what,
        || {
            outcome.answered += drain(socket, |answer| answer.first() == Some(reply))?;
            outcome.errors += drain_errors(socket)?;
            let answers = u64::from(outcome.answered + outcome.errors + outcome.blocked);
            Ok((answers, answers >= u64::from(count)))
        },
    )?;
    Ok(outcome)
}

fn datagrams(
    socket: &OwnedFd,
    listener: Option<&OwnedFd>,
    traffic: &Traffic,
    completion: &mut Completion,
) -> io::Result<TrafficOutcome> {
    let mut outcome = TrafficOutcome::default();
    let destination = SocketAddr::new(traffic.destination, traffic.port);
    let payload = vec![0x5au8; traffic.payload];
    // What the listener already holds (another entry sent to its port, say, as a step
    // with `listen = false`) counts as delivered, as it always did, but is read before
    // sending: otherwise those datagrams alone could make this entry look complete
    // before its own had arrived (seen on a two-CPU guest, whose softirqs may run after
    // sendto returns).
    let earlier = match (listener, traffic.listener.reads) {
        (Some(listener), true) => drain(listener, |_| true)?,
        _ => 0,
    };
    for _ in 0..traffic.count {
        if send_to(socket, &payload, destination)? == Sent::Blocked {
            outcome.blocked += 1;
        }
        outcome.sent += 1;
    }
    let count = traffic.count;
    let what = format!("traffic to {destination} (udp)");
    await_outcome(
        Duration::from_millis(traffic.timeout_ms),
        completion,
        &what,
        || {
            if let (Some(listener), true) = (listener, traffic.listener.reads) {
                outcome.delivered += drain(listener, |_| true)?;
            }
            outcome.errors += drain_errors(socket)?;
            let answers = u64::from(outcome.delivered + outcome.errors + outcome.blocked);
            Ok((answers, answers >= u64::from(count)))
        },
    )?;
    outcome.delivered += earlier;
    // A receiver that never reads is emptied only now, so its queue filled up during
    // the traffic; what it held counts as delivered, and closing it purges nothing.
    // (Reading verifies a deferred checksum; the traffic here never carries a bad one.)
    if let (Some(listener), false) = (listener, traffic.listener.reads) {
        outcome.delivered += drain(listener, |_| true)?;
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
    sockets: &[OwnedFd],
    listener: Option<&OwnedFd>,
    traffic: &Traffic,
    completion: &mut Completion,
) -> io::Result<(TrafficOutcome, Vec<OwnedFd>, Vec<Attempt>)> {
    let destination = SocketAddr::new(traffic.destination, traffic.port);
    let mut attempts = vec![Attempt::Pending; sockets.len()];
    for (socket, attempt) in sockets.iter().zip(&mut attempts) {
        if let Some(settled) = start_connect(socket, destination)? {
            *attempt = settled;
        }
    }
    let mut accepted = Vec::new();
    let accepts = traffic.listener.accept == Accept::OnArrival;
    let what = format!("traffic to {destination} (tcp)");
    await_outcome(
        Duration::from_millis(traffic.timeout_ms),
        completion,
        &what,
        || {
            for (socket, attempt) in sockets.iter().zip(&mut attempts) {
                if *attempt == Attempt::Pending {
                    *attempt = poll_connect(socket)?;
                }
            }
            if let (Some(listener), true) = (listener, accepts) {
                accepted.extend(accept_ready(listener)?);
            }
            let settled = attempts.iter().filter(|a| **a != Attempt::Pending).count();
            Ok((settled as u64, settled == attempts.len()))
        },
    )?;
    // Only a listener that accepts on arrival accepts: one that never does keeps its
    // queue (closing it later, unwatched, is what resets those children).
    if let (Some(listener), true) = (listener, accepts) {
        accepted.extend(accept_ready(listener)?);
        if traffic.listener.accept_until_empty {
            accepted.extend(accept_until_eagain(listener)?);
        }
    }
    let mut outcome = TrafficOutcome {
        sent: traffic.count,
        ..Default::default()
    };
    for attempt in &attempts {
        match attempt {
            Attempt::Connected => outcome.connected += 1,
            Attempt::Refused => outcome.refused += 1,
            Attempt::Unreachable => outcome.unreachable += 1,
            Attempt::Pending | Attempt::TimedOut => outcome.timed_out += 1,
        }
    }
    Ok((outcome, accepted, attempts))
}

/// A non-blocking socket of the destination's family.
fn socket(to: IpAddr, kind: SockType, protocol: SockProtocol) -> io::Result<OwnedFd> {
    let family = if to.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    Ok(sock::socket(
        family,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        protocol,
    )?)
}

/// An unprivileged ICMP "ping socket": the kernel hands it the replies, so a reply is
/// not also reported as a NO_SOCKET drop as it is with a raw socket.
/// (net.ipv4.ping_group_range allows them for ICMPv6 too.)
fn open_ping_socket(to: IpAddr) -> io::Result<OwnedFd> {
    let protocol = if to.is_ipv6() {
        SockProtocol::IcmpV6
    } else {
        SockProtocol::Icmp
    };
    let socket = socket(to, SockType::Datagram, protocol)?;
    set_recverr(&socket, to)?;
    Ok(socket)
}

/// IP_RECVERR / IPV6_RECVERR: ICMP errors go to the socket's error queue.
fn set_recverr(socket: &OwnedFd, to: IpAddr) -> io::Result<()> {
    if to.is_ipv6() {
        sock::setsockopt(socket, sockopt::Ipv6RecvErr, &true)?;
    } else {
        sock::setsockopt(socket, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(())
}

/// A datagram socket that collects ICMP errors in its error queue.
fn open_datagram(to: IpAddr, protocol: SockProtocol) -> io::Result<OwnedFd> {
    let socket = socket(to, SockType::Datagram, protocol)?;
    set_recverr(&socket, to)?;
    Ok(socket)
}

fn open_listener(traffic: &Traffic) -> io::Result<OwnedFd> {
    let protocol = traffic.protocol;
    let socket = match protocol {
        Protocol::Tcp => socket(traffic.destination, SockType::Stream, SockProtocol::Tcp)?,
        _ => socket(traffic.destination, SockType::Datagram, SockProtocol::Udp)?,
    };
    sock::setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    set_options(&socket, &traffic.listener.sockopts)?;
    if let Some(bytes) = traffic.listener.rcvbuf {
        let bytes = bytes.min(libc::c_int::MAX as u32) as usize;
        sock::setsockopt(&socket, sockopt::RcvBuf, &bytes)?;
    }
    let at = SockaddrStorage::from(SocketAddr::new(traffic.destination, traffic.port));
    sock::bind(socket.as_raw_fd(), &at)?;
    if protocol == Protocol::Tcp {
        // socket2, not nix: nix refuses a backlog above SOMAXCONN, which the kernel
        // accepts and clamps to the namespace's net.core.somaxconn.
        let backlog = libc::c_int::try_from(traffic.listener.backlog).unwrap_or(libc::c_int::MAX);
        SockRef::from(&socket).listen(backlog)?;
    }
    Ok(socket)
}

/// Sets socket options by name (`sockopts`), each as an `int`.
fn set_options(socket: &OwnedFd, options: &[SetOption]) -> io::Result<()> {
    for o in options {
        crate::sockopt::set_int(socket, o.level, o.optname, o.value).map_err(|e| {
            io::Error::new(e.kind(), format!("setting {} = {}: {e}", o.name, o.value))
        })?;
    }
    Ok(())
}

/// Applies the entry's sender options: socket options by name, send buffer, source
/// address, TTL, don't-fragment.
fn prepare_sender(socket: OwnedFd, traffic: &Traffic) -> io::Result<OwnedFd> {
    let ipv6 = traffic.destination.is_ipv6();
    set_options(&socket, &traffic.sockopts)?;
    if let Some(bytes) = traffic.sndbuf {
        let bytes = bytes.min(libc::c_int::MAX as u32) as usize;
        sock::setsockopt(&socket, sockopt::SndBuf, &bytes)?;
    }
    if let Some(ttl) = traffic.ttl {
        if ipv6 {
            sock::setsockopt(&socket, sockopt::Ipv6Ttl, &libc::c_int::from(ttl))?;
        } else {
            sock::setsockopt(&socket, sockopt::Ipv4Ttl, &libc::c_int::from(ttl))?;
        }
    }
    if traffic.dont_fragment {
        let (level, option, value) = if ipv6 {
            (
                libc::SOL_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_DO,
            )
        } else {
            (libc::SOL_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO)
        };
        crate::sockopt::set_int(&socket, level, option, value)?;
    }
    if let Some(source) = traffic.source {
        sock::bind(
            socket.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(source, 0)),
        )?;
    }
    Ok(socket)
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    OnTheWire,
    Blocked,
}

fn send_to(socket: &OwnedFd, bytes: &[u8], to: SocketAddr) -> io::Result<Sent> {
    let to = SockaddrStorage::from(to);
    let send = || sock::sendto(socket.as_raw_fd(), bytes, &to, MsgFlags::empty());
    // An ICMP error for an earlier packet is also reported by failing the next send
    // (sk_err), and that send is then not made. The error itself is counted from the
    // error queue; reading SO_ERROR first clears it, so a failure below is this send's
    // own. Resending after a local refusal would put a second packet into the kernel and
    // change the counts, so only ECONNREFUSED — never a local refusal, only an ICMP error
    // that raced in between the two calls — is retried.
    pending_error(socket)?;
    match send() {
        Ok(_) => Ok(Sent::OnTheWire),
        // An OUTPUT rule (EPERM), no route, an unreachable NAT target, larger than the
        // known path MTU with DF set, or a qdisc/tc egress drop (ENOBUFS), or a route of
        // the sender's own that refuses: blackhole (EINVAL), unreachable (EHOSTUNREACH),
        // prohibit (EACCES). The sender's own kernel refused it.
        Err(Errno::EPERM | Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::EMSGSIZE)
        | Err(Errno::ENOBUFS | Errno::EINVAL | Errno::EACCES) => Ok(Sent::Blocked),
        Err(Errno::ECONNREFUSED) => Ok(send().map(|_| Sent::OnTheWire)?),
        Err(e) => Err(e.into()),
    }
}

/// Reads and clears a socket's pending error (SO_ERROR).
fn pending_error(socket: &OwnedFd) -> io::Result<i32> {
    Ok(sock::getsockopt(socket, sockopt::SocketError)?)
}

/// Reads every queued datagram; returns how many matched `keep`.
fn drain(socket: &OwnedFd, keep: impl Fn(&[u8]) -> bool) -> io::Result<u32> {
    let mut buf = [0u8; 2048];
    let mut kept = 0;
    loop {
        match sock::recv(socket.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                if keep(&buf[..n]) {
                    kept += 1;
                }
            }
            Err(Errno::EAGAIN) => return Ok(kept),
            // The error is also queued in the error queue, where drain_errors counts it.
            Err(Errno::ECONNREFUSED | Errno::EHOSTUNREACH | Errno::ENETUNREACH) => return Ok(kept),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts the ICMP errors queued on a socket with IP_RECVERR. The queue also holds the
/// kernel's local errors (EMSGSIZE when DF meets a known path MTU, for example); those
/// are sends that never left and are counted as `blocked`, not here.
fn drain_errors(socket: &OwnedFd) -> io::Result<u32> {
    let mut count = 0;
    let mut buf = [0u8; 2048];
    // Room for the one control message IP_RECVERR queues: the error and the address of
    // the host that reported it.
    let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let message = match sock::recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(message) => message,
            Err(Errno::EAGAIN) => return Ok(count),
            Err(e) => return Err(e.into()),
        };
        let origin = message.cmsgs()?.find_map(|cmsg| match cmsg {
            ControlMessageOwned::Ipv4RecvErr(err, _) | ControlMessageOwned::Ipv6RecvErr(err, _) => {
                Some(err.ee_origin)
            }
            _ => None,
        });
        if matches!(origin, Some(SO_EE_ORIGIN_ICMP | SO_EE_ORIGIN_ICMP6)) {
            count += 1;
        }
    }
}

/// `SO_EE_ORIGIN_ICMP` from linux/errqueue.h (not exported by the libc crate).
const SO_EE_ORIGIN_ICMP: u8 = 2;
/// `SO_EE_ORIGIN_ICMP6`, the same for ICMPv6 errors.
const SO_EE_ORIGIN_ICMP6: u8 = 3;

fn start_connect(socket: &OwnedFd, to: SocketAddr) -> io::Result<Option<Attempt>> {
    match sock::connect(socket.as_raw_fd(), &SockaddrStorage::from(to)) {
        Ok(()) => Ok(Some(Attempt::Connected)),
        Err(Errno::EINPROGRESS) => Ok(None),
        Err(e) => Ok(Some(attempt_from_errno(e as i32).ok_or(e)?)),
    }
}

fn attempt_from_errno(code: i32) -> Option<Attempt> {
    match code {
        0 => Some(Attempt::Connected),
        libc::ECONNREFUSED | libc::ECONNRESET => Some(Attempt::Refused),
        libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM | libc::EINVAL => {
            Some(Attempt::Unreachable)
        }
        libc::ETIMEDOUT => Some(Attempt::TimedOut),
        _ => None,
    }
}

/// Whether `events` are ready on `socket` now (poll(2) without waiting).
fn ready_now(socket: &OwnedFd, events: PollFlags) -> io::Result<bool> {
    let mut fds = [PollFd::new(socket.as_fd(), events)];
    if poll(&mut fds, PollTimeout::ZERO)? == 0 {
        return Ok(false);
    }
    // Unknown bits (None) can only be ones the kernel added, never the ones asked for.
    Ok(fds[0].revents().is_some_and(|r| r.intersects(events)))
}

fn poll_connect(socket: &OwnedFd) -> io::Result<Attempt> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO)?;
    // Any event — POLLOUT, or POLLERR/POLLHUP of a failed attempt — settles it.
    if fds[0].any() == Some(false) {
        return Ok(Attempt::Pending);
    }
    let code = pending_error(socket)?;
    attempt_from_errno(code).ok_or_else(|| io::Error::from_raw_os_error(code))
}

/// Accepts the connections waiting on a listener, and makes no failing accept(2): the
/// kernel's inet_csk_accept failures are something scenarios count (TCP_ACCEPT_BASIC),
/// so the harness's own polling must not add any.
fn accept_ready(listener: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
    let mut accepted = Vec::new();
    while ready_now(listener, PollFlags::POLLIN)? {
        match accept_one(listener)? {
            Some(conn) => accepted.push(conn),
            None => break,
        }
    }
    Ok(accepted)
}

/// Accepts until accept(2) fails with EAGAIN, as a non-blocking server does.
fn accept_until_eagain(listener: &OwnedFd) -> io::Result<Vec<OwnedFd>> {
    let mut accepted = Vec::new();
    while let Some(conn) = accept_one(listener)? {
        accepted.push(conn);
    }
    Ok(accepted)
}

/// One non-blocking accept(2); None when nothing was waiting (EAGAIN). socket2, not nix:
/// its accept returns an owned socket (nix's a bare descriptor number).
fn accept_one(listener: &OwnedFd) -> io::Result<Option<OwnedFd>> {
    match SockRef::from(listener).accept() {
        Ok((conn, _peer)) => {
            // Like the other ends: reads and closes must never wait.
            conn.set_nonblocking(true)?;
            Ok(Some(conn.into()))
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
