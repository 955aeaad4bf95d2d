//! The allocation-free walk over a request body.
//!
//! Every read mirrors the corresponding kafka-protocol decoder byte for byte
//! (including its unsigned-varint quirks), so that the walk and the real decode
//! agree on where each field starts. The walk is stricter in two places, both
//! of which only reject malformed input: an array may not claim more elements
//! than bytes remain, and a known tagged field must fill exactly the size its
//! header declares.

use super::{StructDef, Ty, structs};

/// Nesting limit; Kafka's request schemas nest at most a handful of levels.
const MAX_DEPTH: usize = 32;

/// Why a request body failed the shape check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("no request schema for api key {0}")]
    UnknownApi(i16),
    #[error("{name} does not exist in version {version}")]
    UnsupportedVersion { name: &'static str, version: i16 },
    #[error("body ends inside {what} at byte {offset}")]
    Truncated { what: &'static str, offset: usize },
    #[error("{what} has invalid length {len} at byte {offset}")]
    InvalidLength {
        what: &'static str,
        len: i64,
        offset: usize,
    },
    #[error("array claims {count} elements but only {remaining} bytes remain at byte {offset}")]
    ArrayCountTooLarge {
        count: u64,
        remaining: usize,
        offset: usize,
    },
    #[error("{what} at byte {offset} is not a valid 32-bit varint")]
    InvalidVarint { what: &'static str, offset: usize },
    #[error("tag {tag} at byte {offset} is out of range")]
    InvalidTag { tag: u32, offset: usize },
    #[error("tagged field {tag} is not valid in version {version}")]
    TagNotInVersion { tag: u32, version: i16 },
    #[error("tagged field {tag} declares {declared} bytes but its value uses {used}")]
    TaggedSizeMismatch {
        tag: u32,
        declared: usize,
        used: usize,
    },
    #[error("request nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A cursor over the body; `base` keeps offsets meaningful inside tagged fields.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn offset(&self) -> usize {
        self.base + self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], SchemaError> {
        if n > self.remaining() {
            return Err(SchemaError::Truncated {
                what,
                offset: self.offset(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn i8(&mut self, what: &'static str) -> Result<i8, SchemaError> {
        Ok(self.take(1, what)?[0] as i8)
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, SchemaError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, SchemaError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Unsigned varint of at most 32 bits. kafka-protocol silently drops
    /// excess bits and stops after five bytes even if the continuation bit is
    /// set; Kafka rejects such varints, and so do we (valid encoders never
    /// produce them), which keeps the walk and the decode trivially in step.
    fn uvarint(&mut self, what: &'static str) -> Result<u32, SchemaError> {
        let offset = self.offset();
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = u32::from(self.take(1, what)?[0]);
            if i == 4 && b > 0x0f {
                return Err(SchemaError::InvalidVarint { what, offset });
            }
            value |= (b & 0x7f) << (i * 7);
            if b < 0x80 {
                return Ok(value);
            }
        }
        Err(SchemaError::InvalidVarint { what, offset })
    }
}

/// Walks one body and returns how many bytes it occupies.
pub(super) fn walk_body(root: usize, version: i16, body: &[u8]) -> Result<usize, SchemaError> {
    let mut r = Reader {
        buf: body,
        pos: 0,
        base: 0,
    };
    walk_struct(root, version, &mut r, 0)?;
    Ok(body.len() - r.remaining())
}

fn def(idx: usize) -> &'static StructDef {
    &structs()[idx]
}

fn walk_struct(
    idx: usize,
    version: i16,
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<(), SchemaError> {
    if depth > MAX_DEPTH {
        return Err(SchemaError::TooDeep);
    }
    let s = def(idx);
    if version < s.lo || version > s.hi {
        return Err(SchemaError::UnsupportedVersion {
            name: s.name,
            version,
        });
    }
    for f in s.fields {
        if f.lo <= version && version <= f.hi {
            walk_ty(&f.ty, version, r, depth)?;
        }
    }
    if s.has_tagged_section(version) {
        walk_tagged(s, version, r, depth)?;
    }
    Ok(())
}

fn walk_tagged(
    s: &StructDef,
    version: i16,
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<(), SchemaError> {
    // Each entry consumes at least two bytes or fails, so this loop is bounded
    // by the body length whatever the count says.
    let count = r.uvarint("tagged field count")?;
    for _ in 0..count {
        let offset = r.offset();
        let tag = r.uvarint("tag")?;
        // kafka-protocol stores unknown tags as i32 but re-encodes only the
        // non-negative ones while still counting them all, so a tag above
        // i32::MAX would make a re-encoded message corrupt. Kafka's tags are
        // small numbers; refuse those.
        if tag > i32::MAX as u32 {
            return Err(SchemaError::InvalidTag { tag, offset });
        }
        let size = r.uvarint("tagged field size")? as usize;
        let offset = r.offset();
        let value = r.take(size, "tagged field")?;
        let Some(known) = s.tags.iter().find(|t| t.tag == tag) else {
            continue;
        };
        if version < known.lo || version > known.hi {
            return Err(SchemaError::TagNotInVersion { tag, version });
        }
        let mut sub = Reader {
            buf: value,
            pos: 0,
            base: offset,
        };
        walk_ty(&known.ty, version, &mut sub, depth + 1)?;
        if sub.pos != size {
            return Err(SchemaError::TaggedSizeMismatch {
                tag,
                declared: size,
                used: sub.pos,
            });
        }
    }
    Ok(())
}

/// Reads a length or count prefix. `None` means null.
fn read_len(
    r: &mut Reader<'_>,
    compact: bool,
    wide: bool,
    nullable: bool,
    what: &'static str,
) -> Result<Option<u64>, SchemaError> {
    let offset = r.offset();
    let len: i64 = if compact {
        // Compact forms store length + 1; zero is null.
        i64::from(r.uvarint(what)?) - 1
    } else if wide {
        i64::from(r.i32(what)?)
    } else {
        i64::from(r.i16(what)?)
    };
    match len {
        -1 if nullable => Ok(None),
        n if n >= 0 => Ok(Some(n as u64)),
        n => Err(SchemaError::InvalidLength {
            what,
            len: n,
            offset,
        }),
    }
}

fn walk_ty(ty: &Ty, version: i16, r: &mut Reader<'_>, depth: usize) -> Result<(), SchemaError> {
    match *ty {
        Ty::I8 | Ty::Bool => skip(r, 1, "int8")?,
        Ty::I16 | Ty::U16 => skip(r, 2, "int16")?,
        Ty::I32 | Ty::U32 => skip(r, 4, "int32")?,
        Ty::I64 | Ty::F64 => skip(r, 8, "int64")?,
        Ty::Uuid => skip(r, 16, "uuid")?,
        Ty::Str { compact, nullable } => {
            if let Some(n) = read_len(r, compact, false, nullable, "string")? {
                skip(r, n, "string")?;
            }
        }
        Ty::Bytes { compact, nullable } => {
            if let Some(n) = read_len(r, compact, true, nullable, "bytes")? {
                skip(r, n, "bytes")?;
            }
        }
        Ty::Array {
            compact,
            nullable,
            elem,
        } => {
            let offset = r.offset();
            let Some(count) = read_len(r, compact, true, nullable, "array")? else {
                return Ok(());
            };
            // The check that matters: kafka-protocol reserves `count` elements
            // up front. Every element takes at least one byte in every request
            // schema, so a larger count can only be a lie.
            if count > r.remaining() as u64 {
                return Err(SchemaError::ArrayCountTooLarge {
                    count,
                    remaining: r.remaining(),
                    offset,
                });
            }
            if let Some(w) = elem.fixed_width() {
                skip(r, count * w as u64, "array")?;
            } else {
                for _ in 0..count {
                    walk_ty(elem, version, r, depth + 1)?;
                }
            }
        }
        Ty::Struct(idx) => walk_struct(idx, version, r, depth + 1)?,
        Ty::OptStruct(idx) => {
            // kafka-protocol treats any marker other than 1 as null.
            if r.i8("struct presence marker")? == 1 {
                walk_struct(idx, version, r, depth + 1)?;
            }
        }
    }
    Ok(())
}

fn skip(r: &mut Reader<'_>, n: u64, what: &'static str) -> Result<(), SchemaError> {
    let n = usize::try_from(n).map_err(|_| SchemaError::Truncated {
        what,
        offset: r.offset(),
    })?;
    r.take(n, what).map(|_| ())
}
