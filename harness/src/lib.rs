//! dropspec: regression tests for Linux packet-drop behaviour.
//!
//! A run flows one way: [`scenario`] (TOML → validated model) → [`topology`] (namespaces,
//! veths, addresses, routes) → [`faults`] (firewall rules) → [`probes`] (eBPF drop
//! counters, attached once per process) → [`traffic`] → [`report`] → assertions, with
//! [`runner`] driving the steps and [`cleanup`] making sure nothing outlives a run.
//! [`kernel`] reads what the running kernel says about itself (BTF, tracefs, kallsyms);
//! [`vm`] runs a command on another kernel, in a qemu guest.

pub mod cleanup;
pub mod faults;
pub mod kernel;
pub mod probes;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod topology;
pub mod traffic;
pub mod vm;
