//! Parsers for a host's `/proc/net` counter files: `snmp`, `netstat`, `snmp6` and
//! `stat/nf_conntrack` (the key schemes are in the module docs of `counters`).

use std::collections::BTreeMap;

use super::{parse_error, ParseError};

/// Values that are settings or gauges rather than counters (see the module docs).
const NOT_COUNTERS: &[&str] = &[
    "Ip.Forwarding",
    "Ip.DefaultTTL",
    "Tcp.RtoAlgorithm",
    "Tcp.RtoMin",
    "Tcp.RtoMax",
    "Tcp.MaxConn",
    "Tcp.CurrEstab",
    "MPTcpExt.MPCurrEstab",
];

/// `/proc/net/snmp` and `/proc/net/netstat`: per group, a line `Group: Name Name …`
/// followed by a line `Group: value value …`.
pub(super) fn parse_snmp(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    // Collected first and sorted into a map at once: cheaper than inserting one by one.
    let mut counters = Vec::with_capacity(512);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    while let Some((n, header)) = lines.next() {
        let (group, names) = header
            .split_once(':')
            .ok_or_else(|| parse_error(n, format!("expected `Group: Name …`, found {header:?}")))?;
        let (m, values_line) = lines.next().ok_or_else(|| {
            parse_error(n, format!("group `{group}` has names but no values line"))
        })?;
        let (value_group, values) = values_line.split_once(':').ok_or_else(|| {
            parse_error(
                m,
                format!("expected `{group}: value …`, found {values_line:?}"),
            )
        })?;
        if value_group != group {
            return Err(parse_error(
                m,
                format!("names of group `{group}` are followed by values of group `{value_group}`"),
            ));
        }
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(parse_error(
                m,
                format!(
                    "group `{group}` names {} fields but has {} values",
                    names.len(),
                    values.len()
                ),
            ));
        }
        for (name, value) in names.into_iter().zip(values) {
            let mut key = String::with_capacity(group.len() + 1 + name.len());
            key.push_str(group);
            key.push('.');
            key.push_str(name);
            if NOT_COUNTERS.contains(&key.as_str()) {
                continue;
            }
            let value = value
                .parse()
                .map_err(|_| parse_error(m, format!("`{key}` is {value:?}, not a counter")))?;
            counters.push((key, value));
        }
    }
    Ok(BTreeMap::from_iter(counters))
}

/// `/proc/net/snmp6`: one `Ip6InReceives <spaces> 0` per line.
pub(super) fn parse_snmp6(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut counters = Vec::with_capacity(128);
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split_whitespace();
        let (Some(name), Some(value), None) = (fields.next(), fields.next(), fields.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(parse_error(
                n,
                format!("expected `Name value`, found {line:?}"),
            ));
        };
        let value = value
            .parse()
            .map_err(|_| parse_error(n, format!("`{name}` is {value:?}, not a counter")))?;
        counters.push((snmp6_key(name), value));
    }
    Ok(BTreeMap::from_iter(counters))
}

/// `Ip6InReceives` → `Ip6.InReceives`, `Icmp6OutType133` → `Icmp6.OutType133`: the group
/// ends at its first digit. A name without one is kept as it is.
fn snmp6_key(name: &str) -> String {
    match name.find(|c: char| c.is_ascii_digit()) {
        Some(i) if i + 1 < name.len() => {
            let mut key = String::with_capacity(name.len() + 1);
            key.push_str(&name[..=i]);
            key.push('.');
            key.push_str(&name[i + 1..]);
            key
        }
        _ => name.to_owned(),
    }
}

/// `/proc/net/stat/nf_conntrack`: a header of names, then one row of hex numbers per
/// possible CPU. Summed by name over the rows; `entries` is left out.
pub(super) fn parse_conntrack_stat(text: &str) -> Result<BTreeMap<String, u64>, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(parse_error(
            0,
            "the file is empty: expected a header line of names",
        ));
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut sums = vec![0u64; names.len()];
    for (n, row) in lines {
        let values: Vec<&str> = row.split_whitespace().collect();
        if values.len() != names.len() {
            return Err(parse_error(
                n,
                format!(
                    "the header names {} columns but this row has {}",
                    names.len(),
                    values.len()
                ),
            ));
        }
        for ((sum, value), name) in sums.iter_mut().zip(values).zip(&names) {
            *sum += u64::from_str_radix(value, 16)
                .map_err(|_| parse_error(n, format!("`{name}` is {value:?}, not a hex number")))?;
        }
    }
    Ok(names
        .into_iter()
        .zip(sums)
        .filter(|(name, _)| *name != "entries")
        .map(|(name, sum)| (name.to_owned(), sum))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::testing::{fixture, fixtures, KERNEL};
    use std::path::{Path, PathBuf};

    /// Every saved host of every saved kernel: (kernel/host, directory).
    fn saved_hosts() -> Vec<(String, PathBuf)> {
        let mut hosts = Vec::new();
        for kernel in std::fs::read_dir(fixtures()).unwrap().flatten() {
            if !kernel.path().is_dir() {
                continue;
            }
            for host in std::fs::read_dir(kernel.path()).unwrap().flatten() {
                let name = format!(
                    "{}/{}",
                    kernel.file_name().to_string_lossy(),
                    host.file_name().to_string_lossy()
                );
                hosts.push((name, host.path()));
            }
        }
        assert!(
            !hosts.is_empty(),
            "no saved hosts under {}",
            fixtures().display()
        );
        hosts
    }

    /// `nstat -asz`: `Name value rate` per line after a `#kernel` header.
    fn parse_nstat(text: &str) -> BTreeMap<String, u64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let mut fields = line.split_whitespace();
                let name = fields.next().unwrap().to_owned();
                (name, fields.next().unwrap().parse().unwrap())
            })
            .collect()
    }

    fn snmp_of(dir: &Path) -> BTreeMap<String, u64> {
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
        let mut snmp = parse_snmp(&read("snmp")).unwrap();
        snmp.extend(parse_snmp(&read("netstat")).unwrap());
        snmp.extend(parse_snmp6(&read("snmp6")).unwrap());
        snmp
    }

    #[test]
    fn snmp_counters_agree_with_nstat_on_every_saved_host() {
        for (name, dir) in saved_hosts() {
            let ours = snmp_of(&dir);
            let nstat = parse_nstat(&std::fs::read_to_string(dir.join("nstat-asz.txt")).unwrap());
            for (key, value) in &ours {
                let nstat_name = key.replace('.', "");
                assert_eq!(nstat.get(&nstat_name), Some(value), "{name}: {key}");
            }
            // nstat leaves out the same settings and TCP gauges we do, but keeps the
            // MPTCP gauge; anything else missing would be a counter we lost.
            let ours_as_nstat: Vec<String> = ours.keys().map(|k| k.replace('.', "")).collect();
            let missing: Vec<&String> = nstat
                .keys()
                .filter(|k| !ours_as_nstat.contains(k) && k.as_str() != "MPTcpExtMPCurrEstab")
                .collect();
            assert!(
                missing.is_empty(),
                "{name}: nstat has {missing:?} and we do not"
            );
        }
    }

    #[test]
    fn snmp_counters_of_the_capture_follow_from_its_traffic() {
        let dir = fixtures().join(KERNEL);
        let server = snmp_of(&dir.join("server"));
        let client = snmp_of(&dir.join("client"));
        // Two datagrams to 5004 (accepted by nft, nobody listening), each answered with
        // a port unreachable; 5000–5003 were dropped by rules before UDP saw them.
        assert_eq!(server["Udp.NoPorts"], 2);
        assert_eq!(server["Icmp.OutDestUnreachs"], 2);
        assert_eq!(server["IcmpMsg.OutType3"], 2);
        assert_eq!(server["Udp.InDatagrams"], 2);
        assert_eq!(server["Tcp.PassiveOpens"], 1);
        assert_eq!(client["Icmp.InDestUnreachs"], 2);
        assert_eq!(client["Icmp.InEchoReps"], 2);
        assert_eq!(client["Udp.OutDatagrams"], 17);
        assert_eq!(client["Tcp.ActiveOpens"], 3);
        for key in [
            "Ip.InHdrErrors",
            "IpExt.InCsumErrors",
            "Tcp.InCsumErrors",
            "Udp.InCsumErrors",
            "Udp.RcvbufErrors",
            "Icmp.InCsumErrors",
            "TcpExt.ListenOverflows",
            "Ip6.InHdrErrors",
            "Icmp6.InCsumErrors",
            "Udp6.RcvbufErrors",
            "UdpLite6.InDatagrams",
        ] {
            assert_eq!(server.get(key), Some(&0), "{key}");
        }
        for gauge in NOT_COUNTERS {
            assert!(!server.contains_key(*gauge), "{gauge}");
        }
    }

    #[test]
    fn snmp6_names_split_after_the_groups_digit() {
        assert_eq!(snmp6_key("Ip6InReceives"), "Ip6.InReceives");
        assert_eq!(snmp6_key("Icmp6OutType133"), "Icmp6.OutType133");
        assert_eq!(snmp6_key("UdpLite6InCsumErrors"), "UdpLite6.InCsumErrors");
        assert_eq!(snmp6_key("Weird"), "Weird");
        assert_eq!(snmp6_key("Ip6"), "Ip6");
        let parsed =
            parse_snmp6("Ip6InReceives                   \t7\n\nIcmp6InType1 3\n").unwrap();
        assert_eq!(
            parsed,
            BTreeMap::from([
                ("Icmp6.InType1".to_owned(), 3),
                ("Ip6.InReceives".to_owned(), 7)
            ])
        );
        let error = parse_snmp6("Ip6InReceives 1\nIp6InHdrErrors x\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error.message.contains("Ip6InHdrErrors"),
            "{}",
            error.message
        );
        assert_eq!(parse_snmp6("Ip6InReceives 1 2\n").unwrap_err().line, 1);
    }

    #[test]
    fn snmp_groups_are_read_by_name_and_checked() {
        let text = "Tcp: RtoMin MaxConn InErrs\nTcp: 200 -1 4\nIcmpMsg: OutType3\nIcmpMsg: 2\n";
        assert_eq!(
            parse_snmp(text).unwrap(),
            BTreeMap::from([
                ("IcmpMsg.OutType3".to_owned(), 2),
                ("Tcp.InErrs".to_owned(), 4)
            ])
        );
        let cases = [
            ("Udp: A B\nUdp: 1\n", 2, "names 2 fields but has 1 values"),
            ("Udp: A\nTcp: 1\n", 2, "followed by values of group `Tcp`"),
            ("Udp: A\n", 1, "no values line"),
            ("Udp: A\nUdp: -3\n", 2, "`Udp.A` is \"-3\""),
            ("Udp A\nUdp 1\n", 1, "expected `Group: Name …`"),
        ];
        for (text, line, message) in cases {
            let error = parse_snmp(text).unwrap_err();
            assert_eq!(error.line, line, "{text:?}");
            assert!(
                error.message.contains(message),
                "{text:?}: {}",
                error.message
            );
        }
    }

    #[test]
    fn conntrack_statistics_are_summed_over_cpus_by_name() {
        let client = parse_conntrack_stat(&fixture("client", "nf_conntrack")).unwrap();
        // The two `invalid` RSTs were counted on the second CPU's row.
        assert_eq!(client["invalid"], 2);
        assert_eq!(client["insert_failed"], 0);
        assert_eq!(client["drop"], 0);
        assert_eq!(client["early_drop"], 0);
        assert_eq!(client["icmp_error"], 0);
        assert!(!client.contains_key("entries"), "a gauge, repeated per CPU");
        assert_eq!(client.len(), 16);

        // Columns in another order (an older kernel's), more CPUs, values in hex.
        let text = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000000a  00000000 00000000 00000000 0000000f 00000000 00000000 00000000 00000000 00000001 00000000 00000000 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a  00000000 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000  00000000 00000000 00000000 00000000\n\
                    0000000a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000000  00000000 00000000 00000000 ffffffff\n";
        let stats = parse_conntrack_stat(text).unwrap();
        assert_eq!(stats["invalid"], 16);
        assert_eq!(stats["insert_failed"], 1);
        assert_eq!(stats["drop"], 2);
        assert_eq!(stats["early_drop"], 3);
        assert_eq!(stats["search_restart"], 0xffff_ffff);
        assert!(stats.contains_key("searched") && !stats.contains_key("clashres"));

        assert_eq!(parse_conntrack_stat("").unwrap_err().line, 1);
        let short = parse_conntrack_stat("entries drop\n00000000\n").unwrap_err();
        assert_eq!((short.line, short.message.contains("2 columns")), (2, true));
        let hex = parse_conntrack_stat("entries drop\n00000000 0000000g\n").unwrap_err();
        assert!(hex.message.contains("`drop`"), "{}", hex.message);
    }
}
