//! Finding scenario files and naming them: the name a scenario goes by, and its snapshot's.

use std::path::{Path, PathBuf};

/// `scenarios/iptables/input.toml` → `iptables/input`.
pub fn scenario_name(path: &Path, root: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut name = relative.with_extension("").to_string_lossy().into_owned();
    if std::path::MAIN_SEPARATOR != '/' {
        name = name.replace(std::path::MAIN_SEPARATOR, "/");
    }
    name
}

/// Every `*.toml` below `root`, sorted, so trials are listed in a stable order.
pub fn discover(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The snapshot file stem for a scenario: `iptables/input` → `iptables__input`.
pub fn snapshot_name(scenario_name: &str) -> String {
    scenario_name.replace('/', "__")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let root = Path::new("/p/scenarios");
        assert_eq!(
            scenario_name(Path::new("/p/scenarios/iptables/input.toml"), root),
            "iptables/input"
        );
        assert_eq!(snapshot_name("iptables/input"), "iptables__input");
    }
}
