//! The editor schema: `schema/dropspec-scenario.schema.json` is what the Rust types say
//! (regenerated and compared; `DROPSPEC_BLESS=1` rewrites it), every shipped scenario
//! names it on its first line with the right relative path, and every shipped scenario
//! validates against it.
//!
//! The validation is done by the small walker below, not a JSON-Schema crate: the
//! `jsonschema` crate brings an HTTP client and regex engines for remote `$ref`s and
//! `pattern`s that schemars never emits for these types, while the keywords schemars
//! does emit (`$ref`, `type`, `properties`, `required`, `additionalProperties`,
//! `items`, `anyOf`, `oneOf`, `minimum`, `maximum`, `enum`, `const`) take a page. A
//! keyword the walker does not know fails the test, so a schemars upgrade that starts
//! emitting one cannot make the check vacuous.

use std::path::{Path, PathBuf};

use dropspec::scenario;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn shipped_scenarios() -> Vec<PathBuf> {
    let files = scenario::discover(&root().join("scenarios")).unwrap();
    assert!(files.len() > 10, "found only {} scenarios", files.len());
    files
}

#[test]
fn shipped_schema_is_what_the_types_say() {
    let path = root().join(scenario::SCHEMA_PATH);
    let generated = scenario::schema_json();
    if dropspec::policy::Policy::current().is_ok_and(|p| p.bless) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == generated,
        "{} is not what harness/src/scenario/raw.rs says: a scenario type changed. \
         Rewrite it with DROPSPEC_BLESS=1 cargo test -p dropspec --test schema \
         (or dropspec schema > {}) and review the diff.\n{}",
        path.display(),
        scenario::SCHEMA_PATH,
        similar::TextDiff::from_lines(&shipped, &generated)
            .unified_diff()
            .header("shipped", "generated")
    );
}

#[test]
fn every_scenario_names_the_schema_on_its_first_line() {
    let root = root();
    let mut wrong = Vec::new();
    for file in shipped_scenarios() {
        let text = std::fs::read_to_string(&file).unwrap();
        let want = scenario::schema_line(&file, &root);
        let first = text.lines().next().unwrap_or_default();
        if first != want {
            wrong.push(format!(
                "{}: first line {first:?}, want {want:?}",
                file.display()
            ));
        }
        // The path must lead to the schema from where the file is.
        let relative = want.trim_start_matches("#:schema ");
        assert!(
            file.parent().unwrap().join(relative).is_file(),
            "{}: {relative} does not exist",
            file.display()
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_scenario_validates_against_the_schema() {
    let schema: Value = serde_json::from_str(&scenario::schema_json()).unwrap();
    let mut problems = Vec::new();
    for file in shipped_scenarios() {
        let text = std::fs::read_to_string(&file).unwrap();
        let document: toml::Table = toml::from_str(&text).unwrap();
        let document = serde_json::to_value(document).unwrap();
        let mut found = Vec::new();
        validate(&schema, &schema, &document, "", &mut found);
        problems.extend(
            found
                .into_iter()
                .map(|p| format!("{}: {p}", file.display())),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_validator_refuses_what_the_schema_refuses() {
    let schema: Value = serde_json::from_str(&scenario::schema_json()).unwrap();
    for (text, says) in [
        ("description = 'x'\nsettle_msec = 5", "settle_msec"),
        (
            "description = 'x'\n[[traffic]]\nfrom = 'a'\nto = 'b'",
            "protocol",
        ),
        ("description = 'x'\nsettle_ms = -1", "minimum"),
        (
            "description = 'x'\n[hosts.a]\nforwarding = 'yes'",
            "boolean",
        ),
        ("[hosts.a]", "description"),
    ] {
        let document = serde_json::to_value(toml::from_str::<toml::Table>(text).unwrap()).unwrap();
        let mut found = Vec::new();
        validate(&schema, &schema, &document, "", &mut found);
        assert!(
            found.iter().any(|p| p.contains(says)),
            "{text:?}: expected a problem naming {says}, got {found:?}"
        );
    }
}

/// Checks `value` against `schema`, pushing one line per problem.
fn validate(root: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            problems.push(format!("{at}: not allowed"));
        }
        return;
    };
    for (keyword, rule) in schema {
        match keyword.as_str() {
            "$schema" | "title" | "description" | "default" | "format" | "$defs" => {}
            "$ref" => {
                let name = rule
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .unwrap_or_else(|| panic!("unsupported $ref {rule}"));
                validate(root, &root["$defs"][name], value, at, problems);
            }
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("type {rule}"),
                };
                if !types.iter().any(|t| has_type(value, t)) {
                    problems.push(format!("{at}: {value} is not of type {types:?}"));
                }
            }
            "properties" => {
                if let Some(object) = value.as_object() {
                    for (key, sub) in rule.as_object().unwrap() {
                        if let Some(v) = object.get(key) {
                            validate(root, sub, v, &format!("{at}.{key}"), problems);
                        }
                    }
                }
            }
            "additionalProperties" => {
                if let Some(object) = value.as_object() {
                    let known = schema.get("properties").and_then(Value::as_object);
                    for (key, v) in object {
                        if known.is_some_and(|k| k.contains_key(key)) {
                            continue;
                        }
                        if rule == &Value::Bool(false) {
                            problems.push(format!("{at}: unknown key {key}"));
                        } else {
                            validate(root, rule, v, &format!("{at}.{key}"), problems);
                        }
                    }
                }
            }
            "required" => {
                if let Some(object) = value.as_object() {
                    for key in rule.as_array().unwrap() {
                        let key = key.as_str().unwrap();
                        if !object.contains_key(key) {
                            problems.push(format!("{at}: missing required key {key}"));
                        }
                    }
                }
            }
            "items" => {
                if let Some(items) = value.as_array() {
                    for (i, v) in items.iter().enumerate() {
                        validate(root, rule, v, &format!("{at}[{i}]"), problems);
                    }
                }
            }
            "anyOf" | "oneOf" => {
                let matching = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|sub| {
                        let mut found = Vec::new();
                        validate(root, sub, value, at, &mut found);
                        found.is_empty()
                    })
                    .count();
                let ok = if keyword == "anyOf" {
                    matching >= 1
                } else {
                    matching == 1
                };
                if !ok {
                    problems.push(format!("{at}: {value} matches {matching} of {keyword}"));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(v), Some(limit)) = (value.as_f64(), rule.as_f64()) {
                    if (keyword == "minimum" && v < limit) || (keyword == "maximum" && v > limit) {
                        problems.push(format!("{at}: {v} is beyond {keyword} {limit}"));
                    }
                }
            }
            "enum" => {
                if !rule.as_array().unwrap().contains(value) {
                    problems.push(format!("{at}: {value} is not one of {rule}"));
                }
            }
            "const" => {
                if rule != value {
                    problems.push(format!("{at}: {value} is not {rule}"));
                }
            }
            other => panic!("the schema uses {other}, which this walker does not check: teach it"),
        }
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "null" => value.is_null(),
        _ => panic!("type {t}"),
    }
}
