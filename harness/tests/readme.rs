//! The scenario-format reference in README.md is checked against the real parser: every
//! ```toml block in it must be a valid scenario.

use std::path::Path;

#[test]
fn every_toml_example_in_the_readme_is_a_valid_scenario() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
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
        dropspec::scenario::parse(
            text,
            Path::new("README.md"),
            "readme",
            &root.join("fixtures"),
        )
        .unwrap_or_else(|e| panic!("README.md block starting at line {line}: {e}"));
        rest = &body[end + 3..];
    }
    assert!(
        blocks >= 5,
        "expected the format reference's examples, found {blocks} blocks"
    );
}
