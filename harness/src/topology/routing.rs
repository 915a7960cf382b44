//! Routes and policy rules, of either family, as `ip route` and `ip rule` add them,
//! each sent over the host's own netlink socket (so inside its namespace).
//!
//! They are added after every address (IPv4 and IPv6): a gateway must be on a connected
//! subnet and a preferred source one of the host's addresses, or the kernel refuses the
//! route.

use rtnetlink::packet_route::route::{RouteScope, RouteType};
use rtnetlink::packet_route::rule::RuleAction;
use rtnetlink::packet_route::rule::RuleAttribute;
use rtnetlink::{Handle, RouteMessageBuilder};
use std::net::IpAddr;

use super::{first_error, netlink_error, Plan, TopologyError};
use crate::scenario::{Family, HostId, Route, RouteKind, Rule, Scenario};

/// Every host's routes, then every host's rules (a rule may name a table that only a
/// route creates).
pub(super) async fn install(
    scenario: &Scenario,
    plan: &Plan,
    handles: &[Handle],
) -> Result<(), TopologyError> {
    let name = |id: HostId| scenario.hosts[id].name.as_str();
    let routes = scenario
        .hosts
        .iter()
        .enumerate()
        .map(|(id, host)| async move {
            // One host's routes in file order: a later route may lean on an earlier one.
            for route in &host.routes {
                let dev = match route.dev.as_deref() {
                    None => None,
                    Some(dev) => Some(plan.index_by_name(id, dev).ok_or_else(|| {
                        TopologyError::UnknownInterface {
                            host: name(id).to_owned(),
                            ifname: dev.to_owned(),
                        }
                    })?),
                };
                add_route(&handles[id], route, dev)
                    .await
                    .map_err(|source| {
                        netlink_error(name(id), format!("adding route {route}"), source)
                    })?;
            }
            Ok(())
        });
    first_error(futures::future::join_all(routes).await)?;
    let rules = scenario
        .hosts
        .iter()
        .enumerate()
        .map(|(id, host)| async move {
            for rule in &host.rules {
                add_rule(&handles[id], rule).await.map_err(|source| {
                    netlink_error(name(id), format!("adding rule {rule}"), source)
                })?;
            }
            Ok(())
        });
    first_error(futures::future::join_all(rules).await)
}

/// Like `ip route add`: a unicast route without a gateway gets link scope; blackhole,
/// unreachable, prohibit and throw routes need no interface.
async fn add_route(
    handle: &Handle,
    route: &Route,
    dev_index: Option<u32>,
) -> Result<(), rtnetlink::Error> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new();
    // The family comes from the first address set; a default route without one says it.
    let default = match route.family {
        Family::Ipv4 => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    builder = match route.destination {
        Some(d) => builder.destination_prefix(d.addr, d.len),
        None => builder.destination_prefix(default, 0),
    }
    .map_err(invalid)?;
    if let Some(via) = route.via {
        builder = builder.gateway(via).map_err(invalid)?;
    } else if route.kind == RouteKind::Unicast {
        builder = builder.scope(RouteScope::Link);
    }
    if let Some(src) = route.src {
        builder = builder.pref_source(src).map_err(invalid)?;
    }
    if let Some(index) = dev_index {
        builder = builder.output_interface(index);
    }
    if let Some(metric) = route.metric {
        builder = builder.priority(metric);
    }
    let kind = match route.kind {
        RouteKind::Unicast => RouteType::Unicast,
        RouteKind::Blackhole => RouteType::BlackHole,
        RouteKind::Unreachable => RouteType::Unreachable,
        RouteKind::Prohibit => RouteType::Prohibit,
        RouteKind::Throw => RouteType::Throw,
    };
    let message = builder.kind(kind).table_id(route.table).build();
    handle.route().add(message).execute().await
}

/// A route the builder refused (a family mix-up the validator should have caught).
fn invalid(e: impl std::fmt::Display) -> rtnetlink::Error {
    rtnetlink::Error::InvalidNla(e.to_string())
}

/// Like `ip rule add … table T`.
async fn add_rule(handle: &Handle, rule: &Rule) -> Result<(), rtnetlink::Error> {
    let mut request = handle
        .rule()
        .add()
        .action(RuleAction::ToTable)
        .table_id(rule.table);
    if let Some(priority) = rule.priority {
        request = request.priority(priority);
    }
    if let Some(iif) = &rule.iif {
        request = request.input_interface(iif.clone());
    }
    if let Some((mark, mask)) = rule.fwmark {
        request = request.fw_mark(mark);
        request
            .message_mut()
            .attributes
            .push(RuleAttribute::FwMask(mask));
    }
    match rule.family {
        Family::Ipv4 => {
            let mut request = request.v4();
            if let Some(from) = rule.from {
                if let IpAddr::V4(a) = from.addr {
                    request = request.source_prefix(a, from.len);
                }
            }
            if let Some(to) = rule.to {
                if let IpAddr::V4(a) = to.addr {
                    request = request.destination_prefix(a, to.len);
                }
            }
            request.execute().await
        }
        Family::Ipv6 => {
            let mut request = request.v6();
            if let Some(from) = rule.from {
                if let IpAddr::V6(a) = from.addr {
                    request = request.source_prefix(a, from.len);
                }
            }
            if let Some(to) = rule.to {
                if let IpAddr::V6(a) = to.addr {
                    request = request.destination_prefix(a, to.len);
                }
            }
            request.execute().await
        }
    }
}
