//! Debian kernel packages: which one `--kernel` names, fetching it with `apt-get
//! download` (dropspec's own sources and lists: [`super::apt`]), unpacking it into the
//! cache once, and what its config says.
//!
//! A cached kernel is `<cache>/<package>/`: the package's files as `dpkg-deb -x` lays
//! them out, brought to one layout (`boot/vmlinuz-<release>`, `boot/config-<release>`,
//! `lib/modules/<release>/` with a `modules.dep` made by `depmod -b`), and a stamp file
//! written last, so a half-unpacked tree is never taken for a cached one. Debian's
//! packages come in three layouts: up to 6.12 everything in one package under `boot/`
//! and `lib/modules/`; trixie's newer ones (6.16 in trixie-backports) under
//! `usr/lib/modules/` (merged /usr); unstable's 7.x split into `linux-image-*` (empty,
//! depending on the others at its exact version), `linux-binary-*`
//! (`usr/lib/modules/<release>/vmlinuz`), `linux-base-*` (`…/config`) and
//! `linux-modules-*`. The `.deb`s are deleted once unpacked: the tree is all a run needs.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apt::Apt;
use super::{interrupted, VmError};

/// Written into a cached kernel's directory once it is complete: `<package> <version>`.
const STAMP: &str = "dropspec-package";
/// Prefix of an unpack in progress (`dropspec-fetch-<pid>`), swept when its process is gone.
const FETCH_PREFIX: &str = "dropspec-fetch-";

/// The only architecture dropspec boots (qemu-system-x86_64).
const FLAVOUR_SUFFIX: &str = "-amd64";
const PACKAGE_PREFIX: &str = "linux-image-";

/// What `--kernel` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSpec {
    /// `6.1`, `6.12`: the newest amd64 kernel of that series apt knows about.
    Series { major: u32, minor: u32 },
    /// `6.1.0-50`, `6.12.117+deb12`, or a whole package name: exactly that package.
    Package(String),
}

impl KernelSpec {
    pub fn parse(text: &str) -> Result<KernelSpec, VmError> {
        let text = text.trim();
        let bad = || VmError::BadKernelSpec {
            spec: text.to_owned(),
        };
        if text.is_empty() || text.contains(char::is_whitespace) || text.contains('/') {
            return Err(bad());
        }
        if let Some((major, minor)) = text.split_once('.') {
            if let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) {
                return Ok(KernelSpec::Series { major, minor });
            }
        }
        if text.starts_with(PACKAGE_PREFIX) {
            return Ok(KernelSpec::Package(text.to_owned()));
        }
        if !text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad());
        }
        Ok(KernelSpec::Package(format!(
            "{PACKAGE_PREFIX}{text}{FLAVOUR_SUFFIX}"
        )))
    }
}

/// The newest generic amd64 kernel of a series among package names: for 6.1,
/// `linux-image-6.1.0-56-amd64` over `-50-`; not the `-cloud-amd64`, `-rt-amd64`,
/// `-dbg` or `-unsigned` variants. Versions compare by their numbers in order.
pub fn newest_in_series<'a>(
    names: impl IntoIterator<Item = &'a str>,
    major: u32,
    minor: u32,
) -> Option<&'a str> {
    let series = format!("{major}.{minor}.");
    names
        .into_iter()
        .filter_map(|name| {
            let abi = name
                .strip_prefix(PACKAGE_PREFIX)?
                .strip_suffix(FLAVOUR_SUFFIX)?;
            // `6.1.0-56`, `6.12.117+deb12`; a `-word` would be a flavour (cloud, rt).
            let ok = abi.starts_with(&series)
                && abi
                    .split('-')
                    .skip(1)
                    .all(|part| part.chars().all(|c| c.is_ascii_digit()));
            ok.then(|| (version_key(abi), name))
        })
        .max()
        .map(|(_, name)| name)
}

/// The numbers of a kernel ABI string in order: `6.12.117+deb12` → [6, 12, 117, 12].
fn version_key(abi: &str) -> Vec<u64> {
    abi.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The package `spec` names: for a series, the newest in dropspec's package lists
/// (updated first if they were never fetched, and once more if the series is not there).
pub fn resolve(
    spec: &KernelSpec,
    apt: &Apt,
    status: &mut dyn std::io::Write,
) -> Result<String, VmError> {
    match spec {
        KernelSpec::Package(name) => Ok(name.clone()),
        KernelSpec::Series { major, minor } => {
            let prefix = format!("{PACKAGE_PREFIX}{major}.{minor}.");
            let newest = || -> Result<Option<String>, VmError> {
                let out = run_tool(apt.command("apt-cache")?.args(["pkgnames", &prefix]))?;
                let text = String::from_utf8_lossy(&out);
                Ok(newest_in_series(text.lines(), *major, *minor).map(str::to_owned))
            };
            let updated = !apt.has_lists();
            apt.ensure_lists(status)?;
            let mut found = newest()?;
            if found.is_none() && !updated {
                apt.update(status)?;
                found = newest()?;
            }
            found.ok_or_else(|| VmError::NoSuchKernel {
                spec: format!("{major}.{minor}"),
                detail: format!(
                    "none of the Debian suites dropspec searches ({}) has a package \
                     {prefix}*{FLAVOUR_SUFFIX}; name an exact package version such as 6.1.0-50",
                    apt.root().join("sources.list").display()
                ),
            })
        }
    }
}

/// One unpacked Debian kernel.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// `linux-image-6.1.0-56-amd64`
    pub package: String,
    /// The package's Debian version, `6.1.192-2`.
    pub version: String,
    /// `uname -r` in the guest: `6.1.0-56-amd64`.
    pub release: String,
    /// The unpacked package.
    pub root: PathBuf,
    pub config: KernelConfig,
}

impl GuestKernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// `lib/modules/<release>` inside the unpacked package.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Where kernels are cached when no directory is given: `$DROPSPEC_KERNEL_CACHE`,
/// `$XDG_CACHE_HOME/dropspec/kernels`, `~/.cache/dropspec/kernels`, else
/// `/var/cache/dropspec/kernels`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = crate::policy::Policy::current()
        .ok()
        .and_then(|p| p.kernel_cache.clone())
    {
        return dir;
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("XDG_CACHE_HOME") {
        return Path::new(&dir).join("dropspec/kernels");
    }
    if let Some(home) = var("HOME") {
        return Path::new(&home).join(".cache/dropspec/kernels");
    }
    PathBuf::from("/var/cache/dropspec/kernels")
}

/// The cached kernel for `package`, downloading and unpacking it first if needed.
/// `status` gets one line per slow step.
pub fn fetch(
    package: &str,
    cache: &Path,
    status: &mut dyn std::io::Write,
) -> Result<GuestKernel, VmError> {
    let dir = cache.join(package);
    if let Some(kernel) = open_cached(&dir, package)? {
        return Ok(kernel);
    }
    std::fs::create_dir_all(cache)
        .map_err(|e| VmError::io("creating the kernel cache", cache, e))?;
    sweep_abandoned(cache);
    let apt = Apt::new(cache);
    let updated = !apt.has_lists();
    apt.ensure_lists(status)?;

    let work = TempDir::create(cache.join(format!("{FETCH_PREFIX}{}", std::process::id())))?;
    let _ = writeln!(
        status,
        "dropspec vm: downloading {package} (apt-get download)"
    );
    let deb = match download(&apt, package, &work.0) {
        // A package published since the lists were fetched: fetch them once more.
        Err(VmError::NoSuchKernel { .. }) if !updated => {
            apt.update(status)?;
            download(&apt, package, &work.0)?
        }
        other => other?,
    };
    let version = control_field(&deb, "Version")?;
    // unstable's linux-image-* is empty: the kernel, its config and its modules are in
    // packages it depends on at exactly its own version.
    let mut debs = vec![deb.clone()];
    for part in exact_dependencies(&control_field(&deb, "Depends")?, &version) {
        let _ = writeln!(status, "dropspec vm: downloading {part} {version}");
        debs.push(download(&apt, &format!("{part}={version}"), &work.0)?);
    }

    let tree = work.0.join("tree");
    let _ = writeln!(status, "dropspec vm: unpacking {package} {version}");
    for deb in &debs {
        run_tool(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tree))?;
        std::fs::remove_file(deb)
            .map_err(|e| VmError::io("removing the downloaded package", deb, e))?;
        check_interrupted()?;
    }
    let release = normalise_layout(&tree, package)?;
    // Debian's postinst makes modules.dep; an unpacked package has none.
    run_tool(Command::new("depmod").arg("-b").arg(&tree).arg(&release))?;
    check_interrupted()?;
    let stamp = tree.join(STAMP);
    std::fs::write(&stamp, format!("{package} {version}\n"))
        .map_err(|e| VmError::io("writing the cache stamp", &stamp, e))?;
    match std::fs::rename(&tree, &dir) {
        Ok(()) => {}
        // Another run unpacked the same kernel meanwhile: keep theirs.
        Err(_) if dir.join(STAMP).is_file() => {}
        Err(e) => {
            return Err(VmError::io(
                "moving the unpacked kernel into the cache",
                &dir,
                e,
            ))
        }
    }
    drop(work);
    open_cached(&dir, package)?.ok_or_else(|| VmError::NoSuchKernel {
        spec: package.to_owned(),
        detail: format!("{} is incomplete after unpacking", dir.display()),
    })
}

/// `apt-get download` of one package (`name` or `name=version`) into `dir`: the new
/// `.deb`.
fn download(apt: &Apt, package: &str, dir: &Path) -> Result<PathBuf, VmError> {
    let before = debs_in(dir)?;
    run_tool(
        apt.command("apt-get")?
            .args(["download", "-q", package])
            .current_dir(dir),
    )
    .map_err(|e| match e {
        VmError::Tool { stderr, .. }
            if stderr.contains("Unable to locate package")
                || stderr.contains("Can't find a source to download") =>
        {
            VmError::NoSuchKernel {
                spec: package.to_owned(),
                detail: format!(
                    "none of the Debian suites dropspec searches has it (Debian removes \
                     superseded kernel ABIs): list what there is with `apt-cache -o \
                     Dir::Etc::sourcelist={0}/sources.list -o Dir::State::Lists={0}/lists \
                     search linux-image-`",
                    apt.root().display()
                ),
            }
        }
        other => other,
    })?;
    debs_in(dir)?
        .into_iter()
        .find(|p| !before.contains(p))
        .ok_or_else(|| VmError::NoSuchKernel {
            spec: package.to_owned(),
            detail: "apt-get download left no .deb file".into(),
        })
}

fn debs_in(dir: &Path) -> Result<Vec<PathBuf>, VmError> {
    Ok(std::fs::read_dir(dir)
        .map_err(|e| VmError::io("listing the download", dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension() == Some(OsStr::new("deb")))
        .collect())
}

fn control_field(deb: &Path, field: &str) -> Result<String, VmError> {
    Ok(String::from_utf8_lossy(&run_tool(
        Command::new("dpkg-deb").arg("-f").arg(deb).arg(field),
    )?)
    .trim()
    .to_owned())
}

/// The packages a `Depends` field pins to exactly `version` (`linux-binary-X (= V)`):
/// the parts of a split kernel package. Alternatives (`a | b`) are never parts.
pub fn exact_dependencies(depends: &str, version: &str) -> Vec<String> {
    depends
        .split(',')
        .map(str::trim)
        .filter(|d| !d.contains('|'))
        .filter_map(|d| {
            let (name, rest) = d.split_once('(')?;
            let pinned = rest.trim_end_matches(')').trim().strip_prefix('=')?.trim();
            (pinned == version).then(|| name.trim().to_owned())
        })
        .collect()
}

/// Brings an unpacked kernel to the layout the cache keeps (`lib/modules/<release>`,
/// `boot/vmlinuz-<release>`, `boot/config-<release>`), whichever of Debian's layouts
/// it came in; returns the release.
fn normalise_layout(tree: &Path, package: &str) -> Result<String, VmError> {
    let merged = tree.join("usr/lib/modules");
    let modules = tree.join("lib/modules");
    if merged.is_dir() && !modules.exists() {
        std::fs::create_dir_all(tree.join("lib"))
            .map_err(|e| VmError::io("creating", &tree.join("lib"), e))?;
        std::fs::rename(&merged, &modules)
            .map_err(|e| VmError::io("moving usr/lib/modules to lib/modules in", tree, e))?;
    }
    let release = single_release(tree, package)?;
    let boot = tree.join("boot");
    for (inside, name) in [("vmlinuz", "vmlinuz"), ("config", "config")] {
        let wanted = boot.join(format!("{name}-{release}"));
        let shipped = modules.join(&release).join(inside);
        if !wanted.exists() && shipped.is_file() {
            std::fs::create_dir_all(&boot).map_err(|e| VmError::io("creating", &boot, e))?;
            std::fs::rename(&shipped, &wanted)
                .map_err(|e| VmError::io("moving the kernel's files into", &boot, e))?;
        }
        if !wanted.is_file() {
            return Err(VmError::NoSuchKernel {
                spec: package.to_owned(),
                detail: format!(
                    "the package has no boot/{name}-{release} nor \
                     lib/modules/{release}/{inside}: not a Debian kernel layout dropspec knows"
                ),
            });
        }
    }
    Ok(release)
}

fn open_cached(dir: &Path, package: &str) -> Result<Option<GuestKernel>, VmError> {
    let Ok(stamp) = std::fs::read_to_string(dir.join(STAMP)) else {
        return Ok(None);
    };
    let version = stamp.split_whitespace().nth(1).unwrap_or("").to_owned();
    let release = single_release(dir, package)?;
    let config_path = dir.join("boot").join(format!("config-{release}"));
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| VmError::io("reading the kernel's config", &config_path, e))?;
    Ok(Some(GuestKernel {
        package: package.to_owned(),
        version,
        release,
        root: dir.to_owned(),
        config: KernelConfig::parse(&text),
    }))
}

/// The one `lib/modules/<release>` a kernel package ships.
fn single_release(tree: &Path, package: &str) -> Result<String, VmError> {
    let modules = tree.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&modules)
        .map_err(|e| VmError::io("listing the package's modules", &modules, e))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => Err(VmError::NoSuchKernel {
            spec: package.to_owned(),
            detail: format!(
                "expected one kernel release under {}, found {n}: is this a linux-image package?",
                modules.display()
            ),
        }),
    }
}

/// Removes `dropspec-fetch-<pid>` directories whose process is gone (a run killed by
/// SIGKILL mid-download; Ctrl-C is caught and cleans up itself).
fn sweep_abandoned(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(FETCH_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn check_interrupted() -> Result<(), VmError> {
    if interrupted() {
        Err(VmError::Interrupted)
    } else {
        Ok(())
    }
}

/// A directory removed with everything in it when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn create(path: PathBuf) -> Result<TempDir, VmError> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|e| VmError::io("creating", &path, e))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a host tool to completion; its stdout, or an error with its stderr.
pub(crate) fn run_tool(command: &mut Command) -> Result<Vec<u8>, VmError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let shown = std::iter::once(program.clone())
        .chain(command.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = command.output().map_err(|e| VmError::ToolMissing {
        program: program.clone(),
        error: e.to_string(),
    })?;
    if output.status.success() {
        return Ok(output.stdout);
    }
    if interrupted() {
        return Err(VmError::Interrupted);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
    Err(VmError::Tool {
        command: shown,
        status: output.status.to_string(),
        stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// `CONFIG_*` settings of a kernel: `y`, `m`, a number or a quoted string; unset
/// options (`# CONFIG_X is not set`) are absent.
#[derive(Debug, Clone, Default)]
pub struct KernelConfig {
    values: BTreeMap<String, String>,
}

/// How a kernel has a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tristate {
    BuiltIn,
    Module,
    Absent,
}

impl KernelConfig {
    pub fn parse(text: &str) -> KernelConfig {
        let values = text
            .lines()
            .filter_map(|line| {
                let (key, value) = line.trim().split_once('=')?;
                key.starts_with("CONFIG_")
                    .then(|| (key.to_owned(), value.to_owned()))
            })
            .collect();
        KernelConfig { values }
    }

    /// `name` with or without its `CONFIG_` prefix.
    pub fn get(&self, name: &str) -> Option<&str> {
        let key = if name.starts_with("CONFIG_") {
            name.to_owned()
        } else {
            format!("CONFIG_{name}")
        };
        self.values.get(&key).map(String::as_str)
    }

    pub fn tristate(&self, name: &str) -> Tristate {
        match self.get(name) {
            Some("y") => Tristate::BuiltIn,
            Some("m") => Tristate::Module,
            _ => Tristate::Absent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_specs() {
        assert_eq!(
            KernelSpec::parse("6.1").unwrap(),
            KernelSpec::Series { major: 6, minor: 1 }
        );
        assert_eq!(
            KernelSpec::parse("6.12").unwrap(),
            KernelSpec::Series {
                major: 6,
                minor: 12
            }
        );
        assert_eq!(
            KernelSpec::parse("6.1.0-50").unwrap(),
            KernelSpec::Package("linux-image-6.1.0-50-amd64".into())
        );
        assert_eq!(
            KernelSpec::parse("6.12.117+deb12").unwrap(),
            KernelSpec::Package("linux-image-6.12.117+deb12-amd64".into())
        );
        assert_eq!(
            KernelSpec::parse("linux-image-6.12.117+deb12-rt-amd64").unwrap(),
            KernelSpec::Package("linux-image-6.12.117+deb12-rt-amd64".into())
        );
        for bad in ["", "latest", "../x", "6 1"] {
            assert!(KernelSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn newest_of_a_series() {
        let names = [
            "linux-image-6.1.0-9-amd64",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.1.0-50-amd64",
            "linux-image-6.1.0-57-cloud-amd64",
            "linux-image-6.1.0-57-rt-amd64",
            "linux-image-6.1.0-57-amd64-dbg",
            "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.99+deb12-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12-amd64",
        ];
        assert_eq!(
            newest_in_series(names, 6, 1),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(
            newest_in_series(names, 6, 12),
            Some("linux-image-6.12.117+deb12-amd64")
        );
        assert_eq!(newest_in_series(names, 6, 2), None);
        assert_eq!(newest_in_series(names, 5, 10), None);
    }

    #[test]
    fn parts_of_a_split_package() {
        let depends = "dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
                       linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), \
                       linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), \
                       linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)";
        assert_eq!(
            exact_dependencies(depends, "7.2.13-1"),
            [
                "linux-base-7.2.13+deb14-amd64",
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64"
            ]
        );
        // 5.10 to 6.16: one package, nothing pinned.
        let whole =
            "kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool";
        assert!(exact_dependencies(whole, "5.10.223-1").is_empty());
    }

    #[test]
    fn layouts_become_one() {
        let tree = std::env::temp_dir().join(format!("dropspec-layout-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tree);
        let release = "7.2.13+deb14-amd64";
        let dir = tree.join("usr/lib/modules").join(release);
        std::fs::create_dir_all(dir.join("kernel")).unwrap();
        std::fs::write(dir.join("vmlinuz"), "k").unwrap();
        std::fs::write(dir.join("config"), "CONFIG_X=y\n").unwrap();
        assert_eq!(normalise_layout(&tree, "p").unwrap(), release);
        assert!(tree
            .join("lib/modules")
            .join(release)
            .join("kernel")
            .is_dir());
        assert!(tree.join(format!("boot/vmlinuz-{release}")).is_file());
        assert!(tree.join(format!("boot/config-{release}")).is_file());
        let _ = std::fs::remove_dir_all(&tree);
    }

    #[test]
    fn config_values() {
        let config = KernelConfig::parse(
            "# comment\nCONFIG_VIRTIO=m\nCONFIG_VIRTIO_PCI=y\n# CONFIG_9P_FS is not set\n\
             CONFIG_LOCALVERSION=\"\"\nCONFIG_NR_CPUS=8192\n",
        );
        assert_eq!(config.tristate("VIRTIO"), Tristate::Module);
        assert_eq!(config.tristate("CONFIG_VIRTIO_PCI"), Tristate::BuiltIn);
        assert_eq!(config.tristate("9P_FS"), Tristate::Absent);
        assert_eq!(config.get("NR_CPUS"), Some("8192"));
        assert_eq!(config.tristate("NR_CPUS"), Tristate::Absent);
    }
}
