//! Baselines: the snapshot files under `snapshots/` a report is held against, read,
//! compared and written in insta's `.snap` format, so `cargo insta review` and
//! `cargo insta accept` keep working on them.
//!
//! Why not `insta::assert_snapshot!`: the verdict is one library function that both
//! `dropspec run` and `cargo test` call, and insta's assertion is a test-time macro that
//! panics. The file format is small and stable (a `---` metadata header, then the
//! content), so this module writes it, and a test checks insta accepts what it writes.

use std::io;
use std::path::{Path, PathBuf};

/// Where a project's baselines live: `<root>/snapshots/`.
#[derive(Debug, Clone)]
pub struct Baselines {
    pub dir: PathBuf,
}

/// What comparing a report with its baseline found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    Same,
    /// No baseline exists yet.
    Missing {
        path: PathBuf,
    },
    /// The baseline says something else; `diff` is a unified diff, old to new.
    Differs {
        path: PathBuf,
        diff: String,
    },
}

/// The file name of a scenario's snapshot: `iptables/input_drop` → `iptables__input_drop`.
pub fn snapshot_name(scenario_name: &str) -> String {
    crate::scenario::snapshot_name(scenario_name)
}

impl Baselines {
    pub fn in_project(root: &Path) -> Baselines {
        Baselines {
            dir: root.join("snapshots"),
        }
    }

    /// Where a kernel's own baselines live: `snapshots/kernels/<uname -r>/`.
    pub fn kernel_dir(&self, kernel: &str) -> PathBuf {
        self.dir.join("kernels").join(kernel)
    }

    pub fn shared_path(&self, scenario: &str) -> PathBuf {
        self.dir.join(format!("{}.snap", snapshot_name(scenario)))
    }

    pub fn kernel_path(&self, scenario: &str, kernel: &str) -> PathBuf {
        self.kernel_dir(kernel)
            .join(format!("{}.snap", snapshot_name(scenario)))
    }

    /// The baseline a scenario's report is held against on `kernel`: that kernel's own
    /// snapshot where it has one (it really behaves differently), else the shared one.
    pub fn path_for(&self, scenario: &str, kernel: &str) -> PathBuf {
        let own = self.kernel_path(scenario, kernel);
        if own.exists() {
            own
        } else {
            self.shared_path(scenario)
        }
    }

    /// Compares `text` with the baseline for `scenario` on `kernel`.
    pub fn compare(&self, scenario: &str, kernel: &str, text: &str) -> Comparison {
        let path = self.path_for(scenario, kernel);
        match read_snapshot(&path) {
            Err(_) => Comparison::Missing { path },
            Ok(saved) if saved.trim_end() == text.trim_end() => Comparison::Same,
            Ok(saved) => Comparison::Differs {
                diff: unified_diff(&saved, text),
                path,
            },
        }
    }
}

/// The content of an insta `.snap` file: everything after its metadata header.
pub fn read_snapshot(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map_or(text.as_str(), |(_, body)| body);
    Ok(body.to_owned())
}

/// Writes `content` as an insta snapshot at `path` (creating its directory).
pub fn write_snapshot(path: &Path, description: &str, content: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // insta writes the description as a YAML string; the double-quoted form with `"`
    // replaced keeps it one line whatever the scenario says.
    let header = format!(
        "---\nsource: harness/tests/scenarios.rs\ndescription: \"{}\"\n---\n",
        description.replace('\\', "/").replace('"', "'")
    );
    let mut body = content.trim_end().to_owned();
    body.push('\n');
    std::fs::write(path, header + &body)
}

/// The pending file `cargo insta review` looks for beside a snapshot.
pub fn pending_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn unified_diff(old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old.trim_end(), new.trim_end())
        .unified_diff()
        .context_radius(3)
        .header("baseline", "this run")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insta_accepts_what_is_written() {
        let dir = std::env::temp_dir().join(format!("dropspec-{}-insta-test", std::process::id()));
        let content = "scenario: a/b\ndrops:\n  server  NETFILTER_DROP  nft_do_chain  3 packets\n";
        write_snapshot(&dir.join("a__b.snap"), "a \"quoted\" description", content).unwrap();
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(&dir);
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        // insta compares only the content: a match means it read our header and body.
        settings.bind(|| insta::assert_snapshot!("a__b", content.trim_end()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn written_snapshots_read_back_and_compare() {
        let dir =
            std::env::temp_dir().join(format!("dropspec-{}-baseline-test", std::process::id()));
        let baselines = Baselines { dir: dir.clone() };
        let path = baselines.shared_path("a/b");
        assert!(matches!(
            baselines.compare("a/b", "6.18", "x\n"),
            Comparison::Missing { .. }
        ));
        write_snapshot(&path, "say \"hi\"", "scenario: a/b\ndrops: none\n").unwrap();
        assert_eq!(
            baselines.compare("a/b", "6.18", "scenario: a/b\ndrops: none"),
            Comparison::Same
        );
        let Comparison::Differs { diff, .. } =
            baselines.compare("a/b", "6.18", "scenario: a/b\ndrops: 3\n")
        else {
            panic!("expected a difference")
        };
        assert!(
            diff.contains("-drops: none") && diff.contains("+drops: 3"),
            "{diff}"
        );
        // A kernel's own baseline wins over the shared one.
        write_snapshot(
            &baselines.kernel_path("a/b", "6.1"),
            "",
            "scenario: a/b\ndrops: 3\n",
        )
        .unwrap();
        assert_eq!(
            baselines.compare("a/b", "6.1", "scenario: a/b\ndrops: 3"),
            Comparison::Same
        );
        assert_eq!(pending_path(&path).file_name().unwrap(), "a__b.snap.new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
