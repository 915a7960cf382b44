//! Memory: peak resident set of a suite run, and the kernel memory the probe's maps hold.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// One BPF map this process holds, as the kernel accounts for it.
#[derive(Debug, Clone)]
pub struct MapMemory {
    pub name: String,
    pub map_type: u32,
    pub max_entries: u64,
    /// BPF_F_NO_PREALLOC: a hash whose entries are allocated as they are inserted
    /// (`map_flags` in its fdinfo).
    pub alloc_on_insert: bool,
    /// Bytes charged for the map (`memlock` in its fdinfo; since 6.4 the map's real usage).
    pub memlock: u64,
}

/// Every BPF map this process holds an fd of, read from /proc/self/fdinfo (what
/// `bpftool map show` prints as memlock), named through the map's id.
pub fn probe_maps() -> Result<Vec<MapMemory>> {
    let mut maps: Vec<(u32, MapMemory)> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").context("reading /proc/self/fd")? {
        let entry = entry?;
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:bpf-map" {
            continue;
        }
        let fd = entry.file_name();
        let Ok(info) = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(&fd)) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        let (Some(id), Some(memlock)) = (field("map_id"), field("memlock")) else {
            continue;
        };
        let id = id as u32;
        if maps.iter().any(|(known, _)| *known == id) {
            continue;
        }
        let name = aya::maps::MapInfo::from_id(id)
            .ok()
            .and_then(|m| m.name_as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("map {id}"));
        maps.push((
            id,
            MapMemory {
                name,
                map_type: field("map_type").unwrap_or(0) as u32,
                max_entries: field("max_entries").unwrap_or(0),
                alloc_on_insert: info
                    .lines()
                    .find_map(|l| l.strip_prefix("map_flags:")?.trim().strip_prefix("0x"))
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    .is_some_and(|flags| flags & 1 != 0),
                memlock,
            },
        ));
    }
    maps.sort_by_key(|(id, _)| *id);
    Ok(maps.into_iter().map(|(_, m)| m).collect())
}

/// What one `dropspec run` child used.
#[derive(Debug, Clone)]
pub struct SuiteRun {
    /// Peak resident set, bytes (wait4's ru_maxrss).
    pub max_rss: u64,
    pub wall: Duration,
    pub status: ExitStatus,
}

/// Runs `dropspec ARGS…` as a grandchild and returns its peak RSS as its own parent,
/// a fresh `dropspec bench --peak-rss-of` process, measured it.
///
/// Not measured from here directly: on exec the kernel starts the new program's
/// `ru_maxrss` at the peak RSS of the memory it replaces, which for a child spawned by
/// this process (fork or vfork alike) is this process's own peak — after loading the
/// probe, 40 MiB. A freshly started parent is a few MiB.
pub fn peak_rss_via_small_parent(exe: &Path, root: &Path, args: &[&str]) -> Result<SuiteRun> {
    peak_rss_with_env(exe, root, args, &[])
}

/// [`peak_rss_via_small_parent`] with these variables set for the child.
pub fn peak_rss_with_env(
    exe: &Path,
    root: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<SuiteRun> {
    let output = Command::new(exe)
        .envs(env.iter().copied())
        .args(["bench", "--peak-rss-of", &args.join(" ")])
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("starting `dropspec bench --peak-rss-of`")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss "))
        .with_context(|| format!("no peak-rss line from `dropspec {}`", args.join(" ")))?
        .split_whitespace()
        .collect();
    let [rss, wall, ok] = fields[..] else {
        bail!("a malformed peak-rss line: {fields:?}");
    };
    Ok(SuiteRun {
        max_rss: rss.parse()?,
        wall: Duration::from_secs_f64(wall.parse()?),
        status: ExitStatus::from_raw(if ok == "true" { 0 } else { 1 << 8 }),
    })
}

/// Runs `dropspec ARGS…` as a child in `root` and returns its peak RSS (see
/// [`peak_rss_via_small_parent`] for why the caller should be a small process).
pub fn child_run(exe: &Path, root: &Path, args: &[&str]) -> Result<SuiteRun> {
    let started = Instant::now();
    let child = Command::new(exe)
        .args(args)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting `dropspec {}`", args.join(" ")))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child, which std's
    // Child will then not wait for again (it is dropped without wait()).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context("wait4 on a dropspec child");
    }
    drop(child);
    Ok(SuiteRun {
        max_rss: usage.ru_maxrss as u64 * 1024,
        wall: started.elapsed(),
        status: ExitStatus::from_raw(status),
    })
}

/// This process's peak resident set (VmHWM), bytes.
pub fn own_peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}
