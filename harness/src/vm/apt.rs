//! dropspec's own apt configuration: the Debian suites whose kernels the matrix boots,
//! with their package lists kept under the kernel cache, so that `--kernel 5.10` or
//! `--kernel 7.2.13+deb14` works on a bookworm machine without touching its
//! `/etc/apt` (whose sources, pins and lists are the machine owner's business).
//!
//! Every apt-get and apt-cache call of `dropspec vm` goes through [`Apt::command`]:
//! the machine's apt.conf.d still applies (proxies, for one), but the sources are
//! [`SOURCES`] and the lists and package caches are `<cache>/apt/`. Nothing is installed:
//! apt only lists (`apt-cache pkgnames`, `show`) and downloads (`apt-get download`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::VmError;

/// The suites searched, oldest first. Kernels per suite (amd64, what the matrix uses):
/// bullseye 5.10 (`5.10.0-N`; newer ABIs in bullseye-security), bookworm 6.1
/// (`6.1.0-N`, security updates in bookworm-security, which also carries bookworm's
/// 6.12 LTS `6.12.N+deb12`), trixie 6.12 (`6.12.N+deb13`), trixie-backports 6.16 to 7.3
/// (`+deb13`), unstable 7.x (`+deb14`, split into linux-binary/linux-modules/linux-base
/// packages). The keys are debian-archive-keyring's, as on any Debian machine.
pub const SOURCES: &str = "\
# Written by dropspec vm (harness/src/vm/apt.rs); rewritten when it changes.
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
";

/// apt with dropspec's sources and its own lists under `<cache>/apt/`.
#[derive(Debug, Clone)]
pub struct Apt {
    root: PathBuf,
}

impl Apt {
    /// The configuration kept beside the kernels of `cache`.
    pub fn new(cache: &Path) -> Apt {
        Apt {
            root: cache.join("apt"),
        }
    }

    /// Where the lists and the sources file are.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `apt-get` or `apt-cache` with dropspec's sources and lists; creates the
    /// directories and the sources file first.
    pub fn command(&self, tool: &str) -> Result<Command, VmError> {
        let sources = self.root.join("sources.list");
        for dir in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
            let dir = self.root.join(dir);
            std::fs::create_dir_all(&dir)
                .map_err(|e| VmError::io("creating dropspec's apt directory", &dir, e))?;
        }
        if std::fs::read_to_string(&sources).ok().as_deref() != Some(SOURCES) {
            std::fs::write(&sources, SOURCES)
                .map_err(|e| VmError::io("writing dropspec's apt sources", &sources, e))?;
        }
        let mut command = Command::new(tool);
        for option in self.options() {
            command.arg("-o").arg(option);
        }
        Ok(command)
    }

    fn options(&self) -> Vec<String> {
        let dir = |name: &str| self.root.join(name).display().to_string();
        vec![
            format!("Dir::Etc::sourcelist={}", dir("sources.list")),
            format!("Dir::Etc::sourceparts={}", dir("sources.list.d")),
            format!("Dir::State::Lists={}", dir("lists")),
            format!("Dir::Cache={}", dir("cache")),
            // The cache lives in root's home, which apt's unprivileged `_apt` user cannot
            // write: download as the caller, as apt itself falls back to with a warning.
            "APT::Sandbox::User=root".into(),
            // Package lists are all dropspec reads; appstream metadata is 20 MB it does not.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false".into(),
        ]
    }

    /// Whether the lists were ever fetched (an `apt-get update` that got a Packages file).
    pub fn has_lists(&self) -> bool {
        std::fs::read_dir(self.root.join("lists"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    // `…_Packages`, or compressed (`_Packages.lz4` with Debian 12's apt).
                    .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
            })
            .unwrap_or(false)
    }

    /// `apt-get update` of dropspec's lists (about 60 MB the first time, 10-20 s).
    pub fn update(&self, status: &mut dyn std::io::Write) -> Result<(), VmError> {
        let _ = writeln!(
            status,
            "dropspec vm: updating dropspec's package lists ({}; apt-get update)",
            self.root.display()
        );
        super::package::run_tool(self.command("apt-get")?.args(["update", "-q"]))?;
        Ok(())
    }

    /// Updates the lists if they were never fetched.
    pub fn ensure_lists(&self, status: &mut dyn std::io::Write) -> Result<(), VmError> {
        if self.has_lists() {
            Ok(())
        } else {
            self.update(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_uses_dropspecs_own_lists() {
        let apt = Apt::new(Path::new("/var/cache/k"));
        let options = apt.options();
        assert!(options.contains(&"Dir::Etc::sourcelist=/var/cache/k/apt/sources.list".into()));
        assert!(options.contains(&"Dir::State::Lists=/var/cache/k/apt/lists".into()));
        assert!(options.contains(&"Dir::Cache=/var/cache/k/apt/cache".into()));
        assert!(options.iter().all(|o| !o.contains("/etc/apt")));
    }

    #[test]
    fn the_sources_cover_the_matrix() {
        for suite in [
            " bullseye main",
            " bookworm main",
            " bookworm-security main",
            " trixie-backports main",
            " sid main",
        ] {
            assert!(SOURCES.contains(suite), "{suite}");
        }
    }
}
