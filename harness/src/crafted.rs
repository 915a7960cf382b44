//! Sends a scenario's crafted packets (`[[packets]]`) and records what came of them.
//!
//! Each entry's frames go out through an AF_PACKET socket on the sender's end of the
//! link to the destination ([`crate::packets`]), so the destination's kernel receives
//! them exactly as built and verifies every checksum. The same socket sees what comes
//! back on that interface (echo replies, ICMP errors, TCP resets), the way a capture
//! would, whatever the sender's kernel then does with it.
//!
//! The application at the destination is part of the scenario ([`Receiver`]), because
//! it decides where a damaged packet dies:
//!
//! - UDP, `reads`: a socket bound to the port, read with `recv(2)` only. A datagram
//!   with a bad checksum and at most 76 bytes of UDP (header + 68 bytes of payload) is
//!   dropped on arrival in `__udp4_lib_rcv`/`__udp6_lib_rcv` (UDP_CSUM): the kernel checks
//!   short packets at once (`CHECKSUM_BREAK`). A longer one is queued unchecked and
//!   dropped when the application reads it, in `udp_recvmsg`/`udpv6_recvmsg` — blocking
//!   or not, measured the same. An application that polls or asks FIONREAD first would
//!   see it dropped in `__first_packet_length` instead, which is why the harness never
//!   does.
//! - UDP, `never_reads`: the same socket, never read. Short bad datagrams still die on
//!   arrival; longer ones sit in the queue, and no drop is reported while the scenario
//!   runs. When the socket closes they are freed in `udp_destruct_common` from an RCU
//!   callback (measured: NOT_SPECIFIED, on whatever task the CPU was running, with
//!   `skb->dev` overwritten by UDP's `dev_scratch`), a drop no namespace can claim.
//! - UDP, `none`: nothing listens; a bad checksum is UDP_CSUM in `__udp4_lib_rcv`
//!   whatever the size (checked before the port-unreachable answer), a good one is
//!   NO_SOCKET and answered with ICMP port unreachable.
//! - TCP, `reads`/`never_reads`: an established connection made with TCP_REPAIR on both
//!   ends, so no handshake crosses the wire and nothing but the crafted segments does.
//!   The sender's end holds the crafted payload in its send queue as "sent, not yet
//!   acknowledged", so the destination's ACKs are accepted silently. A bad checksum on a
//!   segment of at most 76 bytes (header + 56 bytes) is TCP_CSUM in `tcp_v4_rcv`; a
//!   longer one in `tcp_v4_do_rcv` (IPv6: `tcp_v6_rcv`, `tcp_v6_do_rcv`).
//! - TCP, `none`: a closed port. A good segment is NO_SOCKET at the destination and
//!   answered with a reset, which the sender's kernel (that has no socket for it)
//!   drops as NO_SOCKET too.
//! - Echo requests are answered by the destination's kernel; the sender holds an ICMP
//!   ping socket with the request's identifier so the replies are consumed, not dropped
//!   as NO_SOCKET in `ping_rcv`.
//!
//! Sockets are closed so that closing adds no drop: every queue the harness owns is
//! read empty first, the TCP ends are closed in repair mode, which sends nothing, and
//! every socket is closed only after the watchers stopped (`traffic::Sockets`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self as sock, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};

use crate::completion::Completion;
use crate::packets::{self, FrameSpec, PacketError, PacketSocket, Reply, Transport};
use crate::scenario::{HostId, PacketEntry, PacketProtocol, Receiver, Scenario};
use crate::topology::{Netns, Topology, TopologyError};
use crate::traffic::{await_outcome, Sockets};

/// The identifier of crafted echo requests (and the port of the sender's ping socket).
pub const ECHO_ID: u16 = 4242;
/// Initial sequence numbers of the repaired TCP connection: the sender's, the receiver's.
const SENDER_ISN: u32 = 1_000_000;
const RECEIVER_ISN: u32 = 2_000_000;
/// Frames sent between two reads of every queue, so none can overflow on the way.
const BATCH: u32 = 64;

/// What one `[[packets]]` entry achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PacketOutcome {
    pub sent: u32,
    /// UDP datagrams read by the receiver; for TCP, bytes read divided by the payload
    /// size (segments' worth).
    pub delivered: u32,
    /// Echo replies seen on the sender's interface.
    pub answered: u32,
    /// ICMP/ICMPv6 errors seen on the sender's interface.
    pub errors: u32,
    /// TCP resets seen on the sender's interface.
    pub resets: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CraftedError {
    #[error("packets #{index} ({what}): {source}")]
    Socket {
        index: usize,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("packets #{index}: {source}")]
    Packet {
        index: usize,
        #[source]
        source: PacketError,
    },
    #[error("packets #{index}: {source}")]
    Namespace {
        index: usize,
        #[source]
        source: TopologyError,
    },
}

/// Sends every `[[packets]]` entry in order and returns one outcome per entry, and the
/// sockets of `never_reads` UDP receivers, to be closed with [`Unread::close`] once the
/// drop counts are collected.
pub fn run(
    scenario: &Scenario,
    topology: &Topology,
    completion: &mut Completion,
    sockets: &mut Sockets,
) -> Result<(Vec<PacketOutcome>, Unread), CraftedError> {
    let mut unread = Unread::default();
    let outcomes = scenario
        .packets
        .iter()
        .enumerate()
        .map(|(i, entry)| run_one(i + 1, entry, topology, completion, sockets, &mut unread))
        .collect::<Result<_, _>>()?;
    Ok((outcomes, unread))
}

/// UDP sockets the destination application never read, with what is still queued on
/// them.
///
/// Closing such a socket frees its queue from an RCU callback (`udp_destruct_common`),
/// in the context of whatever task the CPU runs then, with `skb->dev` overwritten by
/// UDP's scratch data: no namespace could be trusted with those drops. So they are read
/// empty instead, from inside their host (`Netns::run`), after the host is no longer watched
/// (checksums are verified on that read, and a bad one is dropped then, unseen), and
/// only then closed.
#[derive(Default)]
pub struct Unread {
    sockets: Vec<(HostId, OwnedFd)>,
}

impl Unread {
    /// Reads every socket empty inside its host's namespace, then closes it. Call it
    /// after the drop probe stopped watching the scenario and before the topology goes.
    pub fn close(self, topology: &Topology) {
        for (host, socket) in self.sockets {
            let fd = socket.as_raw_fd();
            // Best effort: if the host cannot be entered, closing still frees the queue.
            let _ = topology.host(host).run(|| read_all(fd));
        }
    }
}

/// The destination application's sockets.
enum Application {
    None,
    Udp(OwnedFd),
    /// The receiver's and the sender's ends of a repaired connection.
    Tcp {
        receiver: OwnedFd,
        sender: OwnedFd,
    },
}

/// Sends `[[packets]]` entry `index` (1-based).
pub(crate) fn run_one(
    index: usize,
    entry: &PacketEntry,
    topology: &Topology,
    completion: &mut Completion,
    sockets: &mut Sockets,
    unread: &mut Unread,
) -> Result<PacketOutcome, CraftedError> {
    let socket_error = |what: &str| {
        let what = what.to_owned();
        move |source| CraftedError::Socket {
            index,
            what,
            source,
        }
    };
    let packet_error = |source| CraftedError::Packet { index, source };
    let in_netns = |netns: &Netns, f: &(dyn Fn() -> io::Result<OwnedFd> + Sync)| {
        netns
            .run(f)
            .map_err(|source| CraftedError::Namespace { index, source })
    };
    let sender_ns = topology.host(entry.from);
    let receiver_ns = topology.host(entry.to);
    let tap = PacketSocket::open(sender_ns, &entry.interface).map_err(packet_error)?;
    let peer_mac =
        packets::interface_mac(receiver_ns, &entry.peer_interface).map_err(packet_error)?;

    let source = SocketAddr::new(entry.source, entry.source_port);
    let destination = SocketAddr::new(entry.destination, entry.port);
    let application = match (entry.protocol, entry.receiver) {
        (_, Receiver::Nobody) => Application::None,
        (PacketProtocol::Udp, _) => Application::Udp(
            in_netns(receiver_ns, &|| udp_socket(destination))?
                .map_err(socket_error("opening the receiving UDP socket"))?,
        ),
        (PacketProtocol::Tcp, _) => {
            let unacked = vec![PAYLOAD_BYTE; entry.payload * entry.count as usize];
            let receiver = in_netns(receiver_ns, &|| {
                repaired_connection(destination, source, RECEIVER_ISN, SENDER_ISN, &[])
            })?
            .map_err(socket_error(
                "opening the receiving end of a repaired TCP connection",
            ))?;
            let sender = in_netns(sender_ns, &|| {
                repaired_connection(source, destination, SENDER_ISN, RECEIVER_ISN, &unacked)
            })?
            .map_err(socket_error(
                "opening the sending end of a repaired TCP connection",
            ))?;
            Application::Tcp { receiver, sender }
        }
        (PacketProtocol::Echo | PacketProtocol::Other(_), _) => Application::None,
    };
    let ping = match entry.protocol {
        PacketProtocol::Echo => Some(in_netns(sender_ns, &|| ping_socket(entry.source))?.map_err(
            socket_error("opening the ICMP ping socket that takes the replies"),
        )?),
        _ => None,
    };

    let mut outcome = PacketOutcome::default();
    let mut delivered_bytes = 0usize;
    let mut collect = |outcome: &mut PacketOutcome| -> io::Result<()> {
        read_replies(&tap, entry, outcome)?;
        match &application {
            Application::Udp(socket) if entry.receiver == Receiver::Reads => {
                // Read from inside the destination: a datagram whose checksum fails
                // on this read is dropped in the reading task, and the probe can only
                // attribute it by that task's namespace (see Unread).
                let fd = socket.as_raw_fd();
                let read = receiver_ns
                    .run(|| read_all(fd))
                    .map_err(io::Error::other)??;
                outcome.delivered += read.0;
            }
            Application::Tcp { receiver, .. } if entry.receiver == Receiver::Reads => {
                delivered_bytes += read_all(receiver.as_raw_fd())?.1;
                if let Some(segments) = delivered_bytes.checked_div(entry.payload) {
                    outcome.delivered = segments as u32;
                }
            }
            _ => {}
        }
        if let Some(ping) = &ping {
            read_all(ping.as_raw_fd())?;
        }
        Ok(())
    };

    let pieces: Vec<packets::Piece> = entry
        .fragments
        .iter()
        .map(|f| packets::Piece {
            offset: f.offset,
            length: f.length,
            more: f.more,
        })
        .collect();
    for i in 0..entry.count {
        let spec = frame_spec(entry, i, tap.mac(), peer_mac);
        let frames = if pieces.is_empty() {
            vec![packets::build(&spec)]
        } else {
            // Apart from every other entry's, so no reassembly queue is shared.
            let identification = ((index as u32) << 12).wrapping_add(i + 1);
            packets::build_fragments(&spec, &pieces, identification)
        };
        for frame in &frames {
            tap.send(frame)
                .map_err(socket_error("sending a frame on the AF_PACKET socket"))?;
        }
        outcome.sent += 1;
        if (i + 1) % BATCH == 0 {
            collect(&mut outcome).map_err(socket_error("reading between batches"))?;
        }
    }
    let count = u64::from(entry.count);
    let what = format!("packets to {} ({:?})", entry.destination, entry.protocol);
    await_outcome(
        Duration::from_millis(entry.timeout_ms),
        completion,
        &what,
        || {
            collect(&mut outcome)?;
            let answers =
                u64::from(outcome.delivered + outcome.answered + outcome.errors + outcome.resets);
            Ok((answers, answers >= count))
        },
    )
    .map_err(socket_error("waiting for the outcome"))?;
    if !pieces.is_empty() {
        // The kernel may hold an incomplete datagram in a reassembly queue, which the
        // completion markers cannot see: its answer (an ICMP time exceeded when the queue
        // expires) comes only after the namespace's ipfrag_time. Wait the whole timeout.
        let deadline = std::time::Instant::now() + Duration::from_millis(entry.timeout_ms);
        while std::time::Instant::now() < deadline {
            collect(&mut outcome).map_err(socket_error("waiting for reassembly"))?;
            let answers = outcome.delivered + outcome.answered + outcome.errors + outcome.resets;
            if u64::from(answers) >= count {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    // Close without leaving anything queued: a queued skb purged at close is a drop.
    tap.stop_receiving()
        .map_err(socket_error("detaching the AF_PACKET socket"))?;
    collect(&mut outcome).map_err(socket_error("reading the last answers"))?;
    if matches!(application, Application::Tcp { .. }) && entry.receiver == Receiver::Reads {
        // Reading the stream may have made the receiver send a window update.
        completion.note_sent();
    }
    if let Application::Tcp { receiver, sender } = &application {
        for socket in [receiver, sender] {
            // In repair mode close(2) sends nothing: no FIN, no RST.
            sock::setsockopt(socket, sockopt::TcpRepair, &1)
                .map_err(io::Error::from)
                .map_err(socket_error("closing the repaired connection"))?;
        }
    }
    // Everything else closes once the watchers stopped (see `Sockets`): a late echo reply
    // must still find its ping socket, and a repaired end purges what it holds.
    match application {
        Application::Udp(socket) if entry.receiver == Receiver::NeverReads => {
            unread.sockets.push((entry.to, socket))
        }
        // Read empty by the last collect, after the kernel was done with the entry: it
        // closes now, freeing nothing, so a later entry can bind the same port.
        Application::Udp(socket) => crate::forks::close_now(socket),
        // Repaired ends close in `tcp_disconnect`, which purges their receive queues: read
        // empty, they free nothing as a drop (the sender's unacknowledged copy goes through
        // __kfree_skb, not traced) and close now, so a later entry can reuse the 4-tuple.
        // An unread one would purge its segments as drops: it closes after watching.
        Application::Tcp { receiver, sender } if entry.receiver == Receiver::Reads => {
            crate::forks::close_now((receiver, sender))
        }
        Application::Tcp { receiver, sender } => {
            sockets.keep(entry.to, receiver);
            sockets.keep(entry.from, sender);
        }
        Application::None => {}
    }
    if let Some(ping) = ping {
        sockets.keep(entry.from, ping);
    }
    Ok(outcome)
}

const PAYLOAD_BYTE: u8 = 0x5a;

/// The `i`-th frame of an entry (0-based).
fn frame_spec(
    entry: &PacketEntry,
    i: u32,
    source_mac: packets::Mac,
    peer_mac: packets::Mac,
) -> FrameSpec {
    let transport = match entry.protocol {
        PacketProtocol::Udp => Transport::Udp {
            source_port: entry.source_port,
            destination_port: entry.port,
        },
        PacketProtocol::Tcp => {
            let connected = entry.receiver != Receiver::Nobody;
            let seq = if connected {
                // Back to back in the connection's sequence space.
                SENDER_ISN.wrapping_add(i.wrapping_mul(entry.payload as u32))
            } else {
                SENDER_ISN.wrapping_add(i)
            };
            let ack = if entry.tcp_flags & packets::TCP_ACK != 0 {
                RECEIVER_ISN
            } else {
                0
            };
            Transport::Tcp {
                source_port: entry.source_port,
                destination_port: entry.port,
                seq,
                ack,
                flags: entry.tcp_flags,
                window: 65535,
            }
        }
        PacketProtocol::Echo => Transport::Echo {
            id: ECHO_ID,
            seq: (i + 1) as u16,
        },
        PacketProtocol::Other(protocol) => Transport::Other { protocol },
    };
    FrameSpec {
        source_mac,
        destination_mac: peer_mac,
        source: entry.source,
        destination: entry.destination,
        ttl: entry.ttl,
        ident: (i + 1) as u16,
        transport,
        payload: vec![PAYLOAD_BYTE; entry.payload],
        corrupt: entry.corrupt,
    }
}

/// Reads every frame waiting on the AF_PACKET socket and counts the answers among them.
fn read_replies(
    tap: &PacketSocket,
    entry: &PacketEntry,
    outcome: &mut PacketOutcome,
) -> io::Result<()> {
    let mut buf = [0u8; 2048];
    while let Some(n) = tap.receive(&mut buf)? {
        match packets::classify_reply(&buf[..n], entry.source, entry.destination) {
            Some(Reply::EchoReply { id }) if id == ECHO_ID => outcome.answered += 1,
            Some(Reply::IcmpError { .. }) => outcome.errors += 1,
            Some(Reply::TcpReset) => outcome.resets += 1,
            _ => {}
        }
    }
    Ok(())
}

/// Reads a socket until it is empty: (messages, bytes).
fn read_all(fd: RawFd) -> io::Result<(u32, usize)> {
    let mut buf = [0u8; 65536];
    let (mut messages, mut bytes) = (0, 0);
    loop {
        let n = match sock::recv(fd, &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => return Ok((messages, bytes)),
            Err(e) => return Err(e.into()),
        };
        if n == 0 && messages > 0 {
            // End of a TCP stream (never expected: the sender never sends FIN).
            return Ok((messages, bytes));
        }
        messages += 1;
        bytes += n;
    }
}

fn family(addr: &SocketAddr) -> AddressFamily {
    match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn new_socket(
    domain: AddressFamily,
    kind: SockType,
    protocol: SockProtocol,
) -> io::Result<OwnedFd> {
    Ok(sock::socket(
        domain,
        kind,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        protocol,
    )?)
}

fn bind(socket: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    Ok(sock::bind(
        socket.as_raw_fd(),
        &SockaddrStorage::from(addr),
    )?)
}

/// The destination application's UDP socket, bound to the destination address and port.
/// An earlier entry's receiver on the same port was closed with `forks::close_now`, so
/// no child another thread started still holds it.
fn udp_socket(at: SocketAddr) -> io::Result<OwnedFd> {
    let socket = new_socket(family(&at), SockType::Datagram, SockProtocol::Udp)?;
    bind(&socket, at)?;
    Ok(socket)
}

/// An ICMP (or ICMPv6) ping socket whose identifier is [`ECHO_ID`], so the kernel hands
/// it the replies to the crafted echo requests instead of dropping them.
fn ping_socket(address: IpAddr) -> io::Result<OwnedFd> {
    let at = SocketAddr::new(address, ECHO_ID);
    let protocol = match address {
        IpAddr::V4(_) => SockProtocol::Icmp,
        IpAddr::V6(_) => SockProtocol::IcmpV6,
    };
    let socket = new_socket(family(&at), SockType::Datagram, protocol)?;
    bind(&socket, at)?;
    Ok(socket)
}

/// `TCP_REPAIR_QUEUE` values and the "off without a window probe" mode of `TCP_REPAIR`
/// (`<linux/tcp.h>`).
const TCP_RECV_QUEUE: libc::c_int = 1;
const TCP_SEND_QUEUE: libc::c_int = 2;
const TCP_REPAIR_OFF_NO_WP: libc::c_int = -1;

/// One end of an established TCP connection made without a handshake (TCP_REPAIR, the
/// interface CRIU restores connections with): bound to `local`, connected to `peer`,
/// with `send_seq` and `recv_seq` as the next sequence numbers each way. `unacked` is
/// put in the send queue as already sent, so the peer's acknowledgements of it are
/// accepted. Leaving repair mode without a window probe means nothing is sent.
///
/// nix wraps `TCP_REPAIR` itself but not the queue options nor the -1 mode, which go
/// through [`crate::sockopt`].
fn repaired_connection(
    local: SocketAddr,
    peer: SocketAddr,
    send_seq: u32,
    recv_seq: u32,
    unacked: &[u8],
) -> io::Result<OwnedFd> {
    use crate::sockopt::set_int;
    let socket = new_socket(family(&local), SockType::Stream, SockProtocol::Tcp)?;
    sock::setsockopt(&socket, sockopt::TcpRepair, &1)?;
    sock::setsockopt(&socket, sockopt::ReuseAddr, &true)?;
    bind(&socket, local)?;
    set_int(
        &socket,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_SEND_QUEUE,
    )?;
    set_int(
        &socket,
        libc::IPPROTO_TCP,
        libc::TCP_QUEUE_SEQ,
        send_seq as libc::c_int,
    )?;
    set_int(
        &socket,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR_QUEUE,
        TCP_RECV_QUEUE,
    )?;
    set_int(
        &socket,
        libc::IPPROTO_TCP,
        libc::TCP_QUEUE_SEQ,
        recv_seq as libc::c_int,
    )?;
    // In repair mode connect(2) moves the socket to ESTABLISHED at once and sends nothing.
    sock::connect(socket.as_raw_fd(), &SockaddrStorage::from(peer))?;
    if !unacked.is_empty() {
        set_int(
            &socket,
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR_QUEUE,
            TCP_SEND_QUEUE,
        )?;
        let n = sock::send(socket.as_raw_fd(), unacked, MsgFlags::empty())?;
        if n != unacked.len() {
            return Err(io::Error::other(format!(
                "the repaired send queue took {n} of {} bytes",
                unacked.len()
            )));
        }
    }
    set_int(
        &socket,
        libc::IPPROTO_TCP,
        libc::TCP_REPAIR,
        TCP_REPAIR_OFF_NO_WP,
    )?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::Corruption;
    use std::path::Path;

    fn entry(text: &str) -> PacketEntry {
        let scenario = crate::scenario::parse(
            &format!(
                r#"
description = "t"
[hosts.client]
[hosts.server]
[[links]]
a = {{ host = "client", addr = "198.18.0.1/24" }}
b = {{ host = "server", addr = "198.18.0.2/24" }}
[[packets]]
from = "client"
to = "server"
{text}
"#
            ),
            Path::new("t.toml"),
            "t",
            Path::new("."),
        )
        .unwrap();
        scenario.packets[0].clone()
    }

    #[test]
    fn tcp_segments_on_a_connection_follow_each_other() {
        let e = entry(
            "protocol = \"tcp\"\nport = 80\nreceiver = \"reads\"\npayload = 100\ncount = 3\n",
        );
        let seqs: Vec<u32> = (0..3)
            .map(|i| match frame_spec(&e, i, [0; 6], [1; 6]).transport {
                Transport::Tcp {
                    seq, ack, flags, ..
                } => {
                    assert_eq!(ack, RECEIVER_ISN);
                    assert_eq!(flags, packets::TCP_PSH | packets::TCP_ACK);
                    seq
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(seqs, [SENDER_ISN, SENDER_ISN + 100, SENDER_ISN + 200]);
    }

    #[test]
    fn syns_to_a_closed_port_carry_no_ack() {
        let e = entry("protocol = \"tcp\"\nport = 80\nreceiver = \"none\"\n");
        match frame_spec(&e, 0, [0; 6], [1; 6]).transport {
            Transport::Tcp { ack, flags, .. } => {
                assert_eq!(flags, packets::TCP_SYN);
                assert_eq!(ack, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_frame_of_an_entry_carries_its_corruption() {
        let e =
            entry("protocol = \"udp\"\nport = 9\nreceiver = \"none\"\ncorrupt = \"ip_checksum\"\n");
        let spec = frame_spec(&e, 4, [0; 6], [1; 6]);
        assert_eq!(spec.corrupt, Corruption::IpChecksum);
        assert_eq!(spec.ident, 5);
        assert_eq!(spec.payload.len(), 32);
    }
}
