//! The running kernel's BTF (`/sys/kernel/btf/vmlinux`), read and indexed once per
//! process and shared: the names check (drop reasons), the drop probe's load and the
//! hook-point family's each read and parsed all 5.5 MB of it before (6.18), 5-15 ms a
//! read here and far more in a TCG guest. The file cannot change while the kernel runs,
//! so one read is the same answer; a failure is kept too and returned to every caller.

use super::btf::Btf;
use super::KernelError;
use std::path::Path;
use std::sync::OnceLock;

/// The raw bytes, for a loader that must be given all of them (aya's parse when the
/// cut-down BTF lacks something).
pub fn bytes() -> Result<&'static [u8], KernelError> {
    shared().map(|(bytes, _)| *bytes)
}

/// The parsed BTF.
pub fn btf() -> Result<&'static Btf<'static>, KernelError> {
    shared().map(|(_, btf)| btf)
}

fn shared() -> Result<&'static (&'static [u8], Btf<'static>), KernelError> {
    static SHARED: OnceLock<Result<(&'static [u8], Btf<'static>), KernelError>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let bytes = super::read_file(Path::new(super::VMLINUX_BTF))?;
            // Kept for the whole process: the parse borrows it.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            Ok((bytes, Btf::parse(bytes)?))
        })
        .as_ref()
        .map_err(Clone::clone)
}
