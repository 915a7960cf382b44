//! The kernel's BTF cut down to what aya needs to load our probes, with every type id
//! kept: aya parses whatever BTF it is given into a vector of every type (about 150,000
//! on 6.18), which cost 60 ms and 13 MiB per probe loaded, for three uses only:
//!
//! - CO-RE relocations, which look up our structs by name (`sk_buff`, `net`, ...) and
//!   walk the members we access: those structs keep all their members, and so do the
//!   anonymous structs and unions inside them (`skb->dev` sits in two of them);
//! - tp_btf and fentry/fexit loads, which need the id of `btf_trace_<tracepoint>` or of
//!   the function: those keep their names, and since ids are positions every other
//!   type stays in place too, as a record with no name and no members.
//!
//! Everything else (other names, members, enumerators, parameters) is dropped. The
//! result is never given to the kernel, only to aya's loader; a probe whose relocation
//! needed more than this would fail to load, and the loaders then retry with the whole
//! BTF, so a cut too small costs time, never a wrong offset.

use super::btf::{kind, Btf};
use super::KernelError;
use std::collections::{HashMap, HashSet};

/// What a probe needs by name: structs it reads (CO-RE), tracepoints it attaches to
/// with tp_btf, functions it attaches to with fentry/fexit.
pub struct Wanted<'a> {
    pub structs: &'a [&'a str],
    pub tracepoints: &'a [&'a str],
    pub functions: &'a [&'a str],
    /// Stop after the last type any of the above reaches (through members, typedefs,
    /// pointers, arrays, prototypes' return types): aya then parses a third of the
    /// records (6.18: ids up to about 43,000 of 126,000). Only for a loader that retries
    /// with the whole BTF when its load fails (the drop probe), since a relocation that
    /// walks somewhere this misses would fail rather than be wrong.
    pub truncate: bool,
}

/// The structs the probes in `ebpf/` read with CO-RE (`kernel_types.h`, and
/// `pt_regs` in hooks.bpf.c; datapath.bpf.c's `___datapath` flavours are these too).
pub const PROBE_STRUCTS: &[&str] = &[
    "ns_common",
    "net",
    "net_device",
    "sock_common",
    "sock",
    "sk_buff",
    "nf_hook_state",
    "nsproxy",
    "task_struct",
    "pt_regs",
];

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The cut-down BTF as bytes (see the module's documentation).
pub fn cut(btf: &Btf<'_>, wanted: &Wanted<'_>) -> Result<Vec<u8>, KernelError> {
    let count = btf.type_count();
    let kind_of = |id: u32| -> u8 {
        btf.record(id)
            .map_or(0, |r| ((u32_at(r, 4) >> 24) & 0x1f) as u8)
    };
    let name_of = |id: u32| -> Result<&str, KernelError> {
        btf.name_at(btf.record(id).map_or(0, |r| u32_at(r, 0)))
    };

    // Structs and unions whose members stay: the wanted ones by name, then every
    // anonymous struct or union a kept one holds (through typedefs, qualifiers, arrays).
    let wanted_structs: HashSet<&str> = wanted.structs.iter().copied().collect();
    let mut full: HashSet<u32> = HashSet::new();
    let mut queue: Vec<u32> = Vec::new();
    for id in btf
        .ids_of_kind(kind::STRUCT)
        .chain(btf.ids_of_kind(kind::UNION))
    {
        if wanted_structs.contains(name_of(id)?) {
            queue.push(id);
        }
    }
    while let Some(id) = queue.pop() {
        if !full.insert(id) {
            continue;
        }
        let record = btf.record(id).unwrap_or_default();
        let vlen = (u32_at(record, 4) & 0xffff) as usize;
        for m in 0..vlen {
            let mut ty = u32_at(record, 12 + 12 * m + 4);
            for _ in 0..32 {
                match kind_of(ty) {
                    kind::TYPEDEF
                    | kind::VOLATILE
                    | kind::CONST
                    | kind::RESTRICT
                    | kind::TYPE_TAG => ty = btf.record(ty).map_or(0, |r| u32_at(r, 8)),
                    kind::ARRAY => ty = btf.record(ty).map_or(0, |r| u32_at(r, 12)),
                    _ => break,
                }
            }
            let k = kind_of(ty);
            if (k == kind::STRUCT || k == kind::UNION) && name_of(ty)?.is_empty() {
                queue.push(ty);
            }
        }
    }
    let typedefs: HashSet<String> = wanted
        .tracepoints
        .iter()
        .map(|tp| format!("btf_trace_{tp}"))
        .collect();
    let functions: HashSet<&str> = wanted.functions.iter().copied().collect();

    let last = if wanted.truncate {
        last_reached(btf, &full, &typedefs, &functions)?
    } else {
        count
    };

    let mut strings: Vec<u8> = vec![0];
    let mut interned: HashMap<String, u32> = HashMap::new();
    let mut intern = |name: &str| -> u32 {
        if name.is_empty() {
            return 0;
        }
        *interned.entry(name.to_owned()).or_insert_with(|| {
            let at = strings.len() as u32;
            strings.extend_from_slice(name.as_bytes());
            strings.push(0);
            at
        })
    };
    let mut types: Vec<u8> = Vec::with_capacity(last as usize * 16);
    let push = |types: &mut Vec<u8>, words: &[u32]| {
        for w in words {
            types.extend_from_slice(&w.to_le_bytes());
        }
    };
    for id in 1..=last {
        let record = btf.record(id).ok_or_else(|| KernelError::Btf {
            what: "type id".into(),
            detail: format!("no type {id}"),
        })?;
        let info = u32_at(record, 4);
        let third = u32_at(record, 8);
        let k = ((info >> 24) & 0x1f) as u8;
        let no_members = info & !0xffff & !(1 << 31);
        let name = || name_of(id);
        match k {
            kind::STRUCT | kind::UNION if full.contains(&id) => {
                let name = intern(name()?);
                push(&mut types, &[name, info, third]);
                let vlen = (info & 0xffff) as usize;
                for m in 0..vlen {
                    let at = 12 + 12 * m;
                    let member = intern(btf.name_at(u32_at(record, at))?);
                    push(
                        &mut types,
                        &[member, u32_at(record, at + 4), u32_at(record, at + 8)],
                    );
                }
            }
            // No name, no members, no enumerators, no parameters; sizes and the
            // prototype's return type stay.
            kind::STRUCT
            | kind::UNION
            | kind::ENUM
            | kind::ENUM64
            | kind::FUNC_PROTO
            | kind::DATASEC => push(&mut types, &[0, no_members, third]),
            kind::TYPEDEF => {
                let n = name()?;
                let name = if typedefs.contains(n) { intern(n) } else { 0 };
                push(&mut types, &[name, info, third]);
            }
            kind::FUNC => {
                let n = name()?;
                let name = if functions.contains(n) { intern(n) } else { 0 };
                push(&mut types, &[name, info, third]);
            }
            // Integers keep their names and encoding (a few dozen); the rest of the
            // kinds keep their bytes without a name.
            kind::INT => {
                let name = intern(name()?);
                push(&mut types, &[name, info, third, u32_at(record, 12)]);
            }
            kind::FLOAT => {
                let name = intern(name()?);
                push(&mut types, &[name, info, third]);
            }
            _ => {
                push(&mut types, &[0, info, third]);
                types.extend_from_slice(&record[12..]);
            }
        }
    }

    let mut out = Vec::with_capacity(24 + types.len() + strings.len());
    for word in [
        0x0001_eb9f_u32, // magic 0xeb9f, version 1, flags 0
        24,              // header length
        0,               // type section offset
        types.len() as u32,
        types.len() as u32, // string section offset
        strings.len() as u32,
    ] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    Ok(out)
}

/// The largest type id reachable from what the cut keeps by name (the structs kept
/// whole, the tracepoint typedefs, the functions), following every type id the cut's
/// records keep: members of whole structs, the type of typedefs, qualifiers, pointers,
/// functions, variables and tags, arrays' element and index types, and prototypes'
/// return types (the cut keeps no parameters).
fn last_reached(
    btf: &Btf<'_>,
    full: &HashSet<u32>,
    typedefs: &HashSet<String>,
    functions: &HashSet<&str>,
) -> Result<u32, KernelError> {
    let name_of = |id: u32| btf.name_at(btf.record(id).map_or(0, |r| u32_at(r, 0)));
    let mut queue: Vec<u32> = full.iter().copied().collect();
    for id in btf.ids_of_kind(kind::TYPEDEF) {
        if typedefs.contains(name_of(id)?) {
            queue.push(id);
        }
    }
    for id in btf.ids_of_kind(kind::FUNC) {
        if functions.contains(name_of(id)?) {
            queue.push(id);
        }
    }
    let mut seen: HashSet<u32> = HashSet::new();
    let mut last = 0;
    while let Some(id) = queue.pop() {
        if id == 0 || !seen.insert(id) {
            continue;
        }
        last = last.max(id);
        let Some(record) = btf.record(id) else {
            continue;
        };
        let info = u32_at(record, 4);
        let third = u32_at(record, 8);
        match ((info >> 24) & 0x1f) as u8 {
            kind::STRUCT | kind::UNION if full.contains(&id) => {
                let vlen = (info & 0xffff) as usize;
                queue.extend((0..vlen).map(|m| u32_at(record, 12 + 12 * m + 4)));
            }
            kind::STRUCT | kind::UNION | kind::ENUM | kind::ENUM64 | kind::DATASEC => {}
            kind::INT | kind::FLOAT | kind::FWD => {}
            kind::ARRAY => queue.extend([u32_at(record, 12), u32_at(record, 16)]),
            // Typedefs, qualifiers, pointers, functions, variables, tags, prototypes'
            // return types.
            _ => queue.push(third),
        }
    }
    Ok(last)
}

/// [`cut`], parsed by aya.
pub fn for_aya(btf: &Btf<'_>, wanted: &Wanted<'_>) -> Result<aya::Btf, KernelError> {
    let bytes = cut(btf, wanted)?;
    aya::Btf::parse(&bytes, aya::Endianness::default()).map_err(|e| KernelError::Btf {
        what: "aya's parse of the cut-down BTF".into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::reasons::tests::{fixture_btf, fixture_kernels};

    /// The names the loaders look up, at the same ids and with as many members in
    /// `cut` as in `full`.
    fn assert_same_kept_names(full: &Btf, cut: &Btf, what: &str) {
        for (kind, name) in [
            (kind::TYPEDEF, "btf_trace_kfree_skb"),
            (kind::FUNC, "nf_hook_slow"),
            (kind::STRUCT, "sk_buff"),
            (kind::STRUCT, "net"),
        ] {
            let before = full.find(kind, name).unwrap().map(|t| (t.id, t.vlen));
            let after = cut.find(kind, name).unwrap().map(|t| (t.id, t.vlen));
            assert_eq!(before, after, "{name} in {what}");
        }
    }

    /// On every saved kernel: the cut keeps every type id, the names the loaders look
    /// up (tracepoint typedefs, functions) at their ids, and the probes' structs with all
    /// their members, and aya parses it.
    #[test]
    fn the_cut_keeps_ids_names_and_the_probes_structs() {
        for dir in fixture_kernels() {
            let bytes = fixture_btf(&dir);
            let btf = Btf::parse(&bytes).unwrap();
            let wanted = Wanted {
                structs: PROBE_STRUCTS,
                tracepoints: &["kfree_skb"],
                functions: &["nf_hook_slow"],
                truncate: false,
            };
            let cut_bytes = cut(&btf, &wanted).unwrap();
            assert!(cut_bytes.len() * 2 < bytes.len(), "{}", dir.display());
            let small = Btf::parse(&cut_bytes).unwrap();
            assert_eq!(small.type_count(), btf.type_count(), "{}", dir.display());
            assert_same_kept_names(&btf, &small, &format!("{}", dir.display()));
            // Not wanted: no name left to find.
            assert!(small.find(kind::STRUCT, "list_head").unwrap().is_none());
            aya::Btf::parse(&cut_bytes, aya::Endianness::default()).unwrap();

            // Truncated: fewer types, the same ids for everything kept by name, and
            // every type a kept struct's member names is there.
            let short_bytes = cut(
                &btf,
                &Wanted {
                    truncate: true,
                    ..wanted
                },
            )
            .unwrap();
            let short = Btf::parse(&short_bytes).unwrap();
            assert!(short.type_count() < btf.type_count(), "{}", dir.display());
            assert_same_kept_names(&btf, &short, &format!("{} (truncated)", dir.display()));
            let skb = short.find(kind::STRUCT, "sk_buff").unwrap().unwrap();
            let record = short.record(skb.id).unwrap();
            for m in 0..usize::from(skb.vlen) {
                let ty = u32_at(record, 12 + 12 * m + 4);
                assert!(ty <= short.type_count(), "{}", dir.display());
            }
            aya::Btf::parse(&short_bytes, aya::Endianness::default()).unwrap();
        }
    }
}
