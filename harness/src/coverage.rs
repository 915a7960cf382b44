//! `dropspec coverage`: which of a kernel's drop reasons the suite exercises, and by
//! which scenarios; which it never does; and which reasons the kernel has that another
//! kernel's table lacks (new reasons nobody has written a scenario for yet).
//!
//! A reason counts as exercised by a scenario when its inline expectations name it
//! (`[[expect.drops]] reason = …`) or when the baseline it is held to on this kernel
//! (`snapshots/kernels/<uname -r>/` where it has one, else `snapshots/`) shows a drop
//! of it. Nothing runs: this reads the suite, so it needs no root.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::baseline::{self, Baselines};
use crate::scenario::Scenario;

/// How a scenario shows that it exercises a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    /// Its inline expectations name the reason.
    Expected,
    /// Only its baseline shows it (a drop the scenario allows but does not promise).
    Baseline,
}

/// Another kernel's reasons, to find what is new on this one.
#[derive(Debug, Clone)]
pub struct OtherTable {
    /// `6.12.117+deb12-amd64 (bundled)`, `6.1.0-56-amd64 (run.json)`.
    pub label: String,
    pub reasons: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct Coverage {
    pub kernel: String,
    /// The kernel's drop reasons.
    pub reasons: BTreeSet<String>,
    /// Reason → the scenarios that exercise it, and how.
    pub exercised: BTreeMap<String, BTreeMap<String, Evidence>>,
    pub others: Vec<OtherTable>,
}

/// The bundled tables (`kernel::known::bundled_reasons`, reason → releases) as one
/// table per release.
pub fn bundled_tables(bundled: &BTreeMap<String, Vec<String>>) -> Vec<OtherTable> {
    let mut by_release: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (reason, releases) in bundled {
        for release in releases {
            by_release
                .entry(release)
                .or_default()
                .insert(reason.clone());
        }
    }
    by_release
        .into_iter()
        .map(|(release, reasons)| OtherTable {
            label: format!("{release} (bundled)"),
            reasons,
        })
        .collect()
}

/// The reasons of the drop rows in a snapshot's text (`drops:` section).
pub fn snapshot_reasons(text: &str) -> BTreeSet<String> {
    let mut reasons = BTreeSet::new();
    let mut in_drops = false;
    for line in text.lines() {
        if !line.starts_with(' ') {
            in_drops = line == "drops:";
            continue;
        }
        if in_drops {
            // `  host  REASON  function  via hook  protocol  N packets  N bytes`
            if let Some(reason) = line.split_whitespace().nth(1) {
                reasons.insert(reason.to_owned());
            }
        }
    }
    reasons
}

/// Reads what the suite exercises on `kernel` from its scenarios and baselines.
pub fn of_suite(
    kernel: &str,
    reasons: BTreeSet<String>,
    scenarios: &[Scenario],
    baselines: &Baselines,
    others: Vec<OtherTable>,
) -> Coverage {
    let mut exercised: BTreeMap<String, BTreeMap<String, Evidence>> = BTreeMap::new();
    for s in scenarios {
        for d in &s.expect.drops {
            exercised
                .entry(d.reason.clone())
                .or_default()
                .insert(s.name.clone(), Evidence::Expected);
        }
        if let Ok(text) = baseline::read_snapshot(&baselines.path_for(&s.name, kernel)) {
            for reason in snapshot_reasons(&text) {
                exercised
                    .entry(reason)
                    .or_default()
                    .entry(s.name.clone())
                    .or_insert(Evidence::Baseline);
            }
        }
    }
    Coverage {
        kernel: kernel.to_owned(),
        reasons,
        exercised,
        others,
    }
}

impl Coverage {
    /// The kernel's reasons no scenario exercises.
    pub fn never(&self) -> Vec<&str> {
        self.reasons
            .iter()
            .filter(|r| !self.exercised.contains_key(*r))
            .map(String::as_str)
            .collect()
    }

    /// Reasons of this kernel that `other` lacks.
    pub fn new_since<'a>(&'a self, other: &OtherTable) -> Vec<&'a str> {
        self.reasons
            .iter()
            .filter(|r| !other.reasons.contains(*r))
            .map(String::as_str)
            .collect()
    }

    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        let covered: Vec<(&String, &BTreeMap<String, Evidence>)> = self
            .exercised
            .iter()
            .filter(|(r, _)| self.reasons.contains(*r))
            .collect();
        let foreign: Vec<&String> = self
            .exercised
            .keys()
            .filter(|r| !self.reasons.contains(*r))
            .collect();
        let never = self.never();
        let (h1, h2, item) = if markdown {
            ("# ", "\n## ", "- ")
        } else {
            ("", "\n", "  ")
        };
        let code = |s: &str| {
            if markdown {
                format!("`{s}`")
            } else {
                s.to_owned()
            }
        };
        writeln!(
            out,
            "{h1}Drop-reason coverage on kernel {}: {} of {} reasons exercised, {} never",
            self.kernel,
            covered.len(),
            self.reasons.len(),
            never.len()
        )
        .unwrap();
        if markdown {
            writeln!(
                out,
                "\nWritten by `dropspec coverage --markdown` from the suite's inline \
                 expectations and the baselines this kernel is held to; nothing was run. \
                 Regenerate it with `cargo run -q --bin dropspec -- coverage --markdown > \
                 docs/coverage-{}.md` at the project's root (no root needed).",
                major_minor(&self.kernel)
            )
            .unwrap();
        }
        writeln!(out, "{h2}Exercised ({})", covered.len()).unwrap();
        if markdown {
            writeln!(
                out,
                "\n_expected_: the scenario's inline expectations name the reason; \
                 _baseline_: only its baseline shows a drop of it.\n"
            )
            .unwrap();
        }
        for (reason, scenarios) in &covered {
            let by: Vec<String> = scenarios
                .iter()
                .map(|(name, how)| match how {
                    Evidence::Expected => code(name),
                    Evidence::Baseline => format!("{} (baseline)", code(name)),
                })
                .collect();
            writeln!(
                out,
                "{item}{} ({}): {}",
                code(reason),
                scenarios.len(),
                by.join(", ")
            )
            .unwrap();
        }
        if !foreign.is_empty() {
            writeln!(
                out,
                "{h2}Named by the suite but not reasons of this kernel ({})",
                foreign.len()
            )
            .unwrap();
            for reason in foreign {
                writeln!(out, "{item}{}", code(reason)).unwrap();
            }
        }
        writeln!(out, "{h2}Never exercised ({})", never.len()).unwrap();
        if markdown {
            out.push('\n');
        }
        write_names(&mut out, &never, markdown);
        for other in &self.others {
            let new = self.new_since(other);
            writeln!(
                out,
                "{h2}New since {} ({}; exercised ones marked *)",
                other.label,
                new.len()
            )
            .unwrap();
            if markdown {
                out.push('\n');
            }
            let marked: Vec<String> = new
                .iter()
                .map(|r| {
                    if self.exercised.contains_key(*r) {
                        format!("{r}*")
                    } else {
                        (*r).to_owned()
                    }
                })
                .collect();
            let marked: Vec<&str> = marked.iter().map(String::as_str).collect();
            write_names(&mut out, &marked, markdown);
        }
        out
    }
}

/// `6.18` of `6.18.44-fc-v1300`.
fn major_minor(release: &str) -> String {
    release.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// A long list of reason names, several to a line.
fn write_names(out: &mut String, names: &[&str], markdown: bool) {
    if names.is_empty() {
        writeln!(out, "{}none", if markdown { "" } else { "  " }).unwrap();
        return;
    }
    if markdown {
        let names: Vec<String> = names
            .iter()
            .map(|n| {
                format!("`{}`", n.trim_end_matches('*')) + if n.ends_with('*') { "\\*" } else { "" }
            })
            .collect();
        writeln!(out, "{}", names.join(", ")).unwrap();
    } else {
        for chunk in names.chunks(4) {
            writeln!(out, "  {}", chunk.join("  ")).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reasons_are_read_from_the_drops_section_only() {
        let text = "scenario: x\ndrops:\n  server  NETFILTER_DROP  nft_do_chain  via ip_local_deliver  ipv4/icmp  3 packets  252 bytes\n  client  NO_SOCKET  udp_rcv  -  ipv4/udp  1 packets  60 bytes\ncauses:\n  server  rule  3 packets  (x)\n";
        assert_eq!(
            snapshot_reasons(text),
            ["NETFILTER_DROP", "NO_SOCKET"]
                .map(String::from)
                .into_iter()
                .collect()
        );
        assert!(snapshot_reasons("scenario: x\ndrops: none\n").is_empty());
    }

    fn coverage() -> Coverage {
        let set = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
        let mut exercised: BTreeMap<String, BTreeMap<String, Evidence>> = BTreeMap::new();
        exercised
            .entry("NETFILTER_DROP".into())
            .or_default()
            .insert("iptables/input".into(), Evidence::Expected);
        exercised
            .entry("NO_SOCKET".into())
            .or_default()
            .insert("sockets/udp".into(), Evidence::Baseline);
        exercised
            .entry("OLD_NAME".into())
            .or_default()
            .insert("x/y".into(), Evidence::Expected);
        Coverage {
            kernel: "6.18".into(),
            reasons: set(&["NETFILTER_DROP", "NO_SOCKET", "TC_EGRESS", "NEW_ONE"]),
            exercised,
            others: vec![OtherTable {
                label: "6.1 (bundled)".into(),
                reasons: set(&["NETFILTER_DROP", "NO_SOCKET", "OLD_NAME", "TC_EGRESS"]),
            }],
        }
    }

    #[test]
    fn exercised_never_and_new_reasons() {
        let c = coverage();
        assert_eq!(c.never(), ["NEW_ONE", "TC_EGRESS"]);
        assert_eq!(c.new_since(&c.others[0]), ["NEW_ONE"]);
        let text = c.render(false);
        assert!(text.starts_with(
            "Drop-reason coverage on kernel 6.18: 2 of 4 reasons exercised, 2 never\n"
        ));
        assert!(
            text.contains("  NETFILTER_DROP (1): iptables/input\n"),
            "{text}"
        );
        assert!(
            text.contains("  NO_SOCKET (1): sockets/udp (baseline)\n"),
            "{text}"
        );
        assert!(
            text.contains("Named by the suite but not reasons of this kernel (1)\n  OLD_NAME\n"),
            "{text}"
        );
        assert!(
            text.contains("New since 6.1 (bundled) (1; exercised ones marked *)\n  NEW_ONE\n"),
            "{text}"
        );
        let md = c.render(true);
        assert!(md.starts_with("# Drop-reason coverage"), "{md}");
        assert!(
            md.contains("coverage --markdown > docs/coverage-6.18.md`"),
            "{md}"
        );
        assert!(
            md.contains("- `NO_SOCKET` (1): `sockets/udp` (baseline)\n"),
            "{md}"
        );
        assert!(
            md.contains("## Never exercised (2)\n\n`NEW_ONE`, `TC_EGRESS`\n"),
            "{md}"
        );
    }
}
