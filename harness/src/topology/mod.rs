//! Network namespaces, veth pairs, addresses, routes and sysctls for one scenario.
//!
//! Every host is an *anonymous* network namespace: a thread calls
//! `unshare(CLONE_NEWNET)` and opens `/proc/thread-self/ns/net`, and from then on the
//! namespace is held by that file descriptor alone. Nothing is mounted under
//! `/run/netns`, so when the process exits — even on SIGKILL — the kernel closes the fd
//! and reaps the namespace with every interface, address, route and firewall rule in
//! it. Dropping a [`Topology`] does the same thing earlier. (The kernel destroys
//! namespaces asynchronously, in a workqueue; nothing waits for it.)
//!
//! A namespace belongs to a *thread*, not to the process: [`Netns`] (in `netns.rs`)
//! is the handle, and runs a closure in a namespace on the calling thread, moving it back
//! afterwards.
//!
//! [`Topology::build`] uses one thread for the whole scenario (the caller's, which it
//! moves back to its own namespace at the end). That thread creates the
//! namespaces one after another, and while it stands in each one it writes the sysctls
//! that must precede any link and opens that host's netlink socket (a netlink socket
//! stays bound to the namespace it was created in, wherever the thread goes next).
//! With one socket per host in hand, a single current-thread tokio runtime then sends
//! the links, addresses and routes of all hosts in three batches, and finally the thread
//! enters each host that has sysctls of its own to write them. One thread, one runtime
//! and three batches of netlink requests per scenario, rather than a thread and a
//! runtime per host and a round trip per request, keep a two-host build near 2 ms, most
//! of it the kernel creating namespaces (about 0.35 ms each).
//!
//! Interface indexes are chosen here rather than by the kernel (`lo` is 1, then each
//! host numbers its interfaces from 2 in link order), so an address or route can name
//! its interface without first asking the kernel for it.

use crate::scenario::{Cidr, Endpoint, HostId, Scenario};
use futures::future::join_all;
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, State};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

pub mod change;
pub(crate) mod error;
mod loopback6;
mod neighbours;
mod routing;
mod sysctl;

pub mod netns;

pub use error::TopologyError;
pub use netns::Netns;

use netns::on_new_thread;
use sysctl::sysctl_path;

/// Sysctls every host gets before its first link exists, in this order.
///
/// IPv6 is off because a veth that comes up with IPv6 sends MLD reports about a second
/// later, and those are dropped and would show up in the drop counts. Unprivileged ICMP
/// "ping sockets" are allowed for every group because the traffic module uses them: a
/// raw-socket ping makes the kernel count every echo reply as a NO_SOCKET drop too.
const BASE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.disable_ipv6", "1"),
    ("net.ipv6.conf.default.disable_ipv6", "1"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

/// Set as well when a host has `forwarding = true`. Writing them before the links exist
/// makes new interfaces inherit forwarding from `conf.default`.
const FORWARDING_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.forwarding", "1"),
];

/// `lo` has index 1 in every new network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// The namespaces of one scenario, indexed like `Scenario::hosts`. Dropping it closes
/// the namespace fds, and the kernel removes everything in them.
#[derive(Debug)]
pub struct Topology {
    hosts: Vec<Netns>,
}

impl Topology {
    /// Creates one namespace per host and builds links, addresses, routes and sysctls
    /// in them. On error nothing is left behind: every namespace made so far is held
    /// only by an fd that the error path drops.
    ///
    /// This blocks for a few milliseconds while the calling thread does the work in the
    /// namespaces and then returns to its own (a thread of its own does it when called
    /// from within a tokio runtime, whose current-thread runtime below could not start
    /// there); from async code, call it through `spawn_blocking`.
    pub fn build(scenario: &Scenario) -> Result<Topology, TopologyError> {
        let doing = format!("building scenario `{}`", scenario.name);
        let hosts = if tokio::runtime::Handle::try_current().is_ok() {
            on_new_thread(&doing, "build", || build_here(scenario))??
        } else {
            netns::and_back(&doing, "build", || build_here(scenario))??
        };
        Ok(Topology { hosts })
    }

    pub fn host(&self, id: HostId) -> &Netns {
        &self.hosts[id]
    }

    pub fn hosts(&self) -> &[Netns] {
        &self.hosts
    }
}

/// The whole build (the thread ends in whichever namespace it entered
/// last).
fn build_here(scenario: &Scenario) -> Result<Vec<Netns>, TopologyError> {
    let plan = Plan::new(scenario);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|source| TopologyError::Runtime { source })?;
    let mut namespaces = Vec::with_capacity(scenario.hosts.len());
    let mut handles = Vec::with_capacity(scenario.hosts.len());
    for host in &scenario.hosts {
        let netns = Netns::unshare_here(&host.name)?;
        // This thread now stands in the new namespace: everything up to the netlink
        // socket happens there.
        let mut early: Vec<(&str, &str)> = BASE_SYSCTLS.to_vec();
        if host.forwarding {
            early.extend_from_slice(FORWARDING_SYSCTLS);
        }
        for (key, value) in early {
            write_sysctl(&host.name, key, value)?;
        }
        // The socket needs the runtime's reactor; its connection task runs whenever the
        // runtime is driven below.
        let _context = runtime.enter();
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| TopologyError::NetlinkSocket {
                host: host.name.clone(),
                source,
            })?;
        runtime.spawn(connection);
        namespaces.push(netns);
        handles.push(handle);
    }
    runtime.block_on(configure(scenario, &plan, &namespaces, &handles))?;
    configure_ipv6(scenario, &plan, &namespaces, &handles, &runtime)?;
    loopback6::add_addresses(scenario, &namespaces, &handles, &runtime)?;
    runtime.block_on(routing::install(scenario, &plan, &handles))?;
    neighbours::add_static(scenario, &plan, &handles, &runtime)?;
    for (host, netns) in scenario.hosts.iter().zip(&namespaces) {
        if host.sysctls.is_empty() {
            continue;
        }
        // /proc/sys/net shows the namespace of the task that opens the file.
        netns.enter_here()?;
        for (key, value) in &host.sysctls {
            write_sysctl(&host.name, key, value)?;
        }
    }
    Ok(namespaces)
}

/// Links and addresses for every host, in batches; each batch waits for the one before
/// (an address needs its interface). Routes and rules come after IPv6 (`routing`).
/// Within a batch, requests to one host are pipelined on its socket, which the kernel
/// handles in order.
async fn configure(
    scenario: &Scenario,
    plan: &Plan,
    namespaces: &[Netns],
    handles: &[Handle],
) -> Result<(), TopologyError> {
    let name = |id: HostId| scenario.hosts[id].name.as_str();

    let loopbacks = handles.iter().enumerate().map(|(id, handle)| async move {
        set_link_up(handle, LOOPBACK_INDEX)
            .await
            .map_err(|source| netlink_error(name(id), "bringing up `lo`".to_owned(), source))
    });
    let veths = scenario.links.iter().enumerate().map(|(l, link)| {
        let [a, b] = &link.ends;
        let indexes = [plan.index(l, 0), plan.index(l, 1)];
        async move {
            create_veth(&handles[a.host], [a, b], indexes, namespaces[b.host].fd())
                .await
                .map_err(|source| {
                    let action = format!(
                        "creating veth `{}` with its peer `{}` in host `{}`",
                        a.ifname,
                        b.ifname,
                        name(b.host)
                    );
                    netlink_error(name(a.host), action, source)
                })
        }
    });
    let (loopbacks, veths) = futures::join!(join_all(loopbacks), join_all(veths));
    first_error(loopbacks)?;
    first_error(veths)?;

    // The kernel opens a new veth's peer before pairing it, so a peer created up fails
    // with ENOTCONN; it is brought up here, from its own namespace.
    // An end written `up = false` stays down (and its peer without carrier).
    let peers_up = scenario
        .links
        .iter()
        .enumerate()
        .filter(|(_, link)| link.ends[1].up)
        .map(|(l, link)| {
            let peer = &link.ends[1];
            async move {
                set_link_up(&handles[peer.host], plan.index(l, 1))
                    .await
                    .map_err(|source| {
                        let action = format!("bringing up `{}`", peer.ifname);
                        netlink_error(name(peer.host), action, source)
                    })
            }
        });
    let addresses = scenario.links.iter().enumerate().flat_map(|(l, link)| {
        link.ends
            .iter()
            .enumerate()
            .map(move |(e, end)| async move {
                add_address(&handles[end.host], plan.index(l, e), end.addr)
                    .await
                    .map_err(|source| {
                        let action = format!("adding address {} to `{}`", end.addr, end.ifname);
                        netlink_error(name(end.host), action, source)
                    })
            })
    });
    let loopback_addresses = scenario.hosts.iter().enumerate().flat_map(|(id, host)| {
        host.addresses.iter().map(move |addr| async move {
            add_address(&handles[id], LOOPBACK_INDEX, *addr)
                .await
                .map_err(|source| {
                    let action = format!("adding address {addr} to `lo`");
                    netlink_error(name(id), action, source)
                })
        })
    });
    let (peers_up, addresses, loopback_addresses) = futures::join!(
        join_all(peers_up),
        join_all(addresses),
        join_all(loopback_addresses)
    );
    first_error(loopback_addresses)?;
    first_error(peers_up)?;
    first_error(addresses)?;

    // See `settle_link`: asking for each veth end by index makes the kernel finish its
    // carrier-on work now (or, where it does not, waits for it), so the links carry
    // traffic the moment `build` returns.
    let deadline = Instant::now() + SETTLE_LINK;
    let syncs = scenario.links.iter().enumerate().flat_map(|(l, link)| {
        let both_up = link.ends.iter().all(|end| end.up);
        link.ends
            .iter()
            .enumerate()
            .map(move |(e, end)| async move {
                let want = match (end.up, both_up) {
                    (false, _) => Settled::Any,
                    (true, true) => Settled::Up,
                    (true, false) => Settled::NoCarrier,
                };
                settle_link(&handles[end.host], plan.index(l, e), want, deadline)
                    .await
                    .map_err(|e| match e {
                        SettleError::Netlink(source) => {
                            let action = format!("reading back `{}`", end.ifname);
                            netlink_error(name(end.host), action, source)
                        }
                        SettleError::Still(now) => TopologyError::LinkNotSettled {
                            source: std::io::Error::other(format!(
                                "`{}` in host `{}` is still {now:?}, not {}, {} ms after \
                                 the link was made",
                                end.ifname,
                                name(end.host),
                                want.describe(),
                                SETTLE_LINK.as_millis()
                            )),
                        },
                    })
            })
    });
    first_error(join_all(syncs).await)?;
    Ok(())
}

/// Longest a new link may take to reach its final operstate. Where RTM_GETLINK does not
/// run linkwatch's work (5.10, 6.1) it runs at most a second after the previous batch,
/// on a kworker: on a TCG guest whose host is busy that took over 3 s once (5.10, a
/// whole-suite run beside two other guests and four busy loops). A kernel still
/// saying UNKNOWN is waited for, not a window: the run goes on only once it has decided.
const SETTLE_LINK: Duration = Duration::from_secs(10);

/// The first pause between two reads of a link end, doubled after each read up to
/// [`SETTLE_POLL_MAX`]: newer kernels answer the first read settled, and where the
/// kernel needs its kworker, polling every millisecond (each read takes the RTNL lock)
/// would only compete with it.
const SETTLE_POLL_FIRST: Duration = Duration::from_millis(1);
const SETTLE_POLL_MAX: Duration = Duration::from_millis(16);

/// The operstate a link end must read back before the build is done.
#[derive(Clone, Copy)]
enum Settled {
    /// Both ends are up: UP.
    Up,
    /// This end is up, its peer written `up = false`: anything but UP and the UNKNOWN of
    /// a device linkwatch has not seen yet (DOWN, LOWERLAYERDOWN).
    NoCarrier,
    /// This end is down: one read (the sync) is enough.
    Any,
}

impl Settled {
    fn reached(self, state: Option<State>) -> bool {
        match self {
            Settled::Up => state == Some(State::Up),
            Settled::NoCarrier => !matches!(state, Some(State::Up | State::Unknown) | None),
            Settled::Any => true,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Settled::Up => "UP",
            Settled::NoCarrier => "DOWN or LOWERLAYERDOWN",
            Settled::Any => "any state",
        }
    }
}

enum SettleError {
    Netlink(rtnetlink::Error),
    /// The deadline passed; the operstate last read.
    Still(Option<State>),
}

fn netlink_error(host: &str, action: String, source: rtnetlink::Error) -> TopologyError {
    TopologyError::Netlink {
        host: host.to_owned(),
        action,
        source: Box::new(source),
    }
}

/// The first error in scenario order, so a broken scenario always reports the same one.
fn first_error(results: Vec<Result<(), TopologyError>>) -> Result<(), TopologyError> {
    results.into_iter().collect()
}

async fn set_link_up(handle: &Handle, index: u32) -> Result<(), rtnetlink::Error> {
    let message = LinkUnspec::new_with_index(index).up().build();
    handle.link().set(message).execute().await
}

/// Creates a veth pair from the namespace of `ends[0]` (the handle's), with the peer
/// born directly in `peer_netns`: neither end ever appears in the root namespace. Each
/// end gets its planned interface index, its MTU and its txqueuelen; only the first is
/// created up, unless it is written `up = false` (see [`configure`] for the peer).
async fn create_veth(
    handle: &Handle,
    ends: [&Endpoint; 2],
    indexes: [u32; 2],
    peer_netns: BorrowedFd<'_>,
) -> Result<(), rtnetlink::Error> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(ends[1].ifname.clone())
        .index(indexes[1])
        .setns_by_fd(peer_netns.as_raw_fd());
    let mut veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(ends[0].ifname.clone())
        .index(indexes[0]);
    if ends[0].up {
        veth = veth.up();
    }
    if let Some(mtu) = ends[1].mtu {
        peer = peer.mtu(mtu);
    }
    if let Some(mtu) = ends[0].mtu {
        veth = veth.mtu(mtu);
    }
    if let Some(len) = ends[1].txqueuelen {
        peer = peer.txqueuelen(len);
    }
    if let Some(len) = ends[0].txqueuelen {
        veth = veth.txqueuelen(len);
    }
    let message = veth
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
        .build();
    handle.link().add(message).execute().await
}

/// Asks for one link by index until it reads back the operstate it will keep (`want`),
/// polling (1 ms, then doubling up to 16 ms) until `deadline`.
///
/// The veth end that comes up first has no carrier yet, so the kernel defers starting
/// its transmit queue to the "linkwatch" worker, which runs when the peer comes up but
/// asynchronously, after whatever holds the RTNL lock (on a busy machine, the teardown
/// of the previous scenario's namespaces). Until then the device drops every packet it
/// sends, and the first ARP request of a scenario would be lost and counted. A
/// non-dump RTM_GETLINK runs that pending work synchronously on kernels that have
/// `linkwatch_sync_dev` in `rtnl_getlink` (the kernel never reports a carrier it cannot
/// yet use), so there the first answer is final. 5.10 and 6.1 do not, and may run it up
/// to a second later (a veth whose ifindex equals its peer's, as in two namespaces, is
/// not an urgent event): the first ARP request then dies in the noop qdisc, or a
/// neighbour entry the traffic made is flushed with the pings queued on it
/// (`neigh_destroy`), both measured there. The answer's operstate shows when that work
/// is done: UNKNOWN until then. (This was `ip -o link show` per end, a process each: 2–4
/// ms a scenario on the host, far more under TCG.)
async fn settle_link(
    handle: &Handle,
    index: u32,
    want: Settled,
    deadline: Instant,
) -> Result<(), SettleError> {
    let mut pause = SETTLE_POLL_FIRST;
    loop {
        let mut state = None;
        let mut replies = handle.link().get().match_index(index).execute();
        while let Some(message) = replies.try_next().await.map_err(SettleError::Netlink)? {
            state = message.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::OperState(s) => Some(s),
                _ => None,
            });
        }
        if want.reached(state) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(SettleError::Still(state));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(SETTLE_POLL_MAX);
    }
}

async fn add_address(handle: &Handle, index: u32, addr: Cidr) -> Result<(), rtnetlink::Error> {
    handle
        .address()
        .add(index, IpAddr::V4(addr.addr), addr.prefix)
        .execute()
        .await
}

/// The interface index of every link end, per host: 2, 3, … in link order.
struct Plan {
    /// `[link][end]` → interface index in that end's host.
    indexes: Vec<[u32; 2]>,
    by_name: BTreeMap<(HostId, String), u32>,
}

impl Plan {
    fn new(scenario: &Scenario) -> Plan {
        let mut next = vec![LOOPBACK_INDEX + 1; scenario.hosts.len()];
        let mut by_name = BTreeMap::new();
        let indexes = scenario
            .links
            .iter()
            .map(|link| {
                link.ends.clone().map(|end| {
                    let index = next[end.host];
                    next[end.host] += 1;
                    by_name.insert((end.host, end.ifname), index);
                    index
                })
            })
            .collect();
        Plan { indexes, by_name }
    }

    fn index(&self, link: usize, end: usize) -> u32 {
        self.indexes[link][end]
    }

    fn index_by_name(&self, host: HostId, ifname: &str) -> Option<u32> {
        self.by_name.get(&(host, ifname.to_owned())).copied()
    }
}

/// Per-interface sysctls of a link that has IPv6, written before IPv6 is enabled on it.
///
/// `addr_gen_mode = 1` (none): no link-local address, so no duplicate address detection
/// for it, and no router solicitation (Linux sends those from the link-local address
/// once its DAD completes).
const IPV6_INTERFACE_SYSCTLS: &[(&str, &str)] = &[("addr_gen_mode", "1"), ("disable_ipv6", "0")];

/// Enables IPv6 on exactly the links whose ends declare `addr6`, without the background
/// packets that made dropspec turn IPv6 off everywhere.
///
/// Measured on 6.18 with two namespaces and bpftrace on `skb:kfree_skb`, over 4 s after
/// IPv6 comes up on a veth pair:
/// - with defaults: MLDv2 reports to ff02::16, DAD neighbour solicitations and router
///   solicitations to ff02::2, each dropped by the peer in `ip6_mc_input` (a host does not
///   join ff02::16 or ff02::2) — 6–7 NOT_SPECIFIED drops per host, the last ones about a
///   second later (MLD's unsolicited report interval);
/// - with `addr_gen_mode = 1`, `accept_ra = 0`, `router_solicitations = 0` and
///   `accept_dad = 0`: still 2 drops per host, the MLD reports for the global address's
///   solicited-node group (ff02::1:ffXX:XXXX), which every address joins and reports;
/// - with the interface NOARP as well: none. Linux joins no solicited-node group on a
///   NOARP device (`addrconf_join_solict`), and every group left (ff02::1, ff01::1) is
///   never reported; NOARP also skips DAD. `addr_gen_mode = 1` alone with NOARP is
///   enough (measured), so that is all dropspec sets.
///
/// A host with `forwarding = true` forwards IPv6 too (net.ipv6.conf.all.forwarding).
/// A forwarding interface joins the all-routers groups (ff02::2, ff05::2; `ipv6_add_dev`,
/// `dev_forward_change`) and reports ff02::2 in MLDv2 reports to ff02::16, which the peer
/// drops in `ip6_mc_input` (measured: 2 NOT_SPECIFIED drops per link, 2 of 2 runs; the
/// kernel sends no router advertisement, `Icmp6OutRouterAdvertisements` stays 0). Both
/// joins are made only on an interface with IFF_MULTICAST, so a forwarding host's IPv6
/// interfaces have multicast off, set before forwarding is turned on (a group joined
/// earlier, e.g. inherited from `conf.default.forwarding` when the interface is created,
/// would be reported when IPv6 comes up): measured quiet, 0 drops and 0 MLD reports.
/// Nothing on these links needs multicast: neighbours are permanent (below).
///
/// NOARP means no neighbour discovery and no ARP on that link, so both ends get
/// permanent neighbour entries for each other's IPv4 and IPv6 address. On an IPv6 link
/// the first packet therefore needs no ARP exchange: this is the one way such a link
/// differs from an IPv4-only one. Addresses are added with IFA_F_NODAD.
fn configure_ipv6(
    scenario: &Scenario,
    plan: &Plan,
    namespaces: &[Netns],
    handles: &[Handle],
    runtime: &tokio::runtime::Runtime,
) -> Result<(), TopologyError> {
    let ends: Vec<(usize, usize)> = scenario
        .links
        .iter()
        .enumerate()
        .filter(|(_, link)| link.ends.iter().all(|e| e.addr6.is_some()))
        .flat_map(|(l, _)| [(l, 0), (l, 1)])
        .collect();
    if ends.is_empty() {
        return Ok(());
    }
    let name = |id: HostId| scenario.hosts[id].name.as_str();
    let end = |(l, e): (usize, usize)| &scenario.links[l].ends[e];

    let macs = runtime.block_on(async {
        let noarp = ends.iter().map(|&(l, e)| async move {
            let endpoint = end((l, e));
            let forwards = scenario.hosts[endpoint.host].forwarding;
            set_link_quiet(&handles[endpoint.host], plan.index(l, e), forwards)
                .await
                .map_err(|source| {
                    let action = format!("turning ARP off on `{}`", endpoint.ifname);
                    netlink_error(name(endpoint.host), action, source)
                })
        });
        let macs = ends.iter().map(|&(l, e)| async move {
            let endpoint = end((l, e));
            link_mac(&handles[endpoint.host], plan.index(l, e))
                .await
                .map_err(|source| {
                    let action = format!("reading the MAC address of `{}`", endpoint.ifname);
                    netlink_error(name(endpoint.host), action, source)
                })
        });
        let (noarp, macs) = futures::join!(join_all(noarp), join_all(macs));
        first_error(noarp)?;
        macs.into_iter().collect::<Result<Vec<Vec<u8>>, _>>()
    })?;
    let mac_of = |(l, e): (usize, usize)| {
        let at = ends
            .iter()
            .position(|&x| x == (l, e))
            .expect("both ends of an IPv6 link are listed");
        macs[at].as_slice()
    };

    // /proc/sys/net shows the namespace of the task that opens the file.
    for &(l, e) in &ends {
        let endpoint = end((l, e));
        namespaces[endpoint.host].enter_here()?;
        for (key, value) in IPV6_INTERFACE_SYSCTLS {
            let key = format!("net.ipv6.conf.{}.{key}", endpoint.ifname);
            write_sysctl(name(endpoint.host), &key, value)?;
        }
    }
    // IPv6 forwarding comes last, once multicast is off on the host's IPv6 links, so
    // that the interfaces never join the all-routers groups (see above).
    let mut forwarders: Vec<HostId> = ends.iter().map(|&le| end(le).host).collect();
    forwarders.retain(|&h| scenario.hosts[h].forwarding);
    forwarders.sort_unstable();
    forwarders.dedup();
    for host in forwarders {
        namespaces[host].enter_here()?;
        for (key, value) in IPV6_FORWARDING_SYSCTLS {
            write_sysctl(name(host), key, value)?;
        }
    }

    runtime.block_on(async {
        let requests = ends.iter().map(|&(l, e)| async move {
            let endpoint = end((l, e));
            let peer = end((l, 1 - e));
            let handle = &handles[endpoint.host];
            let index = plan.index(l, e);
            let addr6 = endpoint.addr6.expect("IPv6 ends have addr6");
            add_address_nodad(handle, index, addr6)
                .await
                .map_err(|source| {
                    let action = format!("adding address {addr6} to `{}`", endpoint.ifname);
                    netlink_error(name(endpoint.host), action, source)
                })?;
            let peer_mac = mac_of((l, 1 - e));
            let peer_v6 = IpAddr::V6(peer.addr6.expect("IPv6 ends have addr6").addr);
            for destination in [IpAddr::V4(peer.addr.addr), peer_v6] {
                add_permanent_neighbour(handle, index, destination, peer_mac)
                    .await
                    .map_err(|source| {
                        let action = format!(
                            "adding a permanent neighbour {destination} on `{}`",
                            endpoint.ifname
                        );
                        netlink_error(name(endpoint.host), action, source)
                    })?;
            }
            Ok(())
        });
        first_error(join_all(requests).await)
    })?;

    // Linux installs an IPv6 address's local route from addrconf's DAD work item, which
    // runs even for a NODAD address, after RTM_NEWADDR has already been answered. Until
    // it has run, a packet to the address is not local: it goes to ip6_forward and, with
    // forwarding off, dies as IP_INADDRERRORS in ip6_forward (seen while recording the
    // snapshots; in one build out of thirty the address was not yet local when the
    // build ended). So the build waits until `route get` says local.
    let started = std::time::Instant::now();
    // A down end's addresses become local only when it comes up: nothing to wait for.
    for &(l, e) in ends.iter().filter(|&&end_at| end(end_at).up) {
        let endpoint = end((l, e));
        let addr = endpoint.addr6.expect("IPv6 ends have addr6").addr;
        loop {
            let local = runtime
                .block_on(address_is_local(&handles[endpoint.host], addr))
                .map_err(|source| {
                    let action = format!("asking for the route to {addr}");
                    netlink_error(name(endpoint.host), action, source)
                })?;
            if local {
                break;
            }
            if started.elapsed() > IPV6_READY_TIMEOUT {
                return Err(TopologyError::Ipv6AddressNotReady {
                    host: name(endpoint.host).to_owned(),
                    addr: addr.to_string(),
                    waited_ms: IPV6_READY_TIMEOUT.as_millis() as u64,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Written in a forwarding host once its IPv6 interfaces are quiet (see [`configure_ipv6`]).
const IPV6_FORWARDING_SYSCTLS: &[(&str, &str)] = &[("net.ipv6.conf.all.forwarding", "1")];

/// How long the build waits for the kernel to make new IPv6 addresses local. The wait
/// ends as soon as the local route is there; the kernel adds it from a workqueue
/// (addrconf), which on a machine with four busy loops and two TCG guests on two cores
/// once took more than 2 s (`malformed/dst_mac_v6`), so the cap is only a bound.
const IPV6_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `route get ADDR` answers with a local route (RTN_LOCAL).
async fn address_is_local(
    handle: &Handle,
    addr: std::net::Ipv6Addr,
) -> Result<bool, rtnetlink::Error> {
    use rtnetlink::packet_route::route::RouteType;
    let message = RouteMessageBuilder::<std::net::Ipv6Addr>::new()
        .destination_prefix(addr, 128)
        .build();
    let mut replies = handle.route().get(message).execute();
    let mut local = false;
    while let Some(route) = replies.try_next().await? {
        local |= route.header.kind == RouteType::Local;
    }
    Ok(local)
}

/// NOARP, and on a host that forwards also no multicast (see [`configure_ipv6`]).
async fn set_link_quiet(
    handle: &Handle,
    index: u32,
    forwards: bool,
) -> Result<(), rtnetlink::Error> {
    let mut message = LinkUnspec::new_with_index(index).arp(false);
    if forwards {
        message = message.multicast(false);
    }
    handle.link().set(message.build()).execute().await
}

/// The link-layer address of one interface, as the kernel reports it.
pub(super) async fn link_mac(handle: &Handle, index: u32) -> Result<Vec<u8>, rtnetlink::Error> {
    use rtnetlink::packet_route::link::LinkAttribute;
    let mut replies = handle.link().get().match_index(index).execute();
    let mut mac = Vec::new();
    while let Some(message) = replies.try_next().await? {
        for attribute in message.attributes {
            if let LinkAttribute::Address(bytes) = attribute {
                mac = bytes;
            }
        }
    }
    Ok(mac)
}

/// Like `ip -6 address add … nodad`.
async fn add_address_nodad(
    handle: &Handle,
    index: u32,
    addr: crate::scenario::Cidr6,
) -> Result<(), rtnetlink::Error> {
    use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
    let mut request = handle
        .address()
        .add(index, IpAddr::V6(addr.addr), addr.prefix);
    let message = request.message_mut();
    message.header.flags = AddressHeaderFlags::Nodad;
    message
        .attributes
        .push(AddressAttribute::Flags(AddressFlags::Nodad));
    request.execute().await
}

/// Like `ip neigh replace DESTINATION lladdr MAC dev … nud permanent`.
pub(super) async fn add_permanent_neighbour(
    handle: &Handle,
    index: u32,
    destination: IpAddr,
    mac: &[u8],
) -> Result<(), rtnetlink::Error> {
    handle
        .neighbours()
        .add(index, destination)
        .link_layer_address(mac)
        .replace()
        .execute()
        .await
}

/// Writes one sysctl of the namespace the calling thread stands in.
fn write_sysctl(host: &str, key: &str, value: &str) -> Result<(), TopologyError> {
    let path = sysctl_path(key).ok_or_else(|| TopologyError::SysctlKey {
        host: host.to_owned(),
        key: key.to_owned(),
    })?;
    // No O_CREAT: a missing sysctl must say ENOENT, not EACCES.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|source| TopologyError::Sysctl {
            host: host.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_numbered_per_host_from_two_in_link_order() {
        let text = r#"
            description = "router"
            [hosts.a]
            [hosts.r]
            forwarding = true
            [hosts.b]
            [[links]]
            a = { host = "a", addr = "198.18.0.1/24" }
            b = { host = "r", addr = "198.18.0.254/24" }
            [[links]]
            a = { host = "r", addr = "198.18.1.254/24" }
            b = { host = "b", addr = "198.18.1.1/24", name = "up0" }
        "#;
        let scenario = crate::scenario::parse(
            text,
            std::path::Path::new("router.toml"),
            "router",
            std::path::Path::new("."),
        )
        .expect("valid scenario");
        let plan = Plan::new(&scenario);
        let ids: BTreeMap<&str, HostId> = scenario
            .hosts
            .iter()
            .enumerate()
            .map(|(id, h)| (h.name.as_str(), id))
            .collect();
        assert_eq!(plan.index(0, 0), 2); // a/eth0
        assert_eq!(plan.index(0, 1), 2); // r/eth0
        assert_eq!(plan.index(1, 0), 3); // r/eth1
        assert_eq!(plan.index(1, 1), 2); // b/up0
        assert_eq!(plan.index_by_name(ids["r"], "eth1"), Some(3));
        assert_eq!(plan.index_by_name(ids["b"], "up0"), Some(2));
        assert_eq!(plan.index_by_name(ids["a"], "up0"), None);
    }
}
