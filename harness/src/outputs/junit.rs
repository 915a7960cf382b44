//! `dropspec run --junit FILE`: one `<testcase>` per scenario, named by its file path,
//! its class the file's directory, so CI test reporters group scenarios by area. A
//! failure's text is the verdict's reasons (and the snapshot diff); a skip is
//! `<skipped message="why"/>`, never a pass. The report goes to `<system-out>`.

use std::fmt::Write as _;
use std::path::Path;

use super::{ScenarioResult, Totals};
use crate::verdict::Verdict;

pub fn render(results: &[ScenarioResult]) -> String {
    let totals = Totals::of(results);
    let time: f64 = results.iter().map(|r| r.time().as_secs_f64()).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\"",
        totals.total(),
        totals.failed,
        totals.skipped
    );
    writeln!(out, "<testsuites name=\"dropspec\" {counts}>").unwrap();
    writeln!(out, "  <testsuite name=\"dropspec run\" {counts}>").unwrap();
    for r in results {
        let path = r.path.display().to_string();
        let class = r
            .path
            .parent()
            .filter(|p| *p != Path::new(""))
            .map_or_else(|| ".".to_owned(), |p| p.display().to_string());
        write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            escape(&path),
            escape(&class),
            r.time().as_secs_f64()
        )
        .unwrap();
        let output = r.report.as_ref().map(|report| report.render(true));
        if matches!(r.verdict, Verdict::Passed) && output.is_none() {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        match &r.verdict {
            Verdict::Passed => {}
            Verdict::Failed(problems) => {
                let mut text = problems
                    .iter()
                    .map(|p| format!("- {p}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                if let Some(diff) = &r.diff {
                    text.push_str("\n\n");
                    text.push_str(diff);
                }
                writeln!(
                    out,
                    "      <failure message=\"{}\" type=\"verdict\">{}</failure>",
                    escape(problems.first().map_or("failed", String::as_str)),
                    escape(&text)
                )
                .unwrap();
            }
            Verdict::Skipped(why) => {
                writeln!(out, "      <skipped message=\"{}\"/>", escape(why)).unwrap();
            }
        }
        if let Some(output) = output {
            writeln!(out, "      <system-out>{}</system-out>", escape(&output)).unwrap();
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// Text for an XML attribute or element: the five special characters as entities,
/// line breaks and tabs kept (as character references in attributes, where a parser
/// would otherwise fold them into spaces), and characters XML 1.0 cannot carry at all
/// (other control characters) as U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' => out.push_str("&#9;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::{Reader, XmlVersion};

    /// (name, attributes, text) of one element.
    type Element = (String, Vec<(String, String)>, String);

    /// (element, its attributes, its text) for every element, in document order; panics
    /// on anything that is not well-formed XML.
    fn parse(xml: &str) -> Vec<Element> {
        let mut reader = Reader::from_str(xml);
        reader.config_mut().check_end_names = true;
        let mut elements: Vec<Element> = Vec::new();
        let mut open: Vec<usize> = Vec::new();
        loop {
            match reader.read_event().expect("well-formed XML") {
                Event::Start(e) => {
                    elements.push(element(&e));
                    open.push(elements.len() - 1);
                }
                Event::Empty(e) => elements.push(element(&e)),
                Event::End(_) => {
                    open.pop().expect("balanced elements");
                }
                Event::Text(t) if open.is_empty() => {
                    assert!(t.xml10_content().trim().is_empty(), "text outside the root")
                }
                Event::Text(t) => {
                    let at = *open.last().expect("text inside an element");
                    elements[at].2.push_str(&t.xml10_content());
                }
                // Since quick-xml 0.38 an entity in text is an event of its own.
                Event::GeneralRef(r) => {
                    let at = *open.last().expect("text inside an element");
                    let text = match r.resolve_char_ref().expect("a valid character reference") {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.xml10_content();
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .unwrap_or_else(|| panic!("undefined entity &{name};"))
                                .to_owned()
                        }
                    };
                    elements[at].2.push_str(&text);
                }
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(open.is_empty(), "unclosed elements");
        elements
    }

    fn element(e: &quick_xml::events::BytesStart<'_>) -> Element {
        let attributes = e
            .attributes()
            .map(|a| {
                let a = a.expect("a well-formed attribute");
                (
                    a.key.as_ref().to_owned(),
                    // Normalised as a parser must (a raw line break becomes a space),
                    // so escaping line breaks is checked too.
                    a.normalized_value(XmlVersion::Implicit1_0)
                        .expect("valid entities")
                        .into_owned(),
                )
            })
            .collect();
        (e.name().as_ref().to_owned(), attributes, String::new())
    }

    fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> &'a str {
        &attributes.iter().find(|(k, _)| k == name).unwrap().1
    }

    #[test]
    fn one_testcase_per_scenario_with_reasons_and_skips() {
        let xml = render(&super::super::tests::sample());
        let elements = parse(&xml);
        let suites = &elements[0];
        assert_eq!(suites.0, "testsuites");
        assert_eq!(attribute(&suites.1, "tests"), "3");
        assert_eq!(attribute(&suites.1, "failures"), "1");
        assert_eq!(attribute(&suites.1, "skipped"), "1");

        let cases: Vec<_> = elements.iter().filter(|e| e.0 == "testcase").collect();
        let names: Vec<&str> = cases.iter().map(|c| attribute(&c.1, "name")).collect();
        assert_eq!(
            names,
            [
                "scenarios/iptables/input_drop_icmp_nft.toml",
                "scenarios/routing/a\"b<c>&d.toml",
                "scenarios/tc/ingress_drop.toml"
            ]
        );
        assert_eq!(attribute(&cases[0].1, "classname"), "scenarios/iptables");
        assert_eq!(attribute(&cases[0].1, "time"), "0.012");

        let failure = elements.iter().find(|e| e.0 == "failure").unwrap();
        assert_eq!(
            attribute(&failure.1, "message"),
            "expected 3 drops of NO_SOCKET at server, saw 0 <none> & \"quoted\""
        );
        assert_eq!(
            failure.2,
            "- expected 3 drops of NO_SOCKET at server, saw 0 <none> & \"quoted\"\n\
             - the report differs from snapshots/x.snap (diff below) | a pipe\n\n\
             -drops: none\n+drops:\n"
        );
        let skipped = elements.iter().find(|e| e.0 == "skipped").unwrap();
        assert_eq!(
            attribute(&skipped.1, "message"),
            "needs root (run as root, or with sudo)"
        );
        assert_eq!(elements.iter().filter(|e| e.0 == "failure").count(), 1);
        let out = elements.iter().find(|e| e.0 == "system-out").unwrap();
        assert!(out.2.contains("NETFILTER_DROP"), "{}", out.2);
    }

    #[test]
    fn control_characters_and_line_breaks_survive_or_are_replaced() {
        assert_eq!(escape("a\nb\u{1}c'"), "a&#10;b\u{FFFD}c&apos;");
        let mut results = super::super::tests::sample();
        results[2].verdict = Verdict::Skipped("line one\nline two\u{7}".into());
        let elements = parse(&render(&results));
        let skipped = elements.iter().find(|e| e.0 == "skipped").unwrap();
        assert_eq!(
            attribute(&skipped.1, "message"),
            "line one\nline two\u{FFFD}"
        );
    }
}
