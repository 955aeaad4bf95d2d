//! Shapes of every request body kafka-protocol can decode, and a walker that
//! checks a body against them without allocating.
//!
//! Why this exists: kafka-protocol 0.18 decodes arrays with
//! `Vec::with_capacity(count)` where `count` comes straight from the wire
//! (`src/protocol/types.rs`, the `Decoder<Option<Vec<T>>>` impls of `Array` and
//! `CompactArray`). A count of 2^31 on an array of structs asks the allocator
//! for hundreds of GiB; the allocation fails and Rust aborts the process, which
//! `catch_unwind` cannot stop. No `ByteBuf` wrapper can intervene either: the
//! count is an ordinary `i32`/varint read and the reservation happens before any
//! further byte is consumed.
//!
//! So before kafka-protocol sees a body, [`validate`] walks it with the tables in
//! [`tables`] (derived from kafka-protocol's own generated decoders by
//! `protocol/schema-gen/gen_schema.py`). The walk visits every element of every
//! array, including those inside known tagged fields, and rejects any count
//! larger than the bytes left. Once it succeeds, every count kafka-protocol will
//! read is backed by real elements, so its reservations are bounded by what it
//! is about to materialise anyway. Strings and byte fields need no such care:
//! kafka-protocol bounds-checks them (`try_get_bytes`) without allocating.

mod tables;
mod walk;

pub use walk::SchemaError;

#[cfg(test)]
mod tests;

/// The wire type of one field, as kafka-protocol decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    I8,
    I16,
    U16,
    I32,
    // No request carries a uint32 today; kept so regenerated tables compile
    // when one does.
    #[allow(dead_code)]
    U32,
    I64,
    F64,
    Bool,
    Uuid,
    /// UTF-8 string: `i16` length (or varint length + 1 when compact).
    Str {
        compact: bool,
        nullable: bool,
    },
    /// Raw bytes: `i32` length (or varint length + 1 when compact).
    Bytes {
        compact: bool,
        nullable: bool,
    },
    /// `i32` count (or varint count + 1 when compact), then the elements.
    Array {
        compact: bool,
        nullable: bool,
        elem: &'static Ty,
    },
    /// A nested struct, index into `tables::STRUCTS`.
    Struct(usize),
    /// An `i8` presence marker (1 = present) then the struct.
    OptStruct(usize),
}

impl Ty {
    /// Encoded width of fixed-size types.
    pub(crate) const fn fixed_width(&self) -> Option<usize> {
        match self {
            Ty::I8 | Ty::Bool => Some(1),
            Ty::I16 | Ty::U16 => Some(2),
            Ty::I32 | Ty::U32 => Some(4),
            Ty::I64 | Ty::F64 => Some(8),
            Ty::Uuid => Some(16),
            _ => None,
        }
    }
}

/// A field present in versions `lo..=hi`.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) lo: i16,
    pub(crate) hi: i16,
    pub(crate) ty: Ty,
}

/// A known tagged field, valid in versions `lo..=hi`.
#[derive(Debug)]
pub(crate) struct Tagged {
    pub(crate) tag: u32,
    pub(crate) lo: i16,
    pub(crate) hi: i16,
    pub(crate) ty: Ty,
}

/// One struct: its versions, its fields in wire order, and its tagged section.
#[derive(Debug)]
pub(crate) struct StructDef {
    pub(crate) name: &'static str,
    pub(crate) lo: i16,
    pub(crate) hi: i16,
    pub(crate) fields: &'static [Field],
    /// Versions (inclusive) in which a tagged-field section follows the fields.
    pub(crate) tagged: Option<(i16, i16)>,
    pub(crate) tags: &'static [Tagged],
}

impl StructDef {
    pub(crate) fn has_tagged_section(&self, version: i16) -> bool {
        self.tagged
            .is_some_and(|(lo, hi)| lo <= version && version <= hi)
    }
}

pub(crate) fn structs() -> &'static [StructDef] {
    tables::STRUCTS
}

/// The kafka-protocol release the tables were derived from.
pub fn tables_kafka_protocol_version() -> &'static str {
    tables::KAFKA_PROTOCOL_VERSION
}

/// Index of the request body struct for an API key, if kafka-protocol has one.
pub(crate) fn root_for(api_key: i16) -> Option<usize> {
    tables::ROOTS
        .binary_search_by_key(&api_key, |&(k, _)| k)
        .ok()
        .map(|i| tables::ROOTS[i].1)
}

/// The request versions kafka-protocol can decode for an API key. Unlike
/// `ApiKey::valid_versions()` (the response's range), this excludes request
/// versions Kafka marks unstable.
pub fn request_versions(api_key: i16) -> Option<(i16, i16)> {
    root_for(api_key).map(|i| (structs()[i].lo, structs()[i].hi))
}

/// Checks that `body` is a well-formed request body for `api_key`/`version`
/// whose every array count is backed by real elements, and returns the length of
/// the body it found. Bytes after that are the caller's to judge: Kafka ignores
/// them, and librdkafka sends some (three after a Metadata v13 body). Never
/// allocates.
pub fn validate(api_key: i16, version: i16, body: &[u8]) -> Result<usize, SchemaError> {
    let root = root_for(api_key).ok_or(SchemaError::UnknownApi(api_key))?;
    walk::walk_body(root, version, body)
}
