//! Kernel symbol addresses (/proc/kallsyms), to name the function a drop happened in.
//!
//! The probe records the return address kfree_skb was called from; the function is the
//! text symbol with the greatest address not above it. Addresses are randomised per
//! boot (KASLR), so they are always read from the running kernel.

use super::KernelError;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub const PROC_KALLSYMS: &str = "/proc/kallsyms";

/// Text symbols sorted by address. Names live in one buffer: /proc/kallsyms has over
/// 100,000 lines and this is kept for the whole process.
pub struct Kallsyms {
    /// (address, start of name in `names`, name length | tag << 16), sorted by address.
    /// The tag is the index in `tags` of the `[module]` the symbol was listed with, plus
    /// one (0: the kernel image), packed beside the length (at most 512 bytes).
    symbols: Vec<(u64, u32, u32)>,
    names: String,
    /// The `[module]` tags met (a module's name, `bpf`, `__builtin__ftrace` ...).
    tags: Vec<String>,
    /// Lowest and highest address of a symbol of the kernel image itself (no `[module]`
    /// tag): those never move, whatever modules are loaded or unloaded later.
    core: Option<(u64, u64)>,
}

impl Kallsyms {
    /// Reads /proc/kallsyms (about 50 ms). Without root every address reads as zero.
    pub fn from_proc() -> Result<Kallsyms, KernelError> {
        let path = Path::new(PROC_KALLSYMS);
        let bytes = super::read_file(path)?;
        let kallsyms = Kallsyms::parse(&String::from_utf8_lossy(&bytes));
        if kallsyms.symbols.last().is_none_or(|&(addr, ..)| addr == 0) {
            return Err(KernelError::KallsymsHidden {
                path: path.to_owned(),
            });
        }
        Ok(kallsyms)
    }

    /// [`Kallsyms::from_proc`], but read once per process and shared: again only when
    /// the loaded modules (/proc/modules: name and address) have changed since. Checking
    /// a scenario's function names before a run and naming its drops after it read the
    /// same file, which takes 40-120 ms here and seconds in a TCG guest.
    pub fn shared_from_proc() -> Result<Arc<Kallsyms>, KernelError> {
        let kallsyms = Self::shared_names()?;
        if kallsyms.symbols.last().is_none_or(|&(addr, ..)| addr == 0) {
            return Err(KernelError::KallsymsHidden {
                path: Path::new(PROC_KALLSYMS).to_owned(),
            });
        }
        Ok(kallsyms)
    }

    /// The shared read of [`Kallsyms::shared_from_proc`], addresses hidden or not (the
    /// names are readable without root).
    pub fn shared_names() -> Result<Arc<Kallsyms>, KernelError> {
        static LAST: Mutex<Option<(String, Arc<Kallsyms>)>> = Mutex::new(None);
        let modules = module_key(&std::fs::read_to_string("/proc/modules").unwrap_or_default());
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((key, kallsyms)) = last.as_ref() {
            if *key == modules {
                return Ok(kallsyms.clone());
            }
        }
        let kallsyms = crate::spans::span("kallsyms read", || {
            let bytes = super::read_file(Path::new(PROC_KALLSYMS))?;
            let text = String::from_utf8_lossy(&bytes);
            // vmlinux's symbols, kept for the next process of this boot.
            super::kallsyms_boot::save(&text);
            Ok::<_, KernelError>(Arc::new(Kallsyms::parse(&text)))
        })?;
        *last = Some((modules, kallsyms.clone()));
        Ok(kallsyms)
    }

    /// Parses `address type name [module]` lines, keeping text symbols (t, T, w, W).
    /// Lines that do not parse are skipped: the file is the kernel's, not user input.
    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols = Vec::with_capacity(text.len() / 40);
        let mut names = String::with_capacity(text.len() / 2);
        let mut core: Option<(u64, u64)> = None;
        let mut tags: Vec<String> = Vec::new();
        // Byte-wise on purpose: 120,000 lines, and tests run unoptimised builds.
        for line in text.as_bytes().split(|&b| b == b'\n') {
            // `ffffffff81f62a50 T nft_do_chain` or `... t name\t[module]`
            let Some(space) = line.iter().position(|&b| b == b' ') else {
                continue;
            };
            let (Some(&kind), Some(b' ')) = (line.get(space + 1), line.get(space + 2)) else {
                continue;
            };
            if !matches!(kind, b't' | b'T' | b'w' | b'W') {
                continue;
            }
            let rest = &line[space + 3..];
            let name = &rest[..rest
                .iter()
                .position(|&b| b == b'\t' || b == b' ')
                .unwrap_or(rest.len())];
            let (Some(addr), Ok(name)) = (parse_hex(&line[..space]), std::str::from_utf8(name))
            else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            if name.len() > 0xffff {
                continue;
            }
            // `name\t[module]`: modules, BPF programs, ftrace and kprobe pages.
            let tag = rest[name.len()..]
                .strip_prefix(b"\t[")
                .and_then(|t| t.strip_suffix(b"]"))
                .and_then(|t| std::str::from_utf8(t).ok());
            let tag = match tag {
                None => {
                    core = Some(core.map_or((addr, addr), |(lo, hi)| (lo.min(addr), hi.max(addr))));
                    0
                }
                Some(tag) => match tags.iter().position(|t| t == tag) {
                    Some(i) => i + 1,
                    None if tags.len() < 0xfffe => {
                        tags.push(tag.to_owned());
                        tags.len()
                    }
                    None => continue,
                },
            };
            symbols.push((
                addr,
                names.len() as u32,
                name.len() as u32 | (tag as u32) << 16,
            ));
            names.push_str(name);
        }
        // Stable: of several names at one address, the last listed wins (see function_at).
        symbols.sort_by_key(|&(addr, ..)| addr);
        Kallsyms {
            symbols,
            names,
            tags,
            core,
        }
    }

    /// The `[module]` tag of the symbol containing `addr` (a module's name, `bpf` ...);
    /// None in the kernel image or below the first symbol.
    pub fn module_at(&self, addr: u64) -> Option<&str> {
        let index = self
            .symbols
            .partition_point(|&(a, ..)| a <= addr)
            .checked_sub(1)?;
        let tag = (self.symbols[index].2 >> 16) as usize;
        tag.checked_sub(1).map(|i| self.tags[i].as_str())
    }

    /// Whether `addr` lies among the kernel image's own symbols (from its first to its
    /// last), where [`Kallsyms::function_at`] stays right after modules are loaded or
    /// unloaded: they live elsewhere (above the image on x86-64, below it on arm64).
    /// Past the image's last symbol is not counted: a module may sit there.
    pub fn in_core(&self, addr: u64) -> bool {
        self.core.is_some_and(|(lo, hi)| (lo..=hi).contains(&addr))
    }

    /// Its table: (address, start of name, length) sorted by address, and the names.
    pub(crate) fn parts(&self) -> (&[(u64, u32, u32)], &str) {
        (&self.symbols, &self.names)
    }

    /// A table from [`Kallsyms::parts`] of another; None unless it is one (sorted,
    /// every name inside `names`).
    pub(crate) fn from_parts(symbols: Vec<(u64, u32, u32)>, names: String) -> Option<Kallsyms> {
        let sorted = symbols.windows(2).all(|w| w[0].0 <= w[1].0);
        // The kernel image's symbols only: no `[module]` tag packed beside a length.
        let inside = symbols.iter().all(|&(_, at, len)| {
            len <= 0xffff
                && names.is_char_boundary(at as usize)
                && (at as usize)
                    .checked_add(len as usize)
                    .is_some_and(|end| end <= names.len() && names.is_char_boundary(end))
        });
        let core = symbols
            .first()
            .zip(symbols.last())
            .map(|(lo, hi)| (lo.0, hi.0));
        (sorted && inside).then_some(Kallsyms {
            symbols,
            names,
            tags: Vec::new(),
            core,
        })
    }

    /// Every function name, in address order (names are readable without root).
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.symbols
            .iter()
            .map(|&(_, at, len)| &self.names[at as usize..(at + (len & 0xffff)) as usize])
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// Name of the function containing `addr` (no offset), None below the first symbol.
    pub fn function_at(&self, addr: u64) -> Option<&str> {
        let index = self
            .symbols
            .partition_point(|&(a, ..)| a <= addr)
            .checked_sub(1)?;
        let (_, start, len) = self.symbols[index];
        let len = len & 0xffff;
        Some(&self.names[start as usize..(start + len) as usize])
    }
}

/// Name and load address of each module in /proc/modules text (reference counts left
/// out: they change with every rule), one per line.
fn module_key(text: &str) -> String {
    let mut modules: Vec<String> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some(format!("{} {}", fields.first()?, fields.get(5)?))
        })
        .collect();
    modules.sort();
    modules.join("\n")
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        Some(acc << 4 | u64::from((d as char).to_digit(16)?))
    })
}

impl std::str::FromStr for Kallsyms {
    type Err = std::convert::Infallible;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Kallsyms::parse(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCERPT: &str = include_str!("../../../fixtures/kernel/6.18.44-fc-v595/kallsyms.excerpt");

    #[test]
    fn finds_the_containing_function() {
        let k: Kallsyms = EXCERPT.parse().unwrap();
        // Data symbols (D, R) are not candidates.
        assert_eq!(k.len(), 78);
        assert_eq!(k.function_at(0xffffffff81f62a50), Some("nft_do_chain"));
        assert_eq!(k.function_at(0xffffffff81f62c3e), Some("nft_do_chain"));
        assert_eq!(
            k.function_at(0xffffffff81f63060),
            Some("__pfx_nf_tables_core_module_exit")
        );
        assert_eq!(
            k.function_at(0xffffffff81e425c4),
            Some("sk_skb_reason_drop")
        );
        assert_eq!(k.function_at(0xffffffff81000000), Some("_text"));
        // A [module] symbol: the module name is not part of the function name.
        assert_eq!(k.function_at(0xffffffffc0203010), Some("ftrace_trampoline"));
        assert_eq!(k.function_at(0x1000), None);
        assert!(k.in_core(0xffffffff81f62c3e));
        assert!(!k.in_core(0xffffffffc0203010));
        assert!(!k.in_core(0x1000));
        assert_eq!(k.module_at(0xffffffffc0203010), Some("__builtin__ftrace"));
        assert_eq!(k.module_at(0xffffffff81f62c3e), None);
        let m = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffffc0001000 t nft_do_chain\t[nf_tables]\nffffffffc0002000 t f\t[bpf]\n",
        );
        assert_eq!(m.module_at(0xffffffffc0001010), Some("nf_tables"));
        assert_eq!(m.function_at(0xffffffffc0001010), Some("nft_do_chain"));
        assert_eq!(m.module_at(0xffffffffc0002010), Some("bpf"));
        assert_eq!(
            m.names().collect::<Vec<_>>(),
            ["_stext", "nft_do_chain", "f"]
        );
    }

    #[test]
    fn skips_lines_it_cannot_read() {
        let k =
            Kallsyms::parse("garbage\nzz T nope\nffffffff81000010 T ok\nffffffff81000020 T \n\n");
        assert_eq!(k.len(), 1);
        assert_eq!(k.function_at(u64::MAX), Some("ok"));
    }
}
