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
