//! The second pass: checks what serde cannot (host references, address ranges, port
//! presence, exactly one rule source per fault) and builds the [`Scenario`] model from
//! the `raw` structs, with every error pointing at the file, line and column.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::Path;

use super::model::*;
use super::raw::{self, Spanned};
use super::routing::Family;
use super::ScenarioError;
use crate::vocab::{Corruption, HookPoint, TCP_ACK, TCP_PSH, TCP_SYN};

mod fragments;
mod sockets;
mod steps;
pub use command::ALLOWED as COMMAND_PROGRAMS;
pub use steps::MAX_WAIT_MS;

/// Upper bound on packets one traffic entry may send: traffic loops are bounded by design.
pub const MAX_COUNT: u32 = 10_000;
/// The largest UDP or ICMP echo payload in one IPv4 datagram: 65,535 minus the IPv4
/// header (20) and the UDP or ICMP header (8).
pub const MAX_TRAFFIC_PAYLOAD: usize = 65_507;
/// Upper bound on how long one attempt may wait for an answer.
pub const MAX_TIMEOUT_MS: u64 = 5_000;
mod command;
mod link_counter;
mod links;
mod qdisc;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// What a numeric key takes, in the format's words. One table for the reader's type
/// errors ("`count` must be …, not \"3\"") and the validator's range errors.
pub(super) fn takes(key: &str) -> Option<String> {
    let ms = |lo: u64| {
        format!(
            "a whole number of milliseconds from {lo} to {}",
            grouped(MAX_TIMEOUT_MS)
        )
    };
    Some(match key {
        "count" => whole(1, MAX_COUNT.into()),
        "port" | "source_port" => "a port number from 1 to 65,535".to_owned(),
        "timeout_ms" => ms(1),
        "settle_ms" => ms(0),
        "wait_ms" => ms(1),
        "mtu" => "a whole number from 68 (the IPv4 minimum) to 65,535".to_owned(),
        "ttl" => whole(1, 255),
        "payload" => format!(
            "a whole number of bytes from 0 to {} (the largest UDP or ICMP payload over IPv4; the sender's kernel fragments what exceeds the link MTU)",
            grouped(MAX_TRAFFIC_PAYLOAD as u64)
        ),
        "ip" => "4 or 6".to_owned(),
        _ => return None,
    })
}

/// "`count` must be a whole number from 1 to 10,000, not 0".
fn must(key: &str, value: impl std::fmt::Display) -> String {
    let takes = takes(key).expect("a key with a range in `takes`");
    format!("`{key}` must be {takes}, not {value}")
}

/// "a whole number from 1 to 10,000".
pub(super) fn whole(lo: u64, hi: u64) -> String {
    format!("a whole number from {} to {}", grouped(lo), grouped(hi))
}

/// 10000 → "10,000".
pub(super) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Turns byte spans into `file:line:column` errors.
pub(super) struct Locator<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Locator<'_> {
    /// 1-based line and column of a byte offset.
    pub(super) fn position(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
            .chars()
            .count()
            + 1;
        (line, column)
    }

    pub(super) fn error(&self, span: Range<usize>, message: impl Into<String>) -> ScenarioError {
        let (line, column) = self.position(span.start);
        ScenarioError {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }
}

pub(super) struct Validator<'a> {
    pub(super) at: Locator<'a>,
    pub(super) fixtures: &'a Path,
    pub(super) name: &'a str,
    pub(super) host_ids: BTreeMap<String, HostId>,
    pub(super) kernel_names: Vec<KernelName>,
    /// Problems found so far; validation goes on after one, to report them all.
    pub(super) errors: RefCell<Vec<ScenarioError>>,
}

impl Validator<'_> {
    /// Records a problem and goes on, so that one pass finds all of a file's problems.
    fn note(&self, error: ScenarioError) {
        self.errors.borrow_mut().push(error);
    }

    /// The value, or `None` with its problem recorded.
    fn keep<T>(&self, result: Result<T, ScenarioError>) -> Option<T> {
        result.map_err(|e| self.note(e)).ok()
    }

    pub(super) fn validate(
        mut self,
        raw: raw::ScenarioFile,
    ) -> Result<Scenario, Vec<ScenarioError>> {
        if raw.hosts.is_empty() {
            // Every other reference would be to an unknown host: this one error says it.
            return Err(vec![self.at.error(
                0..0,
                "the scenario declares no hosts: add at least one `[hosts.NAME]` table",
            )]);
        }
        let mut hosts = Vec::new();
        let mut route_devs = Vec::new();
        let mut neighbours = Vec::new();
        for (name, mut spec) in raw.hosts {
            self.keep(self.check_host_name(&name));
            let id = hosts.len();
            self.host_ids.insert(name.get_ref().clone(), id);
            route_devs.extend(
                spec.routes
                    .iter()
                    .filter_map(|r| r.dev.clone())
                    .chain(spec.rules.iter().filter_map(|r| r.iif.clone()))
                    .map(|dev| (id, dev)),
            );
            neighbours.extend(
                std::mem::take(&mut spec.neighbours)
                    .into_iter()
                    .map(|n| links::PendingNeighbour::Host(id, n)),
            );
            let host = self.host(name.clone(), spec);
            hosts.push(self.keep(host).unwrap_or_else(|| Host {
                name: name.into_inner(),
                forwarding: false,
                sysctls: BTreeMap::new(),
                routes: Vec::new(),
                addresses: Vec::new(),
                addresses6: Vec::new(),
                rules: Vec::new(),
                neighbours: Vec::new(),
            }));
        }
        let links = self.links(raw.links, &hosts, &mut neighbours);
        self.neighbours(neighbours, &links, &mut hosts);
        // Routes name interfaces, so they are checked once the links are known.
        for (id, dev) in route_devs {
            if dev.get_ref() == "lo" {
                continue;
            }
            let end = links
                .iter()
                .flat_map(|l| l.ends.iter())
                .find(|e| e.host == id && &e.ifname == dev.get_ref());
            match end {
                None => self.note(self.at.error(
                    dev.span(),
                    format!(
                        "host `{}` has a route or rule naming `{}`, but no link gives it an interface of that name",
                        hosts[id].name,
                        dev.get_ref()
                    ),
                )),
                // fib_check_nh_nongw: "Nexthop device is not up" (ENETDOWN).
                Some(end) if !end.up => self.note(self.at.error(
                    dev.span(),
                    format!(
                        "host `{}` has a route through `{}`, which is down (`up = false`): Linux refuses a route through a down interface",
                        hosts[id].name,
                        dev.get_ref()
                    ),
                )),
                Some(_) => {}
            }
        }
        // Steps name entries by index in the file, so failed entries keep their place
        // (None) until the steps are resolved.
        let fault_names: Vec<_> = raw.faults.iter().map(|f| f.name.clone()).collect();
        let fault_spans: Vec<_> = raw.faults.iter().map(|f| f.host.span()).collect();
        let mut faults: Vec<Option<Fault>> = raw
            .faults
            .into_iter()
            .map(|f| {
                let fault = self.fault(f, &links, &hosts);
                self.keep(fault)
            })
            .collect();
        let traffic_names: Vec<_> = raw.traffic.iter().map(|t| t.name.clone()).collect();
        let traffic_spans: Vec<_> = raw.traffic.iter().map(|t| t.from.span()).collect();
        let receiver_written: Vec<bool> =
            raw.traffic.iter().map(|t| t.receiver.is_some()).collect();
        let mut traffic: Vec<Option<Traffic>> = raw
            .traffic
            .into_iter()
            .map(|t| {
                let traffic = self.traffic(t, &links);
                self.keep(traffic)
            })
            .collect();
        let packet_names: Vec<_> = raw.packets.iter().map(|p| p.name.clone()).collect();
        let packet_spans: Vec<_> = raw.packets.iter().map(|p| p.from.span()).collect();
        let mut packets: Vec<Option<PacketEntry>> = raw
            .packets
            .into_iter()
            .map(|p| {
                let packet = self.packet(p, &links);
                self.keep(packet)
            })
            .collect();
        let steps = self.steps(
            raw.steps,
            steps::Named {
                kind: "traffic",
                names: traffic_names,
                built: &mut traffic,
            },
            &traffic_spans,
            steps::Named {
                kind: "packets",
                names: packet_names,
                built: &mut packets,
            },
            &packet_spans,
            steps::Named {
                kind: "faults",
                names: fault_names,
                built: &mut faults,
            },
            &fault_spans,
            &receiver_written,
            &links,
        );
        let faults: Vec<Fault> = faults.into_iter().flatten().collect();
        let traffic: Vec<Traffic> = traffic.into_iter().flatten().collect();
        let packets: Vec<PacketEntry> = packets.into_iter().flatten().collect();
        let program_names: Vec<String> = raw
            .programs
            .iter()
            .map(|p| p.program.get_ref().clone())
            .collect();
        for e in &raw.expect.datapath {
            if let Some(name) = &e.program {
                if !program_names.contains(name.get_ref()) {
                    let known: Vec<&str> = program_names.iter().map(String::as_str).collect();
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "no `[[programs]]` entry loads a program named `{}`{}",
                            name.get_ref(),
                            did_you_mean(name.get_ref(), &known)
                        ),
                    ));
                }
            }
        }
        let programs: Vec<Program> = raw
            .programs
            .into_iter()
            .filter_map(|p| {
                let program = self.program(p, &links);
                self.keep(program).flatten()
            })
            .collect();
        let expect = self.expectations(raw.expect, &faults, &hosts, &links);
        let kernel_names = std::mem::take(&mut self.kernel_names);
        let settle_min_ms = match raw.settle_ms {
            Some(ms) if *ms.get_ref() > MAX_TIMEOUT_MS => {
                self.note(self.at.error(ms.span(), must("settle_ms", ms.get_ref())));
                0
            }
            Some(ms) => ms.into_inner(),
            None => 0,
        };
        let mut global_sysctls = BTreeMap::new();
        for (key, value) in raw.global_sysctls {
            if !crate::vocab::GLOBAL_SYSCTLS.contains(&key.get_ref().as_str()) {
                self.note(self.at.error(
                    key.span(),
                    format!(
                        "`{}` cannot be set as a global sysctl (supported: {}); per-namespace sysctls go in `[hosts.NAME] sysctls`",
                        key.get_ref(),
                        crate::vocab::GLOBAL_SYSCTLS.join(", ")
                    ),
                ));
                continue;
            }
            let span = value.span();
            let value = match value.into_inner() {
                raw::SysctlValue::Int(i) if i > 0 => i.to_string(),
                _ => {
                    self.note(
                        self.at
                            .error(span, "the value must be a positive whole number"),
                    );
                    continue;
                }
            };
            global_sysctls.insert(key.into_inner(), value);
        }
        let mut errors = self.errors.into_inner();
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line, e.column));
            return Err(errors);
        }
        Ok(Scenario {
            global_sysctls,
            name: self.name.to_owned(),
            path: self.at.path.to_owned(),
            description: raw.description,
            hosts,
            links,
            faults,
            traffic,
            packets,
            expect,
            settle_min_ms,
            kernel_names,
            programs,
            steps,
        })
    }

    /// The program, or Ok(None) when errors were noted already (all of them, not the first).
    fn program(
        &self,
        spec: raw::Program,
        links: &[Link],
    ) -> Result<Option<Program>, ScenarioError> {
        let host = self.host_ref(&spec.host)?;
        let interface = spec.interface.get_ref();
        let known: Vec<&str> = links
            .iter()
            .flat_map(|l| l.ends.iter())
            .filter(|e| e.host == host)
            .map(|e| e.ifname.as_str())
            .collect();
        let mut ok = true;
        if !known.contains(&interface.as_str()) {
            ok = false;
            self.note(self.at.error(
                spec.interface.span(),
                format!(
                    "host `{}` has no interface `{interface}`{} (its interfaces: {})",
                    spec.host.get_ref(),
                    did_you_mean(interface, &known),
                    known.join(", ")
                ),
            ));
        }
        let attach = Attach::ALL
            .into_iter()
            .find(|a| a.as_str() == spec.attach.get_ref())
            .ok_or_else(|| {
                let names: Vec<&str> = Attach::ALL.iter().map(|a| a.as_str()).collect();
                self.at.error(
                    spec.attach.span(),
                    format!(
                        "attach `{}` is not a place dropspec attaches programs{}: use one of {}",
                        spec.attach.get_ref(),
                        did_you_mean(spec.attach.get_ref(), &names),
                        names.join(", ")
                    ),
                )
            });
        let attach = self.keep(attach);
        if spec.object.get_ref().trim().is_empty() {
            ok = false;
            self.note(self.at.error(
                spec.object.span(),
                "object must name a compiled eBPF ELF file, relative to the scenario or fixtures/",
            ));
        }
        let mut prefill = Vec::new();
        for p in spec.prefill {
            let key = self.keep(self.map_bytes(&p.key));
            let value = self.keep(self.map_bytes(&p.value));
            if let (Some(key), Some(value)) = (key, value) {
                prefill.push(Prefill {
                    map: p.map.into_inner(),
                    key,
                    value,
                });
            } else {
                ok = false;
            }
        }
        let metrics = spec.metrics.map(|m| self.metrics_spec(m));
        let events = spec.events.map(|e| self.events_spec(e));
        let declared = metrics.is_some() || events.is_some();
        let metrics_ok = metrics.as_ref().is_none_or(Result::is_ok);
        let events_ok = events.as_ref().is_none_or(Result::is_ok);
        let metrics = self.keep(metrics.transpose()).flatten();
        let events = self.keep(events.transpose()).flatten();
        ok &= metrics_ok && events_ok;
        if !declared {
            return Err(self.at.error(
                spec.program.span(),
                "a program under test declares how it reports its drops: add `metrics = { map = \"…\", kind = \"retina\" }` or `events = { map = \"…\", kind = \"perf_event_array\", … }`",
            ));
        }
        let mut reasons = BTreeMap::new();
        for (code, name) in spec.reasons {
            let Ok(number) = code.get_ref().parse::<u32>() else {
                return Err(self.at.error(
                    code.span(),
                    format!(
                        "`{}` is not a drop code: the keys of `reasons` are the program's own numbers, e.g. {{ 133 = \"DROP_POLICY\" }}",
                        code.get_ref()
                    ),
                ));
            };
            reasons.insert(number, name);
        }
        // Errors found above are noted already: None says "no program", nothing more.
        let Some(attach) = attach else {
            return Ok(None);
        };
        if !ok {
            return Ok(None);
        }
        Ok(Some(Program {
            host,
            interface: interface.clone(),
            attach,
            object: spec.object.into_inner(),
            program: spec.program.into_inner(),
            prefill,
            metrics,
            events,
            reasons,
        }))
    }

    fn metrics_spec(&self, m: Spanned<raw::Metrics>) -> Result<Metrics, ScenarioError> {
        let span = m.span();
        let m = m.into_inner();
        let kind = match m.kind.as_str() {
                "retina" => MetricsKind::Retina,
                "per_cpu_array" => MetricsKind::PerCpuArray,
                other => {
                    return Err(self.at.error(
                        span,
                        format!(
                            "metrics kind `{other}` is not known: use \"retina\" (per-CPU hash {{drop_type u32, return_val u32}} -> {{count u64, bytes u64}}) or \"per_cpu_array\" (u64 counters indexed by drop code)"
                        ),
                    ))
                }
            };
        Ok(Metrics { map: m.map, kind })
    }

    fn events_spec(&self, e: Spanned<raw::Events>) -> Result<Events, ScenarioError> {
        let span = e.span();
        let e = e.into_inner();
        let kind = match e.kind.as_str() {
            "perf_event_array" => EventsKind::PerfEventArray,
            "ringbuf" => EventsKind::RingBuf,
            other => {
                return Err(self.at.error(
                    span,
                    format!(
                    "events kind `{other}` is not known: use \"perf_event_array\" or \"ringbuf\""
                ),
                ))
            }
        };
        if ![1, 2, 4].contains(&e.reason_size) {
            return Err(self.at.error(
                span,
                format!("reason_size {} is not 1, 2 or 4 bytes", e.reason_size),
            ));
        }
        Ok(Events {
            map: e.map,
            kind,
            type_offset: e.type_offset as usize,
            type_value: e.type_value,
            reason_offset: e.reason_offset as usize,
            reason_size: e.reason_size as usize,
            packet_offset: e.packet_offset.map(|o| o as usize),
        })
    }

    /// A prefill key or value: hex bytes in order, or u8/u16/u32/u64 fields in host order.
    fn map_bytes(&self, spec: &Spanned<raw::MapBytes>) -> Result<Vec<u8>, ScenarioError> {
        let field = |f: &raw::MapField| -> Result<Vec<u8>, ScenarioError> {
            let parts: Vec<Vec<u8>> = [
                f.u8.map(|v| v.to_ne_bytes().to_vec()),
                f.u16.map(|v| v.to_ne_bytes().to_vec()),
                f.u32.map(|v| v.to_ne_bytes().to_vec()),
                f.u64.map(|v| v.to_ne_bytes().to_vec()),
            ]
            .into_iter()
            .flatten()
            .collect();
            match <[Vec<u8>; 1]>::try_from(parts) {
                Ok([bytes]) => Ok(bytes),
                Err(_) => Err(self.at.error(
                    spec.span(),
                    "each field is exactly one of { u8 = … }, { u16 = … }, { u32 = … }, { u64 = … }",
                )),
            }
        };
        match spec.get_ref() {
            raw::MapBytes::Hex(text) => {
                let digits = text.strip_prefix("0x").unwrap_or(text);
                if digits.is_empty() || digits.len() % 2 != 0 {
                    return Err(self.at.error(
                        spec.span(),
                        format!(
                            "`{text}` should be hex bytes, two digits each, e.g. \"0x07000000\""
                        ),
                    ));
                }
                (0..digits.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
                    .collect::<Result<Vec<u8>, _>>()
                    .map_err(|_| {
                        self.at.error(
                            spec.span(),
                            format!("`{text}` should be hex bytes, two digits each, e.g. \"0x07000000\""),
                        )
                    })
            }
            raw::MapBytes::Field(f) => field(f),
            raw::MapBytes::Fields(fields) => {
                let mut bytes = Vec::new();
                for f in fields {
                    bytes.extend(field(f)?);
                }
                Ok(bytes)
            }
        }
    }

    fn check_host_name(&self, name: &Spanned<String>) -> Result<(), ScenarioError> {
        let valid = !name.get_ref().is_empty()
            && name.get_ref().len() <= 32
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(())
        } else {
            Err(self.at.error(
                name.span(),
                format!(
                    "host name `{}` must be 1–32 characters of letters, digits, `-` or `_`",
                    name.get_ref()
                ),
            ))
        }
    }

    fn host(&self, name: Spanned<String>, spec: raw::Host) -> Result<Host, ScenarioError> {
        let mut sysctls = BTreeMap::new();
        for (key, value) in spec.sysctls {
            if !key.get_ref().starts_with("net.") {
                return Err(self.at.error(
                    key.span(),
                    format!(
                        "sysctl `{}` is not per network namespace: only `net.*` keys can be set on a host",
                        key.get_ref()
                    ),
                ));
            }
            let value = match value {
                raw::SysctlValue::Int(i) => i.to_string(),
                raw::SysctlValue::Text(s) => s,
            };
            sysctls.insert(key.into_inner(), value);
        }
        let routes = spec
            .routes
            .into_iter()
            .map(|r| self.route(r))
            .collect::<Result<_, _>>()?;
        let (addresses6, addresses): (Vec<_>, Vec<_>) = spec
            .addresses
            .iter()
            .partition(|a| a.get_ref().contains(':'));
        let addresses = addresses
            .into_iter()
            .map(|a| self.cidr(a))
            .collect::<Result<_, _>>()?;
        let addresses6 = addresses6
            .into_iter()
            .map(|a| self.cidr6(a))
            .collect::<Result<_, _>>()?;
        let rules = spec
            .rules
            .into_iter()
            .map(|r| self.rule(r, &name))
            .collect::<Result<_, _>>()?;
        Ok(Host {
            name: name.into_inner(),
            forwarding: spec.forwarding,
            sysctls,
            routes,
            addresses,
            addresses6,
            rules,
            neighbours: Vec::new(),
        })
    }

    fn links(
        &self,
        raw_links: Vec<raw::Link>,
        hosts: &[Host],
        neighbours: &mut Vec<links::PendingNeighbour>,
    ) -> Vec<Link> {
        let mut links: Vec<Link> = Vec::new();
        let mut interface_counts = vec![0usize; hosts.len()];
        for mut spec in raw_links {
            let ends_neighbours = [
                std::mem::take(&mut spec.a.neighbours),
                std::mem::take(&mut spec.b.neighbours),
            ];
            let link = self.link(spec, &links, &mut interface_counts, hosts);
            if let Some(link) = self.keep(link) {
                for (end, entries) in ends_neighbours.into_iter().enumerate() {
                    neighbours.extend(entries.into_iter().map(|entry| {
                        links::PendingNeighbour::End {
                            link: links.len(),
                            end,
                            entry,
                        }
                    }));
                }
                links.push(link);
            }
        }
        links
    }

    fn link(
        &self,
        spec: raw::Link,
        links: &[Link],
        interface_counts: &mut [usize],
        hosts: &[Host],
    ) -> Result<Link, ScenarioError> {
        let b_host_span = spec.b.host.span();
        let addr6_span = spec
            .a
            .addr6
            .as_ref()
            .or(spec.b.addr6.as_ref())
            .map(Spanned::span);
        let mut ends = Vec::with_capacity(2);
        for end in [spec.a, spec.b] {
            let host = self.host_ref(&end.host)?;
            let ifname = match end.name {
                Some(n) => {
                    if n.get_ref().is_empty()
                        || n.get_ref().len() > MAX_IFNAME
                        || n.get_ref().contains(['/', ' ', ':'])
                    {
                        return Err(self.at.error(
                            n.span(),
                            format!(
                                "interface name `{}` must be 1–{MAX_IFNAME} characters without `/`, `:` or spaces",
                                n.get_ref()
                            ),
                        ));
                    }
                    n.into_inner()
                }
                None => format!("eth{}", interface_counts[host]),
            };
            interface_counts[host] += 1;
            let taken = links
                .iter()
                .flat_map(|l| l.ends.iter())
                .chain(ends.iter())
                .any(|e: &Endpoint| e.host == host && e.ifname == ifname);
            if taken {
                return Err(self.at.error(
                    end.host.span(),
                    format!(
                        "host `{}` already has an interface `{ifname}`: give this end another `name`",
                        hosts[host].name
                    ),
                ));
            }
            let addr = self.cidr(&end.addr)?;
            let addr6 = end.addr6.as_ref().map(|a| self.cidr6(a)).transpose()?;
            ends.push(Endpoint {
                host,
                ifname,
                addr,
                addr6,
                mtu: self.end_mtu(&end.mtu, &spec.mtu)?,
                txqueuelen: end.txqueuelen.map(Spanned::into_inner),
                up: end.up.unwrap_or(true),
            });
        }
        if let Some(mtu) = &spec.mtu {
            if !(68..=65535).contains(mtu.get_ref()) {
                return Err(self.at.error(mtu.span(), must("mtu", mtu.get_ref())));
            }
        }
        let [a, b]: [Endpoint; 2] = ends.try_into().expect("two ends pushed");
        if a.addr6.is_some() != b.addr6.is_some() {
            return Err(self.at.error(
                addr6_span.expect("one end has addr6"),
                format!(
                    "only one end of the link between `{}` and `{}` has `addr6`: IPv6 is enabled on a link when both ends have an address",
                    hosts[a.host].name, hosts[b.host].name
                ),
            ));
        }
        if a.host == b.host {
            return Err(self.at.error(
                b_host_span,
                format!(
                    "a link joins host `{}` to itself: a veth pair must join two different hosts",
                    hosts[a.host].name
                ),
            ));
        }
        Ok(Link {
            ends: [a, b],
            mtu: spec.mtu.map(Spanned::into_inner),
        })
    }

    fn fault(
        &self,
        spec: raw::Fault,
        links: &[Link],
        hosts: &[Host],
    ) -> Result<Fault, ScenarioError> {
        let host = self.host_ref(&spec.host)?;
        let sources = [
            spec.iptables.is_some(),
            spec.iptables_file.is_some(),
            spec.nft.is_some(),
            spec.nft_file.is_some(),
            spec.tc.is_some(),
            spec.tc_drop.is_some(),
            spec.qdisc.is_some(),
            spec.command.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return Err(self.at.error(
                spec.host.span(),
                "a fault needs exactly one of `iptables`, `iptables_file`, `nft`, `nft_file`, `tc`, `tc_drop`, `qdisc` or `command`",
            ));
        }
        let kind = if let Some(command) = spec.command {
            FaultKind::Command {
                argv: self.command(command)?,
                origin: format!("{} (command)", self.at.path.display()),
            }
        } else if let Some(qdisc) = spec.qdisc {
            FaultKind::Qdisc(self.qdisc(qdisc, host, links, hosts)?)
        } else if let Some(tc_drop) = spec.tc_drop {
            let span = tc_drop.span();
            let tc_drop = tc_drop.into_inner();
            let ingress = match tc_drop.direction.as_deref() {
                None | Some("ingress") => true,
                Some("egress") => false,
                Some(other) => {
                    return Err(self.at.error(
                        span,
                        format!("unknown tc direction `{other}`: use \"ingress\" or \"egress\""),
                    ));
                }
            };
            let known = links
                .iter()
                .flat_map(|l| l.ends.iter())
                .any(|e| e.host == host && e.ifname == tc_drop.dev);
            if !known {
                return Err(self.at.error(
                    span,
                    format!(
                        "tc_drop on host `{}` names interface `{}`, which no link gives it",
                        hosts[host].name, tc_drop.dev
                    ),
                ));
            }
            FaultKind::TcDrop {
                dev: tc_drop.dev,
                ingress,
            }
        } else if let Some(commands) = spec.tc {
            FaultKind::Tc {
                commands,
                origin: format!("{} (inline)", self.at.path.display()),
            }
        } else if spec.iptables.is_some() || spec.iptables_file.is_some() {
            let backend = match spec.backend.as_ref().map(|b| b.get_ref().as_str()) {
                None | Some("nft") => IptablesBackend::Nft,
                Some("legacy") => IptablesBackend::Legacy,
                Some(other) => {
                    return Err(self.at.error(
                        spec.backend.as_ref().expect("matched Some").span(),
                        format!("unknown iptables backend `{other}`: use \"nft\" or \"legacy\""),
                    ));
                }
            };
            let (rules, origin) = self.inline_or_file(spec.iptables, spec.iptables_file)?;
            FaultKind::Iptables {
                backend,
                rules,
                origin,
            }
        } else {
            if let Some(b) = &spec.backend {
                return Err(self.at.error(
                    b.span(),
                    "`backend` applies to iptables rules only; an nft ruleset is loaded with `nft -f`",
                ));
            }
            let (ruleset, origin) = self.inline_or_file(spec.nft, spec.nft_file)?;
            FaultKind::Nft { ruleset, origin }
        };
        Ok(Fault { host, kind })
    }

    fn inline_or_file(
        &self,
        inline: Option<String>,
        file: Option<Spanned<String>>,
    ) -> Result<(String, String), ScenarioError> {
        if let Some(text) = inline {
            return Ok((text, format!("{} (inline)", self.at.path.display())));
        }
        let file = file.expect("caller checked one source is set");
        let relative = Path::new(file.get_ref());
        if relative.is_absolute() || relative.components().any(|c| c.as_os_str() == "..") {
            return Err(self.at.error(
                file.span(),
                "rule files are named relative to fixtures/, without `..`",
            ));
        }
        let full = self.fixtures.join(relative);
        let text = std::fs::read_to_string(&full).map_err(|e| {
            self.at.error(
                file.span(),
                format!("cannot read rule file {}: {e}", full.display()),
            )
        })?;
        Ok((text, full.display().to_string()))
    }

    fn traffic(&self, spec: raw::Traffic, links: &[Link]) -> Result<Traffic, ScenarioError> {
        let from = self.host_ref(&spec.from)?;
        let to_address = spec.to.get_ref().parse::<IpAddr>().ok();
        let family = self.family_of(
            spec.family.as_ref(),
            [to_address.map(|a| (a, spec.to.span())), None, None],
            "traffic entry",
        )?;
        let (destination, to_host) = match to_address {
            Some(ip) => {
                self.check_range(ip, spec.to.span())?;
                let owner = links
                    .iter()
                    .flat_map(|l| l.ends.iter())
                    .find(|e| {
                        IpAddr::V4(e.addr.addr) == ip
                            || e.addr6.map(|a| IpAddr::V6(a.addr)) == Some(ip)
                    })
                    .map(|e| e.host);
                (ip, owner)
            }
            None => {
                let host = self.host_ref(&spec.to)?;
                let first = links
                    .iter()
                    .flat_map(|l| l.ends.iter())
                    .filter(|e| e.host == host)
                    .find_map(|e| match family {
                        Family::Ipv4 => Some(IpAddr::V4(e.addr.addr)),
                        Family::Ipv6 => e.addr6.map(|a| IpAddr::V6(a.addr)),
                    })
                    .ok_or_else(|| {
                        let message = match family {
                            Family::Ipv4 => format!(
                                "host `{}` has no address to send to: give it a link, or write an address",
                                spec.to.get_ref()
                            ),
                            Family::Ipv6 => format!(
                                "host `{}` has no IPv6 address to send to: give one of its links `addr6` on both ends, or write an address",
                                spec.to.get_ref()
                            ),
                        };
                        self.at.error(spec.to.span(), message)
                    })?;
                (first, Some(host))
            }
        };
        let protocol = match spec.protocol.get_ref().as_str() {
            "icmp" => Protocol::Icmp,
            "udp" => Protocol::Udp,
            "tcp" => Protocol::Tcp,
            other => {
                return Err(self.at.error(
                    spec.protocol.span(),
                    format!("unknown protocol `{other}`: use \"icmp\", \"udp\" or \"tcp\""),
                ));
            }
        };
        let port = match (protocol, &spec.port) {
            (Protocol::Icmp, Some(p)) => {
                return Err(self.at.error(p.span(), "ICMP has no port: remove `port`"));
            }
            (Protocol::Icmp, None) => 0,
            (_, None) => {
                return Err(self.at.error(
                    spec.protocol.span(),
                    format!("{} traffic needs a `port`", protocol.as_str()),
                ));
            }
            (_, Some(p)) if *p.get_ref() == 0 => {
                return Err(self.at.error(p.span(), must("port", 0)));
            }
            (_, Some(p)) => *p.get_ref(),
        };
        let count = spec.count.as_ref().map_or(1, |c| *c.get_ref());
        if let Some(c) = spec
            .count
            .as_ref()
            .filter(|_| count == 0 || count > MAX_COUNT)
        {
            self.note(self.at.error(c.span(), must("count", count)));
        }
        let timeout_ms = spec.timeout_ms.as_ref().map_or(200, |t| *t.get_ref());
        if let Some(t) = spec
            .timeout_ms
            .as_ref()
            .filter(|_| timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS)
        {
            self.note(self.at.error(t.span(), must("timeout_ms", timeout_ms)));
        }
        if protocol == Protocol::Icmp && spec.listen.is_some() {
            return Err(self.at.error(
                spec.protocol.span(),
                "`listen` applies to UDP and TCP; the kernel itself answers ICMP echo",
            ));
        }
        let listen = spec.listen.unwrap_or(true);
        if listen && protocol != Protocol::Icmp && to_host.is_none() {
            return Err(self.at.error(
                spec.to.span(),
                "nobody can listen at an address no host owns: set `listen = false`",
            ));
        }
        let payload = spec.payload.as_ref().map_or(
            match protocol {
                Protocol::Icmp => 56,
                _ => 32,
            },
            |p| *p.get_ref(),
        );
        if let Some(p) = spec
            .payload
            .as_ref()
            .filter(|_| payload > MAX_TRAFFIC_PAYLOAD)
        {
            self.note(self.at.error(p.span(), must("payload", payload)));
        }
        let source = spec.source.as_ref().map(|s| self.ip(s)).transpose()?;
        if let (Some(source), Some(span)) = (source, spec.source.as_ref()) {
            if Family::of(source) != family {
                return Err(self.at.error(
                    span.span(),
                    format!(
                        "source {source} is {}, but the traffic goes to {destination}: use a source of the destination's family",
                        Family::of(source).as_str()
                    ),
                ));
            }
        }
        if let Some(ttl) = &spec.ttl {
            if *ttl.get_ref() == 0 {
                return Err(self.at.error(ttl.span(), must("ttl", 0)));
            }
        }
        let reads = match spec.receiver.as_ref().map(|r| r.get_ref().as_str()) {
            None | Some("reads") => true,
            Some("never_reads") => false,
            Some(other) => {
                return Err(self.at.error(
                    spec.receiver.as_ref().expect("matched Some").span(),
                    format!("unknown receiver `{other}`: use \"reads\" or \"never_reads\""),
                ));
            }
        };
        let receiver_options = spec.receiver.is_some()
            || spec.rcvbuf.is_some()
            || spec.backlog.is_some()
            || spec.hold.is_some()
            || spec.accept_until_empty.is_some()
            || spec.accept.is_some()
            || !spec.listener_sockopts.is_empty();
        if receiver_options && (protocol == Protocol::Icmp || !listen) {
            return Err(self.at.error(
                spec.protocol.span(),
                "`receiver`, `rcvbuf`, `backlog`, `hold`, `accept`, `accept_until_empty` and `listener_sockopts` describe the listening socket: they need udp or tcp with `listen = true`",
            ));
        }
        let accept = self.accept(
            spec.accept.as_ref(),
            protocol,
            reads,
            spec.receiver.is_some(),
        )?;
        if let (Some(a), Accept::Never) = (&spec.accept_until_empty, accept) {
            return Err(self.at.error(
                a.span(),
                "`accept_until_empty` drains the accept queue of a listener that accepts: it needs accept = \"on_arrival\"",
            ));
        }
        let listener_sockopts = self.sockopts(
            "listener_sockopts",
            &spec.listener_sockopts,
            protocol,
            family,
        )?;
        let sockopts = self.sockopts("sockopts", &spec.sockopts, protocol, family)?;
        if let Some(backlog) = &spec.backlog {
            if protocol != Protocol::Tcp {
                return Err(self
                    .at
                    .error(backlog.span(), "`backlog` applies to tcp only"));
            }
        }
        for (field, span) in [
            ("hold", spec.hold.as_ref().map(Spanned::span)),
            (
                "accept_until_empty",
                spec.accept_until_empty.as_ref().map(Spanned::span),
            ),
        ] {
            if let (Some(span), false) = (span, protocol == Protocol::Tcp) {
                return Err(self
                    .at
                    .error(span, format!("`{field}` applies to tcp only")));
            }
        }
        let listener = Listener {
            reads,
            rcvbuf: spec.rcvbuf,
            backlog: spec.backlog.map_or(128, Spanned::into_inner),
            hold: spec.hold.is_some_and(Spanned::into_inner),
            accept_until_empty: spec.accept_until_empty.is_some_and(Spanned::into_inner),
            accept,
            sockopts: listener_sockopts,
        };
        let expect = self.traffic_expect(protocol, spec.expect)?;
        Ok(Traffic {
            from,
            to_host,
            destination,
            protocol,
            port,
            count,
            listen,
            payload,
            timeout_ms,
            source,
            ttl: spec.ttl.map(Spanned::into_inner),
            dont_fragment: spec.dont_fragment.unwrap_or(false),
            sndbuf: spec.sndbuf.map(Spanned::into_inner),
            sockopts,
            listener,
            expect,
        })
    }

    fn traffic_expect(
        &self,
        protocol: Protocol,
        spec: Option<Spanned<raw::TrafficExpect>>,
    ) -> Result<TrafficExpect, ScenarioError> {
        let Some(spec) = spec else {
            return Ok(TrafficExpect::default());
        };
        let span = spec.span();
        let e = spec.into_inner();
        let allowed: &[(&str, bool)] = &[
            (
                "answered",
                e.answered.is_some() && protocol != Protocol::Icmp,
            ),
            (
                "delivered",
                e.delivered.is_some() && protocol != Protocol::Udp,
            ),
            ("errors", e.errors.is_some() && protocol == Protocol::Tcp),
            ("blocked", e.blocked.is_some() && protocol == Protocol::Tcp),
            (
                "connected/refused/timed_out/unreachable",
                (e.connected.is_some()
                    || e.refused.is_some()
                    || e.timed_out.is_some()
                    || e.unreachable.is_some())
                    && protocol != Protocol::Tcp,
            ),
        ];
        if let Some((field, _)) = allowed.iter().find(|(_, wrong)| *wrong) {
            return Err(self.at.error(
                span,
                format!(
                    "`{field}` does not apply to {} traffic (icmp: answered, errors, blocked; udp: delivered, errors, blocked; tcp: connected, refused, timed_out, unreachable)",
                    protocol.as_str()
                ),
            ));
        }
        Ok(TrafficExpect {
            answered: e.answered,
            delivered: e.delivered,
            errors: e.errors,
            connected: e.connected,
            refused: e.refused,
            timed_out: e.timed_out,
            unreachable: e.unreachable,
            blocked: e.blocked,
        })
    }

    fn expectations(
        &mut self,
        spec: raw::Expect,
        faults: &[Fault],
        hosts: &[Host],
        links: &[Link],
    ) -> Expectations {
        let mut drops = Vec::new();
        for d in spec.drops {
            let Some(host) = self.keep(self.host_ref(&d.host)) else {
                continue;
            };
            let reason = d.reason.get_ref();
            if !reason.starts_with(|c: char| c.is_ascii_uppercase())
                || !reason
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                self.note(self.at.error(
                    d.reason.span(),
                    format!(
                        "reason `{reason}` should be a kernel drop reason name without the SKB_DROP_REASON_ prefix, e.g. \"NETFILTER_DROP\" (`dropspec reasons` lists them)"
                    ),
                ));
                continue;
            }
            self.note_kernel_name(KernelNameKind::Reason, &d.reason);
            if let Some(function) = &d.function {
                self.note_kernel_name(KernelNameKind::Function, function);
            }
            drops.push(DropExpect {
                host,
                reason: d.reason.into_inner(),
                function: d.function.map(Spanned::into_inner),
                count: d.count,
            });
        }
        let mut causes = Vec::new();
        for c in spec.causes {
            let Some(host) = self.keep(self.host_ref(&c.host)) else {
                continue;
            };
            if !crate::vocab::CAUSES.contains(&c.cause.get_ref().as_str()) {
                self.note(self.at.error(
                    c.cause.span(),
                    format!(
                        "unknown cause `{}`{} (causes: {})",
                        c.cause.get_ref(),
                        did_you_mean(c.cause.get_ref(), crate::vocab::CAUSES),
                        crate::vocab::CAUSES.join(", ")
                    ),
                ));
                continue;
            }
            causes.push(CauseExpect {
                host,
                cause: c.cause.into_inner(),
                count: c.count,
            });
        }
        let mut counters = Vec::new();
        for c in spec.counters {
            let Some(host) = self.keep(self.host_ref(&c.host)) else {
                continue;
            };
            if c.counter.get_ref().starts_with("link/") {
                if let Some(()) = self.keep(self.link_counter(&c.counter, host, links, hosts)) {
                    counters.push(CounterExpect {
                        host,
                        counter: c.counter.into_inner(),
                        delta: c.delta,
                    });
                }
                continue;
            }
            if c.counter.get_ref().starts_with("qdisc/") {
                if let Some(()) = self.keep(self.qdisc_counter(&c.counter, host, faults, hosts)) {
                    counters.push(CounterExpect {
                        host,
                        counter: c.counter.into_inner(),
                        delta: c.delta,
                    });
                }
                continue;
            }
            if !c.counter.get_ref().contains('.') {
                self.note(self.at.error(
                    c.counter.span(),
                    format!(
                        "counter `{}` should be `Group.Field` as in /proc/net/snmp or netstat (e.g. \"TcpExt.ListenOverflows\", \"Udp.RcvbufErrors\"), or `conntrack.<stat>`",
                        c.counter.get_ref()
                    ),
                ));
                continue;
            }
            self.note_kernel_name(KernelNameKind::Counter, &c.counter);
            counters.push(CounterExpect {
                host,
                counter: c.counter.into_inner(),
                delta: c.delta,
            });
        }
        let mut hooks = Vec::new();
        for h in spec.hooks {
            let Some(host) = self.keep(self.host_ref(&h.host)) else {
                continue;
            };
            if HookPoint::from_retina_name(h.hook.get_ref()).is_none() {
                let names: Vec<&str> = HookPoint::ALL.iter().map(|p| p.retina_name()).collect();
                self.note(self.at.error(
                    h.hook.span(),
                    format!(
                        "unknown hook point `{}`{}: Retina's names are {}",
                        h.hook.get_ref(),
                        did_you_mean(h.hook.get_ref(), &names),
                        names.join(", ")
                    ),
                ));
                continue;
            }
            hooks.push(HookExpect {
                host,
                hook: h.hook.into_inner(),
                ret: h.ret,
                count: h.count,
            });
        }
        let since_kernel = spec.since_kernel.as_ref().and_then(|v| {
            let version = parse_kernel_version(v.get_ref());
            if version.is_none() {
                self.note(self.at.error(
                    v.span(),
                    format!(
                        "since_kernel `{}` should be a kernel version like \"6.12\"",
                        v.get_ref()
                    ),
                ));
            }
            version
        });
        let datapath = spec
            .datapath
            .into_iter()
            .map(|d| DatapathExpect {
                program: d.program.map(Spanned::into_inner),
                unreported_drops: d.unreported_drops,
                kernel_drops: d.kernel_drops,
                reported_drops: d.reported_drops,
            })
            .collect();
        Expectations {
            datapath,
            drops,
            causes,
            counters,
            hooks,
            no_other_drops: !spec.allow_other_drops,
            since_kernel,
        }
    }

    fn note_kernel_name(&mut self, kind: KernelNameKind, name: &Spanned<String>) {
        let (line, column) = self.at.position(name.span().start);
        self.kernel_names.push(KernelName {
            kind,
            name: name.get_ref().clone(),
            line,
            column,
        });
    }

    fn host_ref(&self, name: &Spanned<String>) -> Result<HostId, ScenarioError> {
        self.host_ids.get(name.get_ref()).copied().ok_or_else(|| {
            let known: Vec<&str> = self.host_ids.keys().map(String::as_str).collect();
            self.at.error(
                name.span(),
                format!(
                    "unknown host `{}`{} (declared hosts: {})",
                    name.get_ref(),
                    did_you_mean(name.get_ref(), &known),
                    known.join(", ")
                ),
            )
        })
    }

    fn cidr(&self, text: &Spanned<String>) -> Result<Cidr, ScenarioError> {
        let bad = || {
            self.at.error(
                text.span(),
                format!(
                    "`{}` is not an IPv4 address with prefix, like \"198.18.0.1/24\"",
                    text.get_ref()
                ),
            )
        };
        let (addr, prefix) = text.get_ref().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        self.check_range(IpAddr::V4(addr), text.span())?;
        Ok(Cidr { addr, prefix })
    }

    /// Scenarios only ever use the benchmarking and documentation ranges, so a scenario
    /// can never address anything real even if a route leaked.
    pub(super) fn check_range(
        &self,
        addr: IpAddr,
        span: Range<usize>,
    ) -> Result<(), ScenarioError> {
        if is_test_address(addr) {
            Ok(())
        } else {
            Err(self.at.error(
                span,
                format!(
                    "address {addr} is outside the ranges dropspec may use: 198.18.0.0/15 (IPv4) and 2001:db8::/32 (IPv6)"
                ),
            ))
        }
    }
}

/// `[[packets]]` entries and IPv6 addresses.
impl Validator<'_> {
    fn packet(&self, spec: raw::Packets, links: &[Link]) -> Result<PacketEntry, ScenarioError> {
        let from = self.host_ref(&spec.from)?;
        let to = self.host_ref(&spec.to)?;
        let link = links
            .iter()
            .find(|l| {
                let [a, b] = &l.ends;
                (a.host, b.host) == (from, to) || (a.host, b.host) == (to, from)
            })
            .ok_or_else(|| {
                self.at.error(
                    spec.to.span(),
                    format!(
                        "hosts `{}` and `{}` share no link: crafted packets go out on the sender's end of a link to the destination",
                        spec.from.get_ref(),
                        spec.to.get_ref()
                    ),
                )
            })?;
        let (near, far) = if link.ends[0].host == from {
            (&link.ends[0], &link.ends[1])
        } else {
            (&link.ends[1], &link.ends[0])
        };
        let ipv6 = match spec.ip.as_ref().map(|v| *v.get_ref()) {
            None | Some(4) => false,
            Some(6) => true,
            Some(_) => {
                let span = spec.ip.as_ref().expect("matched Some").span();
                return Err(self.at.error(
                    span,
                    must("ip", spec.ip.as_ref().expect("matched Some").get_ref()),
                ));
            }
        };
        let (link_source, link_destination) = if ipv6 {
            match (near.addr6, far.addr6) {
                (Some(s), Some(d)) => (IpAddr::V6(s.addr), IpAddr::V6(d.addr)),
                _ => {
                    return Err(self.at.error(
                        spec.ip.as_ref().map_or(spec.to.span(), |v| v.span()),
                        format!(
                            "the link between `{}` and `{}` has no IPv6 addresses: give both ends an `addr6` in 2001:db8::/32",
                            spec.from.get_ref(),
                            spec.to.get_ref()
                        ),
                    ));
                }
            }
        } else {
            (IpAddr::V4(near.addr.addr), IpAddr::V4(far.addr.addr))
        };
        let source = self
            .packet_address(spec.source.as_ref(), ipv6, true)?
            .unwrap_or(link_source);
        let destination = self
            .packet_address(spec.destination.as_ref(), ipv6, false)?
            .unwrap_or(link_destination);

        let protocol_span = spec.protocol.span();
        let protocol = match spec.protocol.get_ref() {
            raw::ProtocolField::Name(name) => match (name.as_str(), ipv6) {
                ("udp", _) => PacketProtocol::Udp,
                ("tcp", _) => PacketProtocol::Tcp,
                ("icmp", false) | ("icmpv6", true) => PacketProtocol::Echo,
                ("icmp", true) => {
                    return Err(self.at.error(protocol_span, "IPv6 echo is \"icmpv6\""));
                }
                ("icmpv6", false) => {
                    return Err(self.at.error(
                        protocol_span,
                        "\"icmpv6\" needs `ip = 6`; IPv4 echo is \"icmp\"",
                    ));
                }
                (other, _) => {
                    return Err(self.at.error(
                        protocol_span.clone(),
                        format!("unknown protocol `{other}`: use \"udp\", \"tcp\", \"icmp\", \"icmpv6\" or a protocol number"),
                    ));
                }
            },
            raw::ProtocolField::Number(n) => match u8::try_from(*n) {
                Ok(1 | 6 | 17 | 58) => {
                    return Err(self.at.error(
                        protocol_span,
                        "dropspec builds this protocol's header itself: name it (\"icmp\", \"tcp\", \"udp\", \"icmpv6\")",
                    ));
                }
                Ok(number) => PacketProtocol::Other(number),
                Err(_) => return Err(self.at.error(protocol_span, "a protocol number is 0–255")),
            },
        };
        let ported = matches!(protocol, PacketProtocol::Udp | PacketProtocol::Tcp);
        let port = match (&spec.port, ported) {
            (Some(p), true) if *p.get_ref() == 0 => {
                return Err(self.at.error(p.span(), must("port", 0)));
            }
            (Some(p), true) => *p.get_ref(),
            (None, true) => {
                return Err(self.at.error(
                    protocol_span,
                    format!("{} packets need a `port`", protocol.name(ipv6)),
                ));
            }
            (Some(p), false) => {
                return Err(self.at.error(
                    p.span(),
                    format!("{} has no port: remove `port`", protocol.name(ipv6)),
                ));
            }
            (None, false) => 0,
        };
        let source_port = match (&spec.source_port, ported) {
            (Some(p), true) if *p.get_ref() == 0 => {
                return Err(self.at.error(p.span(), must("source_port", 0)));
            }
            (Some(p), true) => *p.get_ref(),
            (Some(p), false) => {
                return Err(self.at.error(
                    p.span(),
                    format!("{} has no port: remove `source_port`", protocol.name(ipv6)),
                ));
            }
            (None, _) => DEFAULT_SOURCE_PORT,
        };
        let receiver = match (&spec.receiver, ported) {
            (Some(r), true) => match r.get_ref().as_str() {
                "reads" => Receiver::Reads,
                "never_reads" => Receiver::NeverReads,
                "none" => Receiver::Nobody,
                other => {
                    return Err(self.at.error(
                        r.span(),
                        format!("unknown receiver `{other}`: use \"reads\", \"never_reads\" or \"none\""),
                    ));
                }
            },
            (None, true) => {
                return Err(self.at.error(
                    protocol_span,
                    "say what the destination application does, because it decides where a bad checksum is dropped: receiver = \"reads\", \"never_reads\" or \"none\"",
                ));
            }
            (Some(r), false) => {
                return Err(self.at.error(
                    r.span(),
                    format!(
                        "`receiver` applies to udp and tcp; the kernel itself handles {}",
                        protocol.name(ipv6)
                    ),
                ));
            }
            (None, false) => Receiver::Nobody,
        };
        if receiver != Receiver::Nobody && destination != link_destination {
            return Err(self.at.error(
                spec.destination.as_ref().map_or(spec.to.span(), |d| d.span()),
                format!(
                    "a receiver listens on `{}`'s own address {link_destination}: send to it, or set receiver = \"none\"",
                    spec.to.get_ref()
                ),
            ));
        }
        let tcp_flags = match (&spec.tcp_flags, protocol) {
            (Some(f), PacketProtocol::Tcp) => self.tcp_flags(f)?,
            (Some(f), _) => {
                return Err(self
                    .at
                    .error(f.span(), "`tcp_flags` applies to tcp packets"));
            }
            (None, PacketProtocol::Tcp) if receiver == Receiver::Nobody => TCP_SYN,
            (None, PacketProtocol::Tcp) => TCP_PSH | TCP_ACK,
            (None, _) => 0,
        };
        let corrupt = match &spec.corrupt {
            None => Corruption::None,
            Some(c) => {
                let corrupt = Corruption::parse(c.get_ref()).ok_or_else(|| {
                    self.at.error(
                        c.span(),
                        format!(
                            "unknown corruption `{}`: use \"none\", \"ip_checksum\", \"checksum\", \"ihl\", \"version\", \"truncated\" or \"dst_mac\"",
                            c.get_ref()
                        ),
                    )
                })?;
                if ipv6 && matches!(corrupt, Corruption::IpChecksum | Corruption::Ihl) {
                    return Err(self.at.error(
                        c.span(),
                        "IPv6 has no header checksum and no header length field",
                    ));
                }
                if corrupt == Corruption::Checksum && matches!(protocol, PacketProtocol::Other(_)) {
                    return Err(self.at.error(
                        c.span(),
                        "dropspec knows the checksums of udp, tcp, icmp and icmpv6 only",
                    ));
                }
                corrupt
            }
        };
        let count = spec.count.as_ref().map_or(1, |c| *c.get_ref());
        if count == 0 || count > MAX_COUNT {
            return Err(self.at.error(
                spec.count.as_ref().map_or(spec.from.span(), |c| c.span()),
                must("count", count),
            ));
        }
        let payload = spec.payload.as_ref().map_or(
            if protocol == PacketProtocol::Echo {
                56
            } else {
                32
            },
            |p| *p.get_ref(),
        );
        let fragments = self.fragments(
            &spec,
            ipv6,
            protocol,
            protocol == PacketProtocol::Tcp && receiver != Receiver::Nobody,
            payload,
            link.mtu,
        )?;
        let ttl = match &spec.ttl {
            None => 64,
            Some(t) => u8::try_from(*t.get_ref()).map_err(|_| {
                self.at.error(
                    t.span(),
                    format!("`ttl` must be {}, not {}", whole(0, 255), t.get_ref()),
                )
            })?,
        };
        let timeout_ms = spec.timeout_ms.as_ref().map_or(200, |t| *t.get_ref());
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(self.at.error(
                spec.timeout_ms
                    .as_ref()
                    .expect("only a given timeout can be out of range")
                    .span(),
                must("timeout_ms", timeout_ms),
            ));
        }
        let expect = self.packet_expect(protocol, receiver, ipv6, spec.expect)?;
        Ok(PacketEntry {
            from,
            to,
            interface: near.ifname.clone(),
            peer_interface: far.ifname.clone(),
            source,
            destination,
            protocol,
            source_port,
            port,
            count,
            payload,
            ttl,
            tcp_flags,
            corrupt,
            receiver,
            timeout_ms,
            fragments,
            expect,
        })
    }

    /// A crafted packet's address. A destination must be in the test ranges; a source
    /// may be anything (multicast, 0.0.0.0/8, loopback, broadcast: martian sources are
    /// faults to test), because the frame never leaves the scenario's namespaces.
    fn packet_address(
        &self,
        text: Option<&Spanned<String>>,
        ipv6: bool,
        any_range: bool,
    ) -> Result<Option<IpAddr>, ScenarioError> {
        let Some(text) = text else {
            return Ok(None);
        };
        let addr: IpAddr = text.get_ref().parse().map_err(|_| {
            self.at.error(
                text.span(),
                format!("`{}` is not an IP address", text.get_ref()),
            )
        })?;
        if addr.is_ipv6() != ipv6 {
            return Err(self.at.error(
                text.span(),
                format!(
                    "{addr} is not an IPv{} address (the entry's `ip`)",
                    if ipv6 { 6 } else { 4 }
                ),
            ));
        }
        if !any_range {
            self.check_range(addr, text.span())?;
        }
        Ok(Some(addr))
    }

    fn tcp_flags(&self, text: &Spanned<String>) -> Result<u8, ScenarioError> {
        let mut flags = 0;
        for c in text.get_ref().chars() {
            flags |= match c.to_ascii_uppercase() {
                'F' => crate::vocab::TCP_FIN,
                'S' => TCP_SYN,
                'R' => crate::vocab::TCP_RST,
                'P' => TCP_PSH,
                'A' => TCP_ACK,
                'U' => crate::vocab::TCP_URG,
                'E' => crate::vocab::TCP_ECE,
                'C' => crate::vocab::TCP_CWR,
                _ => {
                    return Err(self.at.error(
                        text.span(),
                        format!("tcp_flags `{}`: use the letters F S R P A U E C, as tcpdump prints them (\"S\", \"PA\")", text.get_ref()),
                    ));
                }
            };
        }
        Ok(flags)
    }

    fn packet_expect(
        &self,
        protocol: PacketProtocol,
        receiver: Receiver,
        ipv6: bool,
        spec: Option<Spanned<raw::PacketExpect>>,
    ) -> Result<PacketExpect, ScenarioError> {
        let Some(spec) = spec else {
            return Ok(PacketExpect::default());
        };
        let span = spec.span();
        let e = spec.into_inner();
        let ported = matches!(protocol, PacketProtocol::Udp | PacketProtocol::Tcp);
        let wrong: &[(&str, bool, &str)] = &[
            (
                "delivered",
                e.delivered.is_some() && !ported,
                "only udp and tcp have a receiving application",
            ),
            (
                "delivered",
                e.delivered.is_some() && ported && receiver != Receiver::Reads,
                "only a receiver that reads can count what was delivered",
            ),
            (
                "answered",
                e.answered.is_some() && protocol != PacketProtocol::Echo,
                "only echo requests are answered",
            ),
            (
                "resets",
                e.resets.is_some() && protocol != PacketProtocol::Tcp,
                "only tcp is reset",
            ),
        ];
        if let Some((field, _, why)) = wrong.iter().find(|(_, w, _)| *w) {
            return Err(self.at.error(
                span,
                format!(
                    "`{field}` does not apply to these {} packets: {why}",
                    protocol.name(ipv6)
                ),
            ));
        }
        Ok(PacketExpect {
            delivered: e.delivered,
            answered: e.answered,
            errors: e.errors,
            resets: e.resets,
        })
    }

    fn cidr6(&self, text: &Spanned<String>) -> Result<Cidr6, ScenarioError> {
        let bad = || {
            self.at.error(
                text.span(),
                format!(
                    "`{}` is not an IPv6 address with prefix, like \"2001:db8::1/64\"",
                    text.get_ref()
                ),
            )
        };
        let (addr, prefix) = text.get_ref().split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 128 {
            return Err(bad());
        }
        self.check_range(IpAddr::V6(addr), text.span())?;
        Ok(Cidr6 { addr, prefix })
    }
}

/// ` (did you mean `X`?)` when a known name is close to `word`.
fn did_you_mean(word: &str, known: &[&str]) -> String {
    crate::suggest::closest(word, known)
        .map_or(String::new(), |c| format!(" (did you mean `{c}`?)"))
}

/// The source port of crafted UDP and TCP packets unless the entry gives one.
pub const DEFAULT_SOURCE_PORT: u16 = 40000;

/// `6.1.0-56-amd64` → (6, 1); `6.12` → (6, 12).
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// 198.18.0.0/15 (RFC 2544) and 2001:db8::/32 (RFC 3849).
pub fn is_test_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 198 && (o[1] & 0xfe) == 18
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse;

    const BASE: &str = r#"
description = "two hosts"

[hosts.client]
[hosts.server]

[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
"#;

    fn parse_text(text: &str) -> Result<Scenario, crate::scenario::ScenarioErrors> {
        parse(
            text,
            Path::new("s.toml"),
            "s",
            Path::new("/nonexistent-fixtures"),
        )
    }

    fn error_of(extra: &str) -> String {
        parse_text(&format!("{BASE}{extra}"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_complete_scenario_is_modelled() {
        let s = parse_text(&format!(
            r#"{BASE}
[[faults]]
host = "server"
backend = "legacy"
iptables = "*filter\n-A INPUT -p udp -j DROP\nCOMMIT\n"

[[traffic]]
from = "client"
to = "server"
protocol = "udp"
port = 5000
count = 4
expect = {{ delivered = 0 }}

[[expect.drops]]
host = "server"
reason = "NETFILTER_DROP"
count = 4
"#
        ))
        .unwrap();
        assert_eq!(s.hosts.len(), 2);
        assert_eq!(s.links[0].ends[0].ifname, "eth0");
        assert_eq!(s.links[0].ends[1].addr.to_string(), "198.18.0.2/24");
        let t = &s.traffic[0];
        assert_eq!((t.from, t.to_host, t.port, t.count), (0, Some(1), 5000, 4));
        assert_eq!(t.destination, Ipv4Addr::new(198, 18, 0, 2));
        assert!(t.listen);
        assert_eq!(t.expect.delivered, Some(0));
        assert!(matches!(
            &s.faults[0].kind,
            FaultKind::Iptables {
                backend: IptablesBackend::Legacy,
                ..
            }
        ));
        assert!(s.expect.no_other_drops);
        assert_eq!(s.expect.drops[0].count, 4);
    }

    #[test]
    fn hook_expectations_take_retina_names_and_listener_options_take_tcp() {
        let s = parse_text(&format!(
            "{BASE}\n[[expect.hooks]]\nhost = \"server\"\nhook = \"TCP_ACCEPT_BASIC\"\nret = -11\ncount = 1\n"
        ))
        .unwrap();
        assert_eq!(
            s.expect.hooks,
            vec![HookExpect {
                host: 1,
                hook: "TCP_ACCEPT_BASIC".into(),
                ret: Some(-11),
                count: 1
            }]
        );
        let e = error_of("\n[[expect.hooks]]\nhost = \"server\"\nhook = \"NAT_DROP\"\ncount = 1\n");
        assert!(
            e.starts_with("s.toml:13:8: unknown hook point `NAT_DROP`: Retina's names are IPTABLE_RULE_DROP, IPTABLE_NAT_DROP,"),
            "{e}"
        );
        let e = error_of(
            "\n[[traffic]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"udp\"\nport = 5000\naccept_until_empty = true\n",
        );
        assert_eq!(e, "s.toml:16:22: `accept_until_empty` applies to tcp only");
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e =
            error_of("\n[[traffic]]\nfrom = \"clinet\"\nto = \"server\"\nprotocol = \"icmp\"\n");
        assert_eq!(
            e,
            "s.toml:12:8: unknown host `clinet` (did you mean `client`?) (declared hosts: client, server)"
        );
    }

    #[test]
    fn syntax_and_unknown_field_errors_carry_positions() {
        let e = parse_text("description = \"x\"\n[hosts.a]\nforwardin = true\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("s.toml:3:1: unknown key `forwardin` (did you mean `forwarding`?)"),
            "{e}"
        );
        let e = parse_text("description = \n").unwrap_err().to_string();
        assert!(e.starts_with("s.toml:1:"), "{e}");
    }

    #[test]
    fn addresses_outside_the_test_ranges_are_refused() {
        let e = parse_text(&BASE.replace("198.18.0.2/24", "10.0.0.2/24"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("address 10.0.0.2 is outside the ranges dropspec may use"),
            "{e}"
        );
        assert!(e.starts_with("s.toml:9:31:"), "{e}");
    }

    #[test]
    fn traffic_is_checked_against_its_protocol() {
        let icmp_port = error_of(
            "[[traffic]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"icmp\"\nport = 1\n",
        );
        assert!(icmp_port.contains("ICMP has no port"), "{icmp_port}");
        let udp_no_port =
            error_of("[[traffic]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"udp\"\n");
        assert!(
            udp_no_port.contains("udp traffic needs a `port`"),
            "{udp_no_port}"
        );
        let wrong_outcome = error_of(
            "[[traffic]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"udp\"\nport = 9\nexpect = { connected = 1 }\n",
        );
        assert!(
            wrong_outcome.contains("does not apply to udp traffic"),
            "{wrong_outcome}"
        );
        let unbounded = error_of(
            "[[traffic]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"icmp\"\ncount = 100000\n",
        );
        assert!(
            unbounded.contains("`count` must be a whole number from 1 to 10,000, not 100000"),
            "{unbounded}"
        );
    }

    #[test]
    fn faults_need_exactly_one_rule_source() {
        let none = error_of("[[faults]]\nhost = \"server\"\n");
        assert!(none.contains("exactly one of"), "{none}");
        let missing_file = error_of("[[faults]]\nhost = \"server\"\nnft_file = \"nope.nft\"\n");
        assert!(
            missing_file.contains("cannot read rule file"),
            "{missing_file}"
        );
        let escape = error_of("[[faults]]\nhost = \"server\"\nnft_file = \"../etc/passwd\"\n");
        assert!(escape.contains("without `..`"), "{escape}");
        let backend =
            error_of("[[faults]]\nhost = \"server\"\nbackend = \"xt\"\niptables = \"\"\n");
        assert!(
            backend.contains("unknown iptables backend `xt`"),
            "{backend}"
        );
    }

    #[test]
    fn reasons_are_names_not_numbers() {
        let e = error_of("[[expect.drops]]\nhost = \"server\"\nreason = \"12\"\ncount = 1\n");
        assert!(e.contains("should be a kernel drop reason name"), "{e}");
    }

    #[test]
    fn duplicate_interface_names_and_self_links_are_refused() {
        let dup = error_of(
            "[[links]]\na = { host = \"client\", addr = \"198.18.1.1/24\", name = \"eth0\" }\nb = { host = \"server\", addr = \"198.18.1.2/24\" }\n",
        );
        assert!(dup.contains("already has an interface `eth0`"), "{dup}");
        let selfie = error_of(
            "[[links]]\na = { host = \"client\", addr = \"198.18.1.1/24\" }\nb = { host = \"client\", addr = \"198.18.1.2/24\" }\n",
        );
        assert!(selfie.contains("joins host `client` to itself"), "{selfie}");
    }

    const V6_BASE: &str = r#"
description = "two hosts with IPv6"

[hosts.client]
[hosts.server]
[hosts.far]

[[links]]
a = { host = "client", addr = "198.18.0.1/24", addr6 = "2001:db8::1/64" }
b = { host = "server", addr = "198.18.0.2/24", addr6 = "2001:db8::2/64" }
"#;

    fn packets_error(entry: &str) -> String {
        parse_text(&format!(
            "{V6_BASE}\n[[packets]]\nfrom = \"client\"\nto = \"server\"\n{entry}"
        ))
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn packets_take_addresses_and_interfaces_from_the_shared_link() {
        let s = parse_text(&format!(
            "{V6_BASE}\n[[packets]]\nfrom = \"server\"\nto = \"client\"\nip = 6\nprotocol = \"udp\"\nport = 53\nreceiver = \"reads\"\ncorrupt = \"checksum\"\ncount = 2\n\n[[packets]]\nfrom = \"client\"\nto = \"server\"\nprotocol = 253\n"
        ))
        .unwrap();
        let p = &s.packets[0];
        assert_eq!((p.from, p.to), (2, 0)); // hosts sort by name: client, far, server
        assert_eq!(p.source, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(p.destination, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (p.interface.as_str(), p.peer_interface.as_str()),
            ("eth0", "eth0")
        );
        assert_eq!(
            (p.port, p.source_port, p.count, p.payload),
            (53, DEFAULT_SOURCE_PORT, 2, 32)
        );
        assert_eq!(
            (p.corrupt, p.receiver, p.ttl),
            (Corruption::Checksum, Receiver::Reads, 64)
        );
        let q = &s.packets[1];
        assert_eq!(q.protocol, PacketProtocol::Other(253));
        assert_eq!(q.destination, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(q.receiver, Receiver::Nobody);
        assert_eq!(
            s.links[0].ends[0].addr6.unwrap().to_string(),
            "2001:db8::1/64"
        );
    }

    #[test]
    fn tcp_flags_default_by_receiver_and_parse_like_tcpdump() {
        let s = parse_text(&format!(
            "{V6_BASE}\n[[packets]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"tcp\"\nport = 80\nreceiver = \"none\"\n\n[[packets]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"tcp\"\nport = 80\nreceiver = \"reads\"\n\n[[packets]]\nfrom = \"client\"\nto = \"server\"\nprotocol = \"tcp\"\nport = 80\nreceiver = \"none\"\ntcp_flags = \"FRA\"\n"
        ))
        .unwrap();
        assert_eq!(s.packets[0].tcp_flags, TCP_SYN);
        assert_eq!(s.packets[1].tcp_flags, TCP_PSH | TCP_ACK);
        assert_eq!(
            s.packets[2].tcp_flags,
            crate::vocab::TCP_FIN | crate::vocab::TCP_RST | TCP_ACK
        );
        assert!(packets_error(
            "protocol = \"tcp\"\nport = 80\nreceiver = \"none\"\ntcp_flags = \"SX\"\n"
        )
        .contains("use the letters F S R P A U E C"));
    }

    #[test]
    fn packets_are_checked_against_protocol_family_and_receiver() {
        let cases = [
            ("protocol = \"udp\"\nport = 9\n", "receiver = \"reads\", \"never_reads\" or \"none\""),
            ("protocol = \"udp\"\nreceiver = \"reads\"\n", "udp packets need a `port`"),
            ("protocol = \"icmp\"\nport = 9\n", "icmp has no port"),
            ("protocol = \"icmp\"\nreceiver = \"reads\"\n", "`receiver` applies to udp and tcp"),
            ("ip = 6\nprotocol = \"icmp\"\n", "IPv6 echo is \"icmpv6\""),
            ("protocol = \"icmpv6\"\n", "\"icmpv6\" needs `ip = 6`"),
            ("protocol = 17\n", "name it"),
            ("protocol = 300\n", "0–255"),
            ("protocol = \"sctp\"\n", "unknown protocol `sctp`"),
            ("ip = 6\nprotocol = \"udp\"\nport = 9\nreceiver = \"none\"\ncorrupt = \"ip_checksum\"\n", "IPv6 has no header checksum"),
            ("protocol = 253\ncorrupt = \"checksum\"\n", "checksums of udp, tcp, icmp and icmpv6 only"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"none\"\ncorrupt = \"crc\"\n", "unknown corruption `crc`"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"never_reads\"\nexpect = { delivered = 0 }\n", "only a receiver that reads"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"reads\"\nexpect = { answered = 0 }\n", "only echo requests are answered"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"reads\"\ndestination = \"198.18.0.77\"\n", "a receiver listens on `server`'s own address"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"none\"\ndestination = \"10.0.0.1\"\n", "outside the ranges dropspec may use"),
            ("protocol = \"udp\"\nport = 9\nreceiver = \"none\"\ndestination = \"2001:db8::9\"\n", "is not an IPv4 address"),
            ("protocol = \"icmp\"\nttl = 256\n", "`ttl` must be a whole number from 0 to 255, not 256"),
            ("protocol = \"icmp\"\npayload = 1473\n", "over the link's MTU of 1500: one unfragmented icmp packet carries at most 1,472 bytes here"),
            ("protocol = \"icmp\"\nsource = \"224.0.0.1\"\ndestination = \"224.0.0.2\"\n", "224.0.0.2 is outside the ranges"),
            ("protocol = \"icmp\"\ncount = 0\n", "`count` must be a whole number from 1 to 10,000, not 0"),
        ];
        for (entry, expected) in cases {
            let e = packets_error(entry);
            assert!(e.contains(expected), "{entry:?}: {e}");
        }
        let no_link = parse_text(&format!(
            "{V6_BASE}\n[[packets]]\nfrom = \"client\"\nto = \"far\"\nprotocol = \"icmp\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(no_link.contains("share no link"), "{no_link}");
        let no_v6 = parse_text(&format!(
            "{BASE}\n[[packets]]\nfrom = \"client\"\nto = \"server\"\nip = 6\nprotocol = \"icmpv6\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(no_v6.contains("has no IPv6 addresses"), "{no_v6}");
    }

    #[test]
    fn ipv6_needs_both_ends_and_the_documentation_range() {
        let one_end = parse_text(&BASE.replace(
            "addr = \"198.18.0.1/24\" }",
            "addr = \"198.18.0.1/24\", addr6 = \"2001:db8::1/64\" }",
        ))
        .unwrap_err()
        .to_string();
        assert!(one_end.contains("only one end of the link"), "{one_end}");
        let outside = parse_text(&V6_BASE.replace("2001:db8::2/64", "fd00::2/64"))
            .unwrap_err()
            .to_string();
        assert!(
            outside.contains("outside the ranges dropspec may use"),
            "{outside}"
        );
        let bad = parse_text(&V6_BASE.replace("2001:db8::2/64", "2001:db8::2/129"))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("not an IPv6 address with prefix"), "{bad}");
    }

    #[test]
    fn kernel_versions_compare_by_major_and_minor() {
        assert_eq!(parse_kernel_version("6.1.0-56-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("6.12.117+deb12-amd64"), Some((6, 12)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert!(parse_kernel_version("6.1.0").unwrap() < (6, 12));
        let e = error_of("[expect]\nsince_kernel = \"six\"\n");
        assert!(e.contains("should be a kernel version"), "{e}");
    }

    #[test]
    fn test_ranges() {
        assert!(is_test_address("198.19.255.1".parse().unwrap()));
        assert!(!is_test_address("198.20.0.1".parse().unwrap()));
        assert!(is_test_address("2001:db8::1".parse().unwrap()));
        assert!(!is_test_address("2001:db9::1".parse().unwrap()));
    }
}
