//! A small reader for BTF, the kernel's type format (Documentation/bpf/btf.rst).
//!
//! aya parses BTF too, but only to relocate programs; we need two facts from it that
//! aya does not expose: the values of `enum skb_drop_reason` (reason numbers differ
//! between kernels) and how many arguments the `kfree_skb` tracepoint passes (`rx_sk`
//! was added around 6.12). So this reads just enough: the header, a walk over the type
//! section that knows each kind's size, and names from the string section.

use super::KernelError;

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
const COMMON: usize = 12; // name_off, info, size/type

/// BTF type kinds (the 5-bit `kind` of `info`); numbers fixed by the kernel UAPI.
pub mod kind {
    pub const INT: u8 = 1;
    pub const PTR: u8 = 2;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const FWD: u8 = 7;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const FLOAT: u8 = 16;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// Parsed BTF borrowing the raw bytes. Type ids start at 1 (0 is `void`).
pub struct Btf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// `offsets[id - 1]` is where type `id` starts in `types`.
    offsets: Vec<u32>,
}

/// One type record: the common part, and the kind-specific bytes after it.
#[derive(Debug, Clone, Copy)]
pub struct Type<'a> {
    pub id: u32,
    pub kind: u8,
    pub name: &'a str,
    pub vlen: u16,
    pub kind_flag: bool,
    /// `size` for INT/STRUCT/UNION/ENUM*/DATASEC/FLOAT, the referenced type id otherwise.
    pub size_or_type: u32,
    extra: &'a [u8],
}

/// One enumerator. `value` holds the bits; `signed` says how to read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enumerator<'a> {
    pub name: &'a str,
    pub value: u64,
    pub signed: bool,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn malformed(what: &str, detail: impl Into<String>) -> KernelError {
    KernelError::Btf {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

impl<'a> Btf<'a> {
    /// Parses little-endian BTF (what every little-endian kernel publishes).
    pub fn parse(bytes: &'a [u8]) -> Result<Btf<'a>, KernelError> {
        let header = bytes
            .get(..HEADER_MIN)
            .ok_or_else(|| malformed("header", format!("only {} bytes", bytes.len())))?;
        let magic = u16::from_le_bytes([header[0], header[1]]);
        if magic == MAGIC.swap_bytes() {
            return Err(malformed("header", "big-endian BTF is not supported"));
        }
        if magic != MAGIC {
            return Err(malformed(
                "header",
                format!("magic {magic:#06x}, expected {MAGIC:#06x}"),
            ));
        }
        let field = |at| u32_at(header, at).unwrap_or(0) as usize;
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (field(4), field(8), field(12), field(16), field(20));
        let section = |off: usize, len: usize, what: &str| {
            hdr_len
                .checked_add(off)
                .and_then(|start| Some(start..start.checked_add(len)?))
                .and_then(|range| bytes.get(range))
                .ok_or_else(|| {
                    malformed(
                        what,
                        format!("section {off}+{len} beyond {} bytes", bytes.len()),
                    )
                })
        };
        let types = section(type_off, type_len, "type section")?;
        let strings = section(str_off, str_len, "string section")?;

        let mut offsets = Vec::with_capacity(types.len() / 24);
        let mut at = 0usize;
        while at < types.len() {
            let info = u32_at(types, at + 4)
                .ok_or_else(|| malformed("type section", format!("truncated at byte {at}")))?;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                kind::PTR
                | kind::FWD
                | kind::TYPEDEF
                | kind::VOLATILE
                | kind::CONST
                | kind::RESTRICT
                | kind::FUNC
                | kind::FLOAT
                | kind::TYPE_TAG => 0,
                kind::INT | kind::VAR | kind::DECL_TAG => 4,
                kind::ARRAY => 12,
                kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => 12 * vlen,
                kind::ENUM | kind::FUNC_PROTO => 8 * vlen,
                other => {
                    return Err(malformed(
                        "type section",
                        format!(
                            "unknown kind {other} for type {} at byte {at}",
                            offsets.len() + 1
                        ),
                    ))
                }
            };
            offsets.push(at as u32);
            at += COMMON + extra;
        }
        if at != types.len() {
            return Err(malformed(
                "type section",
                "last type runs past the section end",
            ));
        }
        Ok(Btf {
            types,
            strings,
            offsets,
        })
    }

    /// Number of types (the largest valid id).
    pub fn type_count(&self) -> u32 {
        self.offsets.len() as u32
    }

    fn string_at(&self, offset: u32) -> Result<&'a str, KernelError> {
        let tail = self
            .strings
            .get(offset as usize..)
            .ok_or_else(|| malformed("string section", format!("offset {offset} out of range")))?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end])
            .map_err(|_| malformed("string section", format!("string at {offset} is not UTF-8")))
    }

    pub fn type_by_id(&self, id: u32) -> Result<Type<'a>, KernelError> {
        let start =
            *id.checked_sub(1)
                .and_then(|i| self.offsets.get(i as usize))
                .ok_or_else(|| malformed("type id", format!("no type {id}")))? as usize;
        let end = self
            .offsets
            .get(id as usize)
            .map_or(self.types.len(), |&next| next as usize);
        let record = &self.types[start..end];
        let info = u32_at(record, 4).unwrap_or(0);
        Ok(Type {
            id,
            kind: ((info >> 24) & 0x1f) as u8,
            name: self.string_at(u32_at(record, 0).unwrap_or(0))?,
            vlen: (info & 0xffff) as u16,
            kind_flag: info >> 31 == 1,
            size_or_type: u32_at(record, 8).unwrap_or(0),
            extra: &record[COMMON..],
        })
    }

    /// Type `id`'s raw record (common part and kind-specific bytes), for
    /// [`super::loader_btf`].
    pub(crate) fn record(&self, id: u32) -> Option<&'a [u8]> {
        let start = *self.offsets.get(id.checked_sub(1)? as usize)? as usize;
        let end = self
            .offsets
            .get(id as usize)
            .map_or(self.types.len(), |&next| next as usize);
        self.types.get(start..end)
    }

    /// The string at `offset` of the string section.
    pub(crate) fn name_at(&self, offset: u32) -> Result<&'a str, KernelError> {
        self.string_at(offset)
    }

    /// All types, in id order.
    pub fn types(&self) -> impl Iterator<Item = Result<Type<'a>, KernelError>> + '_ {
        (1..=self.type_count()).map(|id| self.type_by_id(id))
    }

    /// Ids of all types of one kind, found from the `info` word alone: decoding every
    /// record would cost tens of milliseconds on a 5 MB vmlinux BTF in a debug build.
    pub fn ids_of_kind(&self, kind: u8) -> impl Iterator<Item = u32> + '_ {
        self.offsets
            .iter()
            .enumerate()
            .filter_map(move |(index, &at)| {
                let info = u32_at(self.types, at as usize + 4)?;
                (((info >> 24) & 0x1f) as u8 == kind).then_some(index as u32 + 1)
            })
    }

    /// The first type of this kind with this name.
    pub fn find(&self, kind: u8, name: &str) -> Result<Option<Type<'a>>, KernelError> {
        for id in self.ids_of_kind(kind) {
            let at = self.offsets[id as usize - 1] as usize;
            let name_off = u32_at(self.types, at).unwrap_or(0) as usize;
            let matches = self
                .strings
                .get(name_off..)
                .is_some_and(|s| s.starts_with(name.as_bytes()) && s.get(name.len()) == Some(&0));
            if matches {
                return self.type_by_id(id).map(Some);
            }
        }
        Ok(None)
    }

    /// The named enum (ENUM or ENUM64), if this kernel has it.
    pub fn find_enum(&self, name: &str) -> Result<Option<Type<'a>>, KernelError> {
        if let Some(ty) = self.find(kind::ENUM, name)? {
            return Ok(Some(ty));
        }
        self.find(kind::ENUM64, name)
    }

    /// Enumerators of an ENUM or ENUM64 type.
    pub fn enumerators(&self, ty: &Type<'a>) -> Result<Vec<Enumerator<'a>>, KernelError> {
        let (stride, wide) = match ty.kind {
            kind::ENUM => (8, false),
            kind::ENUM64 => (12, true),
            other => {
                return Err(malformed(
                    "enum",
                    format!("type {} has kind {other}", ty.id),
                ))
            }
        };
        ty.extra
            .chunks_exact(stride)
            .map(|e| {
                let name = self.string_at(u32_at(e, 0).unwrap_or(0))?;
                let lo = u32_at(e, 4).unwrap_or(0);
                let value = match (wide, ty.kind_flag) {
                    (true, _) => u64::from(lo) | (u64::from(u32_at(e, 8).unwrap_or(0)) << 32),
                    (false, true) => lo as i32 as i64 as u64,
                    (false, false) => u64::from(lo),
                };
                Ok(Enumerator {
                    name,
                    value,
                    signed: ty.kind_flag,
                })
            })
            .collect()
    }

    /// Skips typedefs and qualifiers (const, volatile, restrict, type tags).
    pub fn resolve(&self, mut id: u32) -> Result<Type<'a>, KernelError> {
        for _ in 0..32 {
            let ty = self.type_by_id(id)?;
            match ty.kind {
                kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG => {
                    id = ty.size_or_type
                }
                _ => return Ok(ty),
            }
        }
        Err(malformed(
            "type chain",
            format!("more than 32 typedefs/qualifiers from {id}"),
        ))
    }

    /// Arguments a BTF-enabled tracepoint hands its programs: the kernel describes
    /// tracepoint `tp` as `typedef void (*btf_trace_<tp>)(void *__data, args...)`, so
    /// this is the prototype's parameter count minus `__data`. None if no such tracepoint.
    pub fn tracepoint_args(&self, tp: &str) -> Result<Option<usize>, KernelError> {
        let Some(typedef) = self.find(kind::TYPEDEF, &format!("btf_trace_{tp}"))? else {
            return Ok(None);
        };
        let ptr = self.resolve(typedef.size_or_type)?;
        if ptr.kind != kind::PTR {
            return Err(malformed(
                "tracepoint type",
                format!("btf_trace_{tp} is not a pointer"),
            ));
        }
        let proto = self.resolve(ptr.size_or_type)?;
        if proto.kind != kind::FUNC_PROTO || proto.vlen == 0 {
            return Err(malformed(
                "tracepoint type",
                format!("btf_trace_{tp} does not point to a prototype with __data"),
            ));
        }
        Ok(Some(usize::from(proto.vlen) - 1))
    }

    /// The argument types of BTF-enabled tracepoint `tp` (without `__data`), spelled
    /// the short C way with typedefs and qualifiers removed: `struct sk_buff *`, `int`,
    /// `enum sk_rst_reason`. None if the kernel has no such tracepoint. The kernel's
    /// tracepoint prototypes carry no parameter names, so types are all there is to
    /// tell one version of a tracepoint's arguments from another.
    pub fn tracepoint_arg_types(&self, tp: &str) -> Result<Option<Vec<String>>, KernelError> {
        let Some(typedef) = self.find(kind::TYPEDEF, &format!("btf_trace_{tp}"))? else {
            return Ok(None);
        };
        let ptr = self.resolve(typedef.size_or_type)?;
        let proto = self.resolve(ptr.size_or_type)?;
        if ptr.kind != kind::PTR || proto.kind != kind::FUNC_PROTO || proto.vlen == 0 {
            return Err(malformed(
                "tracepoint type",
                format!("btf_trace_{tp} is not a pointer to a prototype with __data"),
            ));
        }
        proto
            .extra
            .chunks_exact(8)
            .skip(1) // __data
            .map(|param| self.short_type_name(u32_at(param, 4).unwrap_or(0)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// How many parameters kernel function `name` takes, from its BTF prototype. None
    /// when this BTF does not describe it (no such function, or one a module defines:
    /// module functions live in /sys/kernel/btf/<module>).
    pub fn function_params(&self, name: &str) -> Result<Option<usize>, KernelError> {
        Ok(self.functions_params(&[name])?[0])
    }

    /// [`Btf::function_params`] of several functions in one pass over the types: each
    /// pass visits every type, which takes seconds in a debug build under emulation.
    pub fn functions_params(&self, names: &[&str]) -> Result<Vec<Option<usize>>, KernelError> {
        let mut found = vec![None; names.len()];
        for id in self.ids_of_kind(kind::FUNC) {
            let at = self.offsets[id as usize - 1] as usize;
            let name = self.string_at(u32_at(self.types, at).unwrap_or(0))?;
            let Some(index) = names.iter().position(|n| *n == name) else {
                continue;
            };
            if found[index].is_some() {
                continue;
            }
            let func = self.type_by_id(id)?;
            let proto = self.resolve(func.size_or_type)?;
            if proto.kind != kind::FUNC_PROTO {
                return Err(malformed(
                    "function",
                    format!("{name} has no prototype (kind {})", proto.kind),
                ));
            }
            found[index] = Some(usize::from(proto.vlen));
        }
        Ok(found)
    }

    /// Byte offset of `member` in `struct name`, for a field the probe reads through a
    /// pointer it computes itself. None if the struct or the member is missing.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<Option<u32>, KernelError> {
        let Some(record) = self.find(kind::STRUCT, name)? else {
            return Ok(None);
        };
        for m in record.extra.chunks_exact(12) {
            if self.string_at(u32_at(m, 0).unwrap_or(0))? == member {
                let raw = u32_at(m, 8).unwrap_or(0);
                // With kind_flag the low 24 bits are the bit offset, the high 8 a bitfield size.
                let bits = if record.kind_flag {
                    raw & 0xff_ffff
                } else {
                    raw
                };
                return Ok(Some(bits / 8));
            }
        }
        Ok(None)
    }

    /// `int`, `struct sock *`, `enum x`, `void *`; other kinds by their kind number.
    fn short_type_name(&self, id: u32) -> Result<String, KernelError> {
        if id == 0 {
            return Ok("void".into());
        }
        let ty = self.resolve(id)?;
        Ok(match ty.kind {
            kind::INT | kind::FLOAT => ty.name.to_owned(),
            kind::STRUCT => format!("struct {}", ty.name),
            kind::UNION => format!("union {}", ty.name),
            kind::ENUM | kind::ENUM64 => format!("enum {}", ty.name),
            kind::FWD if ty.kind_flag => format!("union {}", ty.name),
            kind::FWD => format!("struct {}", ty.name),
            kind::PTR => format!("{} *", self.short_type_name(ty.size_or_type)?),
            other => format!("<kind {other}>"),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds small BTF blobs in memory, for shapes no saved kernel has (ENUM64, signed
    /// enums, the 3-argument kfree_skb of kernels before ~6.12).
    #[derive(Default)]
    pub(crate) struct BtfBuilder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl BtfBuilder {
        pub(crate) fn new() -> Self {
            BtfBuilder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }
        fn name(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }
        fn common(&mut self, name: &str, kind: u8, vlen: usize, flag: bool, st: u32) -> u32 {
            let name = self.name(name);
            let info = (u32::from(flag) << 31) | (u32::from(kind) << 24) | vlen as u32;
            for word in [name, info, st] {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        pub(crate) fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.common(name, kind::INT, 0, false, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }
        pub(crate) fn ptr(&mut self, target: u32) -> u32 {
            self.common("", kind::PTR, 0, false, target)
        }
        pub(crate) fn typedef(&mut self, name: &str, target: u32) -> u32 {
            self.common(name, kind::TYPEDEF, 0, false, target)
        }
        pub(crate) fn func_proto(&mut self, params: &[u32]) -> u32 {
            let id = self.common("", kind::FUNC_PROTO, params.len(), false, 0);
            for &p in params {
                self.types.extend_from_slice(&0u32.to_le_bytes());
                self.types.extend_from_slice(&p.to_le_bytes());
            }
            id
        }
        pub(crate) fn enum32(&mut self, name: &str, signed: bool, values: &[(&str, i64)]) -> u32 {
            let id = self.common(name, kind::ENUM, values.len(), signed, 4);
            for &(n, v) in values {
                let n = self.name(n);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&(v as u32).to_le_bytes());
            }
            id
        }
        pub(crate) fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
            let id = self.common(name, kind::ENUM64, values.len(), false, 8);
            for &(n, v) in values {
                let n = self.name(n);
                self.types.extend_from_slice(&n.to_le_bytes());
                self.types.extend_from_slice(&(v as u32).to_le_bytes());
                self.types
                    .extend_from_slice(&((v >> 32) as u32).to_le_bytes());
            }
            id
        }
        pub(crate) fn struct_with(&mut self, name: &str, members: usize) -> u32 {
            let id = self.common(name, kind::STRUCT, members, false, 8 * members as u32);
            self.types.extend(std::iter::repeat_n(0, 12 * members));
            id
        }
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[1, 0]); // version, flags
            let words = [24, 0, self.types.len() as u32, self.types.len() as u32];
            for word in words {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// `typedef void (*btf_trace_kfree_skb)(void *__data, <args>)` with `args` pointers.
    pub(crate) fn kfree_skb_tracepoint(b: &mut BtfBuilder, args: usize) {
        let void_ptr = b.ptr(0);
        let params = vec![void_ptr; args + 1];
        let proto = b.func_proto(&params);
        let ptr = b.ptr(proto);
        b.typedef("btf_trace_kfree_skb", ptr);
    }

    #[test]
    fn walks_every_kind_and_reads_enums() {
        let mut b = BtfBuilder::new();
        let int = b.int("int", 4);
        b.struct_with("sk_buff", 3);
        let e = b.enum32("colour", true, &[("RED", -1), ("BLUE", 7)]);
        let e64 = b.enum64("wide", &[("BIG", 1 << 40)]);
        let td = b.typedef("colour_t", e);
        let btf_bytes = b.build();
        let btf = Btf::parse(&btf_bytes).unwrap();

        assert_eq!(btf.type_count(), 5);
        assert_eq!(btf.type_by_id(int).unwrap().name, "int");
        let colour = btf.find_enum("colour").unwrap().unwrap();
        assert_eq!(
            btf.enumerators(&colour).unwrap(),
            vec![
                Enumerator {
                    name: "RED",
                    value: -1i64 as u64,
                    signed: true
                },
                Enumerator {
                    name: "BLUE",
                    value: 7,
                    signed: true
                },
            ]
        );
        let wide = btf.find_enum("wide").unwrap().unwrap();
        assert_eq!(wide.id, e64);
        assert_eq!(btf.enumerators(&wide).unwrap()[0].value, 1 << 40);
        assert_eq!(btf.resolve(td).unwrap().id, e);
        assert!(btf.find_enum("missing").unwrap().is_none());
    }

    #[test]
    fn tracepoint_args_counts_without_data_pointer() {
        for args in [3, 4] {
            let mut b = BtfBuilder::new();
            kfree_skb_tracepoint(&mut b, args);
            let bytes = b.build();
            let btf = Btf::parse(&bytes).unwrap();
            assert_eq!(btf.tracepoint_args("kfree_skb").unwrap(), Some(args));
            assert_eq!(btf.tracepoint_args("consume_skb").unwrap(), None);
        }
    }

    #[test]
    fn tracepoint_arg_types_spell_types_without_qualifiers() {
        let mut b = BtfBuilder::new();
        let void_ptr = b.ptr(0);
        let sock = b.struct_with("sock", 0);
        let skb = b.struct_with("sk_buff", 0);
        let sock_ptr = b.ptr(sock);
        let konst = b.common("", kind::CONST, 0, false, skb);
        let skb_ptr = b.ptr(konst);
        let reason = b.enum32("sk_rst_reason", false, &[("SK_RST_REASON_NO_SOCKET", 1)]);
        let reason_t = b.typedef("rst_reason_t", reason);
        let int = b.int("int", 4);
        let proto = b.func_proto(&[void_ptr, sock_ptr, skb_ptr, reason_t, int]);
        let ptr = b.ptr(proto);
        b.typedef("btf_trace_tcp_send_reset", ptr);
        let bytes = b.build();
        let btf = Btf::parse(&bytes).unwrap();
        assert_eq!(
            btf.tracepoint_arg_types("tcp_send_reset").unwrap().unwrap(),
            [
                "struct sock *",
                "struct sk_buff *",
                "enum sk_rst_reason",
                "int"
            ]
        );
        assert_eq!(btf.tracepoint_arg_types("icmp_send").unwrap(), None);
    }

    #[test]
    fn rejects_garbage_with_a_reason() {
        let err = Btf::parse(b"not btf at all, clearly not").err().unwrap();
        assert!(err.to_string().contains("magic"), "{err}");
        let mut bytes = BtfBuilder::new().build();
        bytes[12] = 200; // type_len past the end
        assert!(Btf::parse(&bytes).is_err());
        let mut b = BtfBuilder::new();
        b.int("int", 4);
        let mut bytes = b.build();
        bytes[24 + 7] = 30; // kind 30 does not exist
        let err = Btf::parse(&bytes).err().unwrap();
        assert!(err.to_string().contains("unknown kind 30"), "{err}");
    }

    /// What the hook-point probe reads from BTF, on each saved kernel: inet_csk_accept
    /// lost its `int *err` for a `struct proto_accept_arg *` in 6.10, and the NAT and
    /// conntrack functions are in vmlinux only where netfilter is built in (6.18 here,
    /// modules on Debian's kernels).
    #[test]
    fn hook_point_signatures_on_every_saved_kernel() {
        use crate::kernel::reasons::tests::{fixture_btf, fixture_kernels};
        for dir in fixture_kernels() {
            let release = dir.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = fixture_btf(&dir);
            let btf = Btf::parse(&bytes).unwrap();
            let params = |f: &str| btf.function_params(f).unwrap();
            let err_offset = btf.member_offset("proto_accept_arg", "err").unwrap();
            assert_eq!(params("nf_hook_slow"), Some(4), "{release}");
            assert_eq!(params("tcp_v4_connect"), Some(3), "{release}");
            assert_eq!(params("no_such_function_anywhere"), None, "{release}");
            if release.starts_with("6.1.") {
                assert_eq!(params("inet_csk_accept"), Some(4), "{release}");
                assert_eq!(err_offset, None, "{release}");
            } else {
                assert_eq!(params("inet_csk_accept"), Some(2), "{release}");
                assert_eq!(err_offset, Some(4), "{release}");
            }
            let built_in = release.starts_with("6.18");
            for f in ["nf_nat_inet_fn", "__nf_conntrack_confirm"] {
                assert_eq!(params(f).is_some(), built_in, "{release} {f}");
            }
        }
    }
}
