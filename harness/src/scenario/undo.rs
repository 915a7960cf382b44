//! How a fault is taken back by a `remove` step: worked out from the fault's own text,
//! so the validator can refuse a fault it cannot undo and the runtime (`faults::remove`)
//! only loads what this says.
//!
//! - iptables: the rules are deleted one by one, in reverse order (`-A`/`-I` become
//!   `-D`), then the chains the fault declared (`:NAME - [0:0]`) are deleted, and a
//!   built-in chain whose policy it set goes back to ACCEPT (a new namespace's policy).
//!   Loaded with `--noflush`, so other faults' rules stay. Any other command (`-F`,
//!   `-P`, `-R`, `-X` …) has no inverse here, and the fault cannot be removed.
//! - nft: every table the ruleset declares is deleted (`delete table FAMILY NAME`),
//!   with whatever another fault added to the same table.
//! - dropspec's tc classifier (`tc_drop`): its filter is deleted.
//! - a `qdisc` fault: its root qdisc is deleted (the interface gets its default back), or
//!   its ingress qdisc, filters and all.
//! - `tc` commands: no inverse.

use super::model::FaultKind;

/// What a `remove` step loads, by the fault's own tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// iptables-restore input, loaded with `--noflush` by the fault's backend.
    Iptables(String),
    /// `nft -f` input.
    Nft(String),
    /// `tc -batch` input.
    Tc(String),
}

/// How to take back a fault of this kind, or why it cannot be.
pub fn undo(kind: &FaultKind) -> Result<Undo, String> {
    match kind {
        FaultKind::Iptables { rules, .. } => iptables_inverse(rules).map(Undo::Iptables),
        FaultKind::Nft { ruleset, .. } => {
            let tables = nft_tables(ruleset);
            if tables.is_empty() {
                return Err(
                    "its ruleset declares no `table`, and a `remove` deletes the tables the fault declares"
                        .to_owned(),
                );
            }
            Ok(Undo::Nft(
                tables
                    .iter()
                    .map(|(family, name)| format!("delete table {family} {name}\n"))
                    .collect(),
            ))
        }
        FaultKind::TcDrop { dev, ingress } => Ok(Undo::Tc(format!(
            "filter del dev {dev} {} prio 1\n",
            if *ingress { "ingress" } else { "egress" }
        ))),
        // The fault's qdisc is the root one (with its children): deleting it gives the
        // interface back its default qdisc. Deleting the ingress qdisc takes its filters
        // with it.
        FaultKind::Qdisc(qdisc) => Ok(Undo::Tc(format!(
            "qdisc del dev {} {}\n",
            qdisc.dev,
            qdisc.parent()
        ))),
        FaultKind::Command { .. } => Err(
            "a `command` has no inverse dropspec can know: write the removal as a second named fault (`command = [\"tc\", \"qdisc\", \"del\", ...]`) and `apply` it"
                .to_owned(),
        ),
        FaultKind::Tc { .. } => Err(
            "`tc` commands have no inverse dropspec can know: write the removal as a second named fault (`tc = \"filter del ...\"`) and `apply` it"
                .to_owned(),
        ),
    }
}

const BUILTIN_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// The iptables-restore input that deletes what `rules` added.
pub fn iptables_inverse(rules: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut deletes: Vec<String> = Vec::new();
    let mut chains: Vec<String> = Vec::new();
    let mut policies: Vec<String> = Vec::new();
    for (n, line) in rules.lines().enumerate() {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.first().copied() {
            None => {}
            Some(w) if w.starts_with('#') => {}
            Some(w) if w.starts_with('*') => out.push_str(&format!("{line}\n")),
            Some("COMMIT") => {
                for delete in deletes.drain(..).rev() {
                    out.push_str(&delete);
                }
                for chain in chains.drain(..).rev() {
                    out.push_str(&format!("-X {chain}\n"));
                }
                for chain in policies.drain(..) {
                    out.push_str(&format!(":{chain} ACCEPT [0:0]\n"));
                }
                out.push_str("COMMIT\n");
            }
            Some(w) if w.starts_with(':') => {
                let chain = &w[1..];
                if BUILTIN_CHAINS.contains(&chain) {
                    if words.get(1) != Some(&"ACCEPT") {
                        policies.push(chain.to_owned());
                    }
                } else {
                    chains.push(chain.to_owned());
                }
            }
            Some("-A" | "--append") if words.len() > 2 => {
                deletes.push(format!("-D {}\n", words[1..].join(" ")));
            }
            Some("-I" | "--insert") if words.len() > 2 => {
                let rest = if words[2].parse::<u32>().is_ok() {
                    &words[3..]
                } else {
                    &words[2..]
                };
                deletes.push(format!("-D {} {}\n", words[1], rest.join(" ")));
            }
            Some(_) => {
                return Err(format!(
                    "line {} (`{line}`) has no inverse: a removable iptables fault holds only `*table`, chain declarations, `-A`/`-I` rules and `COMMIT`",
                    n + 1
                ));
            }
        }
    }
    Ok(out)
}

/// The `(family, name)` of every table an nft ruleset declares (`table inet t {`,
/// `add table ip nat`); a table without a family is `ip`, as nft reads it.
pub fn nft_tables(ruleset: &str) -> Vec<(String, String)> {
    const FAMILIES: [&str; 6] = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
    let mut tables = Vec::new();
    for line in ruleset.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.peek() == Some(&"add") {
            words.next();
        }
        if words.next() != Some("table") {
            continue;
        }
        let words: Vec<&str> = words
            .map(|w| w.trim_end_matches('{'))
            .filter(|w| !w.is_empty())
            .collect();
        let table = match words.as_slice() {
            [family, name, ..] if FAMILIES.contains(family) => {
                (family.to_string(), name.to_string())
            }
            [name, ..] => ("ip".to_owned(), name.to_string()),
            [] => continue,
        };
        if !tables.contains(&table) {
            tables.push(table);
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_are_deleted_in_reverse_and_their_chains_after() {
        let rules = "*filter\n:INPUT DROP [0:0]\n:X - [0:0]\n-A INPUT -p tcp -j X\n-I X 1 -p tcp -m conntrack --ctstate NEW -j DROP\nCOMMIT\n";
        assert_eq!(
            iptables_inverse(rules).unwrap(),
            "*filter\n-D X -p tcp -m conntrack --ctstate NEW -j DROP\n-D INPUT -p tcp -j X\n-X X\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
        );
        let err = iptables_inverse("*filter\n-F INPUT\nCOMMIT\n").unwrap_err();
        assert!(err.starts_with("line 2 (`-F INPUT`)"), "{err}");
    }

    #[test]
    fn nft_tables_are_found_with_their_family() {
        let ruleset = "table inet t {\n  chain c { }\n}\nadd table nat\ntable ip6 six{\n}\n";
        assert_eq!(
            nft_tables(ruleset),
            vec![
                ("inet".to_owned(), "t".to_owned()),
                ("ip".to_owned(), "nat".to_owned()),
                ("ip6".to_owned(), "six".to_owned())
            ]
        );
    }
}
