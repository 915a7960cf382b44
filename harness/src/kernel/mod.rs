//! What the running kernel says about itself: drop-reason names (BTF, tracefs),
//! function names (kallsyms), tracepoint layouts (tracefs format files), and what a
//! drop's kernel stack says about where it happened (stacks).
//!
//! Nothing here needs root except reading the live files; every parser also takes
//! bytes or text so unit tests run on artefacts saved in `fixtures/kernel/<release>/`.

pub mod btf;
pub mod kallsyms;
pub mod kallsyms_boot;
pub mod known;
pub mod loader_btf;
pub mod reasons;
pub mod stacks;
pub mod tracefs;
pub mod vmlinux;

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the running kernel publishes its own BTF (CONFIG_DEBUG_INFO_BTF=y).
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// A failure to read or understand one kernel artefact.
///
/// Messages carry their cause (the errno text) because they are shown verbatim, for
/// example as the reason a privileged test was skipped; so the io error is kept for
/// callers that want to match on it but is not repeated as a `#[source]`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KernelError {
    #[error("cannot read {}: {error}{}", path.display(), read_hint(path, error))]
    Read {
        path: PathBuf,
        error: Arc<std::io::Error>,
    },
    #[error("malformed BTF ({what}): {detail}")]
    Btf { what: String, detail: String },
    #[error("{} does not look like a tracefs format file: {detail}", path.display())]
    Format { path: PathBuf, detail: String },
    #[error(
        "tracefs is not mounted and mounting it at {} failed: {error}; \
         mount it by hand with `mount -t tracefs nodev /sys/kernel/tracing`",
        path.display()
    )]
    TracefsMount {
        path: PathBuf,
        error: Arc<std::io::Error>,
    },
    #[error(
        "this kernel has no skb drop reasons (no `enum skb_drop_reason` in {origin}; \
         added in Linux 5.17): dropspec needs 5.17 or later"
    )]
    NoDropReasons { origin: String },
    #[error(
        "{} lists no addresses (all zero): reading real kernel addresses needs root \
         (CAP_SYSLOG) or kernel.kptr_restrict=0",
        path.display()
    )]
    KallsymsHidden { path: PathBuf },
}

impl KernelError {
    pub(crate) fn read(path: &Path, error: std::io::Error) -> KernelError {
        KernelError::Read {
            path: path.to_owned(),
            error: Arc::new(error),
        }
    }

    /// True when the artefact is missing or hidden (kernel built without it, not root),
    /// as opposed to present but not understood (a bug to fix here).
    pub fn is_unavailable(&self) -> bool {
        match self {
            KernelError::Read { .. }
            | KernelError::TracefsMount { .. }
            | KernelError::KallsymsHidden { .. }
            | KernelError::NoDropReasons { .. } => true,
            KernelError::Btf { .. } | KernelError::Format { .. } => false,
        }
    }
}

fn read_hint(path: &Path, error: &std::io::Error) -> &'static str {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => " (run as root)",
        std::io::ErrorKind::NotFound if path.starts_with("/sys/kernel/btf") => {
            " (this kernel has no BTF: it needs CONFIG_DEBUG_INFO_BTF=y)"
        }
        std::io::ErrorKind::NotFound if path.starts_with("/sys/kernel") => {
            " (this kernel lacks the feature, or tracefs is not mounted)"
        }
        _ => "",
    }
}

/// Reads a whole kernel file, naming the file in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, KernelError> {
    std::fs::read(path).map_err(|e| KernelError::read(path, e))
}
