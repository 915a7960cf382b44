//! An aya loader that has not parsed the kernel's BTF.
//!
//! aya 0.14's `EbpfLoader::new()` always reads and parses the whole of
//! `/sys/kernel/btf/vmlinux` (`Btf::from_sys_fs`): 30-40 ms and 13 MiB here (6.18),
//! thrown away at once when `.btf()` then gives the loader the BTF it is to use, which
//! every probe here does (`kernel::loader_btf`'s cut). aya has no constructor without
//! it, so [`loader`] builds the loader on a short-lived thread of its own on which
//! `open` fails (a seccomp filter on that thread alone): aya's read fails, and it keeps
//! no BTF (`.ok()`), as on a kernel without any. The thread does nothing else and ends
//! right after, taking its filter with it; the loader is handed back to the caller.
//!
//! Only the cost depends on this working: callers always set the BTF themselves, so if
//! the filter cannot be installed (another architecture, a sandbox that forbids it)
//! the loader is built the ordinary way.

use aya::EbpfLoader;
use std::sync::OnceLock;

use crate::kernel::btf::kind;

/// The build of a probe object to load on the running kernel, of the two build.rs makes
/// of each probe with per-CPU counter hashes: `alloc_on_insert` (entries allocated as
/// they are first used) where the kernel has the BPF memory allocator, which lets
/// tracing programs allocate in any context (6.1+: `struct bpf_mem_alloc` in its BTF),
/// else `prealloc` (see DROPSPEC_COUNTER_MAP_FLAGS in `ebpf/slots.bpf.h`). Creating the
/// preallocated maps is most of a probe's load: about 25 ms of the drop probe's 50 ms on
/// 6.18. What the programs count, and how, is the same in both.
pub(crate) fn object_for_kernel(
    prealloc: &'static [u8],
    alloc_on_insert: &'static [u8],
) -> &'static [u8] {
    if allocates_in_any_context() {
        alloc_on_insert
    } else {
        prealloc
    }
}

/// Whether this kernel has the BPF memory allocator (a kernel without BTF is treated
/// as not having it; the probes refuse to load there anyway).
fn allocates_in_any_context() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    *ANSWER.get_or_init(|| {
        crate::kernel::vmlinux::btf()
            .ok()
            .and_then(|btf| btf.find(kind::STRUCT, "bpf_mem_alloc").ok().flatten())
            .is_some()
    })
}

/// A fresh loader without the default BTF; call `.btf(Some(..))` on it.
pub(crate) fn loader() -> EbpfLoader<'static> {
    std::thread::Builder::new()
        .name("dropspec-loader".into())
        .spawn(|| {
            let _ = deny_open_on_this_thread();
            EbpfLoader::new()
        })
        .ok()
        .and_then(|thread| thread.join().ok())
        .unwrap_or_else(EbpfLoader::new)
}

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// Makes open(2) and openat(2) fail with ENOENT on the calling thread, for the rest of
/// its life (no other thread is affected: no SECCOMP_FILTER_FLAG_TSYNC).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_open_on_this_thread() -> std::io::Result<()> {
    use libc::{sock_filter, sock_fprog};
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let stmt = |code, k| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |k, jt, jf| sock_filter {
        code: JEQ_K,
        jt,
        jf,
        k,
    };
    #[cfg(target_arch = "x86_64")]
    let open = libc::SYS_open as u32;
    // aarch64 has no open(2): openat twice is harmless.
    #[cfg(target_arch = "aarch64")]
    let open = libc::SYS_openat as u32;
    // struct seccomp_data: nr at 0, arch at 4.
    let filter = [
        stmt(LD_W_ABS, 4),
        jump(AUDIT_ARCH, 0, 4), // another ABI: allow
        stmt(LD_W_ABS, 0),
        jump(libc::SYS_openat as u32, 2, 0),
        jump(open, 1, 0),
        stmt(RET_K, libc::SECCOMP_RET_ALLOW),
        stmt(RET_K, libc::SECCOMP_RET_ERRNO | libc::ENOENT as u32),
    ];
    let program = sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut sock_filter,
    };
    // SAFETY: prctl with documented arguments; `program` outlives the call, and the
    // kernel copies the filter. PR_SET_NO_NEW_PRIVS is per thread too.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn deny_open_on_this_thread() -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    /// The filter fails open on its own thread only.
    #[test]
    fn open_fails_on_the_filtered_thread_only() {
        let filtered = std::thread::spawn(|| {
            super::deny_open_on_this_thread().unwrap();
            std::fs::File::open("/proc/self/status").map(|_| ())
        })
        .join()
        .unwrap();
        assert_eq!(filtered.unwrap_err().kind(), std::io::ErrorKind::NotFound);
        assert!(std::fs::File::open("/proc/self/status").is_ok());
    }
}
