//! The scenario-format reference in README.md, and the findings in docs/, are checked
//! against the real parser: every ```toml block in them must be a valid scenario.

use std::path::Path;

#[test]
fn every_toml_example_in_the_readme_is_a_valid_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut blocks = 0;
    for doc in ["README.md", "docs/kernel-findings.md"] {
        blocks += check_toml_blocks(root, doc);
    }
    assert!(
        blocks >= 10,
        "expected the format reference's and the findings' examples, found {blocks} blocks"
    );
}

/// Parses every ```toml block of `doc` as a scenario; returns how many there were.
fn check_toml_blocks(root: &Path, doc: &str) -> usize {
    let readme = std::fs::read_to_string(root.join(doc)).unwrap();
    let mut blocks = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body
            .find("```")
            .expect("unterminated ```toml block in README.md");
        let text = &body[..end];
        blocks += 1;
        let line = readme[..readme.len() - body.len()].lines().count() + 1;
        dropspec::scenario::parse(text, Path::new(doc), "readme", &root.join("fixtures"))
            .unwrap_or_else(|e| panic!("{doc} block starting at line {line}: {e}"));
        rest = &body[end + 3..];
    }
    blocks
}

/// The ```toml blocks of README.md, parsed as plain TOML.
fn readme_blocks() -> Vec<toml::Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    readme
        .split("```toml\n")
        .skip(1)
        .map(|body| {
            let text = &body[..body.find("```").expect("unterminated ```toml block")];
            toml::Value::Table(
                text.parse::<toml::Table>()
                    .unwrap_or_else(|e| panic!("README.md block: {e}\n{text}")),
            )
        })
        .collect()
}

/// The values at `path` in one block: a table key goes down a level, an array of
/// tables is searched entry by entry, and `*` takes every value of a table.
fn values<'a>(value: &'a toml::Value, path: &[&str]) -> Vec<&'a toml::Value> {
    let Some((first, rest)) = path.split_first() else {
        return vec![value];
    };
    match value {
        toml::Value::Array(items) => items.iter().flat_map(|v| values(v, path)).collect(),
        toml::Value::Table(table) if *first == "*" => {
            table.values().flat_map(|v| values(v, rest)).collect()
        }
        toml::Value::Table(table) => table
            .get(*first)
            .map(|v| values(v, rest))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn has(block: &toml::Value, path: &[&str]) -> bool {
    !values(block, path).is_empty()
}

fn has_str(block: &toml::Value, path: &[&str], wanted: impl Fn(&str) -> bool) -> bool {
    values(block, path)
        .iter()
        .any(|v| v.as_str().is_some_and(&wanted))
}

/// Issue 11's "written from the README alone": each measured feature keeps an example
/// block in README.md that a new user can copy, so the README cannot silently lose it.
#[test]
fn the_readme_keeps_an_example_of_every_measured_feature() {
    let blocks = readme_blocks();
    type Check = fn(&toml::Value) -> bool;
    let features: &[(&str, Check)] = &[
        ("route types blackhole/unreachable/prohibit/throw", |b| {
            ["blackhole", "unreachable", "prohibit", "throw"]
                .iter()
                .all(|t| has_str(b, &["hosts", "*", "routes", "type"], |v| v == *t))
        }),
        ("IPv6 routes", |b| {
            has_str(b, &["hosts", "*", "routes", "to"], |v| v.contains(':'))
        }),
        ("per-end MTU", |b| {
            has(b, &["links", "a", "mtu"]) || has(b, &["links", "b", "mtu"])
        }),
        ("IPv6 traffic", |b| {
            has_str(b, &["traffic", "family"], |v| v == "ipv6")
        }),
        (
            "quiet IPv6 forwarding (a forwarding host on addr6 links)",
            |b| has(b, &["hosts", "*", "forwarding"]) && has(b, &["links", "a", "addr6"]),
        ),
        (
            "fragments (fragment_size, fragments_sent, fragments)",
            |b| {
                has(b, &["packets", "fragment_size"])
                    && has(b, &["packets", "fragments_sent"])
                    && has(b, &["packets", "fragments", "offset"])
            },
        ),
        ("payload and DF (payload, dont_fragment)", |b| {
            has(b, &["traffic", "payload"]) && has(b, &["traffic", "dont_fragment"])
        }),
        (
            "qdisc fault with static IPv4 neighbours and qdisc counters",
            |b| {
                has(b, &["faults", "qdisc", "kind"])
                    && has(b, &["links", "a", "neighbours", "addr"])
                    && has_str(b, &["expect", "counters", "counter"], |v| {
                        v.starts_with("qdisc/")
                    })
            },
        ),
        ("martian crafted source", |b| {
            has_str(b, &["packets", "source"], |v| {
                v.parse::<std::net::IpAddr>()
                    .is_ok_and(|a| a.is_loopback() || a.is_multicast() || a.is_unspecified())
            })
        }),
        ("listener backlog", |b| has(b, &["traffic", "backlog"])),
        ("syncookies by the host's sysctl", |b| {
            has(b, &["hosts", "*", "sysctls", "net.ipv4.tcp_syncookies"])
        }),
        (
            "TTL / hop-limit expiry for both families, counted as errors",
            |b| {
                has(b, &["traffic", "ttl"])
                    && has_str(b, &["traffic", "family"], |v| v == "ipv6")
                    && has(b, &["traffic", "expect", "errors"])
                    && has_str(b, &["expect", "causes", "cause"], |v| v == "ttl_expired")
            },
        ),
        ("crafted TTL", |b| has(b, &["packets", "ttl"])),
        ("cause and counter expectations", |b| {
            has(b, &["expect", "causes", "cause"]) && has(b, &["expect", "counters", "delta"])
        }),
        ("a run step", |b| has(b, &["steps", "run", "command"])),
    ];
    let missing: Vec<&str> = features
        .iter()
        .filter(|(_, check)| !blocks.iter().any(check))
        .map(|(name, _)| *name)
        .collect();
    assert!(
        missing.is_empty(),
        "README.md has no ```toml example block for: {}",
        missing.join("; ")
    );
}
