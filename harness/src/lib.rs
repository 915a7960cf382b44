//! dropspec: regression tests for Linux packet-drop behaviour.
//!
//! A run flows one way: [`scenario`] (TOML → validated model) → [`topology`] (namespaces,
//! veths, addresses, routes) → [`faults`] (firewall rules) → [`probes`] (eBPF drop
//! counters, attached once per process) → [`traffic`] → [`report`] → assertions, with
//! [`runner`] driving the steps and [`cleanup`] making sure nothing outlives a run.
//! [`global_sysctls`] changes machine-wide settings a scenario needs, and always puts them back.
//! [`counters`] reads the kernel's own SNMP, conntrack and rule counters per host, and
//! [`classify`] uses them to say which mechanism dropped the packets.
//! [`kernel`] reads what the running kernel says about itself (BTF, tracefs, kallsyms);
//! [`vm`] runs a command on another kernel, in a qemu guest; [`diff`] says what changed
//! in drop behaviour between two kernels.

pub mod classify;
pub mod cleanup;
pub mod counters;
pub mod crafted;
pub mod diff;
pub mod faults;
pub mod global_sysctls;
pub mod kernel;
pub mod packets;
pub mod probes;
pub mod report;
pub mod runner;
pub mod scenario;
mod sockopt;
pub mod topology;
pub mod traffic;
pub mod vm;
