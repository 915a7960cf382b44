//! How often the kernel skipped a loaded program: `bpf_prog_info.recursion_misses`.
//!
//! A tracing program (tp_btf, and the classic tracepoint through `bpf_prog_active`)
//! runs at most once per CPU at a time. When a drop happens on a CPU where the probe is
//! already running (a softirq, such as the neighbour timer freeing its queued packets,
//! interrupting a drop counted in process context), the kernel does not run the probe
//! for it and only adds one to the program's `recursion_misses` (5.12 on). That drop is
//! then missing from the counts, and an expectation of zero would pass vacuously: so a
//! scenario watched while a miss happened is not trusted ([`super::ProbeError::Missed`]).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::programs::Program;

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// The start of the kernel's `struct bpf_prog_info` (uapi/linux/bpf.h), up to
/// `recursion_misses`. The kernel copies min(info_len, its size) bytes, so a shorter
/// struct is valid ABI; a kernel older than the field (5.12) leaves it zero.
#[repr(C)]
#[derive(Default)]
struct ProgInfoPrefix {
    type_: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
    ifindex: u32,
    gpl_compatible: u32,
    netns_dev: u64,
    netns_ino: u64,
    nr_jited_ksyms: u32,
    nr_jited_func_lens: u32,
    jited_ksyms: u64,
    jited_func_lens: u64,
    btf_id: u32,
    func_info_rec_size: u32,
    func_info: u64,
    nr_func_info: u32,
    nr_line_info: u32,
    line_info: u64,
    jited_line_info: u64,
    nr_jited_line_info: u32,
    line_info_rec_size: u32,
    jited_line_info_rec_size: u32,
    nr_prog_tags: u32,
    prog_tags: u64,
    run_time_ns: u64,
    run_cnt: u64,
    recursion_misses: u64,
}

// The uapi offset of recursion_misses (pahole on any 5.12+ vmlinux: 208).
const _: () = assert!(std::mem::offset_of!(ProgInfoPrefix, recursion_misses) == 208);

#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The program's `recursion_misses` since it was loaded (0 before 5.12).
pub fn recursion_misses(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut info = ProgInfoPrefix::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<ProgInfoPrefix>() as u32,
        info: &mut info as *mut ProgInfoPrefix as u64,
    };
    // SAFETY: attr points at a live InfoAttr and attr.info at a live, writable
    // ProgInfoPrefix of info_len bytes; the kernel writes at most info_len bytes there.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}

/// Sum of `recursion_misses` over the loaded programs among `programs`.
pub fn total<'a>(programs: impl Iterator<Item = &'a Program>) -> io::Result<u64> {
    let mut sum = 0;
    for program in programs {
        if let Ok(fd) = program.fd() {
            sum += recursion_misses(fd.as_fd())?;
        }
    }
    Ok(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_ends_where_the_uapi_field_does() {
        // recursion_misses is the 36th field; 216 bytes with it.
        assert_eq!(size_of::<ProgInfoPrefix>(), 216);
    }
}
