//! Network namespaces, veth pairs, addresses, routes and sysctls for one scenario.
use crate::scenario::{HostId, Scenario};
use std::os::fd::{BorrowedFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{0}")]
    Other(String),
}

/// One anonymous network namespace, alive as long as this value holds its fd.
pub struct Netns {
    fd: OwnedFd,
    inode: u64,
    label: String,
}

impl Netns {
    pub fn create(label: &str) -> Result<Netns, TopologyError> {
        let _ = label;
        todo!()
    }
    pub fn inode(&self) -> u64 {
        self.inode
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
    /// Runs `f` on a new thread that has entered this namespace.
    pub fn run<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> Result<T, TopologyError> {
        let _ = f;
        todo!()
    }
    /// A command that enters this namespace before it executes.
    pub fn command(&self, program: &str) -> std::process::Command {
        let _ = program;
        todo!()
    }
}

pub struct Topology {
    hosts: Vec<Netns>,
}

impl Topology {
    pub fn build(scenario: &Scenario) -> Result<Topology, TopologyError> {
        let _ = scenario;
        todo!()
    }
    pub fn host(&self, id: HostId) -> &Netns {
        &self.hosts[id]
    }
    pub fn hosts(&self) -> &[Netns] {
        &self.hosts
    }
}
