//! The eBPF drop probe: loaded and attached once per process, shared by every scenario.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProbeError {
    #[error("{0}")]
    Other(String),
}
