//! `dropspec run --propose`: `[[expect.drops]]` blocks from what a run observed, for the
//! author to review and paste. A proposal is not a verdict: it says what this kernel did,
//! which is what a regression test should pin only once a person agrees it is right.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::{DropRow, Report};

/// One block per (host, reason), its count the sum of the rows; each row it covers is a
/// comment (function, hook, protocol, the innermost stack frames). `function` is offered
/// commented out: it pins the scenario to this kernel's code path, which moves between
/// releases more often than the reason does.
pub fn propose(report: &Report) -> String {
    propose_drops(&report.scenario, &report.kernel, &report.drops)
}

fn propose_drops(scenario: &str, kernel: &str, drops: &[DropRow]) -> String {
    let mut out = format!("# proposed from {scenario} on kernel {kernel}:\n");
    if drops.is_empty() {
        out.push_str(
            "# no drops were seen: nothing to expect (every drop is refused unless expected)\n",
        );
        return out;
    }
    let mut groups: BTreeMap<(&str, &str), Vec<&DropRow>> = BTreeMap::new();
    for row in drops {
        groups
            .entry((&row.host, &row.reason))
            .or_default()
            .push(row);
    }
    for ((host, reason), rows) in groups {
        let count: u64 = rows.iter().map(|r| r.packets).sum();
        out.push('\n');
        for row in &rows {
            let hook = row
                .hook
                .as_deref()
                .map(|h| format!(" via {h}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "# seen: {} packet(s), {} bytes, {} at {}{hook}",
                row.packets, row.bytes, row.protocol, row.function
            );
            if !row.stack.is_empty() {
                let frames: Vec<&str> = row.stack.iter().take(6).map(String::as_str).collect();
                let _ = writeln!(out, "#   stack: {}", frames.join(" <- "));
            }
        }
        out.push_str("[[expect.drops]]\n");
        let _ = writeln!(out, "host = {}", quoted(host));
        let _ = writeln!(out, "reason = {}", quoted(reason));
        if let [only] = rows.as_slice() {
            let _ = writeln!(
                out,
                "# function = {}  # pins this kernel's code path",
                quoted(&only.function)
            );
        }
        let _ = writeln!(out, "count = {count}");
    }
    out
}

fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(host: &str, reason: &str, function: &str, packets: u64) -> DropRow {
        DropRow {
            host: host.into(),
            reason: reason.into(),
            reason_number: 1,
            function: function.into(),
            protocol: "ipv4/icmp".into(),
            hook: Some("ip_local_deliver".into()),
            packets,
            bytes: packets * 84,
            stack: vec!["nft_do_chain".into(), "nf_hook_slow".into()],
        }
    }

    #[test]
    fn proposal_is_a_valid_expectation_block_that_the_report_satisfies() {
        let drops = [
            row("server", "NETFILTER_DROP", "nft_do_chain", 3),
            row("router", "IP_INNOROUTES", "ip_error", 1),
            row("router", "IP_INNOROUTES", "ip_route_input_slow", 2),
        ];
        let text = propose_drops("x", "6.1", &drops);
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let drops = parsed["expect"]["drops"].as_array().unwrap();
        assert_eq!(drops.len(), 2);
        assert_eq!(drops[0]["host"].as_str(), Some("router"));
        assert_eq!(drops[0]["count"].as_integer(), Some(3));
        assert_eq!(drops[1]["reason"].as_str(), Some("NETFILTER_DROP"));
        assert!(text.contains("# function = \"nft_do_chain\""), "{text}");
        assert!(
            text.contains("stack: nft_do_chain <- nf_hook_slow"),
            "{text}"
        );
    }
}
