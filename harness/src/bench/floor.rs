//! The floor: a scenario's kernel operations alone, timed directly, with nothing of
//! dropspec around them (no probe, no waiting for answers, no report).
//!
//! What is done is what the scenario needs the kernel to do: one `unshare(CLONE_NEWNET)`
//! per host, each veth pair created by one RTM_NEWLINK with its peer born in the other
//! namespace, addresses, links up, routes and sysctls, then the fault's rules loaded by
//! the same tool dropspec uses (an `iptables-*-restore` or `nft` process: writing
//! nfnetlink batches by hand is not something any user of either way does), then the
//! traffic's packets sent once each, then every fd closed. Netlink requests are sent one
//! at a time and awaited (one round trip each), the simplest way to make them.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use dropspec::scenario::{FaultKind, Protocol, Scenario};
use futures::TryStreamExt;
use nix::errno::Errno;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::socket::{
    self as sock, AddressFamily, Backlog, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
};
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// Where the floor's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloorTimes {
    /// Namespaces created (and each host's netlink socket opened).
    pub netns: Duration,
    /// Veths, addresses, links up, routes, sysctls.
    pub links: Duration,
    /// Rules loaded by the restore tool.
    pub rules: Duration,
    /// Listening sockets opened and every packet sent once.
    pub traffic: Duration,
    /// Every fd closed.
    pub teardown: Duration,
}

impl FloorTimes {
    pub fn setup(&self) -> Duration {
        self.netns + self.links + self.rules
    }

    pub fn total(&self) -> Duration {
        self.setup() + self.traffic + self.teardown
    }
}

/// Runs the scenario's kernel operations once, on a thread made for it (the thread
/// stands in the scenario's namespaces and ends there).
pub fn run(scenario: &Scenario) -> Result<FloorTimes> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("bench floor".into())
            .spawn_scoped(scope, || run_here(scenario))
            .context("starting the floor's thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the floor's thread panicked"))?
    })
}

fn run_here(scenario: &Scenario) -> Result<FloorTimes> {
    let mut times = FloorTimes::default();

    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a tokio runtime")?;
    let mut namespaces: Vec<OwnedFd> = Vec::new();
    let mut handles = Vec::new();
    for host in &scenario.hosts {
        unshare(CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("unshare(CLONE_NEWNET) for host {}", host.name))?;
        let fd: OwnedFd = std::fs::File::open("/proc/thread-self/ns/net")
            .context("opening /proc/thread-self/ns/net")?
            .into();
        let _context = runtime.enter();
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        runtime.spawn(connection);
        namespaces.push(fd);
        handles.push(handle);
    }
    times.netns = started.elapsed();

    let started = Instant::now();
    for (host, fd) in scenario.hosts.iter().zip(&namespaces) {
        if host.forwarding {
            setns(fd, CloneFlags::CLONE_NEWNET).context("entering a host")?;
            write_sysctl("net/ipv4/ip_forward", "1")?;
            write_sysctl("net/ipv4/conf/all/forwarding", "1")?;
        }
    }
    runtime.block_on(async {
        // The kernel numbers interfaces itself here; the floor asks for them by name.
        for link in &scenario.links {
            let [a, b] = &link.ends;
            let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(b.ifname.clone())
                .setns_by_fd(namespaces[b.host].as_raw_fd());
            let mut veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(a.ifname.clone());
            if let Some(mtu) = link.mtu {
                peer = peer.mtu(mtu);
                veth = veth.mtu(mtu);
            }
            let message = veth
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
                .build();
            handles[a.host]
                .link()
                .add(message)
                .execute()
                .await
                .with_context(|| format!("creating veth {}", a.ifname))?;
            for end in [a, b] {
                let handle = &handles[end.host];
                let index = link_index(handle, &end.ifname).await?;
                handle
                    .address()
                    .add(index, end.addr.addr.into(), end.addr.prefix)
                    .execute()
                    .await
                    .with_context(|| format!("adding {} to {}", end.addr, end.ifname))?;
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(index).up().build())
                    .execute()
                    .await
                    .with_context(|| format!("bringing up {}", end.ifname))?;
            }
        }
        // Once both ends are up, a GETLINK per end runs the carrier work the kernel
        // would otherwise defer; without it the first packets die in the veth (see
        // topology.rs, sync_link), and the scenario's drop would not be the one made.
        for link in &scenario.links {
            for end in &link.ends {
                link_index(&handles[end.host], &end.ifname).await?;
            }
        }
        for (id, host) in scenario.hosts.iter().enumerate() {
            for route in &host.routes {
                // The floor models the plain IPv4 routes of the bench's scenarios only.
                let plain = route.kind == dropspec::scenario::RouteKind::Unicast
                    && route.src.is_none()
                    && route.metric.is_none()
                    && route.table == dropspec::scenario::MAIN_TABLE
                    && host.rules.is_empty();
                let v4 = |a: std::net::IpAddr| match a {
                    std::net::IpAddr::V4(a) => Some(a),
                    std::net::IpAddr::V6(_) => None,
                };
                let destination = route.destination.map(|d| v4(d.addr).map(|a| (a, d.len)));
                let via = route.via.map(v4);
                if !plain || destination == Some(None) || via == Some(None) {
                    anyhow::bail!("the floor measurement models plain IPv4 routes only: leave scenarios with route types, tables, rules or IPv6 routes out of the bench")
                }
                let (destination, via) = (destination.flatten(), via.flatten());
                let mut builder = RouteMessageBuilder::<Ipv4Addr>::new();
                if let Some((addr, len)) = destination {
                    builder = builder.destination_prefix(addr, len);
                }
                builder = match via {
                    Some(via) => builder.gateway(via),
                    None => builder.scope(rtnetlink::packet_route::route::RouteScope::Link),
                };
                if let Some(dev) = &route.dev {
                    builder = builder.output_interface(link_index(&handles[id], dev).await?);
                }
                handles[id]
                    .route()
                    .add(builder.build())
                    .execute()
                    .await
                    .with_context(|| format!("adding a route in {}", host.name))?;
            }
        }
        anyhow::Ok(())
    })?;
    for (host, fd) in scenario.hosts.iter().zip(&namespaces) {
        if host.sysctls.is_empty() {
            continue;
        }
        setns(fd, CloneFlags::CLONE_NEWNET).context("entering a host")?;
        for (key, value) in &host.sysctls {
            write_sysctl(&key.replace('.', "/"), value)?;
        }
    }
    times.links = started.elapsed();

    let started = Instant::now();
    for fault in &scenario.faults {
        let (tool, args, text): (&str, &[&str], &str) = match &fault.kind {
            FaultKind::Iptables { backend, rules, .. } => {
                (backend.restore_command(), &["--noflush", "--wait=5"], rules)
            }
            FaultKind::Nft { ruleset, .. } => ("nft", &["-f", "-"], ruleset),
            FaultKind::Tc { commands, .. } => ("tc", &["-batch", "-"], commands),
            FaultKind::TcDrop { .. } | FaultKind::Qdisc(_) | FaultKind::Command { .. } => {
                anyhow::bail!("the floor measurement does not model tc_drop, qdisc or command faults: leave such scenarios out of the bench")
            }
        };
        load_rules(&namespaces[fault.host], tool, args, text)?;
    }
    times.rules = started.elapsed();

    let started = Instant::now();
    let mut sockets = Vec::new();
    for traffic in &scenario.traffic {
        let std::net::IpAddr::V4(destination) = traffic.destination else {
            anyhow::bail!("the floor measurement models IPv4 traffic only: leave IPv6 traffic out of the bench")
        };
        if let (true, Some(to), Protocol::Udp | Protocol::Tcp) =
            (traffic.listen, traffic.to_host, traffic.protocol)
        {
            setns(&namespaces[to], CloneFlags::CLONE_NEWNET).context("entering a host")?;
            sockets.push(listener(traffic.protocol, destination, traffic.port)?);
        }
        setns(&namespaces[traffic.from], CloneFlags::CLONE_NEWNET).context("entering a host")?;
        let to = SocketAddrV4::new(destination, traffic.port);
        match traffic.protocol {
            Protocol::Icmp => {
                let socket = socket(SockType::Raw, SockFlag::empty(), SockProtocol::Icmp)?;
                for seq in 1..=traffic.count {
                    send_to(&socket, &echo_request(seq as u16, traffic.payload), to)?;
                }
                sockets.push(socket);
            }
            Protocol::Udp => {
                let socket = socket(SockType::Datagram, SockFlag::empty(), SockProtocol::Udp)?;
                let payload = vec![0u8; traffic.payload];
                for _ in 0..traffic.count {
                    send_to(&socket, &payload, to)?;
                }
                sockets.push(socket);
            }
            Protocol::Tcp => {
                for _ in 0..traffic.count {
                    let socket =
                        socket(SockType::Stream, SockFlag::SOCK_NONBLOCK, SockProtocol::Tcp)?;
                    connect_nonblocking(&socket, to)?;
                    sockets.push(socket);
                }
            }
        }
    }
    times.traffic = started.elapsed();

    let started = Instant::now();
    drop(sockets);
    drop(handles);
    drop(runtime);
    drop(namespaces);
    times.teardown = started.elapsed();
    Ok(times)
}

async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<u32> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.header.index),
        Ok(None) => bail!("no interface {name}"),
        Err(e) => Err(e).with_context(|| format!("looking up {name}")),
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{path}");
    std::fs::write(&path, value).with_context(|| format!("writing {path}"))
}

fn load_rules(netns: &OwnedFd, tool: &str, args: &[&str], text: &str) -> Result<()> {
    let fd = netns.try_clone().context("duplicating a namespace fd")?;
    let mut command = Command::new(tool);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: runs in the forked child before exec and only calls setns(2).
    unsafe {
        command.pre_exec(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn().with_context(|| format!("running {tool}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .with_context(|| format!("writing rules to {tool}"))?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn socket(kind: SockType, flags: SockFlag, protocol: SockProtocol) -> Result<OwnedFd> {
    sock::socket(
        AddressFamily::Inet,
        kind,
        flags | SockFlag::SOCK_CLOEXEC,
        protocol,
    )
    .context("socket(2)")
}

/// One `sendto`; an error the kernel reports for the packet itself (EPERM from an
/// OUTPUT rule, an unreachable network) still means the packet was handled.
fn send_to(socket: &OwnedFd, bytes: &[u8], to: SocketAddrV4) -> Result<()> {
    match sock::sendto(
        socket.as_raw_fd(),
        bytes,
        &SockaddrIn::from(to),
        MsgFlags::empty(),
    ) {
        Ok(_) | Err(Errno::EPERM | Errno::ENETUNREACH | Errno::EHOSTUNREACH) => Ok(()),
        Err(Errno::ECONNREFUSED) => Ok(()),
        Err(e) => Err(e).context("sendto(2)"),
    }
}

fn connect_nonblocking(socket: &OwnedFd, to: SocketAddrV4) -> Result<()> {
    match sock::connect(socket.as_raw_fd(), &SockaddrIn::from(to)) {
        Ok(())
        | Err(
            Errno::EINPROGRESS
            | Errno::ECONNREFUSED
            | Errno::EPERM
            | Errno::ENETUNREACH
            | Errno::EHOSTUNREACH,
        ) => Ok(()),
        Err(e) => Err(e).context("connect(2)"),
    }
}

fn listener(protocol: Protocol, addr: Ipv4Addr, port: u16) -> Result<OwnedFd> {
    let socket = match protocol {
        Protocol::Tcp => socket(SockType::Stream, SockFlag::empty(), SockProtocol::Tcp)?,
        _ => socket(SockType::Datagram, SockFlag::empty(), SockProtocol::Udp)?,
    };
    sock::bind(
        socket.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(addr, port)),
    )
    .context("bind(2)")?;
    if protocol == Protocol::Tcp {
        sock::listen(&socket, Backlog::new(128)?).context("listen(2)")?;
    }
    Ok(socket)
}

/// An ICMP echo request with its checksum (raw sockets leave the checksum to us).
fn echo_request(seq: u16, payload: usize) -> Vec<u8> {
    let mut packet = vec![0u8; 8 + payload];
    packet[0] = 8;
    packet[4..6].copy_from_slice(&0x6473u16.to_be_bytes()); // "ds"
    packet[6..8].copy_from_slice(&seq.to_be_bytes());
    let sum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_checksum_verifies() {
        let packet = echo_request(7, 56);
        assert_eq!(packet[0], 8);
        // A packet that carries its own checksum sums to zero.
        assert_eq!(internet_checksum(&packet), 0);
        assert_eq!(internet_checksum(&[0x45, 0x00, 0x00, 0x1c]), !0x451c);
    }
}
