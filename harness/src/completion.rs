//! When is the kernel done with what a scenario sent? Asked of the kernel, not the clock.
//!
//! On veth (and `lo`) a sent packet is queued on the per-CPU backlog of the CPU the
//! sender runs on (`netif_rx` → `enqueue_to_backlog(skb, smp_processor_id())`, RPS off),
//! and that backlog is processed in order (`process_backlog`). A packet forwarded or
//! answered while it is processed is queued again on the same CPU, at the tail. So:
//!
//! - **A marker round**: on every CPU in turn, the calling thread pins itself there and
//!   sends one datagram over `lo` in a namespace of its own (the marker namespace,
//!   never watched, so markers are in no scenario's counts) and waits until it is
//!   received. Everything queued on that CPU's backlog before the marker has then been
//!   processed. Getting onto a CPU at all also means no softirq (a neighbour timer, say)
//!   is still running there.
//! - A packet crossing `h` hops needs `h` rounds (each hop queues it again behind the
//!   marker). The drain runs at least `2 × hosts + 2` rounds — there and back across
//!   every host, plus address resolution — and then keeps going until a whole pass
//!   changed nothing that is watched (drops, answers).
//! - **Packets parked on a timer** are not on any backlog: those queued on a neighbour
//!   entry waiting for ARP/NDP. The drain reads every host's neighbour table over
//!   netlink and waits while any entry is INCOMPLETE (the state that queues packets);
//!   when it turns FAILED, `neigh_invalidate` has dropped the queue (NEIGH_FAILED), and
//!   the next marker round makes sure the timer that did it has returned.
//! - **Packets held by a qdisc** (a `qdisc` fault's tbf or pfifo, or one a `tc` fault
//!   built) leave it on the qdisc's watchdog timer. The drain dumps every host's qdiscs
//!   over netlink and waits while any holds a packet (`qlen` or `backlog` of its
//!   statistics not zero): a qdisc that drains at 1 mbit/s takes 8 ms per 1000-byte
//!   packet, long after the marker rounds have found the backlogs empty.
//!
//! What remains a window is the cap (the entry's `timeout_ms`, or the settle cap): a
//! drain that reaches it says so, and the report names the results that relied on it.
//! The cap counts from the last moment the kernel still held something on a timer (an
//! INCOMPLETE neighbour entry, a qdisc with packets), up to [`DECIDING_CAP`] from the
//! start of the drain: a neighbour entry that takes longer than `timeout_ms` to fail on a
//! slow machine (a TCG guest under load) still has its errors counted, because the
//! kernel said it had not decided yet.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::socket::{
    self as sock, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
    SockaddrIn,
};
use nix::unistd::Pid;

use crate::netns::Netns;

/// How long one marker may take to come back before the drain gives up on markers
/// (only a machine so loaded that a softirq waits this long: the drain then reports).
const MARKER_WAIT: Duration = Duration::from_secs(2);
const POLL_INTERVAL: Duration = Duration::from_micros(500);
/// How long, from the start of a drain, the kernel's own timers (a neighbour entry
/// resolving, a qdisc draining) may hold a drain past its cap. Default neighbour
/// resolution gives up after about 3 s (`mcast_solicit` 3 × `retrans_time` 1 s).
pub const DECIDING_CAP: Duration = Duration::from_secs(5);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// The caller's own condition held (every answer arrived).
    Done,
    /// The kernel has nothing left of the scenario: backlogs processed, no neighbour
    /// entry waiting to resolve.
    Quiet,
    /// The cap passed first: the outcome relied on a window.
    Capped,
}

/// The scenario's side of completion: a netlink socket inside each host, for reading
/// its neighbour table, and the notes of which waits reached their cap.
pub struct Completion<'a> {
    neighbour_sockets: Vec<OwnedFd>,
    min_rounds: usize,
    activity: &'a mut dyn FnMut() -> u64,
    /// The last drain ended [`Drained::Quiet`] and nothing was noted as sent since.
    quiet: bool,
    /// What relied on a window, for the report.
    pub capped: Vec<String>,
}

impl<'a> Completion<'a> {
    /// `activity` grows with every drop the watchers see.
    pub fn new(hosts: &[Netns], activity: &'a mut dyn FnMut() -> u64) -> io::Result<Self> {
        let neighbour_sockets = hosts
            .iter()
            .map(|h| h.run(route_socket).map_err(io::Error::other)?)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Completion {
            neighbour_sockets,
            min_rounds: 2 * hosts.len() + 2,
            activity,
            quiet: false,
            capped: Vec::new(),
        })
    }

    /// The drop watchers' progress.
    pub fn activity(&mut self) -> u64 {
        (self.activity)()
    }

    /// Says that something may have been put into the kernel since the last drain (a
    /// read that makes TCP send a window update, say): [`Completion::is_quiet`] no longer
    /// holds. Sending traffic is followed by a drain, which says it anyway.
    pub fn note_sent(&mut self) {
        self.quiet = false;
    }

    /// Whether the kernel is known to be done with everything sent so far: the last
    /// drain ended [`Drained::Quiet`] (not on an answer, not on its cap), and nothing
    /// was noted as sent since. Another drain would then only repeat its rounds.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Waits until `progress` says done, or the kernel has finished with everything sent
    /// so far, or `deadline` passed. `progress` returns (answers so far, done).
    pub fn drain(
        &mut self,
        deadline: Instant,
        what: &str,
        progress: impl FnMut() -> io::Result<(u64, bool)>,
    ) -> io::Result<Drained> {
        self.quiet = false;
        let drained = self.drain_rounds(deadline, what, progress)?;
        self.quiet = drained == Drained::Quiet;
        Ok(drained)
    }

    fn drain_rounds(
        &mut self,
        deadline: Instant,
        what: &str,
        mut progress: impl FnMut() -> io::Result<(u64, bool)>,
    ) -> io::Result<Drained> {
        let started = Instant::now();
        let budget = deadline.saturating_duration_since(started);
        let ceiling = deadline.max(started + DECIDING_CAP);
        let mut deadline = deadline;
        let mut rounds = 0;
        let mut last = None;
        loop {
            let (answers, done) = progress()?;
            if done {
                return Ok(Drained::Done);
            }
            // The drops seen are compared only from the round before the last of
            // `min_rounds` on (quiet = a whole round changed nothing): reading them
            // before that is wasted (each read iterates the drop probe's maps, about
            // 90 µs here).
            let now = if rounds + 1 >= self.min_rounds {
                Some((answers, self.activity()))
            } else {
                None
            };
            let resolving = self.resolving()?;
            if !resolving && rounds >= self.min_rounds && now.is_some() && last == now {
                return Ok(Drained::Quiet);
            }
            if resolving {
                deadline = extended(deadline, Instant::now(), budget, ceiling);
            }
            if Instant::now() >= deadline {
                self.capped.push(what.to_owned());
                return Ok(Drained::Capped);
            }
            if resolving {
                // A neighbour entry is waiting for an answer on its own timer.
                std::thread::sleep(POLL_INTERVAL);
                last = None;
                continue;
            }
            last = now;
            match marker_round(deadline) {
                Ok(Round::Done) => {}
                // The cap passed while a marker was on its way: not quiet, capped.
                Ok(Round::Late) => {
                    last = None;
                    continue;
                }
                // No markers on this machine: only the cap is left.
                Err(_) => std::thread::sleep(POLL_INTERVAL),
            }
            rounds += 1;
        }
    }

    /// Whether any host has a neighbour entry still resolving (INCOMPLETE): packets
    /// queued on it will be sent or dropped (NEIGH_FAILED) when its timer decides; or a
    /// qdisc that still holds packets (sent, or dropped, when its timer fires).
    fn resolving(&self) -> io::Result<bool> {
        for socket in &self.neighbour_sockets {
            if any_incomplete(socket)? || any_queued(socket)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The drain's deadline once the kernel is seen still deciding at `now`: the whole
/// budget again from `now`, never past `ceiling`, never earlier than it was.
fn extended(deadline: Instant, now: Instant, budget: Duration, ceiling: Instant) -> Instant {
    deadline.max((now + budget).min(ceiling))
}

/// A NETLINK_ROUTE socket made inside the calling thread's namespace.
fn route_socket() -> io::Result<OwnedFd> {
    let socket = sock::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    sock::bind(socket.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NUD_INCOMPLETE: u16 = 0x01;
const NLMSG_HEADER: usize = 16;

/// Dumps the namespace's neighbour tables (IPv4 and IPv6) and says whether any entry
/// is INCOMPLETE. The request is `struct nlmsghdr` + `struct ndmsg` (AF_UNSPEC: all
/// families); each answer's `ndm_state` is at offset 8 of its `ndmsg`.
fn any_incomplete(socket: &OwnedFd) -> io::Result<bool> {
    let mut request = [0u8; NLMSG_HEADER + 12];
    request[0..4].copy_from_slice(&((NLMSG_HEADER + 12) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&RTM_GETNEIGH.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    sock::send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut incomplete = false;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = sock::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut at = 0;
        while at + NLMSG_HEADER <= n {
            let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
            match kind {
                NLMSG_DONE => return Ok(incomplete),
                NLMSG_ERROR => {
                    let code = i32::from_ne_bytes(
                        buf[at + NLMSG_HEADER..at + NLMSG_HEADER + 4]
                            .try_into()
                            .unwrap(),
                    );
                    return Err(io::Error::from_raw_os_error(-code));
                }
                RTM_NEWNEIGH if len >= NLMSG_HEADER + 12 => {
                    let s = at + NLMSG_HEADER + 8;
                    let state = u16::from_ne_bytes(buf[s..s + 2].try_into().unwrap());
                    incomplete |= state & NUD_INCOMPLETE != 0;
                }
                _ => {}
            }
            if len < NLMSG_HEADER {
                break;
            }
            at += (len + 3) & !3;
        }
    }
}

const RTM_NEWQDISC: u16 = 36;
const RTM_GETQDISC: u16 = 38;
/// `struct tcmsg`: family, padding, ifindex, handle, parent, info.
const TCMSG: usize = 20;
/// `TCA_STATS`: the compat `struct tc_stats` every qdisc dump still carries, with
/// `qlen` at offset 28 and `backlog` at 32.
const TCA_STATS: u16 = 3;

/// Dumps the namespace's qdiscs and says whether any holds a packet.
fn any_queued(socket: &OwnedFd) -> io::Result<bool> {
    let mut request = [0u8; NLMSG_HEADER + TCMSG];
    request[0..4].copy_from_slice(&((NLMSG_HEADER + TCMSG) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&RTM_GETQDISC.to_ne_bytes());
    request[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    sock::send(socket.as_raw_fd(), &request, MsgFlags::empty())?;
    let mut queued = false;
    let mut buf = vec![0u8; 32 * 1024];
    let word = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
    loop {
        let n = sock::recv(socket.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        let mut at = 0;
        while at + NLMSG_HEADER <= n {
            let len = word(&buf, at) as usize;
            let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap());
            match kind {
                NLMSG_DONE => return Ok(queued),
                NLMSG_ERROR => {
                    let code = word(&buf, at + NLMSG_HEADER) as i32;
                    return Err(io::Error::from_raw_os_error(-code));
                }
                RTM_NEWQDISC if len >= NLMSG_HEADER + TCMSG && at + len <= n => {
                    let end = at + len;
                    let mut attr = at + NLMSG_HEADER + TCMSG;
                    while attr + 4 <= end {
                        let attr_len =
                            u16::from_ne_bytes(buf[attr..attr + 2].try_into().unwrap()) as usize;
                        let attr_type =
                            u16::from_ne_bytes(buf[attr + 2..attr + 4].try_into().unwrap());
                        if attr_len < 4 {
                            break;
                        }
                        if attr_type == TCA_STATS && attr_len >= 4 + 36 && attr + attr_len <= end {
                            let stats = attr + 4;
                            queued |= word(&buf, stats + 28) != 0 || word(&buf, stats + 32) != 0;
                        }
                        attr += (attr_len + 3) & !3;
                    }
                }
                _ => {}
            }
            if len < NLMSG_HEADER {
                break;
            }
            at += (len + 3) & !3;
        }
    }
}

/// The marker namespace's two sockets: one receives on 127.0.0.1, one sends to it.
struct Markers {
    _netns: Netns,
    receiver: OwnedFd,
    sender: OwnedFd,
    sequence: u64,
}

static MARKERS: OnceLock<Result<Mutex<Markers>, String>> = OnceLock::new();

fn markers() -> io::Result<&'static Mutex<Markers>> {
    MARKERS
        .get_or_init(|| open_markers().map(Mutex::new).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| io::Error::other(format!("the marker namespace: {e}")))
}

fn open_markers() -> io::Result<Markers> {
    let netns = Netns::create("markers").map_err(io::Error::other)?;
    let (receiver, sender) = netns
        .run(|| -> io::Result<(OwnedFd, OwnedFd)> {
            loopback_up()?;
            let udp = || {
                sock::socket(
                    AddressFamily::Inet,
                    SockType::Datagram,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    SockProtocol::Udp,
                )
            };
            let receiver = udp()?;
            let loopback = SockaddrIn::new(127, 0, 0, 1, 0);
            sock::bind(receiver.as_raw_fd(), &loopback)?;
            let at: SockaddrIn = sock::getsockname(receiver.as_raw_fd())?;
            let sender = udp()?;
            sock::connect(sender.as_raw_fd(), &at)?;
            Ok((receiver, sender))
        })
        .map_err(io::Error::other)??;
    Ok(Markers {
        _netns: netns,
        receiver,
        sender,
        sequence: 0,
    })
}

/// Brings up `lo` of the calling thread's namespace (it starts down in a new one), by
/// the ioctls `ip link set lo up` falls back to: no process to start.
fn loopback_up() -> io::Result<()> {
    let (socket, mut request) = crate::netns::interface_request("lo")?;
    // SAFETY: both ioctls read and write the ifreq passed, which outlives the calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::other(format!(
                "reading lo's flags: {}",
                io::Error::last_os_error()
            )));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::other(format!(
                "bringing lo up: {}",
                io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// How a marker round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// A marker came back on every CPU.
    Done,
    /// The caller's deadline passed first. A round never outlasts it: on a loaded
    /// machine softirqs wait for ksoftirqd, and a round that waited its full
    /// `MARKER_WAIT` per CPU once kept unanswered TCP attempts open past their 1 s
    /// SYN retransmission, so their drops were counted twice.
    Late,
}

/// One marker through the backlog of every CPU this thread may run on, in turn, for
/// as long as `deadline` allows.
pub fn marker_round(deadline: Instant) -> io::Result<Round> {
    let mut markers = markers()?
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let here = Pid::from_raw(0);
    let allowed = sched_getaffinity(here)?;
    // Starting on the CPU this thread is on saves a migration per round: on a loaded
    // machine each one waits for the other CPU to let the thread in.
    let mut cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect();
    // SAFETY: sched_getcpu has no arguments and no preconditions.
    let current = unsafe { libc::sched_getcpu() };
    if let Some(at) = cpus
        .iter()
        .position(|&cpu| cpu as i64 == i64::from(current))
    {
        cpus.rotate_left(at);
    }
    let mut result = Ok(Round::Done);
    for cpu in cpus {
        let mut one = CpuSet::new();
        let step = one
            .set(cpu)
            .and_then(|()| sched_setaffinity(here, &one))
            .map_err(io::Error::from)
            .and_then(|()| markers.through_this_cpu(deadline));
        match step {
            Ok(Round::Done) => {}
            other => {
                result = other;
                break;
            }
        }
    }
    sched_setaffinity(here, &allowed)?;
    result
}

impl Markers {
    fn through_this_cpu(&mut self, caller_deadline: Instant) -> io::Result<Round> {
        self.sequence += 1;
        let sent = self.sequence.to_ne_bytes();
        sock::send(self.sender.as_raw_fd(), &sent, MsgFlags::empty())?;
        let own_deadline = Instant::now() + MARKER_WAIT;
        let deadline = own_deadline.min(caller_deadline);
        let mut buf = [0u8; 8];
        loop {
            match sock::recv(self.receiver.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                // Markers of an earlier, abandoned round may still be queued.
                Ok(8) if buf == sent => return Ok(Round::Done),
                Ok(_) => continue,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && deadline < own_deadline {
                return Ok(Round::Late);
            }
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "a marker did not come back",
                ));
            }
            let mut fds = [PollFd::new(
                std::os::fd::AsFd::as_fd(&self.receiver),
                PollFlags::POLLIN,
            )];
            let ms = left.as_millis().min(1000) as u16;
            poll(&mut fds, PollTimeout::from(ms))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_still_deciding_restarts_the_budget_up_to_the_ceiling() {
        let start = Instant::now();
        let budget = Duration::from_millis(200);
        let deadline = start + budget;
        let ceiling = deadline.max(start + DECIDING_CAP);
        // Still resolving at 150 ms: 200 ms more from there.
        let at = start + Duration::from_millis(150);
        assert_eq!(extended(deadline, at, budget, ceiling), at + budget);
        // Still resolving at 4.9 s: only up to the ceiling.
        let late = start + Duration::from_millis(4900);
        assert_eq!(extended(deadline, late, budget, ceiling), ceiling);
        // Never earlier than the deadline already was (the settle drain's 5 s cap).
        let settle = start + Duration::from_secs(5);
        assert_eq!(
            extended(settle, start, Duration::from_secs(5), settle),
            settle
        );
    }
}
