//! `[[faults]] command`: one allowed program (`scenario::validate::command`) run inside
//! the host's namespace without a shell; a non-zero exit fails the run with its stderr,
//! and what it printed goes into the report's printed text.

use super::{indent, FaultError};
use crate::topology::Netns;
use std::io;

/// At most this many lines of a command's output go into the report.
const MAX_LINES: usize = 20;

/// The Debian package that installs each allowed program.
fn package(program: &str) -> &'static str {
    match program {
        "ip" | "tc" | "bridge" => "iproute2",
        "nft" => "nftables",
        "ethtool" => "ethtool",
        "conntrack" => "conntrack",
        _ => "iptables",
    }
}

/// Runs `argv` in `netns`; returns the report's lines: `command on HOST: ARGV: exit 0`
/// and the output (trimmed, at most [`MAX_LINES`]).
pub(super) fn run(netns: &Netns, argv: &[String], origin: &str) -> Result<Vec<String>, FaultError> {
    let host = netns.label().to_owned();
    let line = argv.join(" ");
    // The validator allows only the programs of its list: a static name for the errors.
    let tool: &'static str = crate::scenario::COMMAND_PROGRAMS
        .iter()
        .find(|p| **p == argv[0])
        .copied()
        .unwrap_or("command");
    let output = netns
        .run(|| {
            crate::forks::output(
                std::process::Command::new(&argv[0])
                    .args(&argv[1..])
                    .env("LC_ALL", "C")
                    .stdin(std::process::Stdio::null()),
            )
        })
        .map_err(io::Error::other)
        .and_then(|out| out)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                FaultError::ToolMissing {
                    origin: origin.to_owned(),
                    host: host.clone(),
                    tool,
                    package: package(tool),
                    source,
                }
            } else {
                FaultError::Spawn {
                    origin: origin.to_owned(),
                    host: host.clone(),
                    tool,
                    source,
                }
            }
        })?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr)
            .trim_end()
            .to_owned();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout)
                .trim_end()
                .to_owned();
        }
        return Err(FaultError::CommandFailed {
            origin: origin.to_owned(),
            host,
            command: line,
            status: output.status,
            output: indent(&message),
        });
    }
    let code = output.status.code().unwrap_or(0);
    let mut lines = vec![format!("command on {host}: {line}: exit {code}")];
    let stdout = String::from_utf8_lossy(&output.stdout);
    let printed: Vec<&str> = stdout.trim().lines().collect();
    for l in printed.iter().take(MAX_LINES) {
        lines.push(format!("  {l}"));
    }
    if printed.len() > MAX_LINES {
        lines.push(format!("  ({} more lines)", printed.len() - MAX_LINES));
    }
    Ok(lines)
}
