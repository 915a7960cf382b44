//! The guest's initramfs: busybox, the guest kernel's own modules it needs to see the
//! host's files, and two scripts.
//!
//! Stage 1 (`/init`) loads those modules, mounts the host's root read-only over 9p with
//! a tmpfs overlay on top, mounts the shared (writable) directories over 9p at their host
//! paths, binds the guest kernel's modules at `/lib/modules/<release>`, and
//! `switch_root`s into it. Stage 2 runs as PID 1 of the new root, in the host's `/bin/sh`: the root switch has to
//! happen in PID 1 because the kernel's module loader (`request_module` →
//! `/sbin/modprobe`) runs with PID 1's root, and scenarios need the guest to load
//! nf_tables, veth and friends on demand from the guest kernel's own modules. Stage 2
//! runs the command in its directory, prints a marker with its exit code, and powers
//! off.
//!
//! The archive is written here in cpio "newc" format (no `cpio` run, no staging
//! directory), so it can hold `/dev/console` without root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::package::{run_tool, GuestKernel, Tristate};
use super::VmError;

/// Where the static busybox of Debian's `busybox-static` package lives.
pub const BUSYBOX: &str = "/bin/busybox";

/// What stage 1 needs before it can see the host's files: (config option, module).
/// Each is left out when the kernel has it built in, and loaded with its dependencies
/// (from `modules.dep`) when it is a module. Debian's 6.1 has all of them as modules;
/// 6.12 has virtio built in.
const BOOT_FEATURES: &[(&str, &str)] = &[
    ("VIRTIO_PCI", "virtio_pci"),
    ("NET_9P_VIRTIO", "9pnet_virtio"),
    ("9P_FS", "9p"),
    ("OVERLAY_FS", "overlay"),
];

/// 9p message size: qemu's virtio-9p caps it near 512 KiB; the kernel's default
/// (8 KiB on 6.1) makes every read of a test binary hundreds of round trips.
const MSIZE: u32 = 262_144;

/// `modules.dep` of one kernel: module name → (path, dependency paths).
#[derive(Debug, Default)]
pub struct ModulesDep {
    by_name: BTreeMap<String, (String, Vec<String>)>,
    deps_by_path: BTreeMap<String, Vec<String>>,
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` → `9pnet_virtio`; dashes and underscores are the
/// same in module names.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    pub fn parse(text: &str) -> ModulesDep {
        let mut dep = ModulesDep::default();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
            dep.by_name
                .insert(module_name(path), (path.to_owned(), deps.clone()));
            dep.deps_by_path.insert(path.to_owned(), deps);
        }
        dep
    }

    /// Paths of `name` and everything it needs, each after what it needs.
    pub fn load_order(&self, name: &str) -> Option<Vec<String>> {
        let (path, _) = self.by_name.get(&name.replace('-', "_"))?;
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        self.visit(path, &mut seen, &mut order);
        Some(order)
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_owned()) {
            return;
        }
        for dep in self.deps_by_path.get(path).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_owned());
    }
}

/// The modules stage 1 loads, in order, as paths under `lib/modules/<release>/`.
pub fn boot_modules(
    kernel: &GuestKernel,
    modules_dep: &ModulesDep,
) -> Result<Vec<String>, VmError> {
    let mut order: Vec<String> = Vec::new();
    for &(option, module) in BOOT_FEATURES {
        match kernel.config.tristate(option) {
            Tristate::BuiltIn => {}
            Tristate::Module => {
                let paths =
                    modules_dep
                        .load_order(module)
                        .ok_or_else(|| VmError::GuestKernelUnfit {
                            package: kernel.package.clone(),
                            detail: format!(
                                "CONFIG_{option}=m but modules.dep has no {module} module"
                            ),
                        })?;
                for path in paths {
                    if !order.contains(&path) {
                        order.push(path);
                    }
                }
            }
            Tristate::Absent => {
                return Err(VmError::GuestKernelUnfit {
                    package: kernel.package.clone(),
                    detail: format!(
                        "it has no CONFIG_{option}, which the guest needs to mount the host's \
                         files (virtio, 9p and overlayfs)"
                    ),
                })
            }
        }
    }
    Ok(order)
}

/// A module file's contents, decompressed: busybox's insmod hands the bytes to
/// init_module(2), which wants a plain ELF object.
fn module_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".ko.xz") {
        "xz"
    } else if name.ends_with(".ko.zst") {
        "zstd"
    } else if name.ends_with(".ko.gz") {
        "gzip"
    } else {
        return std::fs::read(path).map_err(|e| VmError::io("reading module", path, e));
    };
    run_tool(Command::new(tool).arg("-dc").arg(path))
}

/// Everything the two scripts need to know about one run.
#[derive(Debug, Clone)]
pub struct GuestPlan {
    /// Marker prefix: `<marker>-ready` when the command starts, `<marker>-exit=<code>`.
    pub marker: String,
    /// Host directories mounted read-write at the same path: (9p mount tag, path).
    pub writable: Vec<(String, PathBuf)>,
    /// The unpacked kernel's `lib/modules/<release>` (a host path, seen through the
    /// host's root) and where the guest expects it (`/usr/lib/modules/<release>` on a
    /// merged-/usr host).
    pub modules_host: PathBuf,
    pub modules_guest: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub command: Vec<String>,
}

/// Single-quoted for sh: safe for any text without NUL.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn quote_path(path: &Path) -> String {
    sh_quote(&path.to_string_lossy())
}

/// The root 9p share's mount tag (the qemu side uses the same name).
pub const ROOT_TAG: &str = "dropspec-root";

impl GuestPlan {
    pub fn stage1(&self, modules: &[String]) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            r#"#!/bin/busybox sh
# dropspec guest, stage 1 (harness/src/vm/initramfs.rs): see there for why two stages.
/bin/busybox --install -s /bin
export PATH=/bin
M={marker}
fail() {{ echo "dropspec vm (guest): $*"; echo "$M-exit=125"; sync; poweroff -f; sleep 10; }}
mount -t proc proc /proc && mount -t sysfs sysfs /sys && mount -t devtmpfs devtmpfs /dev \
  || fail "mounting proc, sysfs, devtmpfs"
for m in {modules}; do insmod "/dropspec/modules/$m" || fail "loading module $m"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize={MSIZE},cache=loose {ROOT_TAG} /mnt/lower \
  || fail "mounting the host's root over 9p"
mount -t tmpfs -o mode=0755 dropspec-upper /mnt/rw && mkdir /mnt/rw/upper /mnt/rw/work \
  || fail "mounting the overlay's tmpfs"
mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work dropspec-overlay /newroot \
  || fail "mounting the overlay on the host's root"
R=/newroot
for d in proc sys dev; do mount --move /$d $R/$d || fail "moving /$d"; done
# Before /tmp and /run are covered: the kernel cache may live under either.
mkdir -p $R{modules_guest} && mount --bind $R{modules_host} $R{modules_guest} \
  || fail "binding the guest kernel's modules at {modules_guest_plain}"
mount -t tmpfs -o mode=1777 dropspec-tmp $R/tmp && mount -t tmpfs -o mode=0755 dropspec-run $R/run \
  || fail "mounting /tmp and /run"
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts; mount -t tmpfs -o mode=1777 dropspec-shm $R/dev/shm
mount -t tracefs tracefs $R/sys/kernel/tracing || fail "mounting tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t bpf bpf $R/sys/fs/bpf || fail "mounting bpffs"
"#,
            marker = self.marker,
            modules = modules
                .iter()
                .map(|m| sh_quote(module_file_name(m)))
                .collect::<Vec<_>>()
                .join(" "),
            modules_guest = quote_path(&self.modules_guest),
            modules_host = quote_path(&self.modules_host),
            modules_guest_plain = self.modules_guest.display(),
        ));
        for (tag, path) in &self.writable {
            s.push_str(&format!(
                "mkdir -p $R{path} && mount -t 9p -o trans=virtio,version=9p2000.L,msize={MSIZE},cache=mmap {tag} $R{path} \\\n  || fail \"mounting {plain} read-write over 9p\"\n",
                path = quote_path(path),
                plain = path.display(),
            ));
        }
        s.push_str(
            r#"mkdir -p $R/run/dropspec && cp /bin/busybox /dropspec/stage2 $R/run/dropspec/ \
  || fail "copying stage 2"
hostname dropspec-vm
# The host's sh, not busybox's: busybox's runs its own applets (ip, ls…) in place of
# the host's programs of the same name.
exec switch_root $R /bin/sh /run/dropspec/stage2
"#,
        );
        s
    }

    pub fn stage2(&self) -> String {
        let mut s = format!(
            r#"# dropspec guest, stage 2: PID 1 of the overlaid host root.
B=/run/dropspec/busybox
M={marker}
"#,
            marker = self.marker
        );
        for (key, value) in &self.env {
            s.push_str(&format!("export {key}={}\n", sh_quote(value)));
        }
        let argv: Vec<String> = self.command.iter().map(|a| sh_quote(a)).collect();
        s.push_str(&format!(
            r#"echo "$M-ready"
(cd {cwd} && exec {argv}) </dev/null
echo "$M-exit=$?"
$B sync
$B poweroff -f
$B sleep 10
"#,
            cwd = quote_path(&self.cwd),
            argv = argv.join(" "),
        ));
        s
    }
}

fn module_file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The whole initramfs for one run, uncompressed (the kernel takes plain cpio; it is
/// about 3 MB and read from page cache).
pub fn build(kernel: &GuestKernel, plan: &GuestPlan) -> Result<Vec<u8>, VmError> {
    let dep_path = kernel.modules_dir().join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_path)
        .map_err(|e| VmError::io("reading modules.dep", &dep_path, e))?;
    let modules = boot_modules(kernel, &ModulesDep::parse(&dep_text))?;
    let busybox = std::fs::read(BUSYBOX).map_err(|e| {
        VmError::io(
            "reading the static busybox (Debian package busybox-static)",
            Path::new(BUSYBOX),
            e,
        )
    })?;

    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "proc",
        "sys",
        "mnt",
        "mnt/lower",
        "mnt/rw",
        "newroot",
        "dropspec",
        "dropspec/modules",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init's stdin/out/err before devtmpfs is mounted.
    cpio.char_device("dev/console", 5, 1);
    cpio.file("bin/busybox", 0o755, &busybox);
    for path in &modules {
        let bytes = module_bytes(&kernel.modules_dir().join(path))?;
        let name = module_file_name(path);
        let name = name.split(".ko").next().unwrap_or(name);
        cpio.file(&format!("dropspec/modules/{name}.ko"), 0o644, &bytes);
    }
    let loaded: Vec<String> = modules
        .iter()
        .map(|p| {
            let name = module_file_name(p);
            format!("{}.ko", name.split(".ko").next().unwrap_or(name))
        })
        .collect();
    cpio.file("init", 0o755, plan.stage1(&loaded).as_bytes());
    cpio.file("dropspec/stage2", 0o644, plan.stage2().as_bytes());
    Ok(cpio.finish())
}

/// A cpio archive in the "newc" format the kernel unpacks into its initial rootfs.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_inode: u32,
}

impl Cpio {
    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040_755, 2, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, permissions: u32, data: &[u8]) {
        self.entry(name, 0o100_000 | permissions, 1, (0, 0), data);
    }

    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020_600, 1, (major, minor), &[]);
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_inode += 1;
        let name_size = name.len() + 1;
        let fields = [
            self.next_inode,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the same inputs give the same archive
            u32::try_from(data.len()).expect("initramfs member under 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name_size).expect("short name"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for field in fields {
            self.out
                .extend_from_slice(format!("{field:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::package::KernelConfig;

    const DEP_6_1: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/overlayfs/overlay.ko:
";

    fn kernel(config: &str) -> GuestKernel {
        GuestKernel {
            package: "linux-image-test-amd64".into(),
            version: "1".into(),
            release: "test".into(),
            root: PathBuf::from("/nonexistent"),
            config: KernelConfig::parse(config),
        }
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let dep = ModulesDep::parse(DEP_6_1);
        let all_modules =
            "CONFIG_VIRTIO_PCI=m\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_9P_FS=m\nCONFIG_OVERLAY_FS=m\n";
        let order = boot_modules(&kernel(all_modules), &dep).unwrap();
        let names: Vec<String> = order.iter().map(|p| module_name(p)).collect();
        assert_eq!(names.len(), 11, "{names:?}");
        let pos = |n: &str| names.iter().position(|m| m == n).unwrap();
        for (module, needs) in [
            ("virtio_pci", "virtio"),
            ("virtio_pci", "virtio_ring"),
            ("9pnet_virtio", "9pnet"),
            ("9p", "fscache"),
            ("fscache", "netfs"),
        ] {
            assert!(
                pos(needs) < pos(module),
                "{needs} before {module}: {names:?}"
            );
        }
    }

    #[test]
    fn built_in_features_load_nothing_and_missing_ones_are_refused() {
        let dep = ModulesDep::parse(
            "kernel/net/9p/9pnet.ko.xz:\nkernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz\n\
             kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz\nkernel/fs/overlayfs/overlay.ko.xz:\n",
        );
        let config =
            "CONFIG_VIRTIO_PCI=y\nCONFIG_NET_9P_VIRTIO=m\nCONFIG_9P_FS=m\nCONFIG_OVERLAY_FS=m\n";
        let order = boot_modules(&kernel(config), &dep).unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko.xz",
                "kernel/net/9p/9pnet_virtio.ko.xz",
                "kernel/fs/9p/9p.ko.xz",
                "kernel/fs/overlayfs/overlay.ko.xz"
            ]
        );
        let err = boot_modules(&kernel("CONFIG_VIRTIO_PCI=y\n"), &dep).unwrap_err();
        assert!(err.to_string().contains("CONFIG_NET_9P_VIRTIO"), "{err}");
        let err = boot_modules(&kernel(config), &ModulesDep::default()).unwrap_err();
        assert!(
            err.to_string().contains("modules.dep has no 9pnet_virtio"),
            "{err}"
        );
    }

    #[test]
    fn quoting_survives_any_text() {
        assert_eq!(sh_quote("plain"), "'plain'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$HOME `x` \"y\""), "'$HOME `x` \"y\"'");
    }

    #[test]
    fn scripts_carry_the_plan() {
        let plan = GuestPlan {
            marker: "dropspec-vm-0123".into(),
            writable: vec![("dropspec-rw0".into(), PathBuf::from("/work/my project"))],
            modules_host: PathBuf::from(
                "/root/.cache/dropspec/kernels/k/lib/modules/6.1.0-56-amd64",
            ),
            modules_guest: PathBuf::from("/usr/lib/modules/6.1.0-56-amd64"),
            cwd: PathBuf::from("/work/my project/harness"),
            env: vec![("CI".into(), "true".into())],
            command: vec!["cargo".into(), "test".into(), "--".into(), "it's".into()],
        };
        let stage1 = plan.stage1(&["virtio.ko".into(), "9p.ko".into()]);
        assert!(
            stage1.contains("for m in 'virtio.ko' '9p.ko'; do"),
            "{stage1}"
        );
        assert!(
            stage1.contains("dropspec-rw0 $R'/work/my project'"),
            "{stage1}"
        );
        assert!(stage1.contains(
            "mount --bind $R'/root/.cache/dropspec/kernels/k/lib/modules/6.1.0-56-amd64' $R'/usr/lib/modules/6.1.0-56-amd64'"
        ));
        assert!(
            stage1.contains(",ro,"),
            "the host's root is mounted read-only"
        );
        assert!(stage1.ends_with("exec switch_root $R /bin/sh /run/dropspec/stage2\n"));
        let stage2 = plan.stage2();
        assert!(stage2.contains("export CI='true'\n"));
        assert!(stage2.contains("(cd '/work/my project/harness' && exec 'cargo' 'test' '--' 'it'\\''s') </dev/null\n"), "{stage2}");
        assert!(stage2.contains("echo \"$M-exit=$?\""));
    }

    /// (name, mode, (rdev major, minor), data)
    type Member = (String, u32, (u32, u32), Vec<u8>);

    /// Reads back what [`Cpio`] wrote, the way the kernel's initramfs unpacker does.
    fn read_newc(mut bytes: &[u8]) -> Vec<Member> {
        let mut entries = Vec::new();
        let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
        let total = bytes.len();
        loop {
            let at = total - bytes.len();
            assert_eq!(at % 4, 0);
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| hex(&bytes[6 + 8 * i..14 + 8 * i]);
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name_end = 110 + namesize as usize;
            let name = std::str::from_utf8(&bytes[110..name_end - 1])
                .unwrap()
                .to_owned();
            assert_eq!(bytes[name_end - 1], 0);
            let data_start = (at + name_end).next_multiple_of(4) - at;
            let data = bytes[data_start..data_start + size as usize].to_vec();
            let next = (at + data_start + size as usize).next_multiple_of(4) - at;
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert!(bytes.is_empty());
                return entries;
            }
            entries.push((name, mode, (rmaj, rmin), data));
        }
    }

    #[test]
    fn cpio_newc_round_trip() {
        let mut cpio = Cpio::default();
        cpio.dir("bin");
        cpio.char_device("dev/console", 5, 1);
        cpio.file("init", 0o755, b"#!/bin/sh\n");
        cpio.file("bin/x", 0o644, b"12345");
        let entries = read_newc(&cpio.finish());
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].0, "bin");
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(entries[1].2, (5, 1));
        assert_eq!(entries[1].1 & 0o170_000, 0o020_000);
        assert_eq!(entries[2].3, b"#!/bin/sh\n");
        assert_eq!(entries[3].3, b"12345");
    }
}
