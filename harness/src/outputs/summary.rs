//! `dropspec run --summary FILE`: Markdown for a CI job page (`$GITHUB_STEP_SUMMARY`):
//! the totals, each failure and skip with its reasons, and a table of the drops each
//! scenario saw (folded, so a long suite stays readable).

use std::fmt::Write as _;

use super::{ScenarioResult, Totals};
use crate::verdict::Verdict;

pub fn render(results: &[ScenarioResult]) -> String {
    let totals = Totals::of(results);
    let kernel = results
        .iter()
        .find_map(|r| r.report.as_ref())
        .map(|r| format!(" on kernel `{}`", r.kernel))
        .unwrap_or_default();
    let mark = if totals.failed > 0 { "❌" } else { "✅" };
    let mut out = String::new();
    writeln!(out, "## {mark} dropspec: {totals}{kernel}\n").unwrap();

    let failed: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Failed(_)))
        .collect();
    if !failed.is_empty() {
        writeln!(out, "### Failed\n").unwrap();
        for r in failed {
            writeln!(out, "- **{}** (`{}`)", text(&r.name), r.path.display()).unwrap();
            for reason in r.reasons() {
                writeln!(out, "  - {}", indented(&text(&reason), "    ")).unwrap();
            }
            if let Some(diff) = &r.diff {
                // A fence longer than any backtick run in the diff cannot be closed by it.
                let fence = "`".repeat(longest_backtick_run(diff).max(2) + 1);
                writeln!(out, "\n  {fence}diff").unwrap();
                for line in diff.lines() {
                    writeln!(out, "  {line}").unwrap();
                }
                writeln!(out, "  {fence}").unwrap();
            }
        }
        out.push('\n');
    }

    let skipped: Vec<&ScenarioResult> = results
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Skipped(_)))
        .collect();
    if !skipped.is_empty() {
        writeln!(out, "### Skipped\n").unwrap();
        for r in skipped {
            let why = r.reasons().join("; ");
            writeln!(
                out,
                "- **{}**: {}",
                text(&r.name),
                indented(&text(&why), "  ")
            )
            .unwrap();
        }
        out.push('\n');
    }

    writeln!(out, "### Drops per scenario\n").unwrap();
    for r in results {
        let Some(report) = &r.report else { continue };
        let packets: u64 = report.drops.iter().map(|d| d.packets).sum();
        let summary = format!("{} {}: {packets} packet(s) dropped", r.word(), r.name);
        if report.drops.is_empty() {
            writeln!(out, "- {}", text(&summary)).unwrap();
            continue;
        }
        writeln!(out, "<details><summary>{}</summary>\n", html(&summary)).unwrap();
        writeln!(
            out,
            "| host | reason | function | via | protocol | packets | bytes |\n\
             | --- | --- | --- | --- | --- | ---: | ---: |"
        )
        .unwrap();
        for d in &report.drops {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                cell(&d.host),
                cell(&d.reason),
                cell(&d.function),
                d.hook.as_deref().map_or_else(|| "-".to_owned(), cell),
                cell(&d.protocol),
                d.packets,
                d.bytes
            )
            .unwrap();
        }
        writeln!(out, "\n</details>\n").unwrap();
    }
    out
}

/// Free text in Markdown: the characters that would start markup or HTML are escaped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Text inside an HTML element (the `<summary>` line): no Markdown is rendered there.
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A table cell: one line, no unescaped pipe.
fn cell(s: &str) -> String {
    text(&s.replace('\n', " "))
}

/// Later lines of a list item indented so that they stay in the item.
fn indented(s: &str, indent: &str) -> String {
    s.lines().collect::<Vec<_>>().join(&format!("\n{indent}"))
}

fn longest_backtick_run(s: &str) -> usize {
    s.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_failures_skips_and_drop_tables() {
        let md = render(&super::super::tests::sample());
        assert!(
            md.starts_with(
                "## ❌ dropspec: 1 passed, 1 failed, 1 skipped on kernel `6.18.44-test`\n"
            ),
            "{md}"
        );
        assert!(md.contains("### Failed\n\n- **routing/a\"b&lt;c&gt;&amp;d** (`scenarios/routing/a\"b<c>&d.toml`)\n"), "{md}");
        assert!(
            md.contains("  - the report differs from snapshots/x.snap (diff below) \\| a pipe\n"),
            "{md}"
        );
        assert!(
            md.contains("  ```diff\n  -drops: none\n  +drops:\n  ```\n"),
            "{md}"
        );
        assert!(
            md.contains(
                "### Skipped\n\n- **tc/ingress\\_drop**: needs root (run as root, or with sudo)\n"
            ),
            "{md}"
        );
        assert!(md.contains("| server | NETFILTER\\_DROP | nft\\_do\\_chain | ip\\_local\\_deliver | ipv4/icmp | 3 | 252 |"), "{md}");
        assert!(md.contains("<details><summary>passed iptables/input_drop_icmp_nft: 3 packet(s) dropped</summary>"), "{md}");
    }

    #[test]
    fn a_clean_run_has_no_failure_or_skip_sections() {
        let mut results = super::super::tests::sample();
        results.truncate(1);
        let md = render(&results);
        assert!(md.starts_with("## ✅ dropspec: 1 passed, 0 failed, 0 skipped"));
        assert!(!md.contains("### Failed") && !md.contains("### Skipped"));
    }
}
