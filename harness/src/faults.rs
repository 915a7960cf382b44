//! Faults injected into hosts: iptables (nft or legacy backend) and native nft rulesets.
use crate::scenario::Scenario;
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("{0}")]
    Other(String),
}

pub fn apply(scenario: &Scenario, topology: &Topology) -> Result<(), FaultError> {
    let _ = (scenario, topology);
    todo!()
}
