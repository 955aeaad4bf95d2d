//! Kafka v2 record batch headers, read and validated in place.
//!
//! Only the 61-byte batch header is interpreted here; records stay opaque bytes so the produce
//! path never decompresses or re-encodes. Layout (all big-endian), from Kafka's
//! `DefaultRecordBatch`:
//!
//! ```text
//! 0  baseOffset int64          | outside the CRC: stamped by the leader
//! 8  batchLength int32         | bytes after this field
//! 12 partitionLeaderEpoch int32| outside the CRC: stamped by the leader
//! 16 magic int8 (= 2)
//! 17 crc uint32 (CRC32C of everything from attributes to the end)
//! 21 attributes int16
//! 23 lastOffsetDelta int32
//! 27 baseTimestamp int64
//! 35 maxTimestamp int64
//! 43 producerId int64
//! 51 producerEpoch int16
//! 53 baseSequence int32
//! 57 recordsCount int32
//! 61 records...
//! ```

use crate::error::StorageError;

pub const BASE_OFFSET: usize = 0;
pub const LENGTH: usize = 8;
pub const PARTITION_LEADER_EPOCH: usize = 12;
pub const MAGIC: usize = 16;
pub const CRC: usize = 17;
pub const ATTRIBUTES: usize = 21;
pub const LAST_OFFSET_DELTA: usize = 23;
pub const BASE_TIMESTAMP: usize = 27;
pub const MAX_TIMESTAMP: usize = 35;
pub const PRODUCER_ID: usize = 43;
pub const PRODUCER_EPOCH: usize = 51;
pub const BASE_SEQUENCE: usize = 53;
pub const RECORDS_COUNT: usize = 57;
/// Size of the v2 batch header; records start here.
pub const HEADER_SIZE: usize = 61;
/// baseOffset + batchLength: the bytes not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
pub const CURRENT_MAGIC: i8 = 2;

pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_MASK: i16 = 0x08;
pub const TRANSACTIONAL_FLAG: i16 = 0x10;
pub const CONTROL_FLAG: i16 = 0x20;
pub const DELETE_HORIZON_FLAG: i16 = 0x40;

/// Kafka's "no timestamp" value.
pub const NO_TIMESTAMP: i64 = -1;

#[inline]
pub(crate) fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
pub(crate) fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
#[inline]
pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    be_i32(b, at) as u32
}
#[inline]
pub(crate) fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Compression codec named by the low three attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn from_attributes(attributes: i16) -> Option<Compression> {
        match attributes & COMPRESSION_MASK {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn id(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// Parse Kafka's `compression.type` names (`producer` is handled by the caller).
    pub fn from_name(name: &str) -> Option<Compression> {
        match name {
            "none" | "uncompressed" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "snappy" => Some(Compression::Snappy),
            "lz4" => Some(Compression::Lz4),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Whether record timestamps are the producer's or the broker's append time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The decoded fixed header of one v2 record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Decode the header at the start of `buf`. Checks only what is needed to know the batch's
    /// extent: enough bytes for a header, magic 2 and a plausible length. It does not require
    /// the whole batch to be present; see [`BatchHeader::size`].
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, StorageError> {
        if buf.len() < HEADER_SIZE {
            return Err(StorageError::corrupt(0, "truncated record batch header"));
        }
        let magic = buf[MAGIC] as i8;
        if magic != CURRENT_MAGIC {
            return Err(StorageError::UnsupportedMagic(magic));
        }
        let batch_length = be_i32(buf, LENGTH);
        if batch_length < MIN_BATCH_LENGTH {
            return Err(StorageError::corrupt(
                0,
                "record batch length below the header size",
            ));
        }
        Ok(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(buf, PARTITION_LEADER_EPOCH),
            magic,
            crc: be_u32(buf, CRC),
            attributes: be_i16(buf, ATTRIBUTES),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP),
            producer_id: be_i64(buf, PRODUCER_ID),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH),
            base_sequence: be_i32(buf, BASE_SEQUENCE),
            records_count: be_i32(buf, RECORDS_COUNT),
        })
    }

    /// Total bytes of the batch including the 12-byte log overhead.
    #[inline]
    pub fn size(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }
    #[inline]
    /// Saturating: the base offset lies outside the CRC, so a corrupt one read from disk must
    /// not overflow; recovery then rejects the batch by its offset range.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(self.last_offset_delta as i64)
    }
    #[inline]
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_attributes(self.attributes)
    }
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_MASK != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }
    pub fn has_delete_horizon(&self) -> bool {
        self.attributes & DELETE_HORIZON_FLAG != 0
    }
    /// The delete horizon a cleaner stored in `baseTimestamp` (KIP-534), if any.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        self.has_delete_horizon().then_some(self.base_timestamp)
    }
    /// The last sequence number this batch covers, or -1 for non-idempotent batches.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        // Sequences wrap at i32::MAX like Kafka's DefaultRecordBatch.incrementSequence.
        let next = self.base_sequence as i64 + self.last_offset_delta as i64;
        if next > i32::MAX as i64 {
            (next - i32::MAX as i64 - 1) as i32
        } else {
            next as i32
        }
    }
}

/// CRC32C over attributes..end, as stored in the header's crc field.
#[inline]
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Why a batch failed validation, and at which byte of the input.
fn check_crc(batch: &[u8], header: &BatchHeader, position: usize) -> Result<(), StorageError> {
    if compute_crc(batch) != header.crc {
        return Err(StorageError::corrupt(
            position,
            "record batch CRC32C mismatch",
        ));
    }
    Ok(())
}

/// One batch found by [`split_batches`]: where it lies in the input and its header.
#[derive(Clone, Copy, Debug)]
pub struct BatchRef {
    pub position: usize,
    pub header: BatchHeader,
}

/// The batches of one append; a produce request carries one batch per partition almost
/// always, so the list lives on the stack.
pub type BatchList = smallvec::SmallVec<[BatchRef; 2]>;

/// How strictly [`split_batches`] checks the batches it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// A leader append of producer batches: header, length, CRC and the producer rules.
    Producer,
    /// A follower append or recovery scan: header, length and CRC, offsets as they are.
    Stored,
}

/// Split `buf` into whole batches, validating each. The buffer must consist of complete
/// batches; trailing bytes are an error. `max_batch_size` bounds each batch (`max.message.bytes`).
pub fn split_batches(
    buf: &[u8],
    validation: Validation,
    max_batch_size: usize,
    out: &mut BatchList,
) -> Result<(), StorageError> {
    let mut position = 0usize;
    if buf.is_empty() {
        return Err(StorageError::InvalidRecord("empty record set".into()));
    }
    while position < buf.len() {
        let rest = &buf[position..];
        let header = BatchHeader::parse(rest).map_err(|e| e.at(position))?;
        let size = header.size();
        if size > rest.len() {
            return Err(StorageError::corrupt(
                position,
                "record batch length exceeds the request",
            ));
        }
        if size > max_batch_size {
            return Err(StorageError::RecordTooLarge {
                size,
                max: max_batch_size,
            });
        }
        let batch = &rest[..size];
        check_crc(batch, &header, position)?;
        if header.compression().is_none() {
            return Err(StorageError::corrupt(
                position,
                "unknown compression codec in attributes",
            ));
        }
        if header.last_offset_delta < 0 {
            return Err(StorageError::corrupt(position, "negative lastOffsetDelta"));
        }
        if validation == Validation::Producer {
            validate_producer_batch(&header)?;
        }
        out.push(BatchRef { position, header });
        position += size;
    }
    Ok(())
}

/// Producer-batch rules that the header alone can check: no control batches, at least one
/// record, and a `lastOffsetDelta` that matches the record count (so offsets assigned from the
/// header agree with the records). Records are not decoded: the CRC already vouches for the
/// bytes the producer built, and walking them would cost as much again as the CRC.
fn validate_producer_batch(h: &BatchHeader) -> Result<(), StorageError> {
    if h.is_control() {
        return Err(StorageError::InvalidRecord(
            "producers may not send control batches".into(),
        ));
    }
    if h.records_count <= 0 {
        return Err(StorageError::InvalidRecord(
            "record batch has no records".into(),
        ));
    }
    if h.last_offset_delta != h.records_count - 1 {
        return Err(StorageError::InvalidRecord(format!(
            "lastOffsetDelta {} does not match record count {}",
            h.last_offset_delta, h.records_count
        )));
    }
    Ok(())
}

/// Read a zigzag varint (i32) at `at`; returns the value and its encoded length.
pub fn read_varint(buf: &[u8], at: usize) -> Option<(i32, usize)> {
    let (v, n) = read_unsigned_varint(buf, at, 5)?;
    let v = v as u32;
    Some((((v >> 1) as i32) ^ -((v & 1) as i32), n))
}

/// Read a zigzag varlong (i64) at `at`; returns the value and its encoded length.
pub fn read_varlong(buf: &[u8], at: usize) -> Option<(i64, usize)> {
    let (v, n) = read_unsigned_varint(buf, at, 10)?;
    Some((((v >> 1) as i64) ^ -((v & 1) as i64), n))
}

fn read_unsigned_varint(buf: &[u8], at: usize, max_len: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for i in 0..max_len {
        let b = *buf.get(at + i)?;
        value |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Stamp base offset and partition leader epoch in place. Both lie outside the CRC.
#[inline]
pub fn stamp_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Set the LogAppendTime flag and max timestamp in a header copy, and recompute the CRC.
/// `header` is the batch's first [`HEADER_SIZE`] bytes; `records` the bytes after them.
pub fn stamp_log_append_time(header: &mut [u8; HEADER_SIZE], records: &[u8], append_time: i64) {
    let attributes = be_i16(header, ATTRIBUTES) | TIMESTAMP_TYPE_MASK;
    header[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    header[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&append_time.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[ATTRIBUTES..]), records);
    header[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Iterate the batches stored in a byte slice (a segment's contents), stopping quietly at the
/// first incomplete header. Used for reads and index scans of data that was validated on write.
pub struct StoredBatches<'a> {
    buf: &'a [u8],
    position: usize,
}

impl<'a> StoredBatches<'a> {
    pub fn new(buf: &'a [u8], position: usize) -> Self {
        StoredBatches { buf, position }
    }
}

impl Iterator for StoredBatches<'_> {
    type Item = BatchRef;
    fn next(&mut self) -> Option<BatchRef> {
        let rest = self.buf.get(self.position..)?;
        let header = BatchHeader::parse(rest).ok()?;
        if header.size() > rest.len() {
            return None;
        }
        let r = BatchRef {
            position: self.position,
            header,
        };
        self.position += header.size();
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_known_values() {
        // zigzag: 0 -> 0, -1 -> 1, 1 -> 2, 300 -> 600 = 0xd8 0x04
        assert_eq!(read_varint(&[0x00], 0), Some((0, 1)));
        assert_eq!(read_varint(&[0x01], 0), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02], 0), Some((1, 1)));
        assert_eq!(read_varint(&[0xd8, 0x04], 0), Some((300, 2)));
        assert_eq!(read_varint(&[0x80, 0x80], 0), None);
        assert_eq!(
            read_varlong(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
                0
            ),
            Some((i64::MIN, 10))
        );
    }

    #[test]
    fn last_sequence_wraps() {
        let mut h = BatchHeader::parse(&crate::testutil::batch(0, &[b"a", b"b", b"c"])).unwrap();
        h.base_sequence = i32::MAX - 1;
        assert_eq!(h.last_sequence(), 0);
        h.base_sequence = 5;
        assert_eq!(h.last_sequence(), 7);
    }
}
