//! Names for the numbers the probes record: kernel addresses (kallsyms, read again when
//! the loaded modules change) and protocol numbers (ethertypes, IP protocols).

use super::{Kallsyms, ProbeError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Kernel symbols, read from /proc/kallsyms on first use and again whenever the set of
/// loaded modules has changed since: on a kernel with netfilter as modules (Debian's
/// 6.1, 6.12) nf_tables is loaded by a scenario's first rule, after the first read, and
/// its drops would otherwise be named after whatever symbol precedes it.
#[derive(Default)]
pub(super) struct KallsymsCache {
    cached: Mutex<Option<SymbolCache>>,
}

impl KallsymsCache {
    /// The symbols as of now; a failure to read them is kept until a module changes.
    pub(super) fn get(&self) -> Result<Arc<Kallsyms>, ProbeError> {
        let modules = loaded_modules();
        let mut cache = self
            .cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(cached) = cache.as_ref().filter(|c| c.modules == modules) {
            return cached.symbols.clone();
        }
        let symbols = Kallsyms::shared_from_proc().map_err(ProbeError::from);
        *cache = Some(SymbolCache {
            modules,
            symbols: symbols.clone(),
        });
        symbols
    }

    /// Symbols that name every one of `addresses` rightly: the ones read before, even
    /// when modules have been loaded or unloaded since, if each address lies in the
    /// kernel image or in a module still loaded where it was, and in no module loaded
    /// since; read again, as [`KallsymsCache::get`] does, otherwise. The suite's
    /// scenarios load modules one after another, and each read of kallsyms costs about
    /// half a second in a TCG guest.
    pub(super) fn get_for(
        &self,
        addresses: impl IntoIterator<Item = u64>,
    ) -> Result<Arc<Kallsyms>, ProbeError> {
        let text = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let now = module_list(&text);
        {
            let cache = self
                .cached
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(SymbolCache {
                modules: then,
                symbols: Ok(symbols),
            }) = cache.as_ref()
            {
                let (then, symbols) = (then.clone(), symbols.clone());
                drop(cache);
                if still_named(&symbols, &then, &now, &text, addresses) {
                    return Ok(symbols);
                }
            }
        }
        self.get()
    }
}

/// Whether `symbols`, read while `then` were the loaded modules, still name each of
/// `addresses` rightly with `now` loaded (`text`: /proc/modules now).
fn still_named(
    symbols: &Kallsyms,
    then: &[(String, String)],
    now: &[(String, String)],
    text: &str,
    addresses: impl IntoIterator<Item = u64>,
) -> bool {
    if then == now {
        return true;
    }
    // Where each module loaded since (or moved) lies: its load address and size. An
    // address hidden as zero (no root) cannot be placed: read again.
    let mut added = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(name), Some(size), Some(addr)) = (fields.first(), fields.get(1), fields.get(5))
        else {
            continue;
        };
        if then.iter().any(|(n, a)| n == name && a == addr) {
            continue;
        }
        let base = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap_or(0);
        let Ok(size) = size.parse::<u64>() else {
            return false;
        };
        if base == 0 {
            return false;
        }
        added.push(base..base.saturating_add(size));
    }
    addresses.into_iter().all(|addr| {
        !added.iter().any(|range| range.contains(&addr))
            && (symbols.in_core(addr)
                || symbols.module_at(addr).is_some_and(|module| {
                    let then = then.iter().find(|(n, _)| n == module);
                    then.is_some_and(|t| now.contains(t))
                }))
    })
}

/// Kernel symbols and the modules that were loaded when they were read.
struct SymbolCache {
    modules: Vec<(String, String)>,
    symbols: Result<Arc<Kallsyms>, ProbeError>,
}

/// (name, load address) of every loaded module, from /proc/modules; empty on a kernel
/// without modules. Reference counts are left out: they change with every rule.
fn loaded_modules() -> Vec<(String, String)> {
    module_list(&std::fs::read_to_string("/proc/modules").unwrap_or_default())
}

fn module_list(text: &str) -> Vec<(String, String)> {
    let mut modules: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            Some((fields.first()?.to_string(), fields.get(5)?.to_string()))
        })
        .collect();
    modules.sort();
    modules
}

/// `&'static str` for protocol numbers without a name: at most 65,536 + 256 distinct
/// strings, so leaking each once is bounded.
fn intern(text: String) -> &'static str {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static str>>> = OnceLock::new();
    let mut table = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&s) = table.get(&text) {
        return s;
    }
    let leaked: &'static str = Box::leak(text.clone().into_boxed_str());
    table.insert(text, leaked);
    leaked
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;

pub(super) fn l3_name(ethertype: u16) -> &'static str {
    match ethertype {
        ETH_P_IP => "ipv4",
        ETH_P_IPV6 => "ipv6",
        ETH_P_ARP => "arp",
        other => intern(format!("0x{other:04x}")),
    }
}

pub(super) fn l4_name(ethertype: u16, protocol: u8) -> &'static str {
    match (ethertype, protocol) {
        (_, 0) => "",
        (ETH_P_IP, 1) => "icmp",
        (ETH_P_IPV6, 58) => "icmpv6",
        (ETH_P_IP | ETH_P_IPV6, 6) => "tcp",
        (ETH_P_IP | ETH_P_IPV6, 17) => "udp",
        (_, other) => intern(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_ignores_reference_counts() {
        let before = "nf_tables 266240 0 - Live 0xffffffffc03e0000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        let in_use = "veth 36864 0 - Live 0xffffffffc0300000\nnf_tables 266240 4 nft_chain,[permanent] Live 0xffffffffc03e0000\n";
        assert_eq!(module_list(before), module_list(in_use));
        let reloaded = "nf_tables 266240 0 - Live 0xffffffffc0500000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        assert_ne!(module_list(before), module_list(reloaded));
        assert_ne!(
            module_list(before),
            module_list("veth 36864 0 - Live 0xffffffffc0300000\n")
        );
        assert!(module_list("").is_empty());
    }

    #[test]
    fn symbols_read_before_a_module_loaded_still_name_what_did_not_move() {
        let symbols = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81001000 T ip_rcv\nffffffff82000000 T _etext\n\
             ffffffffc0300000 t veth_xmit\t[veth]\nffffffffc03e0000 t nft_do_chain\t[nf_tables]\n\
             ffffffffc0600000 t bpf_prog_x\t[bpf]\n",
        );
        let before_text = "nf_tables 266240 0 - Live 0xffffffffc03e0000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        let before = module_list(before_text);
        let core = 0xffffffff81001010;
        let in_veth = 0xffffffffc0300010;
        let in_nft = 0xffffffffc03e0010;
        // Nothing changed: everything is named.
        assert!(still_named(
            &symbols,
            &before,
            &before,
            before_text,
            [core, in_nft, 0xffffffffc0600010]
        ));
        // nf_reject loaded at 0xffffffffc0500000 (below nf_tables's last symbol's reach).
        let loaded = format!("{before_text}nf_reject_ipv4 16384 0 - Live 0xffffffffc0500000\n");
        let now = module_list(&loaded);
        assert!(still_named(
            &symbols,
            &before,
            &now,
            &loaded,
            [core, in_veth, in_nft]
        ));
        assert!(!still_named(
            &symbols,
            &before,
            &now,
            &loaded,
            [0xffffffffc0500010]
        ));
        // A BPF program, or an address past the image's last symbol, is read again.
        assert!(!still_named(
            &symbols,
            &before,
            &now,
            &loaded,
            [0xffffffffc0600010]
        ));
        assert!(!still_named(
            &symbols,
            &before,
            &now,
            &loaded,
            [0xffffffff82000010]
        ));
        // nf_tables reloaded elsewhere: its old addresses mean nothing now.
        let moved = "nf_tables 266240 0 - Live 0xffffffffc0700000\nveth 36864 0 - Live 0xffffffffc0300000\n";
        let now = module_list(moved);
        assert!(!still_named(&symbols, &before, &now, moved, [in_nft]));
        assert!(still_named(&symbols, &before, &now, moved, [in_veth, core]));
        // Addresses hidden (no root): nothing loaded since can be placed.
        let hidden = format!("{before_text}nf_reject_ipv4 16384 0 - Live 0x0000000000000000\n");
        let now = module_list(&hidden);
        assert!(!still_named(&symbols, &before, &now, &hidden, [core]));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(l3_name(0x0800), "ipv4");
        assert_eq!(l3_name(0x86dd), "ipv6");
        assert_eq!(l3_name(0x0806), "arp");
        assert_eq!(l3_name(0x88cc), "0x88cc");
        assert_eq!(l3_name(0), "0x0000");
        assert_eq!(l4_name(0x0800, 1), "icmp");
        assert_eq!(l4_name(0x0800, 17), "udp");
        assert_eq!(l4_name(0x86dd, 6), "tcp");
        assert_eq!(l4_name(0x86dd, 58), "icmpv6");
        assert_eq!(l4_name(0x0800, 0), "");
        assert_eq!(l4_name(0x0800, 132), "132");
        assert!(std::ptr::eq(l4_name(0x0800, 132), l4_name(0x0800, 132)));
    }
}
