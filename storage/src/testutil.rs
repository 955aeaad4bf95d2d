//! Helpers for unit tests.

use crate::batch::Compression;
use crate::records::simple_batch;

/// An uncompressed batch of values with no keys, offsets from `base`.
pub fn batch(base: i64, values: &[&[u8]]) -> Vec<u8> {
    let kvs: Vec<crate::records::KeyValue<'_>> = values.iter().map(|v| (None, Some(*v))).collect();
    simple_batch(base, 1_000, Compression::None, &kvs).to_vec()
}
