//! Which scenarios the bench measures: the ones named on the command line, or one of
//! each representative kind under `scenarios/`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use dropspec::scenario::{self, Scenario};

/// The representative kinds, and the scenario that stands for each.
const REPRESENTATIVE: &[(&str, &str)] = &[
    ("iptables drop", "iptables/input_drop_icmp_nft.toml"),
    ("iptables drop, routed", "iptables/forward_drop_router.toml"),
    ("nft drop", "nft/input_drop_udp.toml"),
    ("closed port, UDP", "sockets/udp_closed_port.toml"),
    ("closed port, TCP", "sockets/tcp_closed_port.toml"),
    ("checksum", "checksum/udp_v4_short.toml"),
    ("NAT failure", "nat/snat_port_exhaustion.toml"),
];

/// Kinds the issue names whose scenarios may not exist yet: the first scenario whose
/// path has one of these words stands for the kind when there is one. Every kind the
/// issue names now has a scenario in REPRESENTATIVE.
const LATER_KINDS: &[(&str, &[&str])] = &[];

/// A scenario with the kind it stands for (or its name, when given on the command line).
pub(super) type Labelled = (String, Scenario);

/// The scenarios to measure: the given paths, or the representative set; and the kinds
/// the issue names that have no scenario yet.
pub(super) fn choose_scenarios(
    paths: &[PathBuf],
    root: &Path,
) -> Result<(Vec<Labelled>, Vec<String>)> {
    let load = |files: &[PathBuf]| -> Result<Vec<Scenario>> {
        crate::load_all(files, Some(root))
            .map(|loaded| loaded.into_iter().map(|(s, _)| s).collect())
            .map_err(|errors| anyhow::anyhow!(errors.join("\n")))
    };
    if !paths.is_empty() {
        let files = crate::scenario_files(paths, Some(root))?;
        let loaded = load(&files)?;
        return Ok((
            loaded.into_iter().map(|s| (s.name.clone(), s)).collect(),
            Vec::new(),
        ));
    }
    let scenarios_dir = root.join("scenarios");
    let mut chosen = Vec::new();
    let mut missing = Vec::new();
    for (kind, file) in REPRESENTATIVE {
        let path = scenarios_dir.join(file);
        if path.is_file() {
            let s = load(&[path])?.remove(0);
            chosen.push((kind.to_string(), s));
        } else {
            missing.push(format!("{kind} ({file} is gone)"));
        }
    }
    let all = scenario::discover(&scenarios_dir).context("reading scenarios/")?;
    for (kind, words) in LATER_KINDS {
        // A fault, not its negative control, stands for the kind.
        let found = all.iter().find(|p| {
            let relative = p.strip_prefix(&scenarios_dir).unwrap_or(p);
            let relative = relative.to_string_lossy().to_lowercase();
            !relative.contains("control")
                && relative
                    .split(['/', '_', '-', '.'])
                    .any(|w| words.contains(&w))
        });
        match found {
            Some(path) => {
                let s = load(std::slice::from_ref(path))?.remove(0);
                chosen.push((kind.to_string(), s));
            }
            None => missing.push(format!("{kind} (no scenario yet)")),
        }
    }
    Ok((chosen, missing))
}
