//! Drop-reason names, as the running kernel numbers them.
//!
//! `enum skb_drop_reason` is renumbered whenever a reason is added in the middle
//! (NETFILTER_DROP is 7 on 6.1 and 12 on 6.18), so numbers are only ever looked up
//! here: from BTF when the kernel has it, else from the `__print_symbolic` table in the
//! skb:kfree_skb tracefs format file. Names drop the `SKB_DROP_REASON_` / `SKB_` prefix,
//! as the tracefs table does: `NETFILTER_DROP`, `NOT_DROPPED_YET`, `CONSUMED`.

use super::btf::{kind, Btf};
use super::tracefs::{self, TracepointFormat};
use super::KernelError;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Where a [`ReasonTable`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReasonSource {
    Btf,
    TracefsFormat,
}

/// Reason number ↔ name for one kernel.
///
/// A kernel before 5.17 has no drop reasons at all: [`ReasonTable::from_running_kernel_or_none`]
/// then gives an empty table that says so ([`ReasonTable::has_reasons`] is false,
/// [`ReasonTable::missing`] says why), and every drop is described as [`NO_REASON`].
/// Checks of reason names against the kernel (a scenario's expectations) ask
/// `has_reasons()` first: on such a kernel no name exists, and none is wrong.
#[derive(Debug, Clone)]
pub struct ReasonTable {
    by_number: BTreeMap<u32, String>,
    by_name: HashMap<String, u32>,
    source: ReasonSource,
    /// Why the kernel has no reasons, for a table of such a kernel.
    missing: Option<String>,
}

/// What a drop's reason is called on a kernel without drop reasons (before 5.17: its
/// kfree_skb tracepoint passes none). Not a kernel name: no kernel has a reason of that
/// name (kernel names are upper-case words; this one could only collide with an
/// `SKB_DROP_REASON_UNAVAILABLE`, which no kernel has).
pub const NO_REASON: &str = "UNAVAILABLE";

/// Values at or above this carry a subsystem id in the upper 16 bits
/// (SKB_DROP_REASON_SUBSYS_SHIFT, 6.8 on): mac80211, openvswitch.
const SUBSYS_SHIFT: u32 = 16;

impl ReasonTable {
    /// BTF first (complete, includes NOT_DROPPED_YET and CONSUMED); the tracefs format
    /// file when the kernel has no BTF.
    /// Errors are the kernel layer's own; `ProbeError` wraps them (`From`).
    pub fn from_running_kernel() -> Result<Self, KernelError> {
        let btf_error = match super::vmlinux::btf() {
            Ok(btf) => match Self::from_parsed_btf(btf) {
                Ok(table) => return Ok(table),
                Err(e) => e,
            },
            Err(e) => e,
        };
        if !btf_error.is_unavailable() {
            return Err(btf_error);
        }
        let root = tracefs::tracefs_root()?;
        let format = TracepointFormat::read(&root, "skb", "kfree_skb")?;
        Self::from_format(&format, root.join("events/skb/kfree_skb/format"))
    }

    /// As [`ReasonTable::from_running_kernel`], but a kernel without drop reasons gives
    /// a table that says so instead of an error.
    pub fn from_running_kernel_or_none() -> Result<Self, KernelError> {
        Self::or_none(Self::from_running_kernel())
    }

    /// As [`ReasonTable::from_parsed_btf`], but BTF without `enum skb_drop_reason`
    /// gives a table that says so instead of an error.
    pub fn from_parsed_btf_or_none(btf: &Btf<'_>) -> Result<Self, KernelError> {
        Self::or_none(Self::from_parsed_btf(btf))
    }

    fn or_none(table: Result<Self, KernelError>) -> Result<Self, KernelError> {
        match table {
            Err(KernelError::NoDropReasons { origin }) => {
                let mut table = Self::from_entries(Vec::new(), ReasonSource::Btf);
                table.missing = Some(format!(
                    "this kernel has no skb drop reasons (no `enum skb_drop_reason` in \
                     {origin}; they came with Linux 5.17): drops are counted and attributed \
                     to their function, with reason {NO_REASON}"
                ));
                Ok(table)
            }
            other => other,
        }
    }

    /// False on a kernel without drop reasons (before 5.17).
    pub fn has_reasons(&self) -> bool {
        self.missing.is_none()
    }

    /// Why this kernel has no drop reasons, when it has none.
    pub fn missing(&self) -> Option<&str> {
        self.missing.as_deref()
    }

    pub fn from_btf(bytes: &[u8]) -> Result<Self, KernelError> {
        Self::from_parsed_btf(&Btf::parse(bytes)?)
    }

    pub fn from_parsed_btf(btf: &Btf<'_>) -> Result<Self, KernelError> {
        let Some(reasons) = btf.find_enum("skb_drop_reason")? else {
            return Err(KernelError::NoDropReasons {
                origin: "the kernel's BTF".into(),
            });
        };
        let mut entries = Vec::new();
        for e in btf.enumerators(&reasons)? {
            let name = e
                .name
                .strip_prefix("SKB_DROP_REASON_")
                .or(e.name.strip_prefix("SKB_"));
            // SUBSYS_MASK is a bit mask kept in the enum, not a reason.
            match (name, u32::try_from(e.value)) {
                (Some("SUBSYS_MASK"), _) | (_, Err(_)) => {}
                (Some(name), Ok(value)) => entries.push((value, name.to_owned())),
                (None, Ok(value)) => entries.push((value, e.name.to_owned())),
            }
        }
        // Subsystem reasons (`enum mac80211_drop_reason`, `enum ovs_drop_reason`), when
        // those are built in, carry their subsystem in the upper bits: names kept whole.
        let enums = btf
            .ids_of_kind(kind::ENUM)
            .chain(btf.ids_of_kind(kind::ENUM64));
        for id in enums {
            let ty = btf.type_by_id(id)?;
            if !ty.name.ends_with("_drop_reason") || ty.name == "skb_drop_reason" {
                continue;
            }
            for e in btf.enumerators(&ty)? {
                if let Ok(value) = u32::try_from(e.value) {
                    if value >> SUBSYS_SHIFT != 0 {
                        entries.push((value, e.name.to_owned()));
                    }
                }
            }
        }
        Ok(Self::from_entries(entries, ReasonSource::Btf))
    }

    /// From the text of `events/skb/kfree_skb/format`.
    pub fn from_tracefs_format(text: &str) -> Result<Self, KernelError> {
        let path = PathBuf::from("skb/kfree_skb/format");
        let format = TracepointFormat::parse(text).map_err(|detail| KernelError::Format {
            path: path.clone(),
            detail,
        })?;
        Self::from_format(&format, path)
    }

    fn from_format(format: &TracepointFormat, path: PathBuf) -> Result<Self, KernelError> {
        if format.field("reason").is_none() {
            return Err(KernelError::NoDropReasons {
                origin: path.display().to_string(),
            });
        }
        let table = format
            .print_symbolic("reason")
            .ok_or_else(|| KernelError::Format {
                path,
                detail: "no __print_symbolic(REC->reason, ...) table in `print fmt`".into(),
            })?;
        let entries = table
            .into_iter()
            .filter_map(|(v, name)| Some((u32::try_from(v).ok()?, name)));
        Ok(Self::from_entries(
            entries.collect(),
            ReasonSource::TracefsFormat,
        ))
    }

    fn from_entries(entries: Vec<(u32, String)>, source: ReasonSource) -> Self {
        let mut by_number = BTreeMap::new();
        let mut by_name = HashMap::new();
        for (value, name) in entries {
            by_name.entry(name.clone()).or_insert(value);
            by_number.entry(value).or_insert(name);
        }
        ReasonTable {
            by_number,
            by_name,
            source,
            missing: None,
        }
    }

    pub fn source(&self) -> ReasonSource {
        self.source
    }

    pub fn name(&self, number: u32) -> Option<&str> {
        self.by_number.get(&number).map(String::as_str)
    }

    pub fn number(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name for any value the probe reports: the kernel's name when it has one,
    /// `SUBSYS_<n>_<hex>` for a subsystem reason this table does not know, else
    /// `UNKNOWN_<n>` (a reason newer than the table, which should not happen).
    pub fn describe(&self, number: u32) -> Cow<'_, str> {
        if !self.has_reasons() {
            return Cow::Borrowed(NO_REASON);
        }
        match self.name(number) {
            Some(name) => Cow::Borrowed(name),
            None if number >> SUBSYS_SHIFT != 0 => Cow::Owned(format!(
                "SUBSYS_{}_{:#x}",
                number >> SUBSYS_SHIFT,
                number & ((1 << SUBSYS_SHIFT) - 1)
            )),
            None => Cow::Owned(format!("UNKNOWN_{number}")),
        }
    }

    /// (number, name), sorted by number.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.by_number.iter().map(|(&n, name)| (n, name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.by_number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_number.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernel::btf::tests::BtfBuilder;
    use std::io::Read;
    use std::path::Path;

    /// Every saved kernel: `fixtures/kernel/<release>/`.
    pub(crate) fn fixture_kernels() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/kernel");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        assert!(!dirs.is_empty(), "no saved kernels in {}", root.display());
        dirs
    }

    pub(crate) fn fixture_btf(dir: &Path) -> Vec<u8> {
        let gz = std::fs::read(dir.join("vmlinux.btf.gz")).unwrap();
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }

    pub(crate) fn fixture_format(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("skb_kfree_skb.format")).unwrap()
    }

    #[test]
    fn btf_and_tracefs_agree_on_every_saved_kernel() {
        for dir in fixture_kernels() {
            let from_btf = ReasonTable::from_btf(&fixture_btf(&dir)).unwrap();
            let from_fmt = ReasonTable::from_tracefs_format(&fixture_format(&dir)).unwrap();
            assert!(
                from_fmt.len() > 50,
                "{}: only {} reasons",
                dir.display(),
                from_fmt.len()
            );
            for (number, name) in from_fmt.iter() {
                assert_eq!(
                    from_btf.name(number),
                    Some(name),
                    "{}: {number}",
                    dir.display()
                );
            }
            // BTF knows the two non-drops; tracefs lists them only on some kernels.
            let extra: Vec<_> = from_btf
                .iter()
                .filter(|(n, _)| from_fmt.name(*n).is_none())
                .collect();
            assert!(
                extra
                    .iter()
                    .all(|(_, name)| ["NOT_DROPPED_YET", "CONSUMED"].contains(name)),
                "{}: only in BTF: {extra:?}",
                dir.display()
            );
            assert!(from_btf.number("NETFILTER_DROP").is_some());
            assert_eq!(from_btf.source(), ReasonSource::Btf);
        }
    }

    #[test]
    fn numbers_of_the_6_18_kernel() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/kernel/6.18.44-fc-v595");
        let t = ReasonTable::from_btf(&fixture_btf(&dir)).unwrap();
        assert_eq!(t.number("NOT_DROPPED_YET"), Some(0));
        assert_eq!(t.number("CONSUMED"), Some(1));
        assert_eq!(t.number("NETFILTER_DROP"), Some(12));
        assert_eq!(t.name(2), Some("NOT_SPECIFIED"));
        assert_eq!(t.number("SUBSYS_MASK"), None);
        assert_eq!(t.iter().next(), Some((0, "NOT_DROPPED_YET")));
        assert_eq!(t.describe(12), "NETFILTER_DROP");
        assert_eq!(t.describe(0x20001), "SUBSYS_2_0x1");
        assert_eq!(t.describe(9999), "UNKNOWN_9999");
    }

    /// Debian's 6.1 and 6.12 (saved from `dropspec vm` guests): the same names, other
    /// numbers, and fewer reasons the older the kernel.
    #[test]
    fn numbers_of_debian_kernels() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/kernel");
        for (release, netfilter_drop, reasons, has_consumed) in [
            ("6.1.0-56-amd64", 7, 67, false),
            ("6.12.117+deb12-amd64", 11, 105, true),
        ] {
            let dir = fixtures.join(release);
            let t = ReasonTable::from_btf(&fixture_btf(&dir)).unwrap();
            assert_eq!(
                t.number("NETFILTER_DROP"),
                Some(netfilter_drop),
                "{release}"
            );
            assert_eq!(t.name(netfilter_drop), Some("NETFILTER_DROP"), "{release}");
            assert_eq!(t.number("NOT_DROPPED_YET"), Some(0), "{release}");
            assert_eq!(t.len(), reasons, "{release}");
            assert_eq!(t.number("CONSUMED").is_some(), has_consumed, "{release}");
            let fmt = ReasonTable::from_tracefs_format(&fixture_format(&dir)).unwrap();
            assert_eq!(
                fmt.number("NETFILTER_DROP"),
                Some(netfilter_drop),
                "{release}"
            );
        }
    }

    #[test]
    fn subsystem_reasons_and_missing_enum() {
        let mut b = BtfBuilder::new();
        b.enum32(
            "skb_drop_reason",
            false,
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_DROP_REASON_NETFILTER_DROP", 7),
            ],
        );
        b.enum32(
            "ovs_drop_reason",
            false,
            &[("OVS_DROP_LAST_ACTION", 0x20001)],
        );
        let t = ReasonTable::from_btf(&b.build()).unwrap();
        assert_eq!(t.number("NETFILTER_DROP"), Some(7));
        assert_eq!(t.describe(0x20001), "OVS_DROP_LAST_ACTION");

        let err = ReasonTable::from_btf(&BtfBuilder::new().build()).unwrap_err();
        assert!(err.is_unavailable());
        assert!(err.to_string().contains("5.17"), "{err}");

        // A kernel before 5.17: an explicit state, not an error, for those who can cope.
        let bytes = BtfBuilder::new().build();
        let none = ReasonTable::from_parsed_btf_or_none(&Btf::parse(&bytes).unwrap()).unwrap();
        assert!(!none.has_reasons());
        assert!(none.is_empty());
        assert!(
            none.missing().unwrap().contains("5.17"),
            "{:?}",
            none.missing()
        );
        assert_eq!(none.describe(0xffff_fffe), NO_REASON);
        assert_eq!(none.number("NETFILTER_DROP"), None);
        assert!(t.has_reasons());
    }
}
