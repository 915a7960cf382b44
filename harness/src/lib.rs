//! dropspec: regression tests for Linux packet-drop behaviour.
//!
//! A run flows one way: [`scenario`] (TOML → validated model) → [`topology`] (namespaces,
//! each a [`netns`] handle, veths, addresses, routes) → [`faults`] → [`watchers`] started
//! (the eBPF probes in [`probes`], attached once per process, and the kernel's counters)
//! → [`traffic`] → watchers' rows → [`report`] → [`verdict`] (with [`baseline`] and the
//! run's [`policy`]), with [`runner`] driving the steps and [`cleanup`] making sure
//! nothing outlives a run. A scenario with `[[steps]]` runs them in order through [`steps`]. docs/ARCHITECTURE.md is the map.
//! [`global_sysctls`] changes machine-wide settings a scenario needs, and always puts them back.
//! [`counters`] reads the kernel's own SNMP, conntrack and rule counters per host, and
//! [`classify`] uses them to say which mechanism dropped the packets.
//! [`kernel`] reads what the running kernel says about itself (BTF, tracefs, kallsyms);
//! [`vm`] runs a command on another kernel, in a qemu guest; [`diff`] says what changed
//! in drop behaviour between two kernels. [`vocab`] holds the names the model and the
//! runtime share (hook points, corruptions, causes), so the model imports no runtime code;
//! [`names`] checks a scenario's reason and function names against the kernel.

pub mod authoring;
pub mod baseline;
pub mod classify;
pub mod cleanup;
pub mod completion;
pub mod counters;
pub mod coverage;
pub mod crafted;
pub mod diff;
pub mod faults;
pub mod forks;
pub mod global_sysctls;
pub mod kernel;
pub mod kernel_features;
#[cfg(test)]
mod layers;
pub mod matrix;
pub mod names;
pub mod outputs;
pub mod owner;
pub mod packets;
pub mod policy;
pub mod probes;
pub mod repeat;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod socket_options;
mod sockopt;
pub mod spans;
pub mod steps;
pub mod suggest;
pub mod topology;
/// The namespace handle lives beside the topology that builds namespaces (it reports its
/// errors as the topology's); it is named here too, as every runtime step uses it.
pub use topology::netns;
pub mod traffic;
pub mod verdict;
pub mod vm;
pub mod vocab;
pub mod watch;
pub mod watchers;
