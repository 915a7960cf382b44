//! Names the kernel knows, for checking a scenario's expectations before anything runs:
//! the running kernel's drop reasons (BTF, else tracefs) and function names (kallsyms,
//! readable without root even when the addresses are hidden),
//! and the drop reasons of every kernel saved in `fixtures/kernel/`.
//!
//! The saved kernels' reasons are a committed text table, `known_reasons.txt`, so the
//! binary needs neither the gzipped BTF blobs nor a decompressor; a unit test rebuilds
//! the table from the blobs and fails when it is stale (`DROPSPEC_BLESS=1` rewrites it).

use super::kallsyms::Kallsyms;
use super::reasons::ReasonTable;
use super::stacks::base_name;
use super::KernelError;
use std::collections::{BTreeMap, BTreeSet};

/// `NAME release release …` per line; `#` lines are comments.
const KNOWN_REASONS: &str = include_str!("known_reasons.txt");

/// Drop reason → the saved kernels (releases) that have it.
pub fn bundled_reasons() -> BTreeMap<String, Vec<String>> {
    KNOWN_REASONS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.to_owned();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// The running kernel's drop-reason names.
pub fn running_reasons() -> Result<BTreeSet<String>, KernelError> {
    let table = ReasonTable::from_running_kernel()?;
    Ok(table.iter().map(|(_, name)| name.to_owned()).collect())
}

/// The running kernel's function names, from kallsyms (names are listed even to
/// unprivileged users, with zero addresses). Clone suffixes are dropped, as drop
/// reports drop them. BTF is no substitute: pahole leaves out functions the compiler
/// cloned (`ip_rcv_finish_core.isra.0` on 6.1 and 6.12), which drops are reported in.
pub fn running_functions() -> Result<BTreeSet<String>, KernelError> {
    // Shared with the drop probe, which names drops from the same read.
    Ok(functions_of(&*Kallsyms::shared_names()?))
}

/// The function names of a kallsyms read, as [`running_functions`] gives them.
pub fn functions_of(kallsyms: &Kallsyms) -> BTreeSet<String> {
    // Drops are reported under the source function's name, without the compiler's
    // clone suffix (`__netif_receive_skb_core.constprop.0`).
    kallsyms.names().map(|n| base_name(n).to_owned()).collect()
}

/// The table text for `known_reasons.txt` from (release, BTF bytes) of saved kernels.
pub fn render_known_reasons(kernels: &[(String, Vec<u8>)]) -> Result<String, KernelError> {
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (release, btf) in kernels {
        for (_, name) in ReasonTable::from_btf(btf)?.iter() {
            by_name
                .entry(name.to_owned())
                .or_default()
                .push(release.clone());
        }
    }
    let mut text = String::from(
        "# Drop reasons of the kernels saved in fixtures/kernel/, from their BTF, and the\n\
         # releases that have each one. Generated: DROPSPEC_BLESS=1 cargo test -p dropspec\n\
         # known_reasons_table_matches_the_saved_kernels\n",
    );
    for (name, releases) in by_name {
        text.push_str(&format!("{name} {}\n", releases.join(" ")));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reasons::tests::{fixture_btf, fixture_kernels};
    use std::path::Path;

    #[test]
    fn known_reasons_table_matches_the_saved_kernels() {
        let kernels: Vec<(String, Vec<u8>)> = fixture_kernels()
            .iter()
            .map(|dir| {
                let release = dir.file_name().unwrap().to_string_lossy().into_owned();
                (release, fixture_btf(dir))
            })
            .collect();
        let fresh = render_known_reasons(&kernels).unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kernel/known_reasons.txt");
        if crate::policy::Policy::current().is_ok_and(|p| p.bless) {
            std::fs::write(&path, &fresh).unwrap();
        }
        assert!(
            fresh == KNOWN_REASONS,
            "{} is stale: rerun with DROPSPEC_BLESS=1",
            path.display()
        );
        let reasons = bundled_reasons();
        assert_eq!(reasons["NETFILTER_DROP"].len(), kernels.len());
        assert!(reasons.len() > 100, "{}", reasons.len());
    }
}
