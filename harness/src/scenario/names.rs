//! The names only a kernel can confirm: drop reasons and function names in
//! `[[expect.drops]]`, and counter names in `[[expect.counters]]`. Causes and hook
//! points are the harness's own vocabulary and are checked while the file is validated;
//! these are checked here, in a separate step, against a [`KnownNames`] the kernel layer
//! and the counters fill in (`dropspec::names::on_this_machine`), so the model itself
//! reads nothing from the running system.
//!
//! ## The rule for names that only some kernels have
//!
//! A name must exist on the running kernel, with one exception: when the scenario sets
//! `[expect] since_kernel` and the running kernel is older than that, the inline
//! expectations are not asserted here (the kernel's own baseline is), so a name of the
//! newer kernels is accepted — a reason only if one of the saved kernels
//! (`kernel/known_reasons.txt`) has it, a function on trust (no function tables are
//! bundled). Anything else is an error with the closest names suggested; nothing is
//! ever silently counted as zero. When the running kernel's reasons cannot be read (no
//! BTF, no tracefs), they are checked against the saved kernels'; when its kallsyms
//! cannot be read, functions are not checked (BTF is no substitute: it leaves out the
//! functions the compiler cloned, where many drops happen). Counter names come from
//! this machine's /proc/net files; a group whose file is absent (`conntrack` while
//! nf_conntrack is not loaded) is not checked.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{KernelName, KernelNameKind, Scenario};
use super::validate::parse_kernel_version;
use super::ScenarioError;
use crate::suggest;

/// What the kernel layer found. Plain data: the model never reads the system itself.
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    /// `uname -r` of the running kernel, when known.
    pub release: Option<String>,
    /// The running kernel's drop reasons; `None` when they could not be read.
    pub reasons: Option<BTreeSet<String>>,
    /// The running kernel's function names; `None` when they could not be read.
    pub functions: Option<BTreeSet<String>>,
    /// Drop reason → the saved kernels that have it.
    pub bundled_reasons: BTreeMap<String, Vec<String>>,
    /// The kernel's counter names as expectations spell them; `None` when unread.
    pub counters: Option<BTreeSet<String>>,
    /// Counter groups whose names could not be read here (`conntrack` while nf_conntrack
    /// is not loaded): their names are not checked.
    pub unread_counter_groups: Vec<String>,
}

/// Every unknown name in the scenario's expectations, each at its own line and column.
pub fn check(scenario: &Scenario, known: &KnownNames) -> Vec<ScenarioError> {
    let running = known.release.as_deref().and_then(parse_kernel_version);
    // The inline expectations are not asserted on this kernel (see the module's rule).
    let not_asserted_here = matches!(
        (scenario.expect.since_kernel, running),
        (Some(since), Some(here)) if here < since
    );
    let mut errors = Vec::new();
    for used in &scenario.kernel_names {
        let problem = match used.kind {
            KernelNameKind::Reason => reason_problem(&used.name, known, not_asserted_here),
            KernelNameKind::Function => function_problem(&used.name, known, not_asserted_here),
            KernelNameKind::Counter => counter_problem(&used.name, known, not_asserted_here),
        };
        if let Some(message) = problem {
            errors.push(error_at(scenario, used, message));
        }
    }
    errors
}

fn error_at(scenario: &Scenario, used: &KernelName, message: String) -> ScenarioError {
    ScenarioError {
        path: scenario.path.clone(),
        line: used.line,
        column: used.column,
        message,
    }
}

fn here(known: &KnownNames) -> String {
    known
        .release
        .as_deref()
        .map_or("the running kernel".to_owned(), |r| {
            format!("this kernel ({r})")
        })
}

fn did_you_mean(name: &str, candidates: &BTreeSet<&str>) -> String {
    // Only names of about the right length can be within the edit limit: checking 100,000
    // kallsyms names in full would take seconds in a debug build.
    let limit = (name.chars().count() / 3).max(1);
    let near: Vec<&str> = candidates
        .iter()
        .copied()
        .filter(|c| c.len().abs_diff(name.len()) <= limit)
        .collect();
    match suggest::closest(name, &near) {
        Some(best) => format!(": did you mean `{best}`?"),
        None => String::new(),
    }
}

fn reason_problem(name: &str, known: &KnownNames, not_asserted_here: bool) -> Option<String> {
    let bundled = known.bundled_reasons.get(name);
    match &known.reasons {
        Some(here_reasons) if here_reasons.contains(name) => None,
        None if bundled.is_some() => None,
        Some(_) if bundled.is_some() && not_asserted_here => None,
        Some(_) if bundled.is_some() => Some(format!(
            "drop reason `{name}` does not exist on {}; the saved kernels that have it are {}: if the expectations describe those kernels only, set `since_kernel` in `[expect]`",
            here(known),
            bundled.expect("matched is_some").join(", ")
        )),
        _ => {
            let mut candidates: BTreeSet<&str> =
                known.bundled_reasons.keys().map(String::as_str).collect();
            if let Some(r) = &known.reasons {
                candidates.extend(r.iter().map(String::as_str));
            }
            Some(format!(
                "unknown drop reason `{name}`{} (`dropspec reasons` lists this kernel's)",
                did_you_mean(name, &candidates)
            ))
        }
    }
}

fn function_problem(name: &str, known: &KnownNames, not_asserted_here: bool) -> Option<String> {
    let functions = known.functions.as_ref()?;
    if functions.contains(name) || not_asserted_here {
        return None;
    }
    let candidates: BTreeSet<&str> = functions.iter().map(String::as_str).collect();
    Some(format!(
        "no function `{name}` in {}{}",
        here(known),
        did_you_mean(name, &candidates)
    ))
}

fn counter_problem(name: &str, known: &KnownNames, not_asserted_here: bool) -> Option<String> {
    let counters = known.counters.as_ref()?;
    let group = name.split('.').next().unwrap_or(name);
    if counters.contains(name)
        || not_asserted_here
        || known.unread_counter_groups.iter().any(|g| g == group)
    {
        return None;
    }
    let candidates: BTreeSet<&str> = counters.iter().map(String::as_str).collect();
    Some(format!(
        "{} has no counter `{name}`{} (the names are those of /proc/net/snmp, netstat and snmp6 as `Group.Field`, and `conntrack.<stat>` from /proc/net/stat/nf_conntrack)",
        here(known),
        did_you_mean(name, &candidates)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse;
    use std::path::Path;

    const SCENARIO: &str = r#"description = "names"
[hosts.a]
[hosts.b]
[[links]]
a = { host = "a", addr = "198.18.0.1/24" }
b = { host = "b", addr = "198.18.0.2/24" }
[[expect.drops]]
host = "a"
reason = "NETFILTR_DROP"
function = "nft_do_chian"
count = 0
[[expect.drops]]
host = "a"
reason = "NEWER_ONLY"
count = 0
[[expect.counters]]
host = "b"
counter = "TcpExt.ListenOverflow"
delta = 0
[[expect.counters]]
host = "b"
counter = "conntrack.drop"
delta = 0
"#;

    fn known(release: &str) -> KnownNames {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
        KnownNames {
            release: Some(release.into()),
            reasons: Some(set(&["NETFILTER_DROP", "NO_SOCKET"])),
            functions: Some(set(&["nft_do_chain", "nf_hook_slow"])),
            bundled_reasons: [
                ("NETFILTER_DROP".to_owned(), vec!["6.1".to_owned()]),
                ("NEWER_ONLY".to_owned(), vec!["6.18".to_owned()]),
            ]
            .into(),
            counters: Some(set(&["TcpExt.ListenOverflows", "Udp.InErrors"])),
            unread_counter_groups: vec!["conntrack".to_owned()],
        }
    }

    fn errors(text: &str, known: &KnownNames) -> Vec<String> {
        let s = parse(text, Path::new("s.toml"), "s", Path::new(".")).unwrap();
        check(&s, known).iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn misspelt_names_are_refused_at_their_place_with_the_closest_name() {
        assert_eq!(
            errors(SCENARIO, &known("6.12.1")),
            [
                "s.toml:9:10: unknown drop reason `NETFILTR_DROP`: did you mean `NETFILTER_DROP`? (`dropspec reasons` lists this kernel's)",
                "s.toml:10:12: no function `nft_do_chian` in this kernel (6.12.1): did you mean `nft_do_chain`?",
                "s.toml:14:10: drop reason `NEWER_ONLY` does not exist on this kernel (6.12.1); the saved kernels that have it are 6.18: if the expectations describe those kernels only, set `since_kernel` in `[expect]`",
                "s.toml:18:11: this kernel (6.12.1) has no counter `TcpExt.ListenOverflow`: did you mean `TcpExt.ListenOverflows`? (the names are those of /proc/net/snmp, netstat and snmp6 as `Group.Field`, and `conntrack.<stat>` from /proc/net/stat/nf_conntrack)",
            ]
        );
    }

    #[test]
    fn names_of_newer_kernels_need_since_kernel_and_typos_are_refused_regardless() {
        let with_since = SCENARIO.replace(
            "[[expect.drops]]\nhost = \"a\"\nreason = \"NEWER",
            "[expect]\nsince_kernel = \"6.18\"\n[[expect.drops]]\nhost = \"a\"\nreason = \"NEWER",
        );
        let e = errors(&with_since, &known("6.12.1"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("NETFILTR_DROP"), "{e:?}");
        // On 6.18 itself the expectations are asserted, so the name must exist there.
        let e = errors(&with_since, &known("6.18.2"));
        assert!(e.iter().any(|e| e.contains("NEWER_ONLY")), "{e:?}");
    }

    #[test]
    fn without_the_running_kernels_names_the_saved_kernels_decide() {
        let blind = KnownNames {
            reasons: None,
            functions: None,
            counters: None,
            ..known("6.12.1")
        };
        let e = errors(SCENARIO, &blind);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("did you mean `NETFILTER_DROP`"), "{e:?}");
    }
}
