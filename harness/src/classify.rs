//! Which mechanism dropped the packets, in a small stable vocabulary.
//!
//! A drop reason alone does not say it: a NAT failure, a full conntrack table and a
//! legacy iptables DROP rule are all `NETFILTER_DROP` at `nf_hook_slow`, and the stack is
//! no help because the NAT or conntrack code has already returned when `nf_hook_slow`
//! frees the packet. The kernel's own counters do tell them apart (measured on 6.18):
//! - a rule counts the packets it drops;
//! - conntrack's `drop` statistic counts every packet conntrack drops, and
//!   `insert_failed` the ones whose entry could not be inserted because its tuple clashed:
//!   that is what SNAT port exhaustion looks like (NAT found no free tuple, so the entry
//!   clashes at confirmation), while a full table moves `drop` alone.
//!
//! So a host's netfilter drops are split by that evidence; what no counter accounts for
//! is attributed to NAT only when the host has NAT rules, and said to be inferred.
//! Where nothing separates two causes, the cause says so instead of guessing.

use std::collections::BTreeMap;

use crate::counters::HostCounters;

/// What the kernel told us about one host over the scenario, besides the drops.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// Packets counted by the host's own DROP/REJECT rules, per rule text.
    pub rule_drops: BTreeMap<String, u64>,
    /// conntrack's `drop` statistic: every packet conntrack dropped.
    pub conntrack_drops: u64,
    /// conntrack's `insert_failed`: entries that clashed with an existing tuple.
    pub conntrack_insert_failed: u64,
    /// The host has SNAT/DNAT/MASQUERADE/REDIRECT rules.
    pub has_nat_rules: bool,
    /// ICMP messages the host sent, by type ("type=11"; ICMPv6: "icmpv6 type=3").
    pub icmp_sent: BTreeMap<String, u64>,
    /// UDP datagrams whose checksum failed (Udp.InCsumErrors + Udp6.InCsumErrors).
    pub udp_csum_errors: u64,
    /// Drops the kernel counts but does not report through kfree_skb, by counter name
    /// (a SYN refused for a full accept queue is consumed, not dropped).
    pub silent_drops: BTreeMap<String, u64>,
}

pub use crate::vocab::CAUSES;

/// ICMPv6 time exceeded (type 3) in `Evidence::icmp_sent`.
const ICMP6_TIME_EXCEEDED: &str = "icmpv6 type=3";

/// One cause with how many packets it accounts for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Cause {
    pub host: String,
    /// `rule`, `conntrack_full`, `nat`, `checksum`, `no_socket`, `routing`, `rp_filter`,
    /// `neighbour`, `ttl_expired`, `too_big`, `socket_buffer`, `listen_overflow`,
    /// `header`, `tc`, `qdisc`, `netfilter_unexplained`, `silent`, or `other` (the reason is in
    /// `detail`).
    pub cause: String,
    pub packets: u64,
    /// The evidence, for people: the rule, the counter, or why it is inferred.
    pub detail: String,
}

/// A drop as the classifier needs it.
#[derive(Debug, Clone)]
pub struct Drop<'a> {
    pub reason: &'a str,
    pub function: &'a str,
    /// `ipv4/udp`, `ipv6/tcp`, …
    pub protocol: &'a str,
    pub packets: u64,
}

/// Classifies one host's drops with that host's evidence.
pub fn classify(host: &str, drops: &[Drop<'_>], evidence: &Evidence) -> Vec<Cause> {
    let mut causes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut add = |cause: &str, detail: String, packets: u64| {
        if packets > 0 {
            *causes.entry((cause.to_owned(), detail)).or_default() += packets;
        }
    };
    // The IPv6 UDP path keeps the NO_SOCKET reason it set before checking the checksum
    // (6.18 __udp6_lib_rcv), while its counters do count a checksum error: checksum
    // errors that no UDP_CSUM drop explains are taken from NO_SOCKET UDP drops.
    let udp_csum_drops: u64 = drops
        .iter()
        .filter(|d| d.reason == "UDP_CSUM")
        .map(|d| d.packets)
        .sum();
    let mut csum_unexplained = evidence.udp_csum_errors.saturating_sub(udp_csum_drops);
    let mut netfilter = 0;
    for d in drops {
        if d.reason == "NO_SOCKET" && d.protocol.ends_with("/udp") && csum_unexplained > 0 {
            let take = csum_unexplained.min(d.packets);
            csum_unexplained -= take;
            add(
                "checksum",
                "reported as NO_SOCKET, but the UDP checksum-error counter counted them".into(),
                take,
            );
            add(
                "no_socket",
                "no socket for the port".into(),
                d.packets - take,
            );
            continue;
        }
        match d.reason {
            "NETFILTER_DROP" => netfilter += d.packets,
            "IP_CSUM" | "TCP_CSUM" | "UDP_CSUM" | "ICMP_CSUM" | "SKB_CSUM" => {
                add("checksum", d.reason.to_owned(), d.packets)
            }
            "NO_SOCKET" => add("no_socket", "no socket for the port".into(), d.packets),
            "IP_INNOROUTES" | "IP_OUTNOROUTES" => add("routing", d.reason.to_owned(), d.packets),
            // A route that refuses (measured on 6.18): IPv4 blackhole, unreachable and
            // prohibit routes all end in ip_error without a reason; an IPv6 blackhole
            // route in dst_discard_out (unreachable and prohibit say IP_INNOROUTES).
            "NOT_SPECIFIED" if d.function == "ip_error" => add(
                "routing",
                "ip_error: a blackhole, unreachable or prohibit route".into(),
                d.packets,
            ),
            "NOT_SPECIFIED"
                if d.function == "dst_discard_out" && d.protocol.starts_with("ipv6") =>
            {
                add(
                    "routing",
                    "dst_discard_out: an IPv6 blackhole route".into(),
                    d.packets,
                )
            }
            "IP_RPFILTER" => add("rp_filter", "reverse-path check failed".into(), d.packets),
            "PKT_TOO_BIG" => add(
                "too_big",
                "larger than the next hop's MTU with DF".into(),
                d.packets,
            ),
            "SOCKET_RCVBUFF" => add("socket_buffer", "receive buffer full".into(), d.packets),
            "TCP_LISTEN_OVERFLOW" => add("listen_overflow", d.reason.to_owned(), d.packets),
            "TC_INGRESS" | "TC_EGRESS" => add("tc", d.reason.to_owned(), d.packets),
            // A qdisc that refused a packet (full, over its rate, or a netem loss); a
            // device without carrier drops through its noop qdisc with the same reason.
            "QDISC_DROP" | "QDISC_OVERLIMIT" | "QDISC_CONGESTED" => {
                add("qdisc", d.reason.to_owned(), d.packets)
            }
            r if r.starts_with("NEIGH_") => add("neighbour", r.to_owned(), d.packets),
            // ip_forward files TTL expiry under IP_INHDR, and ip6_forward hop-limit expiry
            // too; the ICMP time-exceeded it sends (ICMP type 11, ICMPv6 type 3) is what
            // separates it from a malformed header.
            "IP_INHDR" if d.function == "ip_forward" || d.function == "ip6_forward" => {
                let key = if d.function == "ip6_forward" {
                    ICMP6_TIME_EXCEEDED
                } else {
                    "type=11"
                };
                let time_exceeded = evidence.icmp_sent.get(key).copied();
                match time_exceeded {
                    Some(n) if n >= d.packets => {
                        add("ttl_expired", "ICMP time exceeded sent".into(), d.packets)
                    }
                    _ => add(
                        "header",
                        format!("IP_INHDR in {}: TTL expiry or a bad header (no ICMP time exceeded seen to tell them apart)", d.function),
                        d.packets,
                    ),
                }
            }
            r if r.starts_with("IP_INHDR") || r == "PKT_TOO_SMALL" || r == "HDR_TRUNC" => {
                add("header", r.to_owned(), d.packets)
            }
            r => add("other", r.to_owned(), d.packets),
        }
    }

    // Split the netfilter drops by the counters that account for them.
    let mut left = netfilter;
    for (rule, packets) in &evidence.rule_drops {
        let take = (*packets).min(left);
        add("rule", rule.clone(), take);
        left -= take;
    }
    let clashes = evidence
        .conntrack_insert_failed
        .min(evidence.conntrack_drops)
        .min(left);
    if evidence.has_nat_rules {
        add(
            "nat",
            "conntrack insert_failed with NAT rules: NAT found no unique tuple (e.g. ports exhausted)".into(),
            clashes,
        );
    } else {
        add(
            "conntrack_clash",
            "conntrack insert_failed: the tuple clashed".into(),
            clashes,
        );
    }
    left -= clashes;
    let full = evidence
        .conntrack_drops
        .saturating_sub(evidence.conntrack_insert_failed)
        .min(left);
    add(
        "conntrack_full",
        "conntrack statistic `drop` without insert_failed: table full".into(),
        full,
    );
    left -= full;
    if evidence.has_nat_rules {
        add(
            "nat",
            "inferred: no rule or conntrack counter accounts for these, and the host has NAT rules"
                .into(),
            left,
        );
    } else {
        add(
            "netfilter_unexplained",
            "no rule, conntrack or NAT counter accounts for these".into(),
            left,
        );
    }

    for (counter, packets) in &evidence.silent_drops {
        let cause = if counter.contains("ListenOverflows") || counter.contains("ListenDrops") {
            "listen_overflow"
        } else {
            "silent"
        };
        add(
            cause,
            format!("{counter} (not reported by kfree_skb)"),
            *packets,
        );
    }

    causes
        .into_iter()
        .map(|((cause, detail), packets)| Cause {
            host: host.to_owned(),
            cause,
            packets,
            detail,
        })
        .collect()
}

/// Whether a rule's text drops packets (iptables `-j DROP/REJECT`, nft `drop/reject`).
pub fn is_dropping_rule(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[0] == "-j" && matches!(w[1], "DROP" | "REJECT"))
        || words.iter().any(|w| matches!(*w, "drop" | "reject"))
}

/// Whether a rule's text rewrites addresses (iptables or nft NAT targets).
pub fn is_nat_rule(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words.windows(2).any(|w| {
        w[0] == "-j" && matches!(w[1], "SNAT" | "DNAT" | "MASQUERADE" | "REDIRECT" | "NETMAP")
    }) || words
        .iter()
        .any(|w| matches!(*w, "snat" | "dnat" | "masquerade" | "redirect"))
}

/// One host's causes from its drop rows and its counters: what moved (`delta`) and
/// what it has at the end (`total`, for its NAT rules).
pub fn classify_host(
    host: &str,
    host_drops: &[Drop<'_>],
    delta: &HostCounters,
    total: &HostCounters,
) -> Vec<Cause> {
    {
        let mut evidence = Evidence {
            conntrack_drops: delta.conntrack.get("drop").copied().unwrap_or(0),
            conntrack_insert_failed: delta.conntrack.get("insert_failed").copied().unwrap_or(0),
            udp_csum_errors: ["Udp.InCsumErrors", "Udp6.InCsumErrors"]
                .iter()
                .filter_map(|k| delta.snmp.get(*k))
                .sum(),
            has_nat_rules: total.rules.iter().any(|r| is_nat_rule(&r.rule)),
            ..Evidence::default()
        };
        for rule in delta.rules.iter().filter(|r| is_dropping_rule(&r.rule)) {
            let name = format!(
                "{} {} {}: {}",
                rule.backend, rule.table, rule.chain, rule.rule
            );
            *evidence.rule_drops.entry(name).or_default() += rule.packets;
        }
        for (key, value) in &delta.snmp {
            if let Some(icmp_type) = key.strip_prefix("IcmpMsg.OutType") {
                evidence
                    .icmp_sent
                    .insert(format!("type={icmp_type}"), *value);
            }
            if let Some(icmp_type) = key.strip_prefix("Icmp6.OutType") {
                evidence
                    .icmp_sent
                    .insert(format!("icmpv6 type={icmp_type}"), *value);
            }
        }
        if let Some(overflows) = delta.snmp.get("TcpExt.ListenOverflows") {
            evidence
                .silent_drops
                .insert("TcpExt.ListenOverflows".to_owned(), *overflows);
        }
        classify(host, host_drops, &evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nf(packets: u64) -> Drop<'static> {
        Drop {
            reason: "NETFILTER_DROP",
            function: "nf_hook_slow",
            protocol: "ipv4/tcp",
            packets,
        }
    }

    #[test]
    fn udp6_checksum_errors_hidden_under_no_socket_are_counted_as_checksum() {
        let d = [Drop {
            reason: "NO_SOCKET",
            function: "__udp6_lib_rcv",
            protocol: "ipv6/udp",
            packets: 6,
        }];
        let e = Evidence {
            udp_csum_errors: 3,
            ..Default::default()
        };
        assert_eq!(
            names(&classify("s", &d, &e)),
            vec![("checksum", 3), ("no_socket", 3)]
        );
        // Where UDP_CSUM drops already explain the counter, NO_SOCKET stays NO_SOCKET.
        let v4 = [
            Drop {
                reason: "UDP_CSUM",
                function: "__udp4_lib_rcv",
                protocol: "ipv4/udp",
                packets: 3,
            },
            Drop {
                reason: "NO_SOCKET",
                function: "__udp4_lib_rcv",
                protocol: "ipv4/udp",
                packets: 3,
            },
        ];
        assert_eq!(
            names(&classify("s", &v4, &e)),
            vec![("checksum", 3), ("no_socket", 3)]
        );
    }

    fn names(causes: &[Cause]) -> Vec<(&str, u64)> {
        causes
            .iter()
            .map(|c| (c.cause.as_str(), c.packets))
            .collect()
    }

    #[test]
    fn same_reason_and_function_three_causes() {
        let rule = Evidence {
            rule_drops: [("-A INPUT -p tcp -j DROP".to_owned(), 2)].into(),
            ..Default::default()
        };
        let full = Evidence {
            conntrack_drops: 2,
            ..Default::default()
        };
        let nat = Evidence {
            conntrack_drops: 2,
            conntrack_insert_failed: 2,
            has_nat_rules: true,
            ..Default::default()
        };
        assert_eq!(names(&classify("h", &[nf(2)], &rule)), vec![("rule", 2)]);
        assert_eq!(
            names(&classify("h", &[nf(2)], &full)),
            vec![("conntrack_full", 2)]
        );
        assert_eq!(names(&classify("h", &[nf(2)], &nat)), vec![("nat", 2)]);
        assert!(classify("h", &[nf(2)], &nat)[0]
            .detail
            .contains("insert_failed"));
        let clash_without_nat = Evidence {
            has_nat_rules: false,
            ..nat.clone()
        };
        assert_eq!(
            names(&classify("h", &[nf(2)], &clash_without_nat)),
            vec![("conntrack_clash", 2)]
        );
        let nat_inferred = Evidence {
            has_nat_rules: true,
            ..Default::default()
        };
        assert_eq!(
            names(&classify("h", &[nf(2)], &nat_inferred)),
            vec![("nat", 2)]
        );
        assert!(classify("h", &[nf(2)], &nat_inferred)[0]
            .detail
            .starts_with("inferred"));
    }

    /// steps/rule_removed_mid_scenario: a rule drops 3 pings, then a step removes it.
    /// The plain before/after difference has lost the rule (netfilter_unexplained); the
    /// counters read before the removal (`OverRun`) name it.
    #[test]
    fn a_rule_removed_midway_still_explains_its_drops() {
        use crate::counters::{delta, OverRun, RuleCounter};
        let text = "-A INPUT -p icmp -j DROP";
        let reading = |packets| HostCounters {
            rules: vec![RuleCounter {
                backend: "iptables-nft".into(),
                table: "filter".into(),
                chain: "INPUT".into(),
                rule: text.into(),
                packets,
                bytes: packets * 84,
            }],
            ..HostCounters::default()
        };
        let drops = [Drop {
            reason: "NETFILTER_DROP",
            function: "nft_do_chain",
            protocol: "ipv4/icmp",
            packets: 3,
        }];
        let (before, at_removal, after) = (reading(0), reading(3), HostCounters::default());
        let plain = classify_host("server", &drops, &delta(&before, &after), &after);
        assert_eq!(names(&plain), vec![("netfilter_unexplained", 3)]);
        let mut run = OverRun::new(before);
        run.read(at_removal);
        run.read(after);
        let causes = classify_host("server", &drops, run.moved(), &run.totals());
        assert_eq!(names(&causes), vec![("rule", 3)]);
        assert!(causes[0].detail.contains(text));
    }

    #[test]
    fn unexplained_netfilter_drops_are_not_guessed() {
        let causes = classify("h", &[nf(3)], &Evidence::default());
        assert_eq!(names(&causes), vec![("netfilter_unexplained", 3)]);
    }

    #[test]
    fn evidence_is_never_stretched_beyond_the_drops() {
        let e = Evidence {
            rule_drops: [("-A INPUT -j DROP".to_owned(), 5)].into(),
            conntrack_drops: 4,
            ..Default::default()
        };
        assert_eq!(names(&classify("h", &[nf(3)], &e)), vec![("rule", 3)]);
    }

    #[test]
    fn ttl_expiry_needs_the_icmp_it_causes() {
        let d = [Drop {
            reason: "IP_INHDR",
            function: "ip_forward",
            protocol: "ipv4/udp",
            packets: 3,
        }];
        let with_icmp = Evidence {
            icmp_sent: [("type=11".to_owned(), 3)].into(),
            ..Default::default()
        };
        assert_eq!(
            names(&classify("r", &d, &with_icmp)),
            vec![("ttl_expired", 3)]
        );
        assert_eq!(
            names(&classify("r", &d, &Evidence::default())),
            vec![("header", 3)]
        );
    }

    #[test]
    fn hop_limit_expiry_is_ttl_expiry_too() {
        let d = [Drop {
            reason: "IP_INHDR",
            function: "ip6_forward",
            protocol: "ipv6/udp",
            packets: 3,
        }];
        let with_icmp6 = Evidence {
            icmp_sent: [(ICMP6_TIME_EXCEEDED.to_owned(), 3)].into(),
            ..Default::default()
        };
        assert_eq!(
            names(&classify("r", &d, &with_icmp6)),
            vec![("ttl_expired", 3)]
        );
        // An IPv4 time exceeded is no evidence for IPv6 drops.
        let with_icmp4 = Evidence {
            icmp_sent: [("type=11".to_owned(), 3)].into(),
            ..Default::default()
        };
        assert_eq!(names(&classify("r", &d, &with_icmp4)), vec![("header", 3)]);
    }

    #[test]
    fn silent_listen_overflows_are_causes_too() {
        let e = Evidence {
            silent_drops: [("TcpExt.ListenOverflows".to_owned(), 3)].into(),
            ..Default::default()
        };
        assert_eq!(names(&classify("s", &[], &e)), vec![("listen_overflow", 3)]);
    }

    #[test]
    fn rule_kinds_are_read_from_both_syntaxes() {
        assert!(is_dropping_rule("-A INPUT -p icmp -j DROP"));
        assert!(is_dropping_rule(
            "udp dport 5000 counter packets 5 bytes 300 drop"
        ));
        assert!(!is_dropping_rule("-A INPUT -j ACCEPT"));
        assert!(is_nat_rule(
            "-A POSTROUTING -o eth1 -p tcp -j SNAT --to-source 198.18.2.1:40000"
        ));
        assert!(is_nat_rule("ip daddr 198.18.0.2 dnat to 198.18.2.2"));
        assert!(!is_nat_rule("-A INPUT -j DROP"));
    }
}
