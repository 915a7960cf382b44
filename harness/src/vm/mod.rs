//! `dropspec vm`: run one command on another Linux kernel, in a qemu guest.
//!
//! Drop behaviour differs between kernels (reason numbers, which function drops, which
//! reasons exist), and a machine runs one kernel. This boots one of Debian's kernel
//! packages under qemu with the host's own files, so the same `cargo test` or
//! `dropspec run` runs against it unchanged:
//!
//! 1. [`package`]: `--kernel 6.1` → the newest `linux-image-6.1.*-amd64` in the Debian
//!    suites of [`apt`] (dropspec's own apt sources and lists, bullseye to unstable),
//!    fetched with `apt-get download` (the only network access) and unpacked once into
//!    the cache.
//! 2. [`initramfs`]: busybox plus the guest kernel's own virtio/9p/overlay modules when
//!    its config has them as modules; the guest mounts the host's root read-only over 9p
//!    under a tmpfs overlay, the shared directories (the project) read-write, and runs
//!    the command in the current directory.
//! 3. `qemu`: TCG (KVM guests hang at boot on our machines), no network device, the
//!    serial console streamed to the caller, a deadline, and qemu killed however the
//!    run ends (timeout, Ctrl-C, panic, or this process dying: PR_SET_PDEATHSIG).
//!
//! The guest is root on a throw-away root filesystem: everything it writes outside the
//! shared directories vanishes with it. Inside the shared directories it writes as root
//! on the host (9p `security_model=passthrough`).

pub mod apt;
pub mod initramfs;
pub mod package;
mod qemu;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use package::{GuestKernel, KernelSpec};
pub use qemu::Accel;

/// One guest run.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// `6.1`, `6.12`, an exact package version (`6.1.0-50`, `6.12.117+deb12`) or a
    /// package name.
    pub kernel: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// For the whole run after the kernel is cached: boot, command and power-off.
    pub timeout: Duration,
    pub accel: Accel,
    /// Host directories the guest may write to (mounted at the same path). Everything
    /// else is the host's root, read-only, under a tmpfs overlay.
    pub writable: Vec<PathBuf>,
    /// The command's environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// Where the command runs (a host path; the guest sees the same tree).
    pub cwd: PathBuf,
    pub command: Vec<String>,
    pub cache_dir: PathBuf,
    /// Show the guest kernel's boot and power-off messages, not only warnings.
    pub verbose: bool,
}

/// How a guest run went, when the command ran to its end.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    pub kernel: GuestKernel,
    /// The command's exit code in the guest (125: stage 1 could not set the guest up).
    pub exit_code: i32,
    /// From the call to starting qemu: the kernel from the cache (or downloaded), the
    /// initramfs built.
    pub prepare_time: Duration,
    /// From starting qemu to the command starting.
    pub boot_time: Duration,
    /// From the command starting to its exit code arriving.
    pub command_time: Duration,
    /// From the exit code arriving to qemu having exited.
    pub shutdown_time: Duration,
    /// Peak resident memory of the qemu process (VmHWM), when it could be read.
    pub qemu_peak_rss_kib: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "--kernel {spec:?} is not a kernel: use a series (6.1, 6.12), an exact Debian \
         package version (6.1.0-50, 6.12.117+deb12) or a package name (linux-image-…)"
    )]
    BadKernelSpec { spec: String },
    #[error("no Debian kernel package for {spec}: {detail}")]
    NoSuchKernel { spec: String, detail: String },
    #[error("cannot run {program}: {error} (install it: bash ci/setup.sh)")]
    ToolMissing { program: String, error: String },
    #[error("`{command}` failed ({status}):\n{stderr}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{package} cannot run as a dropspec guest: {detail}")]
    GuestKernelUnfit { package: String, detail: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("starting qemu-system-x86_64: {0} (install qemu-system-x86: bash ci/setup.sh)")]
    QemuSpawn(String),
    #[error(
        "the guest did not finish within {}s ({stage}); qemu was killed. Give it longer with \
         --timeout (TCG runs about 10-30x slower than the host)",
        limit.as_secs()
    )]
    Timeout {
        limit: Duration,
        stage: &'static str,
    },
    #[error("interrupted; qemu was killed")]
    Interrupted,
    #[error(
        "the guest stopped without reporting the command's exit code (qemu {status}{stage}): \
         its console output above says why; rerun with --verbose for the boot log"
    )]
    GuestDied { status: String, stage: String },
}

impl VmError {
    pub(crate) fn io(what: &str, path: &Path, source: std::io::Error) -> VmError {
        VmError::Io {
            what: what.to_owned(),
            path: path.to_owned(),
            source,
        }
    }
}

/// Set by SIGINT, SIGTERM or SIGHUP while [`run`] is running.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Catches Ctrl-C (and SIGTERM, SIGHUP) for its lifetime, so the run can kill qemu and
/// remove its files instead of dying with them in place; restores the old handlers.
struct SignalGuard(Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)>);

impl SignalGuard {
    fn install() -> SignalGuard {
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        INTERRUPTED.store(false, Ordering::Relaxed);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if let Ok(previous) = unsafe { sigaction(signal, &action) } {
                old.push((signal, previous));
            }
        }
        SignalGuard(old)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (signal, previous) in &self.0 {
            // SAFETY: restores the handler that was installed before ours.
            unsafe {
                let _ = nix::sys::signal::sigaction(*signal, previous);
            }
        }
    }
}

/// Host variables the guest command gets unless overridden: what cargo, rustup, insta,
/// libtest and dropspec itself read. Not `DROPSPEC_MAY_LACK`: it says what the host's
/// kernel lacks, and a guest kernel is held to everything the scenarios need (give it
/// with `--env` to mean it for the guest).
pub fn passthrough_env() -> Vec<(String, String)> {
    passed_on(std::env::vars())
}

/// Of these variables, the ones a guest gets ([`passthrough_env`]).
fn passed_on(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "TERM",
        "CI",
        "NO_COLOR",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_TERM_COLOR",
        "RUST_BACKTRACE",
        "RUST_LOG",
        "RUST_TEST_THREADS",
    ];
    const PREFIXES: &[&str] = &["DROPSPEC_", "INSTA_"];
    const NOT_PASSED: &str = "DROPSPEC_MAY_LACK";
    vars.filter(|(name, _)| {
        (NAMES.contains(&name.as_str()) || PREFIXES.iter().any(|p| name.starts_with(p)))
            && name != NOT_PASSED
    })
    .collect()
}

/// Fetches the kernel if needed, boots it, runs the command and returns its exit code.
/// The guest's console goes to `console` line by line as it arrives; one-line progress
/// notes (download, boot) go to `status`.
pub fn run(
    options: &VmOptions,
    console: Box<dyn Write + Send>,
    status: &mut dyn Write,
) -> Result<VmOutcome, VmError> {
    let _signals = SignalGuard::install();
    let called = std::time::Instant::now();
    if options.command.is_empty() {
        return Err(VmError::BadRequest(
            "no command: dropspec vm --kernel 6.1 -- <command…>".into(),
        ));
    }
    let kernel = fetch_kernel(&options.kernel, &options.cache_dir, status)?;
    if interrupted() {
        return Err(VmError::Interrupted);
    }

    let canonical = |what: &str, path: &Path| {
        std::fs::canonicalize(path).map_err(|e| VmError::io(what, path, e))
    };
    let cwd = canonical("resolving the working directory", &options.cwd)?;
    let mut writable = Vec::new();
    for (i, dir) in options.writable.iter().enumerate() {
        let dir = canonical("resolving the shared directory", dir)?;
        if dir == Path::new("/") {
            return Err(VmError::BadRequest(
                "refusing to give the guest write access to the host's whole root: share a \
                 project directory instead"
                    .into(),
            ));
        }
        writable.push((format!("dropspec-rw{i}"), dir));
    }
    // The guest sees the host's tree, so paths must be the host's real ones: on a
    // merged-/usr host /lib is a symlink and the modules belong under /usr/lib/modules.
    let lib = std::fs::canonicalize("/lib").unwrap_or_else(|_| PathBuf::from("/lib"));
    let modules_guest = lib.join("modules").join(&kernel.release);
    let modules_host = canonical("resolving the cached kernel", &kernel.modules_dir())?;

    let marker = format!("dropspec-vm-{}", nonce());
    let mut env = options.env.clone();
    env.push(("DROPSPEC_VM_KERNEL".into(), kernel.package.clone()));
    let plan = initramfs::GuestPlan {
        marker: marker.clone(),
        writable: writable.clone(),
        modules_host,
        modules_guest,
        cwd,
        env,
        command: options.command.clone(),
    };
    let image = initramfs::build(&kernel, &plan)?;
    let initrd = Initrd::write(&image)?;

    let _ = writeln!(
        status,
        "dropspec vm: booting {} ({}, kernel {}) with qemu {}, {} MiB, {} CPU(s)",
        kernel.package,
        kernel.version,
        kernel.release,
        options.accel,
        options.memory_mib,
        options.cpus
    );
    let guest = qemu::Guest {
        kernel: &kernel,
        initrd: &initrd.path(),
        initrd_fd: initrd.fd(),
        memory_mib: options.memory_mib,
        cpus: options.cpus,
        accel: options.accel,
        shares: &writable,
        verbose: options.verbose,
    };
    let prepare_time = called.elapsed();
    let finished = guest.run(&marker, options.timeout, console)?;
    Ok(VmOutcome {
        kernel,
        exit_code: finished.exit_code,
        prepare_time,
        boot_time: finished.boot_time,
        command_time: finished.command_time,
        shutdown_time: finished.shutdown_time,
        qemu_peak_rss_kib: finished.peak_rss_kib,
    })
}

/// The kernel `--kernel` names, from the cache or downloaded and unpacked into it; boots
/// nothing. [`VmError::NoSuchKernel`] when Debian does not have it (any more).
pub fn fetch_kernel(
    kernel: &str,
    cache_dir: &Path,
    status: &mut dyn Write,
) -> Result<GuestKernel, VmError> {
    let spec = KernelSpec::parse(kernel)?;
    let package = package::resolve(&spec, &apt::Apt::new(cache_dir), status)?;
    package::fetch(&package, cache_dir, status)
}

/// 64 random bits in hex: the guest's markers cannot be faked by the command's output
/// by accident.
fn nonce() -> String {
    let mut bytes = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        bytes = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The initramfs in an anonymous memory file (`memfd:dropspec-initramfs`) that qemu
/// inherits and opens as /proc/self/fd/N: nothing on disk, so nothing is left behind
/// even when this process is SIGKILLed.
struct Initrd(std::fs::File);

impl Initrd {
    fn write(bytes: &[u8]) -> Result<Initrd, VmError> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"dropspec-initramfs", MFdFlags::MFD_CLOEXEC).map_err(|e| {
            VmError::io(
                "creating a memory file for",
                Path::new("the initramfs"),
                e.into(),
            )
        })?;
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes)
            .map_err(|e| VmError::io("writing", Path::new("the initramfs"), e))?;
        Ok(Initrd(file))
    }

    fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// The same path works in qemu, which inherits the descriptor under the same number.
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd()))
    }
}

#[cfg(test)]
mod passthrough_tests {
    use super::*;

    #[test]
    fn a_guest_gets_dropspec_variables_but_not_the_hosts_may_lack() {
        let vars = [
            ("DROPSPEC_REQUIRE_PRIVILEGED", "1"),
            ("DROPSPEC_MAY_LACK", "sch_netem,act_police"),
            ("CI", "true"),
            ("SSH_AUTH_SOCK", "/tmp/x"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let names: Vec<String> = passed_on(vars.into_iter())
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["DROPSPEC_REQUIRE_PRIVILEGED", "CI"]);
    }
}
