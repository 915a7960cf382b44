//! What changed between two readings of a host.

use std::collections::{BTreeMap, HashMap};

use super::{HostCounters, RuleCounter};

/// What changed from `before` to `after`: only counters that grew, by how much.
///
/// A counter or rule that exists only in `after` counts from zero (the `IcmpMsg` group
/// only lists message types that have been seen; a rule may be added mid-scenario). One
/// that exists only in `before` is left out. Rules are matched by identity — backend,
/// table, chain and text — and, when a chain holds the same rule more than once, by
/// which of those copies it is. Rules come out in `after`'s order.
pub fn delta(before: &HostCounters, after: &HostCounters) -> HostCounters {
    HostCounters {
        snmp: map_delta(&before.snmp, &after.snmp),
        conntrack: map_delta(&before.conntrack, &after.conntrack),
        rules: rules_delta(&before.rules, &after.rules),
        qdisc: map_delta(&before.qdisc, &after.qdisc),
        link: map_delta(&before.link, &after.link),
    }
}

fn map_delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(key, &value)| {
            // Saturating: every value kept is a counter that only grows, and a 32-bit
            // per-CPU conntrack statistic that wrapped is not worth a huge bogus number.
            let change = value.saturating_sub(before.get(key).copied().unwrap_or(0));
            (change != 0).then(|| (key.clone(), change))
        })
        .collect()
}

/// A rule's identity: backend, table, chain, text, and which copy of that rule it is.
type RuleKey<'a> = (&'a str, &'a str, &'a str, &'a str, usize);

fn rule_keys(rules: &[RuleCounter]) -> impl Iterator<Item = (RuleKey<'_>, &RuleCounter)> {
    let mut seen: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    rules.iter().map(move |r| {
        let identity = (
            r.backend.as_str(),
            r.table.as_str(),
            r.chain.as_str(),
            r.rule.as_str(),
        );
        let copy = seen.entry(identity).or_insert(0);
        let key = (identity.0, identity.1, identity.2, identity.3, *copy);
        *copy += 1;
        (key, r)
    })
}

fn rules_delta(before: &[RuleCounter], after: &[RuleCounter]) -> Vec<RuleCounter> {
    let before: HashMap<RuleKey<'_>, &RuleCounter> = rule_keys(before).collect();
    rule_keys(after)
        .filter_map(|(key, rule)| {
            let (packets, bytes) = before.get(&key).map_or((0, 0), |b| (b.packets, b.bytes));
            let packets = rule.packets.saturating_sub(packets);
            let bytes = rule.bytes.saturating_sub(bytes);
            (packets != 0 || bytes != 0).then(|| RuleCounter {
                packets,
                bytes,
                ..rule.clone()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::testing::rule;

    fn counters(
        snmp: &[(&str, u64)],
        conntrack: &[(&str, u64)],
        rules: Vec<RuleCounter>,
    ) -> HostCounters {
        HostCounters {
            snmp: snmp.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            conntrack: conntrack.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            rules,
            qdisc: Default::default(),
            link: Default::default(),
        }
    }

    #[test]
    fn delta_keeps_what_grew_and_counts_newcomers_from_zero() {
        let before = counters(
            &[
                ("Udp.NoPorts", 5),
                ("Ip.InReceives", 10),
                ("Tcp.OutRsts", 1),
                ("Gone.Away", 3),
            ],
            &[("invalid", 2), ("drop", 0)],
            vec![],
        );
        let after = counters(
            &[
                ("Udp.NoPorts", 8),
                ("Ip.InReceives", 10),
                ("Tcp.OutRsts", 0),
                ("IcmpMsg.OutType3", 3),
            ],
            &[("invalid", 2), ("drop", 4)],
            vec![],
        );
        let change = delta(&before, &after);
        assert_eq!(
            change,
            counters(
                &[("IcmpMsg.OutType3", 3), ("Udp.NoPorts", 3)],
                &[("drop", 4)],
                vec![]
            )
        );
        assert!(delta(&after, &after).is_empty());
    }

    #[test]
    fn delta_matches_rules_by_identity_and_copy() {
        let r = |chain, text, packets, bytes| {
            rule("iptables-legacy", "filter", chain, text, packets, bytes)
        };
        let dup = "-A INPUT -p udp -m udp --dport 5001 -j DROP";
        let before = counters(
            &[],
            &[],
            vec![
                r("INPUT", "-P INPUT ACCEPT", 10, 1000),
                r("INPUT", dup, 4, 240),
                r("INPUT", dup, 0, 0),
                r("INPUT", "-A INPUT -j gone", 9, 9),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    1,
                    60,
                ),
            ],
        );
        let after = counters(
            &[],
            &[],
            vec![
                // Same text in another backend or table is another rule.
                rule("iptables-nft", "filter", "INPUT", "-P INPUT ACCEPT", 3, 300),
                r("INPUT", "-P INPUT ACCEPT", 10, 1000),
                r("INPUT", dup, 4, 240),
                r("INPUT", dup, 2, 120),
                r("INPUT", "-A INPUT -j new", 1, 50),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    6,
                    360,
                ),
            ],
        );
        assert_eq!(
            delta(&before, &after).rules,
            vec![
                rule("iptables-nft", "filter", "INPUT", "-P INPUT ACCEPT", 3, 300),
                r("INPUT", dup, 2, 120),
                r("INPUT", "-A INPUT -j new", 1, 50),
                rule(
                    "nft",
                    "inet t",
                    "input",
                    "udp dport 5000 counter drop",
                    5,
                    300
                ),
            ]
        );
    }
}
