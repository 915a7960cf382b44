//! The first pass: TOML text → the `raw` structs, finding every problem, not the first.
//!
//! serde stops at its first error, so the document is parsed into a spanned TOML tree
//! first (which recovers from syntax errors and reports them all), and each entry —
//! every host, every `[[links]]`, `[[traffic]]`, `[[expect.drops]]`… — is read on its
//! own: a bad entry is reported and the others are still read. serde's messages
//! (``invalid type: integer `7` as i128, expected u32``) are put in the format's words
//! here, naming the key and what it takes.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, Deserializer};
use toml::Spanned;

use super::raw;
use super::validate::{takes, whole};

/// A problem found while reading, at a byte span of the text.
pub(super) struct Problem {
    pub(super) span: Range<usize>,
    pub(super) message: String,
}

type Tree<'i> = Spanned<DeValue<'i>>;

/// Reads the whole file: every problem found, and the entries that could be read when
/// the rest of the file can still be validated without them. Hosts and links are what
/// other entries refer to, so when one of those cannot be read the file is not
/// validated further (its other entries would all seem to name unknown things).
pub(super) fn read(text: &str) -> (Option<raw::ScenarioFile>, Vec<Problem>) {
    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The tree is a guess after a syntax error: report only what the parser saw.
        let mut problems: Vec<Problem> = syntax
            .iter()
            .map(|e| {
                let mut p = plain(text, e);
                if !p.message.starts_with("duplicate key") {
                    p.message = format!("TOML syntax: {}", p.message);
                }
                p
            })
            .collect();
        problems.dedup_by(|a, b| a.span == b.span && a.message == b.message);
        return (None, problems);
    }
    let mut problems = Vec::new();
    let root_span = root.span();
    let mut rest = DeTable::new();
    let mut parts: BTreeMap<String, Tree> = BTreeMap::new();
    for (key, value) in root.into_inner() {
        match key.get_ref().as_ref() {
            "hosts" | "links" | "faults" | "traffic" | "packets" | "expect" => {
                parts.insert(key.get_ref().to_string(), value);
            }
            _ => {
                rest.insert(key, value);
            }
        }
    }
    let file: Option<raw::ScenarioFile> = entry(text, root_span, rest, &mut problems);
    let hosts = parts
        .remove("hosts")
        .map(|v| hosts(text, v, &mut problems))
        .unwrap_or_default();
    let links = list(text, parts.remove("links"), "links", &mut problems);
    let referable = problems.is_empty();
    let faults = list(text, parts.remove("faults"), "faults", &mut problems);
    let traffic = list(text, parts.remove("traffic"), "traffic", &mut problems);
    let packets = list(text, parts.remove("packets"), "packets", &mut problems);
    let expect = parts
        .remove("expect")
        .and_then(|v| expect(text, v, &mut problems))
        .unwrap_or_default();
    let file = file.filter(|_| referable).map(|file| raw::ScenarioFile {
        hosts,
        links,
        faults,
        traffic,
        packets,
        expect,
        ..file
    });
    (file, problems)
}

/// One table read as `T`, or its problem recorded.
fn entry<T: DeserializeOwned>(
    text: &str,
    span: Range<usize>,
    table: DeTable<'_>,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let whole = span.clone();
    T::deserialize(Deserializer::from(Spanned::new(span, table)))
        .map_err(|e| {
            let mut p = plain(text, &e);
            if e.span().is_none() {
                p.span = whole;
            }
            problems.push(p);
        })
        .ok()
}

/// The table inside a value, or a problem saying what was expected.
fn table<'i>(
    value: Tree<'i>,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<(Range<usize>, DeTable<'i>)> {
    let span = value.span();
    match value.into_inner() {
        DeValue::Table(t) => Some((span, t)),
        other => {
            problems.push(Problem {
                span,
                message: format!("{what} must be a table, not {}", found_value(&other)),
            });
            None
        }
    }
}

/// `[[name]]` entries, each read on its own.
fn list<T: DeserializeOwned>(
    text: &str,
    value: Option<Tree<'_>>,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Vec<T> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    let items = match value.into_inner() {
        DeValue::Array(items) => items,
        other => {
            problems.push(Problem {
                span,
                message: format!(
                    "`{name}` must be a list of tables (`[[{name}]]` entries), not {}",
                    found_value(&other)
                ),
            });
            return Vec::new();
        }
    };
    items
        .into_iter()
        .filter_map(|item| {
            let (span, t) = table(item, &format!("each `{name}` entry"), problems)?;
            entry(text, span, t, problems)
        })
        .collect()
}

fn hosts(
    text: &str,
    value: Tree<'_>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<Spanned<String>, raw::Host> {
    let Some((_, hosts)) = table(value, "`hosts`", problems) else {
        return BTreeMap::new();
    };
    let mut read = BTreeMap::new();
    for (name, value) in hosts {
        let Some((span, t)) = table(value, &format!("host `{}`", name.get_ref()), problems) else {
            continue;
        };
        if let Some(host) = entry(text, span, t, problems) {
            read.insert(Spanned::new(name.span(), name.get_ref().to_string()), host);
        }
    }
    read
}

fn expect(text: &str, value: Tree<'_>, problems: &mut Vec<Problem>) -> Option<raw::Expect> {
    let (span, t) = table(value, "`expect`", problems)?;
    let mut rest = DeTable::new();
    let mut lists: BTreeMap<String, Tree> = BTreeMap::new();
    for (key, value) in t {
        match key.get_ref().as_ref() {
            "drops" | "causes" | "counters" | "hooks" => {
                lists.insert(key.get_ref().to_string(), value);
            }
            _ => {
                rest.insert(key, value);
            }
        }
    }
    let scalars: Option<raw::Expect> = entry(text, span, rest, problems);
    let drops = list(text, lists.remove("drops"), "expect.drops", problems);
    let causes = list(text, lists.remove("causes"), "expect.causes", problems);
    let counters = list(text, lists.remove("counters"), "expect.counters", problems);
    let hooks = list(text, lists.remove("hooks"), "expect.hooks", problems);
    Some(raw::Expect {
        drops,
        causes,
        counters,
        hooks,
        ..scalars?
    })
}

fn found_value(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "a number",
        DeValue::Float(_) => "a decimal number",
        DeValue::Boolean(_) => "true or false",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// A toml or serde error in the format's words, at its span.
fn plain(text: &str, error: &toml::de::Error) -> Problem {
    let span = error.span().unwrap_or(0..0);
    let message = error.message().trim_end();
    let message = if message == "duplicate key" {
        let key = text
            .get(span.clone())
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        format!("duplicate key `{key}`: a key may appear once in a table")
    } else if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
    {
        let (found, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
        let key = key_before(text, span.start);
        let wanted = expected_words(key.as_deref(), expected);
        let found = found_words(found);
        match key {
            Some(key) => format!("`{key}` must be {wanted}, not {found}"),
            None => format!("expected {wanted}, not {found}"),
        }
    } else if let Some(rest) = message.strip_prefix("missing field ") {
        format!("this table needs {rest}")
    } else if let Some(rest) = message.strip_prefix("unknown field ") {
        unknown_key(rest)
    } else if message.contains("untagged enum SysctlValue") {
        "a sysctl value is a whole number or a string".to_owned()
    } else if message.contains("untagged enum ProtocolField") {
        "`protocol` is a name (\"udp\", \"tcp\", \"icmp\", \"icmpv6\") or a number from 0 to 255"
            .to_owned()
    } else {
        message.to_owned()
    };
    Problem { span, message }
}

/// "`forwardin`, expected one of `forwarding`, `sysctls`" → a sentence with a suggestion.
fn unknown_key(rest: &str) -> String {
    let (key, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let key = key.trim_matches('`');
    let known: Vec<&str> = expected
        .trim_start_matches("one of ")
        .split(", ")
        // serde names two fields as "`rate` or `burst`".
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim_matches('`'))
        .filter(|k| !k.is_empty())
        .collect();
    let hint = crate::suggest::closest(key, &known)
        .map_or(String::new(), |k| format!(" (did you mean `{k}`?)"));
    if known.is_empty() {
        format!("unknown key `{key}`: this table takes no keys")
    } else {
        format!(
            "unknown key `{key}`{hint}: this table takes {}",
            known.join(", ")
        )
    }
}

/// The key whose value starts at `at`: `count = 9` → `count`.
fn key_before(text: &str, at: usize) -> Option<String> {
    let before = text.get(..at)?;
    let before = before.trim_end().strip_suffix('=')?.trim_end();
    let key: String = before
        .chars()
        .rev()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!key.is_empty()).then(|| key.chars().rev().collect())
}

/// serde's "integer `5` as i128" → "5".
fn found_words(found: &str) -> String {
    let quoted = found.split('`').nth(1);
    if found.starts_with("integer")
        || found.starts_with("floating point")
        || found.starts_with("boolean")
    {
        quoted.unwrap_or(found).to_owned()
    } else if let Some(s) = found.strip_prefix("string ") {
        s.to_owned()
    } else if found == "sequence" {
        "a list".to_owned()
    } else if found == "map" {
        "a table".to_owned()
    } else {
        found.to_owned()
    }
}

/// What a key takes, in the format's words: by key where the validator has a range,
/// else by the Rust type serde expected.
fn expected_words(key: Option<&str>, rust: &str) -> String {
    let numeric = rust.starts_with('u') || rust.starts_with('i');
    match (key, rust) {
        // Expectations count from zero, unbounded.
        (Some("count"), "u64") => "a whole number, 0 or more".to_owned(),
        // A crafted packet may carry TTL 0.
        (Some("ttl"), "u32") => whole(0, 255),
        (Some("ret"), _) => "a negative errno such as -11, or 0".to_owned(),
        (Some(key), _) if numeric && takes(key).is_some() => takes(key).expect("checked"),
        (_, "u8") => whole(0, 255),
        (_, "u16") => whole(0, 65_535),
        (_, "u32") => whole(0, u32::MAX.into()),
        (_, "u64" | "usize") => "a whole number, 0 or more".to_owned(),
        (_, "i32" | "i64") => "a whole number".to_owned(),
        (_, "a string") => "a string in quotes".to_owned(),
        (_, "a boolean") => "true or false".to_owned(),
        (_, "a sequence") => "a list in brackets, [ ... ]".to_owned(),
        (_, s) if s.starts_with("struct ") || s == "a map" => "a table".to_owned(),
        (_, other) => other.to_owned(),
    }
}
