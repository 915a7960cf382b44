//! Where a scenario file stands: the directory its name is taken relative to, where its
//! `*_file` references are looked up, and where its snapshot lives — for a file in a
//! project's `scenarios/` and for one anywhere else.
//!
//! A file under a project's `scenarios/` (the project found from the current directory,
//! else from the file's own directories) is named by its path there (`iptables/input`)
//! and snapshotted in the project's `snapshots/`, as always. Any other file is *loose*:
//! it is named by its stem (`x` for `/tmp/scratch/x.toml`) and its snapshot goes beside
//! it as `__snapshots__/x.snap` (insta's own directory name, so `cargo insta review`
//! finds the `.snap.new` there too), its `*_file` references are looked up beside it.
//! A loose file's name never carries the directories it happens to sit in: moving a
//! scratch file must not rename its snapshot `__tmp__scratch__x`.

use std::path::{Path, PathBuf};

use crate::baseline::Baselines;

#[derive(Debug, Clone)]
pub struct Place {
    /// The directory the scenario's name is relative to.
    pub names_root: PathBuf,
    /// Where `iptables_file`, `nft_file` … are resolved.
    pub fixtures: PathBuf,
    pub baselines: Baselines,
}

/// The nearest directory at or above `dir` with a `scenarios/` directory.
pub fn project_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join("scenarios").is_dir())
        .map(Path::to_owned)
}

/// Where `file` stands, given the project of the current directory (if any).
pub fn place(file: &Path, project: Option<&Path>) -> Place {
    let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let dir = absolute.parent().unwrap_or(Path::new("/")).to_owned();
    let in_project = |root: &Path| {
        let scenarios = std::fs::canonicalize(root.join("scenarios")).ok()?;
        absolute.starts_with(&scenarios).then(|| Place {
            names_root: scenarios,
            fixtures: root.join("fixtures"),
            baselines: Baselines::in_project(root),
        })
    };
    project
        .and_then(in_project)
        .or_else(|| project_above(&dir).and_then(|root| in_project(&root)))
        .unwrap_or_else(|| Place {
            names_root: dir.clone(),
            fixtures: dir.clone(),
            baselines: Baselines {
                dir: dir.join("__snapshots__"),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loose_file_is_named_by_its_stem_and_snapshotted_beside_it() {
        let dir = std::env::temp_dir().join(format!("dropspec-place-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("scratch")).unwrap();
        let file = dir.join("scratch/x.toml");
        std::fs::write(&file, "").unwrap();
        let place = place(&file, None);
        let name = crate::scenario::scenario_name(
            &std::fs::canonicalize(&file).unwrap(),
            &place.names_root,
        );
        assert_eq!(name, "x");
        assert_eq!(
            place.baselines.shared_path(&name),
            std::fs::canonicalize(dir.join("scratch"))
                .unwrap()
                .join("__snapshots__/x.snap")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_project_file_keeps_its_path_name_and_the_project_snapshots() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let file = root.join("scenarios/iptables/input_drop_icmp_nft.toml");
        // Found from the file's own directories when the current one is elsewhere.
        let place = place(&file, None);
        let name = crate::scenario::scenario_name(
            &std::fs::canonicalize(&file).unwrap(),
            &place.names_root,
        );
        assert_eq!(name, "iptables/input_drop_icmp_nft");
        assert_eq!(place.baselines.dir, root.join("snapshots"));
    }
}
