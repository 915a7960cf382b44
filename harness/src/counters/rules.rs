//! Parsers for the firewall tools' listings: `iptables-save -c` (either backend) and
//! `nft list ruleset`, into [`RuleCounter`]s.

use super::{parse_error, ParseError, RuleCounter};

/// `iptables-save -c` (either backend): `*table`, `:CHAIN POLICY [packets:bytes]`,
/// `[packets:bytes] -A CHAIN …`, `COMMIT`, and `#` comments.
pub(super) fn parse_iptables_save(
    text: &str,
    backend: &str,
) -> Result<Vec<RuleCounter>, ParseError> {
    let mut rules = Vec::new();
    let mut table: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            table = Some(name.trim());
            continue;
        }
        if line == "COMMIT" {
            table = None;
            continue;
        }
        let Some(table) = table else {
            return Err(parse_error(
                n,
                format!("{line:?} is outside any `*table` … `COMMIT`"),
            ));
        };
        let rule = |chain: &str, rule: String, (packets, bytes)| RuleCounter {
            backend: backend.to_owned(),
            table: table.to_owned(),
            chain: chain.to_owned(),
            rule,
            packets,
            bytes,
        };
        if let Some(declaration) = line.strip_prefix(':') {
            // `:INPUT ACCEPT [0:0]`; a user-defined chain has `-` and no policy.
            let mut fields = declaration.split_whitespace();
            let (Some(chain), Some(policy), Some(counts)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(parse_error(
                    n,
                    format!("expected `:CHAIN POLICY [packets:bytes]`, found {line:?}"),
                ));
            };
            let counts = bracketed_counts(counts).ok_or_else(|| {
                parse_error(
                    n,
                    format!("expected `[packets:bytes]` after the policy, found {counts:?}"),
                )
            })?;
            if policy != "-" {
                rules.push(rule(chain, format!("-P {chain} {policy}"), counts));
            }
        } else if line.starts_with('[') {
            let (counts, spec) = line.split_once(' ').unwrap_or((line, ""));
            let counts = bracketed_counts(counts).ok_or_else(|| {
                parse_error(n, format!("expected `[packets:bytes]`, found {counts:?}"))
            })?;
            let spec = spec.trim();
            let mut fields = spec.split_whitespace();
            let (Some("-A"), Some(chain)) = (fields.next(), fields.next()) else {
                return Err(parse_error(
                    n,
                    format!("expected `-A CHAIN …` after the counters, found {spec:?}"),
                ));
            };
            rules.push(rule(chain, spec.to_owned(), counts));
        } else {
            return Err(parse_error(
                n,
                format!("expected a rule with counters `[packets:bytes] -A …` (was the tool run without -c?), found {line:?}"),
            ));
        }
    }
    Ok(rules)
}

/// `[12:345]` → (12, 345).
fn bracketed_counts(text: &str) -> Option<(u64, u64)> {
    let (packets, bytes) = text.strip_prefix('[')?.strip_suffix(']')?.split_once(':')?;
    Some((packets.parse().ok()?, bytes.parse().ok()?))
}

/// `nft list ruleset`: `table FAMILY NAME {` blocks holding `chain NAME {` blocks (and
/// sets, maps, named counters, flowtables, which are skipped), one rule per line. A
/// rule's counter prints as `counter packets N bytes M`; if a rule has several, the
/// first one's numbers are taken (and all are taken out of the text).
pub(super) fn parse_nft_ruleset(text: &str) -> Result<Vec<RuleCounter>, ParseError> {
    let mut rules = Vec::new();
    let mut depth = 0usize;
    let mut table: Option<String> = None;
    let mut chain: Option<String> = None;
    // A rule that spans lines (an anonymous set printed over several lines), and the
    // depth of braces still open in it.
    let mut pending = String::new();
    let mut pending_first_line = 0;
    let mut pending_depth = 0isize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (opens, closes) = count_braces(line);
        if let (Some(table_name), Some(chain_name)) = (&table, &chain) {
            if pending.is_empty() && line == "}" {
                chain = None;
                depth -= 1;
                continue;
            }
            if pending.is_empty() {
                pending_first_line = n;
            } else {
                pending.push(' ');
            }
            pending.push_str(line);
            pending_depth += opens as isize - closes as isize;
            if pending_depth < 0 {
                return Err(parse_error(
                    n,
                    format!("unbalanced `}}` in a rule of chain `{chain_name}`"),
                ));
            }
            if pending_depth == 0 {
                if let Some((rule, packets, bytes)) = nft_rule_counter(&pending) {
                    rules.push(RuleCounter {
                        backend: "nft".to_owned(),
                        table: table_name.clone(),
                        chain: chain_name.clone(),
                        rule,
                        packets,
                        bytes,
                    });
                }
                pending.clear();
            }
            continue;
        }
        if closes > opens + depth {
            return Err(parse_error(n, "`}` closes a block that was never opened"));
        }
        let opened_one = opens == closes + 1 && line.ends_with('{');
        match (depth, line.split_whitespace().next()) {
            (0, Some("table")) if opened_one => {
                let name = line.trim_end_matches('{').trim();
                table = Some(name.strip_prefix("table").unwrap_or(name).trim().to_owned());
            }
            (1, Some("chain")) if opened_one => {
                let name = line.trim_end_matches('{').trim();
                chain = Some(name.strip_prefix("chain").unwrap_or(name).trim().to_owned());
            }
            (0, _) if opens > closes => {
                return Err(parse_error(
                    n,
                    format!("expected `table FAMILY NAME {{`, found {line:?}"),
                ));
            }
            _ => {}
        }
        depth = depth + opens - closes;
        if depth == 0 {
            table = None;
        }
    }
    if !pending.is_empty() || depth != 0 {
        return Err(parse_error(
            if pending.is_empty() {
                text.lines().count().saturating_sub(1)
            } else {
                pending_first_line
            },
            "the ruleset ends inside a block",
        ));
    }
    Ok(rules)
}

/// `{` and `}` outside double-quoted strings (a comment may hold either).
fn count_braces(line: &str) -> (usize, usize) {
    let (mut opens, mut closes, mut quoted, mut escaped) = (0, 0, false, false);
    for c in line.chars() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, _, '"') => quoted = !quoted,
            (false, _, '{') => opens += 1,
            (false, _, '}') => closes += 1,
            _ => {}
        }
    }
    (opens, closes)
}

/// Words of an nft rule, with a double-quoted string (and any spaces in it) as one word.
fn nft_words(rule: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in rule.char_indices() {
        if quoted {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => {}
            }
            continue;
        }
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                words.push(&rule[s..i]);
            }
        } else {
            start.get_or_insert(i);
            quoted = c == '"';
        }
    }
    if let Some(s) = start {
        words.push(&rule[s..]);
    }
    words
}

/// The rule's text without its counter's numbers, and those numbers; `None` when the
/// rule has no inline counter (none at all, or `counter name "x"`).
fn nft_rule_counter(rule: &str) -> Option<(String, u64, u64)> {
    let words = nft_words(rule);
    let mut kept = Vec::with_capacity(words.len());
    let mut counts = None;
    let mut i = 0;
    while i < words.len() {
        kept.push(words[i]);
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
        {
            let bytes = words.get(i + 4).map(|w| w.parse::<u64>());
            if let (Ok(packets), Some(Ok(bytes))) = (words[i + 2].parse::<u64>(), bytes) {
                counts.get_or_insert((packets, bytes));
                i += 5;
                continue;
            }
        }
        i += 1;
    }
    let (packets, bytes) = counts?;
    Some((kept.join(" "), packets, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::testing::{fixture, rule};

    #[test]
    fn iptables_nft_save_gives_rules_and_declared_policies() {
        let rules = parse_iptables_save(
            &fixture("server", "iptables-nft-save-c.txt"),
            "iptables-nft",
        )
        .unwrap();
        let r = |table, chain, text, packets, bytes| {
            rule("iptables-nft", table, chain, text, packets, bytes)
        };
        assert_eq!(
            rules,
            vec![
                r("raw", "PREROUTING", "-P PREROUTING ACCEPT", 0, 0),
                r("raw", "OUTPUT", "-P OUTPUT ACCEPT", 0, 0),
                r(
                    "raw",
                    "PREROUTING",
                    "-A PREROUTING -p udp -m udp --dport 5003 -j DROP",
                    1,
                    60
                ),
                // 2 echo requests, 2 datagrams to 5004 and 2 to 5005, 11 TCP segments.
                r("filter", "INPUT", "-P INPUT ACCEPT", 17, 1044),
                r("filter", "FORWARD", "-P FORWARD ACCEPT", 0, 0),
                r("filter", "OUTPUT", "-P OUTPUT ACCEPT", 0, 0),
                r(
                    "filter",
                    "INPUT",
                    "-A INPUT -p udp -m udp --dport 5000 -j DROP",
                    3,
                    180
                ),
                r(
                    "filter",
                    "INPUT",
                    "-A INPUT -p icmp -j dropspec_log",
                    2,
                    168
                ),
                r(
                    "filter",
                    "dropspec_log",
                    "-A dropspec_log -j RETURN",
                    2,
                    168
                ),
            ]
        );
    }

    #[test]
    fn iptables_legacy_save_keeps_a_duplicated_rule_twice() {
        let rules = parse_iptables_save(
            &fixture("server", "iptables-legacy-save-c.txt"),
            "iptables-legacy",
        )
        .unwrap();
        let r = |chain, text, packets, bytes| {
            rule("iptables-legacy", "filter", chain, text, packets, bytes)
        };
        assert_eq!(
            rules,
            vec![
                r("INPUT", "-P INPUT ACCEPT", 20, 1224),
                r("FORWARD", "-P FORWARD ACCEPT", 0, 0),
                r("OUTPUT", "-P OUTPUT ACCEPT", 8, 536),
                r(
                    "INPUT",
                    "-A INPUT -p udp -m udp --dport 5001 -j DROP",
                    4,
                    240
                ),
                r("INPUT", "-A INPUT -p udp -m udp --dport 5001 -j DROP", 0, 0),
            ]
        );
    }

    #[test]
    fn iptables_save_without_counters_or_table_is_an_error() {
        let no_counters = parse_iptables_save(
            "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\nCOMMIT\n",
            "x",
        )
        .unwrap_err();
        assert_eq!(no_counters.line, 3);
        assert!(
            no_counters.message.contains("without -c"),
            "{}",
            no_counters.message
        );
        assert_eq!(
            parse_iptables_save("[1:2] -A INPUT -j DROP\n", "x")
                .unwrap_err()
                .line,
            1
        );
        let bad = parse_iptables_save("*filter\n[1:x] -A INPUT -j DROP\n", "x").unwrap_err();
        assert_eq!(bad.line, 2);
        let policy = parse_iptables_save("*filter\n:INPUT ACCEPT\n", "x").unwrap_err();
        assert_eq!(policy.line, 2);
        assert!(parse_iptables_save("", "x").unwrap().is_empty());
        assert_eq!(bracketed_counts("[12:345]"), Some((12, 345)));
        assert_eq!(bracketed_counts("[12:]"), None);
    }

    #[test]
    fn nft_ruleset_gives_rules_with_counters_only() {
        let rules = parse_nft_ruleset(&fixture("server", "nft-list-ruleset.txt")).unwrap();
        let r =
            |table, chain, text, packets, bytes| rule("nft", table, chain, text, packets, bytes);
        assert_eq!(
            rules,
            vec![
                r("ip raw", "PREROUTING", "udp dport 5003 counter drop", 1, 60),
                r("ip filter", "INPUT", "udp dport 5000 counter drop", 3, 180),
                r("ip filter", "INPUT", "meta l4proto icmp counter jump dropspec_log", 2, 168),
                r("ip filter", "dropspec_log", "counter return", 2, 168),
                r("inet dropspec_filter", "input", "udp dport 5002 counter drop", 5, 300),
                // The comment is quoted: its braces and its "counter packets" are text.
                r(
                    "inet dropspec_filter",
                    "input",
                    "udp dport { 5004, 5005 } counter accept comment \"two {ports}, counter packets 9 bytes 9\"",
                    4,
                    240
                ),
                // Not listed: `counter name "named"` (a named counter object) and
                // `tcp dport 80 drop` (no counter).
                r("inet dropspec_filter", "input", "tcp dport 6001 counter counter accept", 4, 216),
            ]
        );
    }

    #[test]
    fn nft_rules_over_several_lines_and_broken_rulesets() {
        let text = "table ip t {\n\tchain c {\n\t\tip saddr { 198.18.0.1,\n\t\t\t198.18.0.2 } counter packets 7 bytes 8 drop\n\t}\n}\n";
        assert_eq!(
            parse_nft_ruleset(text).unwrap(),
            vec![rule(
                "nft",
                "ip t",
                "c",
                "ip saddr { 198.18.0.1, 198.18.0.2 } counter drop",
                7,
                8
            )]
        );
        let unclosed =
            parse_nft_ruleset("table ip t {\n\tchain c {\n\t\tcounter packets 1 bytes 2 drop\n")
                .unwrap_err();
        assert!(
            unclosed.message.contains("ends inside a block"),
            "{}",
            unclosed.message
        );
        let stray = parse_nft_ruleset("}\n").unwrap_err();
        assert_eq!(stray.line, 1);
        let outside = parse_nft_ruleset("chain c {\n}\n").unwrap_err();
        assert!(
            outside.message.contains("table FAMILY NAME"),
            "{}",
            outside.message
        );
        assert!(parse_nft_ruleset("").unwrap().is_empty());
        assert_eq!(nft_rule_counter("tcp dport 80 drop"), None);
        assert_eq!(nft_rule_counter("counter name \"x\" accept"), None);
        assert_eq!(nft_rule_counter("counter packets 1 bytes"), None);
        assert_eq!(
            nft_words(r#"iifname "a b" comment "x \" y" drop"#),
            vec!["iifname", r#""a b""#, "comment", r#""x \" y""#, "drop"]
        );
        assert_eq!(count_braces(r#"{ "}\"{" }"#), (1, 1));
    }
}
