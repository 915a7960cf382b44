//! Starting qemu, streaming the guest's serial console, and making sure qemu ends.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::initramfs::ROOT_TAG;
use super::package::GuestKernel;
use super::{interrupted, VmError};

const QEMU: &str = "qemu-system-x86_64";
/// After the exit code arrives the guest only syncs and powers off.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(100);

/// qemu's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Emulation, one host thread per guest CPU: slow but works everywhere (the default:
    /// on our machines a KVM guest hangs at boot).
    Tcg,
    Kvm,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        })
    }
}

impl FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            other => Err(format!("accelerator {other:?}: use tcg or kvm")),
        }
    }
}

pub(super) struct Guest<'a> {
    pub kernel: &'a GuestKernel,
    /// A path qemu can open: /proc/self/fd/N of `initrd_fd`.
    pub initrd: &'a Path,
    /// A close-on-exec descriptor qemu must inherit.
    pub initrd_fd: std::os::fd::RawFd,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// (9p mount tag, host directory) shared read-write.
    pub shares: &'a [(String, PathBuf)],
    pub verbose: bool,
}

pub(super) struct Finished {
    pub exit_code: i32,
    pub boot_time: Duration,
    pub command_time: Duration,
    /// From the exit code arriving to qemu having exited (power-off).
    pub shutdown_time: Duration,
    pub peak_rss_kib: Option<u64>,
}

/// CPUs a guest's kernel is told are possible (`possible_cpus=`), whatever it runs on.
const POSSIBLE_CPUS: u32 = 4;

/// `,` separates qemu's option values; a literal one is doubled.
fn qemu_escape(path: &Path) -> String {
    path.to_string_lossy().replace(',', ",,")
}

impl Guest<'_> {
    /// qemu's arguments. `-nodefaults` and `-nic none`: the guest gets no network device
    /// at all, only the serial console and the 9p shares.
    pub fn args(&self) -> Vec<OsString> {
        let mut append = String::from("console=ttyS0 panic=-1");
        // Under TCG every speculation mitigation is emulated work, and none changes how
        // the network stack drops packets.
        append.push_str(" mitigations=off");
        // A guest runs one vCPU by default (README: why not two yet), but real
        // machines have several, and some kernel limits scale with the CPUs *possible*:
        // a kretprobe made through perf on a kernel without CONFIG_PREEMPTION (Debian's
        // 5.10) gets num_possible_cpus() instances, so with one possible CPU the nested
        // nf_hook_slow of a tcp-reset lost its return (docs/kernel-findings.md, "5.10:
        // kretprobes"). Possible CPUs that are never online cost a little per-CPU memory
        // and change nothing else.
        append.push_str(&format!(" possible_cpus={}", self.cpus.max(POSSIBLE_CPUS)));
        if !self.verbose {
            append.push_str(" quiet");
        }
        // More than one vCPU under TCG: round-robin on one host thread (thread=single).
        // Multi-threaded TCG once crashed a 6.12 guest with two vCPUs ("Oops: int3" in
        // ip_local_deliver while a static key was being patched: code one vCPU rewrote
        // while another ran it); single-threaded TCG runs one vCPU at a time, so no vCPU
        // ever runs half-patched code, and the guest still has two CPUs (two backlogs,
        // timers on either) for completion to get right.
        let accel = match (self.accel, self.cpus) {
            (Accel::Tcg, 0 | 1) => "tcg,thread=multi",
            (Accel::Tcg, _) => "tcg,thread=single",
            (Accel::Kvm, _) => "kvm",
        };
        let mut args: Vec<String> = vec![
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nic".into(),
            "none".into(),
            "-display".into(),
            "none".into(),
            "-no-reboot".into(),
            "-accel".into(),
            accel.into(),
            "-cpu".into(),
            "max".into(),
            "-smp".into(),
            self.cpus.to_string(),
            "-m".into(),
            format!("{}M", self.memory_mib),
            "-kernel".into(),
            qemu_escape(&self.kernel.vmlinuz()),
            "-initrd".into(),
            qemu_escape(self.initrd),
            "-append".into(),
            append,
            "-chardev".into(),
            "stdio,id=dropspec-console,signal=off".into(),
            "-serial".into(),
            "chardev:dropspec-console".into(),
        ];
        let root = (ROOT_TAG.to_owned(), PathBuf::from("/"));
        for (i, (tag, path)) in std::iter::once(&root).chain(self.shares).enumerate() {
            // multidevs=remap: the host's root spans several filesystems, whose inode
            // numbers would otherwise collide in the guest.
            let readonly = if i == 0 { ",readonly=on" } else { "" };
            args.push("-fsdev".into());
            args.push(format!(
                "local,id={tag},path={},security_model=passthrough,multidevs=remap{readonly}",
                qemu_escape(path)
            ));
            args.push("-device".into());
            args.push(format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"));
        }
        args.into_iter().map(OsString::from).collect()
    }

    pub fn run(
        &self,
        marker: &str,
        timeout: Duration,
        mut console: Box<dyn Write + Send>,
    ) -> Result<Finished, VmError> {
        let mut command = Command::new(QEMU);
        command
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: Ctrl-C reaches us, and we end qemu ourselves after
            // reporting, instead of qemu and us racing to exit.
            .process_group(0);
        let initrd_fd = self.initrd_fd;
        // SAFETY: prctl(2) and fcntl(2) are async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            command.pre_exec(move || {
                // qemu dies with us even if we are SIGKILLed.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // qemu, and only qemu, inherits the initramfs.
                if libc::fcntl(initrd_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| VmError::QemuSpawn(e.to_string()))?;
        let mut qemu = KillOnDrop(child);
        let stdout = qemu.0.stdout.take().expect("stdout is piped");

        let (events, received) = mpsc::channel();
        let marker = marker.to_owned();
        let verbose = self.verbose;
        let reader = std::thread::Builder::new()
            .name("dropspec-vm-console".into())
            .spawn(move || stream_console(stdout, &marker, verbose, &mut *console, &events))
            .map_err(|e| VmError::QemuSpawn(format!("starting the console reader: {e}")))?;

        let deadline = started + timeout;
        let mut ready: Option<Instant> = None;
        let mut exit: Option<(i32, Instant)> = None;
        let mut peak_rss_kib = None;
        let pid = qemu.0.id();
        let status = loop {
            match received.recv_timeout(TICK) {
                Ok(Event::Ready(at)) => ready = Some(at),
                Ok(Event::Exit(code, at)) => exit = Some((code, at)),
                Err(_) => {}
            }
            if let Some(kib) = peak_rss(pid) {
                peak_rss_kib = Some(kib);
            }
            if let Some(status) = qemu.0.try_wait().ok().flatten() {
                break status;
            }
            if interrupted() {
                return Err(VmError::Interrupted);
            }
            let now = Instant::now();
            if let Some((_, at)) = exit {
                if now > at + POWEROFF_GRACE {
                    let _ = qemu.0.kill();
                    break qemu
                        .0
                        .wait()
                        .map_err(|e| VmError::QemuSpawn(e.to_string()))?;
                }
            } else if now > deadline {
                return Err(VmError::Timeout {
                    limit: timeout,
                    stage: if ready.is_some() {
                        "running the command"
                    } else {
                        "booting"
                    },
                });
            }
        };
        let ended = Instant::now();
        drop(qemu);
        let _ = reader.join();
        // Events sent between the last tick and qemu's exit.
        for event in received.try_iter() {
            match event {
                Event::Ready(at) => ready = Some(at),
                Event::Exit(code, at) => exit = Some((code, at)),
            }
        }
        match (ready, exit) {
            (Some(ready), Some((exit_code, at))) => Ok(Finished {
                exit_code,
                boot_time: ready - started,
                command_time: at - ready,
                shutdown_time: ended.saturating_duration_since(at),
                peak_rss_kib,
            }),
            (None, Some((exit_code, _))) => Ok(Finished {
                // Stage 1 failed and said why (exit code 125).
                exit_code,
                boot_time: Duration::ZERO,
                command_time: Duration::ZERO,
                shutdown_time: Duration::ZERO,
                peak_rss_kib,
            }),
            (ready, None) => Err(VmError::GuestDied {
                status: status.to_string(),
                stage: if ready.is_some() {
                    ", while the command ran".into()
                } else {
                    ", while booting".into()
                },
            }),
        }
    }
}

enum Event {
    Ready(Instant),
    Exit(i32, Instant),
}

/// What a console line says, given the run's marker.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Output(&'a str),
    /// The command starts; text before the marker on the same line is output.
    Ready(&'a str),
    Exit(&'a str, i32),
}

fn classify<'a>(line: &'a str, marker: &str) -> Line<'a> {
    let Some(at) = line.find(marker) else {
        return Line::Output(line);
    };
    let (before, rest) = line.split_at(at);
    let rest = &rest[marker.len()..];
    if rest == "-ready" {
        return Line::Ready(before);
    }
    match rest.strip_prefix("-exit=").map(str::parse::<i32>) {
        Some(Ok(code)) => Line::Exit(before, code),
        _ => Line::Output(line),
    }
}

/// Copies the serial console to `out` line by line, turning markers into events. After
/// the exit marker only power-off messages follow: shown with `verbose` only.
fn stream_console(
    stdout: impl std::io::Read,
    marker: &str,
    verbose: bool,
    out: &mut dyn Write,
    events: &mpsc::Sender<Event>,
) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    let mut finished = false;
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        // The guest's tty turns \n into \r\n.
        let line = text.trim_end_matches(['\n', '\r']);
        let shown = match classify(line, marker) {
            Line::Output(text) if !finished || verbose => Some(text),
            Line::Output(_) => None,
            Line::Ready(before) => {
                let _ = events.send(Event::Ready(Instant::now()));
                (!before.is_empty()).then_some(before)
            }
            Line::Exit(before, code) => {
                let _ = events.send(Event::Exit(code, Instant::now()));
                finished = true;
                (!before.is_empty()).then_some(before)
            }
        };
        if let Some(text) = shown {
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }
}

/// Peak resident set of a process in KiB (VmHWM in /proc/<pid>/status).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// qemu is killed and reaped on every way out of [`Guest::run`].
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::package::KernelConfig;

    fn guest_args(shares: &[(String, PathBuf)]) -> Vec<String> {
        let kernel = GuestKernel {
            package: "linux-image-6.1.0-56-amd64".into(),
            version: "6.1.192-2".into(),
            release: "6.1.0-56-amd64".into(),
            root: PathBuf::from("/cache/k"),
            config: KernelConfig::default(),
        };
        let guest = Guest {
            kernel: &kernel,
            initrd: Path::new("/proc/self/fd/7"),
            initrd_fd: 7,
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Tcg,
            shares,
            verbose: false,
        };
        guest
            .args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn no_network_device_and_a_read_only_root() {
        let args = guest_args(&[("dropspec-rw0".into(), PathBuf::from("/work/a,b"))]);
        let joined = args.join(" ");
        assert!(
            joined.starts_with("-nodefaults -no-user-config -nic none "),
            "{joined}"
        );
        for forbidden in ["-netdev", "-net ", "virtio-net", "e1000", "user,"] {
            assert!(!joined.contains(forbidden), "{forbidden} in {joined}");
        }
        assert!(joined.contains(
            "-fsdev local,id=dropspec-root,path=/,security_model=passthrough,multidevs=remap,readonly=on"
        ));
        assert!(joined.contains(
            "-fsdev local,id=dropspec-rw0,path=/work/a,,b,security_model=passthrough,multidevs=remap -device"
        ));
        assert!(joined.contains("-kernel /cache/k/boot/vmlinuz-6.1.0-56-amd64"));
        assert!(joined.contains("-accel tcg,thread=single -cpu max -smp 2"));
        assert!(joined.contains("console=ttyS0 panic=-1"));
    }

    #[test]
    fn console_markers() {
        let m = "dropspec-vm-00ff";
        assert_eq!(classify("hello", m), Line::Output("hello"));
        assert_eq!(classify("dropspec-vm-00ff-ready", m), Line::Ready(""));
        assert_eq!(classify("dropspec-vm-00ff-exit=3", m), Line::Exit("", 3));
        assert_eq!(
            classify("no newlinedropspec-vm-00ff-exit=0", m),
            Line::Exit("no newline", 0)
        );
        // Another run's marker, or a mangled one, is just output.
        assert_eq!(
            classify("dropspec-vm-1234-exit=0", m),
            Line::Output("dropspec-vm-1234-exit=0")
        );
        assert_eq!(
            classify("dropspec-vm-00ff-exit=x", m),
            Line::Output("dropspec-vm-00ff-exit=x")
        );
    }

    #[test]
    fn streaming_hides_markers_and_power_off() {
        let m = "dropspec-vm-00ff";
        let text = "boot warning\r\ndropspec-vm-00ff-ready\r\ntest output\r\ndropspec-vm-00ff-exit=101\r\n[ 3.1] reboot: Power down\r\n";
        let (tx, rx) = mpsc::channel();
        let mut out = Vec::new();
        stream_console(text.as_bytes(), m, false, &mut out, &tx);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "boot warning\ntest output\n"
        );
        let events: Vec<Event> = rx.try_iter().collect();
        assert!(matches!(events[..], [Event::Ready(_), Event::Exit(101, _)]));
    }
}
