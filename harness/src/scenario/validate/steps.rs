//! `[[steps]]`: the run in order. Each step names what it runs or changes; every name is
//! resolved here, and the order is checked as the runner will meet it: a fault applied
//! twice or removed while not applied, a listener accepted before its entry opened it,
//! a crafted entry run twice, an entry no step runs.

use std::collections::BTreeMap;
use std::ops::Range;

use super::super::model::*;
use super::super::raw::{self, Spanned};
use super::super::ScenarioError;
use super::{did_you_mean, must, Validator, MAX_TIMEOUT_MS};

/// The longest one `wait_ms` step may sleep: as long as the longest wait for an answer.
pub const MAX_WAIT_MS: u64 = MAX_TIMEOUT_MS;

/// The names and spans of one kind of entry (`traffic`, `packets`, `faults`), by index
/// in the file. An entry that failed validation is `None` in `built`.
pub(in crate::scenario) struct Named<'a, T> {
    pub(in crate::scenario) kind: &'static str,
    pub(in crate::scenario) names: Vec<Option<Spanned<String>>>,
    pub(in crate::scenario) built: &'a mut [Option<T>],
}

impl<T> Named<'_, T> {
    fn known(&self) -> Vec<&str> {
        self.names
            .iter()
            .flatten()
            .map(|n| n.get_ref().as_str())
            .collect()
    }
}

impl Validator<'_> {
    /// Checks the names of one kind of entry: each unique, and (with steps) present on
    /// every `traffic` and `packets` entry, which only a step can then run.
    fn entry_names<T>(&self, named: &Named<'_, T>, spans: &[Range<usize>], need: bool) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, name) in named.names.iter().enumerate() {
            let Some(name) = name else {
                if need {
                    self.note(self.at.error(
                        spans[i].clone(),
                        format!(
                            "with `[[steps]]`, every `[[{}]]` entry runs from a step: give this one a `name` and add a step `{{ {} = \"NAME\" }}`",
                            named.kind,
                            step_key(named.kind)
                        ),
                    ));
                }
                continue;
            };
            let text = name.get_ref();
            let valid = !text.is_empty()
                && text.len() <= 64
                && text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                self.note(self.at.error(
                    name.span(),
                    format!("name `{text}` must be 1–64 characters of letters, digits, `-` or `_`"),
                ));
            }
            if let Some(first) = seen.insert(text, i) {
                let (line, _) = self.at.position(spans[first].start);
                self.note(self.at.error(
                    name.span(),
                    format!(
                        "two `[[{}]]` entries are named `{text}` (the first at line {line}): names must be unique",
                        named.kind
                    ),
                ));
            }
        }
    }

    /// The index of the entry called `name`, or an error naming the closest one.
    fn resolve<T>(&self, named: &Named<'_, T>, name: &Spanned<String>) -> Option<usize> {
        let found = named
            .names
            .iter()
            .position(|n| n.as_ref().map(Spanned::get_ref) == Some(name.get_ref()));
        if found.is_none() {
            let known = named.known();
            let listed = if known.is_empty() {
                format!("no `[[{}]]` entry has a `name`", named.kind)
            } else {
                format!("named `[[{}]]` entries: {}", named.kind, known.join(", "))
            };
            self.note(self.at.error(
                name.span(),
                format!(
                    "no `[[{}]]` entry is named `{}`{} ({listed})",
                    named.kind,
                    name.get_ref(),
                    did_you_mean(name.get_ref(), &known)
                ),
            ));
        }
        found
    }

    /// Resolves and checks `[[steps]]`. A traffic entry whose listener an `accept` step
    /// serves stops accepting on its own run (`built` is changed for that).
    #[allow(clippy::too_many_arguments)]
    pub(in crate::scenario) fn steps(
        &self,
        raw_steps: Vec<Spanned<raw::Step>>,
        traffic: Named<'_, Traffic>,
        traffic_spans: &[Range<usize>],
        packets: Named<'_, PacketEntry>,
        packet_spans: &[Range<usize>],
        faults: Named<'_, Fault>,
        fault_spans: &[Range<usize>],
        receiver_written: &[bool],
        links: &[Link],
    ) -> Vec<Step> {
        let with_steps = !raw_steps.is_empty();
        self.entry_names(&traffic, traffic_spans, with_steps);
        self.entry_names(&packets, packet_spans, with_steps);
        self.entry_names(&faults, fault_spans, false);
        if !with_steps {
            return Vec::new();
        }
        // What has happened so far, step by step, as the runner will meet it.
        let mut traffic_ran: Vec<Option<usize>> = vec![None; traffic.names.len()];
        let mut packets_ran: Vec<Option<usize>> = vec![None; packets.names.len()];
        let mut applied: Vec<Option<usize>> = vec![None; faults.names.len()];
        // Faults no step applies are applied up front (step 0).
        for (i, state) in applied.iter_mut().enumerate() {
            let applied_by_step = raw_steps.iter().any(|s| {
                s.get_ref().apply.as_ref().map(Spanned::get_ref)
                    == faults.names[i].as_ref().map(Spanned::get_ref)
            });
            if !applied_by_step || faults.names[i].is_none() {
                *state = Some(0);
            }
        }
        let mut accepted: Vec<bool> = vec![false; traffic.names.len()];
        // Names any step runs, even a step with a problem of its own: an entry it names
        // is not also reported as run by no step.
        let named_by_steps: Vec<(&'static str, String)> = raw_steps
            .iter()
            .flat_map(|s| {
                let s = s.get_ref();
                [("traffic", &s.traffic), ("packets", &s.packets)]
                    .into_iter()
                    .filter_map(|(kind, name)| name.as_ref().map(|n| (kind, n.get_ref().clone())))
            })
            .collect();
        let mut steps = Vec::new();
        for (n, spanned) in raw_steps.into_iter().enumerate() {
            let number = n + 1;
            let span = spanned.span();
            let (line, _) = self.at.position(span.start);
            let step = spanned.into_inner();
            let actions = [
                step.traffic.is_some(),
                step.packets.is_some(),
                step.wait_ms.is_some(),
                step.apply.is_some(),
                step.remove.is_some(),
                step.link.is_some(),
                step.route.is_some(),
                step.accept.is_some(),
                step.run.is_some(),
            ];
            if actions.iter().filter(|a| **a).count() != 1 {
                self.note(self.at.error(
                    span,
                    "a step does exactly one thing: `traffic`, `packets`, `wait_ms`, `apply`, `remove`, `link`, `route`, `accept` or `run`",
                ));
                continue;
            }
            if let (Some(e), None) = (&step.expect, &step.traffic) {
                self.note(self.at.error(
                    e.span(),
                    "`expect` on a step applies to a `traffic` step that runs an entry again",
                ));
                continue;
            }
            let action = if let Some(name) = &step.traffic {
                let Some(entry) = self.resolve(&traffic, name) else {
                    continue;
                };
                let again = traffic_ran[entry].is_some();
                let Some(spec) = traffic.built[entry].as_ref() else {
                    continue;
                };
                if again
                    && spec.protocol == Protocol::Tcp
                    && !spec.listener.reads
                    && !accepted[entry]
                {
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "`{}` runs again, which sends data on its connections, but no one has accepted them: the listener must read, or an `accept` step come first",
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                let expect = match (&step.expect, again) {
                    (Some(e), false) => {
                        self.note(self.at.error(
                            e.span(),
                            format!(
                                "this is the first run of `{}`, held to the entry's own `expect`; `expect` on a step is for a later run",
                                name.get_ref()
                            ),
                        ));
                        continue;
                    }
                    (Some(e), true) => {
                        let Some(expect) = self.keep(self.again_expect(spec.protocol, e)) else {
                            continue;
                        };
                        expect
                    }
                    (None, _) => TrafficExpect::default(),
                };
                traffic_ran[entry].get_or_insert(number);
                StepAction::Traffic {
                    entry,
                    again,
                    expect,
                }
            } else if let Some(name) = &step.packets {
                let Some(entry) = self.resolve(&packets, name) else {
                    continue;
                };
                if let Some(first) = packets_ran[entry] {
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "`{}` already ran at step {first}: a `[[packets]]` entry runs once (write a second entry for more)",
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                packets_ran[entry] = Some(number);
                StepAction::Packets { entry }
            } else if let Some(ms) = &step.wait_ms {
                if !(1..=MAX_WAIT_MS).contains(ms.get_ref()) {
                    self.note(self.at.error(ms.span(), must("wait_ms", ms.get_ref())));
                    continue;
                }
                StepAction::Wait { ms: *ms.get_ref() }
            } else if let Some(name) = &step.apply {
                let Some(fault) = self.resolve(&faults, name) else {
                    continue;
                };
                if let Some(at) = applied[fault] {
                    let when = if at == 0 {
                        "up front".to_owned()
                    } else {
                        format!("at step {at}")
                    };
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "fault `{}` is already applied ({when}): `remove` it first",
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                applied[fault] = Some(number);
                StepAction::Apply { fault }
            } else if let Some(name) = &step.remove {
                let Some(fault) = self.resolve(&faults, name) else {
                    continue;
                };
                if applied[fault].is_none() {
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "fault `{}` is not applied at this step: an `apply` step must come before",
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                if let Some(spec) = faults.built[fault].as_ref() {
                    if let Err(why) = super::super::undo::undo(&spec.kind) {
                        self.note(self.at.error(
                            name.span(),
                            format!("fault `{}` cannot be removed: {why}", name.get_ref()),
                        ));
                        continue;
                    }
                }
                applied[fault] = None;
                StepAction::Remove { fault }
            } else if let Some(link) = &step.link {
                let Some(action) = self.keep(self.link_step(link.get_ref(), links)) else {
                    continue;
                };
                action
            } else if let Some(run) = step.run {
                let run = run.into_inner();
                let Some(host) = self.keep(self.host_ref(&run.host)) else {
                    continue;
                };
                let Some(argv) = self.keep(self.command(run.command)) else {
                    continue;
                };
                StepAction::Run { host, argv }
            } else if let Some(route) = step.route {
                let Some(action) = self.keep(self.route_step(route, links)) else {
                    continue;
                };
                action
            } else {
                let accept = step.accept.expect("one action is set");
                let name = &accept.get_ref().traffic;
                let Some(entry) = self.resolve(&traffic, name) else {
                    continue;
                };
                let Some(spec) = traffic.built[entry].as_mut() else {
                    continue;
                };
                if spec.protocol != Protocol::Tcp || !spec.listen {
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "`{}` has no TCP listener to accept on: `accept` needs a tcp entry with `listen = true`",
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                if traffic_ran[entry].is_none() {
                    self.note(self.at.error(
                        name.span(),
                        format!(
                            "the listener of `{}` does not exist yet: the step that runs `{{ traffic = \"{}\" }}` must come before",
                            name.get_ref(),
                            name.get_ref()
                        ),
                    ));
                    continue;
                }
                if spec.listener.reads && !accepted[entry] {
                    if receiver_written[entry] {
                        self.note(self.at.error(
                            name.span(),
                            format!(
                                "`{}` says `receiver = \"reads\"`, so it accepts on its own run: remove `receiver` to accept only at this step",
                                name.get_ref()
                            ),
                        ));
                        continue;
                    }
                    // It accepts here, and only here (and at later accept steps).
                    spec.listener.reads = false;
                    spec.listener.accept = Accept::AtSteps;
                }
                accepted[entry] = true;
                StepAction::Accept { traffic: entry }
            };
            steps.push(Step {
                line,
                label: label(&action, &traffic, &packets, &faults, self),
                action,
            });
        }
        for (kind, ran, names, spans) in [
            ("traffic", &traffic_ran, &traffic.names, traffic_spans),
            ("packets", &packets_ran, &packets.names, packet_spans),
        ] {
            for (i, ran) in ran.iter().enumerate() {
                let named = |n: &Spanned<String>| {
                    named_by_steps
                        .iter()
                        .any(|(k, step)| *k == kind && step == n.get_ref())
                };
                if let (None, Some(name)) = (ran, &names[i]) {
                    if named(name) {
                        continue;
                    }
                    self.note(self.at.error(
                        spans[i].clone(),
                        format!(
                            "`[[{kind}]]` entry `{}` is in no step, so it would never run: add a step `{{ {kind} = \"{}\" }}`",
                            name.get_ref(),
                            name.get_ref()
                        ),
                    ));
                }
            }
        }
        steps
    }

    fn link_step(&self, link: &raw::LinkStep, links: &[Link]) -> Result<StepAction, ScenarioError> {
        let host = self.host_ref(&link.host)?;
        let dev = self.interface_of(host, &link.dev, links)?;
        let up = match link.state.get_ref().as_str() {
            "up" => true,
            "down" => false,
            other => {
                return Err(self.at.error(
                    link.state.span(),
                    format!("unknown link state `{other}`: use \"up\" or \"down\""),
                ));
            }
        };
        Ok(StepAction::Link { host, dev, up })
    }

    fn route_step(
        &self,
        step: Spanned<raw::RouteStep>,
        links: &[Link],
    ) -> Result<StepAction, ScenarioError> {
        let span = step.span();
        let step = step.into_inner();
        let host = self.host_ref(&step.host)?;
        let (route, add) = match (step.add, step.del) {
            (Some(route), None) => (route, true),
            (None, Some(route)) => (route, false),
            _ => {
                return Err(self.at.error(
                    span,
                    "a route step needs exactly one of `add` or `del`, each a route as in `[hosts.NAME] routes`",
                ));
            }
        };
        if let Some(dev) = &route.dev {
            self.interface_of(host, dev, links)?;
        }
        let route = self.route(route)?;
        Ok(StepAction::Route { host, route, add })
    }

    /// The interface `dev` of `host`, which a link must give it.
    fn interface_of(
        &self,
        host: HostId,
        dev: &Spanned<String>,
        links: &[Link],
    ) -> Result<String, ScenarioError> {
        let known: Vec<&str> = links
            .iter()
            .flat_map(|l| l.ends.iter())
            .filter(|e| e.host == host)
            .map(|e| e.ifname.as_str())
            .collect();
        if known.contains(&dev.get_ref().as_str()) {
            return Ok(dev.get_ref().clone());
        }
        Err(self.at.error(
            dev.span(),
            format!(
                "no link gives this host an interface `{}`{} (its interfaces: {})",
                dev.get_ref(),
                did_you_mean(dev.get_ref(), &known),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ))
    }

    /// The expectations of a later run: ICMP and UDP as for the entry; TCP sends data on
    /// the connections of the first run, so only `delivered` applies.
    fn again_expect(
        &self,
        protocol: Protocol,
        spec: &Spanned<raw::TrafficExpect>,
    ) -> Result<TrafficExpect, ScenarioError> {
        let e = spec.get_ref();
        if protocol != Protocol::Tcp {
            let copy = raw::TrafficExpect {
                answered: e.answered,
                delivered: e.delivered,
                errors: e.errors,
                connected: e.connected,
                refused: e.refused,
                timed_out: e.timed_out,
                unreachable: e.unreachable,
                blocked: e.blocked,
            };
            return self.traffic_expect(protocol, Some(Spanned::new(spec.span(), copy)));
        }
        let other = e.answered.is_some()
            || e.errors.is_some()
            || e.connected.is_some()
            || e.refused.is_some()
            || e.timed_out.is_some()
            || e.unreachable.is_some()
            || e.blocked.is_some();
        if other {
            return Err(self.at.error(
                spec.span(),
                "a later run of tcp traffic sends `payload` bytes on each connection of its first run: only `delivered` (connections whose bytes were read) applies",
            ));
        }
        Ok(TrafficExpect {
            delivered: e.delivered,
            ..TrafficExpect::default()
        })
    }
}

/// The key of the step that runs an entry of this kind.
fn step_key(kind: &str) -> &'static str {
    match kind {
        "packets" => "packets",
        _ => "traffic",
    }
}

fn label(
    action: &StepAction,
    traffic: &Named<'_, Traffic>,
    packets: &Named<'_, PacketEntry>,
    faults: &Named<'_, Fault>,
    v: &Validator<'_>,
) -> String {
    let name = |names: &[Option<Spanned<String>>], i: usize| {
        names[i]
            .as_ref()
            .map_or_else(|| format!("#{}", i + 1), |n| n.get_ref().clone())
    };
    let host = |id: HostId| {
        v.host_ids
            .iter()
            .find(|(_, h)| **h == id)
            .map_or_else(String::new, |(n, _)| n.clone())
    };
    match action {
        StepAction::Traffic { entry, again, .. } => format!(
            "traffic {}{}",
            name(&traffic.names, *entry),
            if *again { " again" } else { "" }
        ),
        StepAction::Packets { entry } => format!("packets {}", name(&packets.names, *entry)),
        StepAction::Wait { ms } => format!("wait {ms} ms"),
        StepAction::Apply { fault } => format!("apply {}", name(&faults.names, *fault)),
        StepAction::Remove { fault } => format!("remove {}", name(&faults.names, *fault)),
        StepAction::Link { host: h, dev, up } => {
            format!(
                "link {} {dev} {}",
                host(*h),
                if *up { "up" } else { "down" }
            )
        }
        StepAction::Route {
            host: h,
            route,
            add,
        } => format!(
            "route {} {} {}",
            host(*h),
            if *add { "add" } else { "del" },
            describe_route(route)
        ),
        StepAction::Accept { traffic: t } => format!("accept {}", name(&traffic.names, *t)),
        StepAction::Run { host: h, argv } => format!("run {} {}", host(*h), argv.join(" ")),
    }
}

/// `198.18.1.0/24 via 198.18.0.254 dev eth0`.
fn describe_route(route: &Route) -> String {
    let mut text = route
        .destination
        .map_or_else(|| "default".to_owned(), |d| d.to_string());
    if let Some(via) = route.via {
        text.push_str(&format!(" via {via}"));
    }
    if let Some(dev) = &route.dev {
        text.push_str(&format!(" dev {dev}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use crate::scenario::{parse, StepAction};
    use std::path::Path;

    #[test]
    fn steps_resolve_names_and_defer_the_faults_they_apply() {
        let text = r#"
description = "x"
[hosts.client]
[hosts.server]
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
[[faults]]
host = "server"
nft = "table inet base { }"
[[faults]]
name = "late"
host = "server"
iptables = "*filter\n-A INPUT -p tcp -j DROP\nCOMMIT\n"
[[traffic]]
name = "conn"
from = "client"
to = "server"
protocol = "tcp"
port = 80
[[steps]]
traffic = "conn"
[[steps]]
accept = { traffic = "conn" }
[[steps]]
apply = "late"
[[steps]]
traffic = "conn"
expect = { delivered = 1 }
[[steps]]
remove = "late"
"#;
        let s = parse(text, Path::new("x.toml"), "x", Path::new("fixtures")).unwrap();
        assert!(s.applied_up_front(0));
        assert!(!s.applied_up_front(1));
        // Accepted at a step only, not on its own run.
        assert!(!s.traffic[0].listener.reads);
        let labels: Vec<&str> = s.steps.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "traffic conn",
                "accept conn",
                "apply late",
                "traffic conn again",
                "remove late"
            ]
        );
        assert!(matches!(
            &s.steps[3].action,
            StepAction::Traffic { entry: 0, again: true, expect } if expect.delivered == Some(1)
        ));
        assert_eq!(s.steps[0].line, 21);
    }
}
