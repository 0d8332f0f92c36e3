//! Just enough of a BTF reader to find struct member offsets in the running kernel's
//! `/sys/kernel/btf/vmlinux`, so the kernel programs never read `struct sock` at a guessed offset.
//! (aya's own `Btf` keeps its type accessors crate-private.)

use std::borrow::Cow;

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A member found by [`Btf::member`]: byte offset from the start of the outer struct and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: u32,
    size_or_ref: u32,
    /// Offset of the kind-specific data (members) in the type section.
    extra: usize,
}

pub struct Btf {
    types: Vec<Type>,
    type_section: Vec<u8>,
    strings: Vec<u8>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| format!("BTF truncated at byte {at}"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf, String> {
        let path = "/sys/kernel/btf/vmlinux";
        let data = std::fs::read(path)
            .map_err(|e| format!("{path}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF)"))?;
        Btf::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Btf, String> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err("not little-endian BTF".into());
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off: usize, len: usize| -> Result<Vec<u8>, String> {
            let (start, end) = (
                hdr_len + u32_at(data, off)? as usize,
                u32_at(data, len)? as usize,
            );
            data.get(start..start + end)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "BTF section out of bounds".to_string())
        };
        let type_section = section(8, 12)?;
        let strings = section(16, 20)?;
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            kind_flag: false,
            vlen: 0,
            size_or_ref: 0,
            extra: 0,
        }];
        let mut at = 0;
        while at < type_section.len() {
            let info = u32_at(&type_section, at + 4)?;
            let ty = Type {
                name_off: u32_at(&type_section, at)?,
                kind: (info >> 24) & 0x1f,
                kind_flag: info >> 31 == 1,
                vlen: info & 0xffff,
                size_or_ref: u32_at(&type_section, at + 8)?,
                extra: at + 12,
            };
            let vlen = ty.vlen as usize;
            at = ty.extra
                + match ty.kind {
                    KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                    KIND_ARRAY => 12,
                    KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                    KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                    _ => 0,
                };
            types.push(ty);
        }
        Ok(Btf {
            types,
            type_section,
            strings,
        })
    }

    fn name(&self, off: u32) -> Cow<'_, str> {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        String::from_utf8_lossy(&rest[..end])
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let ty = self.types.get(id as usize)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_ref;
                }
                _ => return Some(ty),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let ty = self.resolve(id)?;
        match ty.kind {
            KIND_ARRAY => {
                let elem = u32_at(&self.type_section, ty.extra).ok()?;
                let count = u32_at(&self.type_section, ty.extra + 8).ok()?;
                Some(self.size_of(elem)? * count)
            }
            2 => Some(8), // pointer
            _ => Some(ty.size_or_ref),
        }
    }

    /// Whether the kernel's BTF has a typedef of this name. A tracepoint `T` that BTF-typed
    /// (`tp_btf`) programs can attach to shows up as the typedef `btf_trace_T`.
    pub fn has_typedef(&self, name: &str) -> bool {
        self.typedef_id(name).is_some()
    }

    /// The BTF type id of the typedef `name` (what a `tp_btf` program passes as its
    /// `attach_btf_id`: the id of `btf_trace_T`).
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == name)
            .map(|id| id as u32)
    }

    /// The BTF type id of the kernel function `name` and its parameters' names (what an
    /// `fexit` program attaches to and the argument layout it reads), or `None` if the BTF has
    /// no such function.
    pub fn function(&self, name: &str) -> Option<(u32, Vec<String>)> {
        let id = self
            .types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name_off) == name)?;
        let proto = self.types.get(self.types[id].size_or_ref as usize)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        let params = (0..proto.vlen as usize)
            .map(|i| {
                let name_off = u32_at(&self.type_section, proto.extra + 8 * i).unwrap_or(0);
                self.name(name_off).into_owned()
            })
            .collect();
        Some((id as u32, params))
    }

    /// Byte offset and size of `member` in the struct named `outer`, looking through anonymous
    /// struct and union members. Bitfields are refused (they cannot be read as whole bytes).
    pub fn member(&self, outer: &str, member: &str) -> Result<Member, String> {
        let ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == outer)
            .ok_or_else(|| format!("struct {outer} not in the kernel's BTF"))?;
        self.find_member(ty, member, 0)
            .ok_or_else(|| format!("struct {outer} has no member {member} in the kernel's BTF"))?
    }

    fn find_member(
        &self,
        ty: &Type,
        member: &str,
        base_bits: u32,
    ) -> Option<Result<Member, String>> {
        for i in 0..ty.vlen as usize {
            let at = ty.extra + 12 * i;
            let name_off = u32_at(&self.type_section, at).ok()?;
            let type_id = u32_at(&self.type_section, at + 4).ok()?;
            let raw = u32_at(&self.type_section, at + 8).ok()?;
            let (bits, bitfield) = if ty.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            let offset_bits = base_bits + bits;
            if name_off == 0 {
                let inner = self.resolve(type_id)?;
                if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                    && let Some(found) = self.find_member(inner, member, offset_bits)
                {
                    return Some(found);
                }
                continue;
            }
            if self.name(name_off) != member {
                continue;
            }
            if bitfield != 0 || !offset_bits.is_multiple_of(8) {
                return Some(Err(format!("{member} is a bitfield in this kernel")));
            }
            return Some(
                self.size_of(type_id)
                    .map(|size| Member {
                        offset: offset_bits / 8,
                        size,
                    })
                    .ok_or_else(|| format!("size of {member} unknown")),
            );
        }
        None
    }
}
