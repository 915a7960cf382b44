//! `dropspec run --metrics FILE`: the drops a run observed, in Prometheus's text
//! exposition format under Retina's metric names, so a team can put a scenario beside
//! what a running Retina reports for the same fault.
//!
//! - `networkobservability_drop_count` (packets) and `networkobservability_drop_bytes`,
//!   gauges as in Retina, with Retina's labels `reason` and `direction`, and dropspec's
//!   `scenario`, `host`, `function` and `source`.
//! - `source="kfree_skb"`: the drop probe's rows; `reason` is the kernel's drop reason
//!   (`NETFILTER_DROP`). `source="hook_point"`: the failed calls at Retina's own hook
//!   points; `reason` is Retina's name for them (`IPTABLE_RULE_DROP`). The two count the
//!   same packets from two sides: sum one source, never both.
//! - `direction` ([`direction`]) is where in the packet path the drop happened, from
//!   the stage of the drop's hook frame (`kernel::stacks::HOOKS`): the receive path
//!   (prerouting, input, device ingress, and forward: a forwarded packet dies after it
//!   was received and before it was sent) is `ingress`; output, postrouting and device
//!   egress are `egress`; a drop with no known stage is `unknown`, never a guess.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::ScenarioResult;
use crate::kernel::stacks::hook_stage;

pub const DROP_COUNT: &str = "networkobservability_drop_count";
pub const DROP_BYTES: &str = "networkobservability_drop_bytes";

/// The direction label of a kfree_skb drop: from the stage of its hook frame, else of
/// the dropping function itself (`__dev_queue_xmit` is a stage of its own).
pub fn direction(hook: Option<&str>, function: &str) -> &'static str {
    let stage = hook.and_then(hook_stage).or_else(|| hook_stage(function));
    match stage.and_then(|s| s.split(' ').next_back()) {
        Some("prerouting" | "input" | "ingress" | "forward") => "ingress",
        Some("output" | "postrouting" | "egress") => "egress",
        _ => "unknown",
    }
}

/// The direction label of a failed call at one of Retina's hook points: a connect is
/// sent, an accept received; the netfilter points run on every path, so they say nothing.
pub fn hook_point_direction(hook: &str) -> &'static str {
    match hook {
        "TCP_CONNECT_BASIC" => "egress",
        "TCP_ACCEPT_BASIC" => "ingress",
        _ => "unknown",
    }
}

/// One sample's labels; samples are sorted by scenario, then host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Labels {
    scenario: String,
    host: String,
    reason: String,
    direction: &'static str,
    function: String,
    source: &'static str,
}

pub fn render(results: &[ScenarioResult]) -> String {
    // Rows that differ only in what the labels leave out (protocol, the hook frame
    // within one direction, the stack) are one sample.
    let mut samples: BTreeMap<Labels, (u64, u64)> = BTreeMap::new();
    for r in results {
        let Some(report) = &r.report else { continue };
        for d in &report.drops {
            let labels = Labels {
                reason: d.reason.clone(),
                direction: direction(d.hook.as_deref(), &d.function),
                scenario: r.name.clone(),
                host: d.host.clone(),
                function: d.function.clone(),
                source: "kfree_skb",
            };
            let entry = samples.entry(labels).or_default();
            entry.0 += d.packets;
            entry.1 += d.bytes;
        }
        for h in &report.hooks.counts {
            let labels = Labels {
                reason: h.hook.clone(),
                direction: hook_point_direction(&h.hook),
                scenario: r.name.clone(),
                host: h.host.clone(),
                function: h.function.clone(),
                source: "hook_point",
            };
            let entry = samples.entry(labels).or_default();
            entry.0 += h.count;
            entry.1 += h.bytes;
        }
    }
    let mut out = String::new();
    for (name, help, pick) in [
        (
            DROP_COUNT,
            "Packets dropped, by reason and direction (Retina's metric), per dropspec scenario, host and kernel function.",
            0,
        ),
        (
            DROP_BYTES,
            "Bytes dropped, by reason and direction (Retina's metric), per dropspec scenario, host and kernel function.",
            1,
        ),
    ] {
        writeln!(out, "# HELP {name} {help}").unwrap();
        writeln!(out, "# TYPE {name} gauge").unwrap();
        for (l, values) in &samples {
            let value = if pick == 0 { values.0 } else { values.1 };
            writeln!(
                out,
                "{name}{{reason=\"{}\",direction=\"{}\",scenario=\"{}\",host=\"{}\",function=\"{}\",source=\"{}\"}} {value}",
                escape(&l.reason),
                l.direction,
                escape(&l.scenario),
                escape(&l.host),
                escape(&l.function),
                l.source
            )
            .unwrap();
        }
    }
    out
}

/// A label value: backslash, double quote and line feed escaped, as the format says.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    type Sample = (String, BTreeMap<String, String>, f64);

    /// A strict reader of the text exposition format (version 0.0.4): every sample's
    /// metric declared by `# HELP` and `# TYPE` first, each once; metric and label names
    /// valid; label values in double quotes with only `\\`, `\"` and `\n` escapes;
    /// values numbers; no sample twice.
    fn parse(text: &str) -> Vec<Sample> {
        let name_ok = |n: &str| {
            let mut chars = n.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        let mut helped = BTreeSet::new();
        let mut typed = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut samples = Vec::new();
        assert!(text.ends_with('\n'), "the exposition ends with a line feed");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(name_ok(name), "{line}");
                assert!(helped.insert(name.to_owned()), "HELP twice: {line}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(name_ok(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(typed.insert(name.to_owned()), "TYPE twice: {line}");
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let open = line.find('{').expect("labels");
            let name = &line[..open];
            assert!(
                typed.contains(name) && helped.contains(name),
                "undeclared: {line}"
            );
            let mut labels = BTreeMap::new();
            let mut chars = line[open + 1..].chars();
            loop {
                let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert!(name_ok(&label), "label name {label:?} in {line}");
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("closed label value") {
                        '"' => break,
                        '\\' => value.push(match chars.next() {
                            Some('\\') => '\\',
                            Some('"') => '"',
                            Some('n') => '\n',
                            other => panic!("bad escape {other:?} in {line}"),
                        }),
                        '\n' => panic!("raw line feed"),
                        c => value.push(c),
                    }
                }
                assert!(labels.insert(label, value).is_none(), "label twice: {line}");
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("{other:?} after a label value in {line}"),
                }
            }
            let rest: String = chars.collect();
            let value: f64 = rest
                .strip_prefix(' ')
                .expect("a space before the value")
                .parse()
                .expect("a number");
            assert!(
                seen.insert((name.to_owned(), format!("{labels:?}"))),
                "sample twice: {line}"
            );
            samples.push((name.to_owned(), labels, value));
        }
        samples
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn drops_and_hook_points_under_retinas_names() {
        let samples = parse(&render(&super::super::tests::sample()));
        assert_eq!(samples.len(), 6, "{samples:?}");
        assert!(samples.contains(&(
            DROP_COUNT.into(),
            labels(&[
                ("reason", "NETFILTER_DROP"),
                ("direction", "ingress"),
                ("scenario", "iptables/input_drop_icmp_nft"),
                ("host", "server"),
                ("function", "nft_do_chain"),
                ("source", "kfree_skb"),
            ]),
            3.0
        )));
        assert!(samples.contains(&(
            DROP_BYTES.into(),
            labels(&[
                ("reason", "IPTABLE_RULE_DROP"),
                ("direction", "unknown"),
                ("scenario", "iptables/input_drop_icmp_nft"),
                ("host", "server"),
                ("function", "nf_hook_slow"),
                ("source", "hook_point"),
            ]),
            252.0
        )));
        // Label values with a quote and a backslash come back as they were.
        assert!(samples.contains(&(
            DROP_COUNT.into(),
            labels(&[
                ("reason", "IP_OUTNOROUTES"),
                ("direction", "egress"),
                ("scenario", "routing/a\"b<c>&d"),
                ("host", "router\\1"),
                ("function", "ip_route_output"),
                ("source", "kfree_skb"),
            ]),
            3.0
        )));
    }

    #[test]
    fn rows_differing_only_in_protocol_are_one_sample() {
        let mut results = super::super::tests::sample();
        let report = results[0].report.as_mut().unwrap();
        let mut v6 = report.drops[0].clone();
        v6.protocol = "ipv6/icmpv6".into();
        v6.hook = Some("ip6_input_finish".into());
        report.drops.push(v6);
        let samples = parse(&render(&results));
        let nft = samples
            .iter()
            .find(|(name, l, _)| name == DROP_COUNT && l["function"] == "nft_do_chain")
            .unwrap();
        assert_eq!(nft.2, 6.0);
    }

    #[test]
    fn direction_follows_the_stage_of_the_hook_frame() {
        assert_eq!(
            direction(Some("ip_local_deliver"), "nft_do_chain"),
            "ingress"
        );
        assert_eq!(direction(Some("ip6_rcv_core"), "ip6_rcv_core"), "ingress");
        assert_eq!(direction(Some("ip_forward"), "nft_do_chain"), "ingress");
        assert_eq!(direction(Some("__ip_local_out"), "nft_do_chain"), "egress");
        assert_eq!(direction(Some("ip_output"), "ip_finish_output2"), "egress");
        assert_eq!(direction(None, "__dev_queue_xmit"), "egress");
        assert_eq!(direction(None, "__netif_receive_skb_core"), "ingress");
        assert_eq!(direction(None, "neigh_invalidate"), "unknown");
        assert_eq!(direction(Some("not_a_hook"), "udp_recvmsg"), "unknown");
    }

    #[test]
    fn an_empty_run_still_declares_both_metrics() {
        let samples = parse(&render(&[]));
        assert!(samples.is_empty());
        let text = render(&[]);
        assert!(text.contains("# TYPE networkobservability_drop_count gauge\n"));
        assert!(text.contains("# TYPE networkobservability_drop_bytes gauge\n"));
    }
}
