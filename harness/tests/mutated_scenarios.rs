//! Mutated scenario files never make the loader panic: every file in `scenarios/` is cut,
//! spliced and sprinkled with TOML tokens and awkward values, then parsed and (when it
//! still parses) name-checked. Whatever comes out must be a scenario or errors that
//! point inside the text.
//!
//! Bounded to run in a few seconds in `cargo test`; run it longer with
//! `PROPTEST_CASES=100000 cargo test -p dropspec --test mutated_scenarios` (about 30 s).

use std::path::{Path, PathBuf};

use dropspec::scenario::{self, names::KnownNames};
use proptest::prelude::*;

/// Cases per `cargo test` run unless PROPTEST_CASES says otherwise.
const DEFAULT_CASES: u32 = 5000;

/// Pieces a person (or a bad merge) might leave in a scenario file.
const TOKENS: &[&str] = &[
    "=",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    ",",
    "\"",
    "'",
    "\n",
    "#",
    ".",
    " = ",
    "\"\"\"",
    "99999999999999999999",
    "-1",
    "0",
    "1.5",
    "65536",
    "true",
    "\"x\"",
    "[]",
    "{}",
    "inf",
    "nan",
    "1979-05-27",
    "é",
    "\u{0}",
    "\u{feff}",
    "[hosts.client]",
    "[[links]]",
    "[[traffic]]",
    "[[packets]]",
    "[[faults]]",
    "[expect]",
    "[[expect.drops]]",
    "[[expect.causes]]",
    "[[expect.hooks]]",
    "[[expect.counters]]",
    "[global_sysctls]",
    "host = \"client\"",
    "host = \"nobody\"",
    "count = 0",
    "reason = \"NETFILTR_DROP\"",
    "function = \"nft_do_chian\"",
    "protocol = 300",
    "addr = \"198.18.0.1/33\"",
    "addr6 = \"2001:db8::1/64\"",
    "since_kernel = \"6\"",
    "dev = \"eth9\"",
    "tc_drop = { dev = \"eth0\" }",
    "nft_file = \"../x\"",
    "description = \"d\"",
    "settle_ms = 99999",
];

#[derive(Debug, Clone)]
enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, token: usize },
    Replace { at: usize, byte: u8 },
    DuplicateLine { line: usize },
    SwapLines { a: usize, b: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(text: &mut Vec<u8>, m: &Mutation) {
    let len = text.len().max(1);
    match *m {
        Mutation::Delete { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(text.len());
            text.drain(at.min(end)..end);
        }
        Mutation::Insert { at, token } => {
            let at = at % (text.len() + 1);
            text.splice(at..at, TOKENS[token].bytes());
        }
        Mutation::Replace { at, byte } => {
            if !text.is_empty() {
                let at = at % text.len();
                text[at] = byte;
            }
        }
        Mutation::DuplicateLine { line } | Mutation::SwapLines { a: line, .. }
            if text.is_empty() =>
        {
            let _ = line;
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let i = line % lines.len();
            lines.insert(i, lines[i].clone());
            *text = lines.join(&b'\n');
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            *text = lines.join(&b'\n');
        }
        Mutation::Truncate { at } => text.truncate(at % len),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn corpus() -> Vec<(String, String)> {
    let scenarios = root().join("scenarios");
    scenario::discover(&scenarios)
        .unwrap()
        .into_iter()
        .map(|p| {
            let name = scenario::scenario_name(&p, &scenarios);
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// A kernel that knows a few names, so the names check runs on what parses.
fn known() -> KnownNames {
    let set = |names: &[&str]| Some(names.iter().map(|n| n.to_string()).collect());
    KnownNames {
        release: Some("6.12.0".into()),
        reasons: set(&["NETFILTER_DROP", "NO_SOCKET", "TCP_CSUM"]),
        functions: set(&["nf_hook_slow", "nft_do_chain", "tcp_v4_rcv"]),
        bundled_reasons: [("NETFILTER_DROP".to_owned(), vec!["6.1".to_owned()])].into(),
        counters: set(&["TcpExt.ListenOverflows"]),
        unread_counter_groups: vec!["conntrack".to_owned()],
    }
}

#[test]
fn mutated_scenarios() {
    let corpus = corpus();
    assert!(!corpus.is_empty());
    let known = known();
    let fixtures = root().join("fixtures");
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = ProptestConfig {
        cases,
        // Failures are reported with the shrunk input; no files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(which in any::<usize>(), mutations in prop::collection::vec(mutation(), 1..8))| {
        let (name, original) = &corpus[which % corpus.len()];
        let mut bytes = original.clone().into_bytes();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let text = String::from_utf8_lossy(&bytes);
        let lines = text.lines().count().max(1) + 1;
        match scenario::parse(&text, Path::new("mutated.toml"), name, &fixtures) {
            Ok(s) => {
                for e in scenario::names::check(&s, &known) {
                    prop_assert!(e.line >= 1 && e.line <= lines, "{e}");
                }
            }
            Err(errors) => {
                prop_assert!(!errors.0.is_empty());
                for e in &errors.0 {
                    prop_assert!(e.line >= 1 && e.line <= lines && e.column >= 1, "{e}");
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    });
}
