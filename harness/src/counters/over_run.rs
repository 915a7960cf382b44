//! A host's counters over a whole run whose rules may change midway.
//!
//! A plain difference of the readings before and after the traffic loses a rule that a
//! step removed: it is gone from the second reading, and with it the packets it dropped
//! while it existed, which then look unexplained. So the counters are also read just
//! before each change that may delete rules (a `remove` step, a `run` command), and what
//! moved is summed segment by segment: a removed rule keeps what it counted up to its
//! removal, and a rule deleted and added again counts both lives.

use super::{delta, HostCounters, RuleCounter};

/// The readings of one host so far.
#[derive(Debug, Clone)]
pub struct OverRun {
    last: HostCounters,
    moved: HostCounters,
    /// Every rule seen at any reading, with its latest values (for which rules the host
    /// had: a NAT rule removed midway still says the host did NAT).
    seen: Vec<RuleCounter>,
}

impl OverRun {
    /// Starts from the reading before the traffic.
    pub fn new(before: HostCounters) -> OverRun {
        let seen = before.rules.clone();
        OverRun {
            last: before,
            moved: HostCounters::default(),
            seen,
        }
    }

    /// Adds a later reading.
    pub fn read(&mut self, now: HostCounters) {
        let step = delta(&self.last, &now);
        self.moved = sum(&self.moved, &step);
        for rule in &now.rules {
            match self.seen.iter_mut().find(|r| same_rule(r, rule)) {
                Some(seen) => *seen = rule.clone(),
                None => self.seen.push(rule.clone()),
            }
        }
        self.last = now;
    }

    /// What moved over the whole run.
    pub fn moved(&self) -> &HostCounters {
        &self.moved
    }

    /// The last reading, with the rules that were removed before it added at the end.
    pub fn totals(&self) -> HostCounters {
        let mut totals = self.last.clone();
        for rule in &self.seen {
            if !totals.rules.iter().any(|r| same_rule(r, rule)) {
                totals.rules.push(rule.clone());
            }
        }
        totals
    }
}

fn same_rule(a: &RuleCounter, b: &RuleCounter) -> bool {
    (&a.backend, &a.table, &a.chain, &a.rule) == (&b.backend, &b.table, &b.chain, &b.rule)
}

/// Two differences added up. Rules are matched by identity and by which copy of a rule
/// text in its chain they are, as in [`delta`]; rules new in `b` come after `a`'s.
fn sum(a: &HostCounters, b: &HostCounters) -> HostCounters {
    let add = |x: &std::collections::BTreeMap<String, u64>,
               y: &std::collections::BTreeMap<String, u64>| {
        let mut out = x.clone();
        for (key, value) in y {
            *out.entry(key.clone()).or_default() += value;
        }
        out
    };
    let mut rules = a.rules.clone();
    let mut copies: std::collections::HashMap<(&str, &str, &str, &str), usize> = Default::default();
    for rule in &b.rules {
        let identity = (
            rule.backend.as_str(),
            rule.table.as_str(),
            rule.chain.as_str(),
            rule.rule.as_str(),
        );
        let copy = copies.entry(identity).or_insert(0);
        let target = rules.iter_mut().filter(|r| same_rule(r, rule)).nth(*copy);
        *copy += 1;
        match target {
            Some(r) => {
                r.packets += rule.packets;
                r.bytes += rule.bytes;
            }
            None => rules.push(rule.clone()),
        }
    }
    HostCounters {
        snmp: add(&a.snmp, &b.snmp),
        conntrack: add(&a.conntrack, &b.conntrack),
        rules,
        qdisc: add(&a.qdisc, &b.qdisc),
        link: add(&a.link, &b.link),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::testing::rule;

    fn reading(snmp: u64, rules: Vec<RuleCounter>) -> HostCounters {
        HostCounters {
            snmp: [("Ip.InReceives".to_owned(), snmp)].into(),
            rules,
            ..HostCounters::default()
        }
    }

    const DROP: &str = "-A INPUT -p icmp -j DROP";

    /// steps/rule_removed_mid_scenario: the rule drops 3 pings, a step removes it, 3
    /// more pings pass. The reading at the end has no rule; the one before the removal
    /// has its 3 packets, and they must stay (classify.rs tests what they explain).
    #[test]
    fn a_removed_rule_keeps_what_it_dropped() {
        let before = reading(
            10,
            vec![rule("iptables-nft", "filter", "INPUT", DROP, 0, 0)],
        );
        let at_removal = reading(
            16,
            vec![rule("iptables-nft", "filter", "INPUT", DROP, 3, 252)],
        );
        let after = reading(22, vec![]);
        // The plain difference of the first and last readings has lost the rule.
        assert!(delta(&before, &after).rules.is_empty());
        let mut run = OverRun::new(before);
        run.read(at_removal);
        run.read(after);
        assert_eq!(run.moved().snmp["Ip.InReceives"], 12);
        assert_eq!(run.moved().rules.len(), 1);
        assert_eq!(run.moved().rules[0].packets, 3);
    }

    #[test]
    fn a_rule_added_again_counts_both_lives_and_nat_removed_still_counts_as_nat() {
        let nat = "-A PREROUTING -p udp -j DNAT --to-destination 198.18.2.2";
        let before = reading(
            0,
            vec![rule("iptables-nft", "nat", "PREROUTING", nat, 0, 0)],
        );
        let mut run = OverRun::new(before);
        run.read(reading(
            1,
            vec![
                rule("iptables-nft", "nat", "PREROUTING", nat, 2, 100),
                rule("iptables-nft", "filter", "INPUT", DROP, 2, 168),
            ],
        ));
        run.read(reading(
            2,
            vec![rule("iptables-nft", "filter", "INPUT", DROP, 0, 0)],
        ));
        run.read(reading(
            3,
            vec![rule("iptables-nft", "filter", "INPUT", DROP, 4, 336)],
        ));
        let drop_rule = run.moved().rules.iter().find(|r| r.rule == DROP).unwrap();
        assert_eq!((drop_rule.packets, drop_rule.bytes), (6, 504));
        assert!(run.totals().rules.iter().any(|r| r.rule == nat));
    }
}
