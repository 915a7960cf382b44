//! Programs under test that cannot be loaded: the verifier's refusal reaches the person
//! with the verifier's own words, and nothing is left attached (issue 13). The programs
//! that load are exercised by `scenarios/datapath/` through tests/scenarios.rs.

use std::path::Path;

use dropspec::probes::program::{self, ProgramError};
use dropspec::scenario::{self, Scenario};
use dropspec::topology::Topology;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

const REFUSED: &str = r#"
description = "a program the verifier refuses"
[hosts.client]
[hosts.server]
[[links]]
a = { host = "client", addr = "198.18.0.1/24" }
b = { host = "server", addr = "198.18.0.2/24" }
[[programs]]
host = "server"
interface = "eth0"
attach = "tc_ingress"
object = "datapath/verifier_reject.bpf.o"
program = "unchecked_read"
metrics = { map = "none", kind = "per_cpu_array" }
"#;

fn main() {
    let args = Arguments::from_args();
    let trials = vec![Trial::ignorable_test(
        "datapath/verifier_refusal_leaves_nothing_attached",
        || run(verifier_refusal),
    )];
    libtest_mimic::run(&args, trials).exit();
}

fn run(case: fn() -> Result<(), String>) -> Result<Completion, Failed> {
    let require = dropspec::policy::Policy::current()
        .map_err(|e| e.to_string())?
        .require_privileged;
    match dropspec::runner::unavailable_reason() {
        Some(why) if !require => Ok(Completion::ignored_with(why)),
        Some(why) => Err(format!(
            "could not run: {why}\n(DROPSPEC_REQUIRE_PRIVILEGED=1: a privileged test may not be skipped)"
        )
        .into()),
        None => case().map(|()| Completion::Completed).map_err(Failed::from),
    }
}

fn verifier_refusal() -> Result<(), String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let scenario: Scenario = scenario::parse(
        REFUSED,
        Path::new("harness/tests/datapath.rs"),
        "datapath",
        &workspace.join("fixtures"),
    )
    .map_err(|e| e.to_string())?;
    let topology = Topology::build(&scenario).map_err(|e| e.to_string())?;
    let p = &scenario.programs[0];
    let object = program::object_bytes(p, &scenario.path).map_err(|e| e.to_string())?;
    let server = topology.host(p.host);
    let result = server
        .run(|| program::attach(p, &object).map(|_| ()))
        .map_err(|e| e.to_string())?;
    let message = match result {
        Err(e @ ProgramError::Verifier { .. }) => e.to_string(),
        Err(other) => return Err(format!("expected the verifier's refusal, got: {other}")),
        Ok(()) => return Err("the verifier accepted a read past the packet's end".into()),
    };
    // The verifier's own words: the unchecked packet read, and where.
    if !message.contains("invalid access to packet") {
        return Err(format!(
            "the error does not carry the verifier's log:\n{message}"
        ));
    }
    // Nothing attached: no tcx program and no cls_bpf filter on eth0's ingress.
    let tcx = server
        .run(|| {
            aya::programs::SchedClassifier::query_tcx("eth0", aya::programs::TcAttachType::Ingress)
                .map(|(_, programs)| programs.len())
        })
        .map_err(|e| e.to_string())?;
    if let Ok(n) = tcx {
        if n != 0 {
            return Err(format!(
                "{n} tcx program(s) left on eth0 after a refused load"
            ));
        }
    }
    let filters = server
        .command("tc")
        .args(["filter", "show", "dev", "eth0", "ingress"])
        .output()
        .map_err(|e| e.to_string())?;
    let filters = String::from_utf8_lossy(&filters.stdout);
    if !filters.trim().is_empty() {
        return Err(format!(
            "tc filters left on eth0 after a refused load:\n{filters}"
        ));
    }
    Ok(())
}
