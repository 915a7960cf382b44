//! tracefs: where it is mounted, and the format files that describe tracepoint records.
//!
//! A classic tracepoint program receives the raw record, whose layout changes between
//! kernels (skb:kfree_skb gained `rx_sk` at offset 24 around 6.12, pushing `protocol`
//! and `reason` down). The format file is the kernel's own description, so field
//! offsets are always read from it, never assumed.

use super::KernelError;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tracefs mount point the kernel documents; debugfs's tracing/ is the old one.
pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// The tracefs root, mounting tracefs at [`TRACEFS`] first if it is mounted nowhere
/// (fresh VMs and containers often have the empty directory only). Mounting needs root.
pub fn tracefs_root() -> Result<PathBuf, KernelError> {
    for root in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    nix::mount::mount(
        Some("nodev"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| KernelError::TracefsMount {
        path: PathBuf::from(TRACEFS),
        error: Arc::new(std::io::Error::from(errno)),
    })?;
    Ok(PathBuf::from(TRACEFS))
}

/// One `field:` line of a format file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    /// The C declaration without the name, e.g. `void *` or `enum skb_drop_reason`.
    pub c_type: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `events/<category>/<name>/format` file.
#[derive(Debug, Clone)]
pub struct TracepointFormat {
    pub name: String,
    pub id: u32,
    /// Common fields (`common_pid`, ...) first, then the event's own, in file order.
    pub fields: Vec<Field>,
    /// The text after `print fmt: `, which holds `__print_symbolic` name tables.
    pub print_fmt: String,
}

impl TracepointFormat {
    /// Reads `<root>/events/<category>/<name>/format`.
    pub fn read(root: &Path, category: &str, name: &str) -> Result<Self, KernelError> {
        let path = root.join("events").join(category).join(name).join("format");
        let bytes = super::read_file(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        Self::parse(&text).map_err(|detail| KernelError::Format { path, detail })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        let mut print_fmt = None;
        for line in text.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("name:") {
                name = Some(rest.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("ID:") {
                id = Some(
                    rest.trim()
                        .parse()
                        .map_err(|_| format!("bad ID line `{line}`"))?,
                );
            } else if line.starts_with("field:") {
                fields.push(parse_field(line).ok_or_else(|| format!("bad field line `{line}`"))?);
            } else if let Some(rest) = line.strip_prefix("print fmt:") {
                print_fmt = Some(rest.trim().to_owned());
            }
        }
        Ok(TracepointFormat {
            name: name.ok_or("no `name:` line")?,
            id: id.ok_or("no `ID:` line")?,
            fields,
            print_fmt: print_fmt.unwrap_or_default(),
        })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The `{ value, "NAME" }` table of `__print_symbolic(REC-><field>, ...)`, in file
    /// order. Entries whose value is not a number (an enum tracefs could not resolve)
    /// are left out.
    pub fn print_symbolic(&self, field: &str) -> Option<Vec<(u64, String)>> {
        let start = self
            .print_fmt
            .find(&format!("__print_symbolic(REC->{field},"))?;
        let mut rest = &self.print_fmt[start..];
        rest = &rest[rest.find(',')? + 1..];
        let mut table = Vec::new();
        loop {
            rest = rest.trim_start_matches([' ', ',', '\t']);
            let Some(body) = rest.strip_prefix('{') else {
                break;
            };
            let close = body.find('}')?;
            let (value, label) = body[..close].split_once(',')?;
            let label = label.trim().strip_prefix('"')?.strip_suffix('"')?;
            if let Some(value) = parse_number(value.trim()) {
                table.push((value, label.to_owned()));
            }
            rest = &body[close + 1..];
        }
        Some(table)
    }
}

fn parse_number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `field:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<Field> {
    let mut parts = line.split(';').map(str::trim);
    let decl = parts.next()?.strip_prefix("field:")?.trim();
    let mut number = |key: &str| -> Option<u32> { parts.next()?.strip_prefix(key)?.parse().ok() };
    let offset = number("offset:")?;
    let size = number("size:")?;
    let signed = number("signed:")? != 0;
    // The name is the last identifier, after any array suffix is cut: `char comm[16]`.
    let decl = decl.split('[').next()?.trim_end();
    let split = decl.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))? + 1;
    let (c_type, name) = decl.split_at(split);
    if name.is_empty() {
        return None;
    }
    Some(Field {
        name: name.to_owned(),
        c_type: c_type.trim().to_owned(),
        offset,
        size,
        signed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same event as printed by kernels before ~6.12 (no rx_sk), written by hand
    /// in that layout; the saved 6.18 file is tested in `probes.rs` and `reasons.rs`.
    const PRE_RX_SK: &str = "name: kfree_skb\nID: 1480\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
        \tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
        \tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\
        \tfield:unsigned short protocol;\toffset:24;\tsize:2;\tsigned:0;\n\
        \tfield:enum skb_drop_reason reason;\toffset:28;\tsize:4;\tsigned:0;\n\n\
        print fmt: \"skbaddr=%p protocol=%u location=%p reason: %s\", REC->skbaddr, \
        REC->protocol, REC->location, __print_symbolic(REC->reason, { 1, \"CONSUMED\" }, \
        { 0x2, \"NOT_SPECIFIED\" }, { SKB_DROP_REASON_WEIRD, \"WEIRD\" }, { 7, \"NETFILTER_DROP\" })\n";

    #[test]
    fn parses_fields_without_rx_sk() {
        let f = TracepointFormat::parse(PRE_RX_SK).unwrap();
        assert_eq!(f.name, "kfree_skb");
        assert_eq!(f.id, 1480);
        assert_eq!(
            f.field("reason"),
            Some(&Field {
                name: "reason".into(),
                c_type: "enum skb_drop_reason".into(),
                offset: 28,
                size: 4,
                signed: false
            })
        );
        assert_eq!(f.field("skbaddr").unwrap().c_type, "void *");
        assert!(f.field("common_pid").unwrap().signed);
        assert!(f.field("rx_sk").is_none());
        assert_eq!(
            f.print_symbolic("reason").unwrap(),
            vec![
                (1, "CONSUMED".to_owned()),
                (2, "NOT_SPECIFIED".to_owned()),
                (7, "NETFILTER_DROP".to_owned())
            ]
        );
        assert!(f.print_symbolic("protocol").is_none());
    }

    #[test]
    fn parses_array_fields_and_rejects_junk() {
        let field = parse_field("field:char comm[16];\toffset:8;\tsize:16;\tsigned:0;").unwrap();
        assert_eq!(
            (field.name.as_str(), field.c_type.as_str()),
            ("comm", "char")
        );
        assert!(parse_field("field:int x;\toffset:;\tsize:4;\tsigned:0;").is_none());
        assert!(TracepointFormat::parse("hello").is_err());
    }
}
