//! The kernel's own text symbols (vmlinux, not modules), kept per boot in a root-only
//! file, so naming a drop does not cost a read of /proc/kallsyms (80-135 ms here, most
//! of it the kernel formatting 120,000 lines) in every process.
//!
//! What is kept is exact for as long as it is used: vmlinux's text is placed once per
//! boot (KASLR) and never moves, so its symbols are the same in every process of one
//! boot; the file names the boot (`/proc/sys/kernel/random/boot_id`) and is ignored
//! after a reboot. Only the lines /proc/kallsyms gives without a `[module]` tag, between
//! `_stext` and `_etext`, are kept: an address there is named exactly as the live table
//! would name it (modules, BPF programs and trampolines live elsewhere, and the writer
//! checks that none of them falls inside). Any other address (a module's function, a
//! program under test's frame) is named from a live read, as before (`covers`).
//!
//! The file is `/run/dropspec-kallsyms`, mode 0600, written whole under another name
//! (`/run/dropspec-<pid>-kallsyms`, reaped if its writer is killed) and renamed; it is used only if root owns it and nobody else can write or read it.
//! `dropspec cleanup` removes it.

use super::kallsyms::Kallsyms;
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Where the symbols are kept.
pub const PATH: &str = "/run/dropspec-kallsyms";
const MAGIC: &str = "dropspec-kallsyms 1";

/// vmlinux's text symbols and the range they cover.
pub struct KernelText {
    pub kallsyms: Arc<Kallsyms>,
    start: u64,
    end: u64,
}

impl KernelText {
    /// Whether `addr` lies in vmlinux's text, where these symbols name it exactly.
    pub fn covers(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
}

fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

/// The kept symbols of this boot, read once per process; None when there is no valid
/// file (first run of a boot, not root, another boot's file).
pub fn load() -> Option<&'static KernelText> {
    static LOADED: OnceLock<Option<KernelText>> = OnceLock::new();
    LOADED
        .get_or_init(|| crate::spans::span("kallsyms of this boot read", read))
        .as_ref()
}

fn read() -> Option<KernelText> {
    let path = Path::new(PATH);
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.uid() != 0 || meta.mode() & 0o077 != 0 {
        return None;
    }
    // Read as it is parsed: no copy of the whole file is held beside the table.
    let file = std::fs::File::open(path).ok()?;
    decode(
        std::io::BufReader::with_capacity(64 << 10, file),
        &boot_id()?,
    )
}

/// The file's contents, if they are this boot's.
fn decode(mut input: impl BufRead, boot: &str) -> Option<KernelText> {
    // Six header lines, then the table as Kallsyms keeps it: `count` records of
    // (address u64, name start u32, name length u32), little-endian, then the names.
    let mut line = || -> Option<String> {
        let mut text = String::new();
        input.read_line(&mut text).ok()?;
        text.strip_suffix('\n').map(str::to_owned)
    };
    let field = |line: Option<String>, key: &str| -> Option<String> {
        line?
            .strip_prefix(key)?
            .strip_prefix(' ')
            .map(str::to_owned)
    };
    if line()? != MAGIC || field(line(), "boot")? != boot {
        return None;
    }
    let hex = |s: String| u64::from_str_radix(&s, 16).ok();
    let start = hex(field(line(), "start")?)?;
    let end = hex(field(line(), "end")?)?;
    let count: usize = field(line(), "count")?.parse().ok()?;
    let names_len: usize = field(line(), "names")?.parse().ok()?;
    if start >= end {
        return None;
    }
    let word = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut symbols = Vec::with_capacity(count);
    let mut record = [0u8; 16];
    for _ in 0..count {
        input.read_exact(&mut record).ok()?;
        let addr = u64::from(word(&record, 0)) | u64::from(word(&record, 4)) << 32;
        symbols.push((addr, word(&record, 8), word(&record, 12)));
    }
    let mut names = Vec::with_capacity(names_len);
    // One byte more than there should be: a longer file is not ours either.
    input
        .take(names_len as u64 + 1)
        .read_to_end(&mut names)
        .ok()?;
    if names.len() != names_len {
        return None; // cut short, or not ours
    }
    let kallsyms = Kallsyms::from_parts(symbols, String::from_utf8(names).ok()?)?;
    Some(KernelText {
        kallsyms: Arc::new(kallsyms),
        start,
        end,
    })
}

/// Keeps vmlinux's text symbols from the text of a live /proc/kallsyms read, unless a
/// valid file is there already. Best effort: a failure only means the next process
/// reads /proc/kallsyms too.
pub(crate) fn save(live: &str) {
    if load().is_some() {
        return;
    }
    let Some(boot) = boot_id() else { return };
    let _ = write(live, &boot);
}

fn write(live: &str, boot: &str) -> std::io::Result<()> {
    let Some(out) = encode(live, boot) else {
        return Ok(());
    };
    // `dropspec-<pid>-…`: if this process is killed before the rename, the next
    // entry point's reap removes it (`cleanup::reap_before_run` reaps /run too).
    let temporary = format!("/run/dropspec-{}-kallsyms", std::process::id());
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)?;
    let written = file.write_all(&out).and_then(|()| file.sync_data());
    drop(file);
    match written.and_then(|()| std::fs::rename(&temporary, PATH)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            Err(e)
        }
    }
}

/// The file's contents for a live /proc/kallsyms text; None when it has no usable
/// `_stext`/`_etext` (addresses hidden) or something else lies inside vmlinux's text.
fn encode(live: &str, boot: &str) -> Option<Vec<u8>> {
    let address = |line: &str| {
        line.split(' ')
            .next()
            .and_then(|a| u64::from_str_radix(a, 16).ok())
    };
    let find = |name: &str| {
        live.lines()
            .find(|l| !l.contains('\t') && l.split(' ').nth(2) == Some(name))
            .and_then(address)
    };
    let (start, end) = (find("_stext")?, find("_etext")?);
    if start == 0 || start >= end {
        return None; // addresses hidden
    }
    let mut kept = String::with_capacity(live.len() / 2);
    for line in live.lines() {
        let Some(addr) = address(line) else { continue };
        let text = matches!(line.split(' ').nth(1), Some("t" | "T" | "w" | "W"));
        if line.contains('\t') {
            // A module's, a BPF program's, a trampoline's: never inside vmlinux's text.
            if text && (start..end).contains(&addr) {
                return None;
            }
            continue;
        }
        if text && (start..end).contains(&addr) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let kallsyms = Kallsyms::parse(&kept);
    let (symbols, names) = kallsyms.parts();
    let mut out = format!(
        "{MAGIC}\nboot {boot}\nstart {start:x}\nend {end:x}\ncount {}\nnames {}\n",
        symbols.len(),
        names.len()
    )
    .into_bytes();
    out.reserve(symbols.len() * 16 + names.len());
    for &(addr, at, len) in symbols {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&at.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(names.as_bytes());
    Some(out)
}

/// Removes the file (`dropspec cleanup`); true if there was one.
pub fn remove() -> std::io::Result<bool> {
    match std::fs::remove_file(PATH) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXCERPT: &str = include_str!("../../../fixtures/kernel/6.18.44-fc-v595/kallsyms.excerpt");

    #[test]
    fn kept_symbols_name_vmlinux_text_as_the_live_table_does() {
        // The excerpt lacks _etext: put it past its last vmlinux function.
        let text = format!("{EXCERPT}\nffffffff82200000 T _etext\n");
        let live = Kallsyms::parse(&text);
        let bytes = encode(&text, "boot-a").expect("_stext and _etext are there");
        let kept = decode(&bytes[..], "boot-a").unwrap();
        let mut checked = 0;
        for (addr, ..) in live.parts().0 {
            for a in [*addr, addr + 1] {
                if kept.covers(a) {
                    assert_eq!(kept.kallsyms.function_at(a), live.function_at(a), "{a:#x}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 10, "{checked}");
        // A module's function is not covered: it is named from a live read.
        assert!(!kept.covers(0xffffffffc0203010));
        // Another boot's file, or one cut short, is not used.
        assert!(decode(&bytes[..], "boot-b").is_none());
        assert!(decode(&bytes[..bytes.len() - 1], "boot-a").is_none());
        let mut longer = bytes.clone();
        longer.push(b'x');
        assert!(decode(&longer[..], "boot-a").is_none());
    }
}
