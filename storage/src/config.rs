//! Per-log configuration, named and defaulted as Kafka's topic configs are.

use std::time::Duration;

use crate::batch::{Compression, TimestampType};
use crate::error::StorageError;

/// `compression.type`: keep each batch in the producer's codec, or store every batch in one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionType {
    /// `producer`: batches are stored exactly as sent.
    Producer,
    /// `uncompressed`, `gzip`, `snappy`, `lz4` or `zstd`.
    Codec(Compression),
}

impl CompressionType {
    /// Kafka's topic-config names. `none` is a producer setting, not a topic value: Kafka's
    /// topic config refuses it, and so does this.
    pub fn from_name(name: &str) -> Option<CompressionType> {
        match name {
            "producer" => Some(CompressionType::Producer),
            "uncompressed" => Some(CompressionType::Codec(Compression::None)),
            "gzip" => Some(CompressionType::Codec(Compression::Gzip)),
            "snappy" => Some(CompressionType::Codec(Compression::Snappy)),
            "lz4" => Some(CompressionType::Codec(Compression::Lz4)),
            "zstd" => Some(CompressionType::Codec(Compression::Zstd)),
            _ => None,
        }
    }
}

/// Kafka's level ranges (`GzipCompression`, `Lz4Compression`, `ZstdCompression`).
pub const GZIP_DEFAULT_LEVEL: i32 = -1;
pub const GZIP_LEVELS: std::ops::RangeInclusive<i32> = 1..=9;
pub const LZ4_DEFAULT_LEVEL: i32 = 9;
pub const LZ4_LEVELS: std::ops::RangeInclusive<i32> = 1..=17;
pub const ZSTD_DEFAULT_LEVEL: i32 = 3;
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = -131_072..=22;

/// What happens to old data: delete whole segments, compact by key, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

impl CleanupPolicy {
    pub const DELETE: CleanupPolicy = CleanupPolicy {
        delete: true,
        compact: false,
    };
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first record is this old.
    pub segment_ms: i64,
    /// `segment.index.bytes`: preallocated size of each index file.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes of log between offset-index entries.
    pub index_interval_bytes: u64,
    /// `flush.messages`: fsync after this many records (1 = fsync every append).
    pub flush_messages: i64,
    /// `flush.ms`: fsync data older than this (checked by the log manager's flusher).
    pub flush_ms: i64,
    /// `retention.ms`: delete closed segments whose newest record is older (-1 = forever).
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger (-1 = no limit).
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `cleanup.policy`
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: how long tombstones survive after compaction first sees them.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `message.timestamp.type`
    pub timestamp_type: TimestampType,
    /// `message.timestamp.before.max.ms`: how far behind the broker's clock a CreateTime
    /// timestamp may be.
    pub message_timestamp_before_max_ms: i64,
    /// `message.timestamp.after.max.ms`: how far ahead of the broker's clock a CreateTime
    /// timestamp may be (Kafka 4.x default: one hour).
    pub message_timestamp_after_max_ms: i64,
    /// `compression.type`: see [`crate::recompress`].
    pub compression_type: CompressionType,
    /// `compression.gzip.level` (-1 = the codec's default).
    pub compression_gzip_level: i32,
    /// `compression.lz4.level`
    pub compression_lz4_level: i32,
    /// `compression.zstd.level`
    pub compression_zstd_level: i32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            max_message_bytes: 1024 * 1024 + 12,
            cleanup_policy: CleanupPolicy::DELETE,
            delete_retention_ms: 24 * 60 * 60 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            timestamp_type: TimestampType::CreateTime,
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: 60 * 60 * 1000,
            compression_type: CompressionType::Producer,
            compression_gzip_level: GZIP_DEFAULT_LEVEL,
            compression_lz4_level: LZ4_DEFAULT_LEVEL,
            compression_zstd_level: ZSTD_DEFAULT_LEVEL,
        }
    }
}

fn bad(key: &str, value: &str, reason: &str) -> StorageError {
    StorageError::Config {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_level(
    key: &str,
    value: &str,
    levels: std::ops::RangeInclusive<i32>,
    default: i32,
) -> Result<i32, StorageError> {
    let v: i32 = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not a 32-bit integer"))?;
    if v != default && !levels.contains(&v) {
        return Err(bad(
            key,
            value,
            &format!(
                "must be between {} and {} (or {default})",
                levels.start(),
                levels.end()
            ),
        ));
    }
    Ok(v)
}

fn parse_i64(key: &str, value: &str, min: i64) -> Result<i64, StorageError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not an integer"))?;
    if v < min {
        return Err(bad(key, value, &format!("must be at least {min}")));
    }
    Ok(v)
}

impl LogConfig {
    /// The Kafka config names this struct understands (others are ignored by [`Self::set`]).
    pub const KEYS: &'static [&'static str] = &[
        "segment.bytes",
        "segment.ms",
        "segment.index.bytes",
        "index.interval.bytes",
        "flush.messages",
        "flush.ms",
        "retention.ms",
        "retention.bytes",
        "max.message.bytes",
        "cleanup.policy",
        "delete.retention.ms",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "message.timestamp.type",
        "message.timestamp.before.max.ms",
        "message.timestamp.after.max.ms",
        "compression.type",
        "compression.gzip.level",
        "compression.lz4.level",
        "compression.zstd.level",
    ];

    /// Apply one Kafka topic config. Returns `Ok(false)` for keys that are not storage configs.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, StorageError> {
        match key {
            // Kafka's minimum is 1 MiB (14 bytes in tests via an internal override); allow small
            // segments so tests and small deployments can roll often.
            "segment.bytes" => self.segment_bytes = parse_i64(key, value, 14)? as u64,
            "segment.ms" => self.segment_ms = parse_i64(key, value, 1)?,
            "segment.index.bytes" => {
                self.segment_index_bytes = parse_i64(key, value, 4 * 12)? as u64
            }
            "index.interval.bytes" => self.index_interval_bytes = parse_i64(key, value, 0)? as u64,
            "flush.messages" => self.flush_messages = parse_i64(key, value, 1)?,
            "flush.ms" => self.flush_ms = parse_i64(key, value, 0)?,
            "retention.ms" => self.retention_ms = parse_i64(key, value, -1)?,
            "retention.bytes" => self.retention_bytes = parse_i64(key, value, -1)?,
            "max.message.bytes" => self.max_message_bytes = parse_i64(key, value, 0)? as usize,
            "cleanup.policy" => {
                let mut p = CleanupPolicy {
                    delete: false,
                    compact: false,
                };
                for part in value.split(',').map(str::trim) {
                    match part {
                        "delete" => p.delete = true,
                        "compact" => p.compact = true,
                        _ => return Err(bad(key, value, "expected delete, compact or both")),
                    }
                }
                self.cleanup_policy = p;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_i64(key, value, 0)?,
            "min.cleanable.dirty.ratio" => {
                let v: f64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad(key, value, "not a number"))?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad(key, value, "must be between 0 and 1"));
                }
                self.min_cleanable_dirty_ratio = v;
            }
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_i64(key, value, 0)?,
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad(key, value, "expected CreateTime or LogAppendTime")),
                }
            }
            "message.timestamp.before.max.ms" => {
                self.message_timestamp_before_max_ms = parse_i64(key, value, 0)?
            }
            "message.timestamp.after.max.ms" => {
                self.message_timestamp_after_max_ms = parse_i64(key, value, 0)?
            }
            "compression.type" => {
                self.compression_type =
                    CompressionType::from_name(value.trim()).ok_or_else(|| {
                        bad(
                            key,
                            value,
                            "expected uncompressed, zstd, lz4, snappy, gzip or producer",
                        )
                    })?
            }
            "compression.gzip.level" => {
                self.compression_gzip_level =
                    parse_level(key, value, GZIP_LEVELS, GZIP_DEFAULT_LEVEL)?
            }
            "compression.lz4.level" => {
                self.compression_lz4_level = parse_level(key, value, LZ4_LEVELS, LZ4_DEFAULT_LEVEL)?
            }
            "compression.zstd.level" => {
                self.compression_zstd_level =
                    parse_level(key, value, ZSTD_LEVELS, ZSTD_DEFAULT_LEVEL)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// This config with `overrides` applied in order.
    pub fn with_overrides<'a>(
        &self,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<LogConfig, StorageError> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// Maximum entries in the offset index (8-byte entries).
    pub fn max_offset_index_entries(&self) -> usize {
        (self.segment_index_bytes / 8) as usize
    }

    /// Maximum entries in the time index (12-byte entries).
    pub fn max_time_index_entries(&self) -> usize {
        (self.segment_index_bytes / 12) as usize
    }

    pub fn flush_interval(&self) -> Option<Duration> {
        (self.flush_ms != i64::MAX).then(|| Duration::from_millis(self.flush_ms as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_names_and_rejects_bad_values() {
        let c = LogConfig::default()
            .with_overrides([
                ("cleanup.policy", "compact,delete"),
                ("retention.ms", "-1"),
                ("segment.bytes", "1024"),
            ])
            .unwrap();
        assert_eq!(
            c.cleanup_policy,
            CleanupPolicy {
                delete: true,
                compact: true
            }
        );
        assert_eq!(c.retention_ms, -1);
        assert_eq!(c.segment_bytes, 1024);
        assert!(
            LogConfig::default()
                .with_overrides([("retention.ms", "-2")])
                .is_err()
        );
        assert!(
            LogConfig::default()
                .with_overrides([("cleanup.policy", "keep")])
                .is_err()
        );
        assert!(
            LogConfig::default()
                .with_overrides([("min.cleanable.dirty.ratio", "1.5")])
                .is_err()
        );
        assert!(
            !LogConfig::default()
                .set("min.insync.replicas", "2")
                .unwrap()
        );
    }

    #[test]
    fn compression_type_and_levels_use_kafka_names_and_ranges() {
        assert_eq!(
            LogConfig::default().compression_type,
            CompressionType::Producer
        );
        for (name, want) in [
            ("producer", CompressionType::Producer),
            ("uncompressed", CompressionType::Codec(Compression::None)),
            ("gzip", CompressionType::Codec(Compression::Gzip)),
            ("snappy", CompressionType::Codec(Compression::Snappy)),
            ("lz4", CompressionType::Codec(Compression::Lz4)),
            ("zstd", CompressionType::Codec(Compression::Zstd)),
        ] {
            let c = LogConfig::default()
                .with_overrides([("compression.type", name)])
                .unwrap();
            assert_eq!(c.compression_type, want, "{name}");
        }
        for bad in ["none", "ZSTD", "brotli", ""] {
            assert!(
                LogConfig::default()
                    .with_overrides([("compression.type", bad)])
                    .is_err(),
                "{bad:?}"
            );
        }
        let c = LogConfig::default()
            .with_overrides([
                ("compression.gzip.level", "9"),
                ("compression.lz4.level", "17"),
                ("compression.zstd.level", "-5"),
            ])
            .unwrap();
        assert_eq!(
            (
                c.compression_gzip_level,
                c.compression_lz4_level,
                c.compression_zstd_level
            ),
            (9, 17, -5)
        );
        for (key, value) in [
            ("compression.gzip.level", "0"),
            ("compression.gzip.level", "10"),
            ("compression.lz4.level", "0"),
            ("compression.lz4.level", "18"),
            ("compression.zstd.level", "23"),
            ("compression.zstd.level", "-131073"),
            ("compression.zstd.level", "x"),
        ] {
            assert!(
                LogConfig::default().with_overrides([(key, value)]).is_err(),
                "{key}={value}"
            );
        }
        assert!(
            LogConfig::default()
                .with_overrides([("compression.gzip.level", "-1")])
                .is_ok()
        );
    }
}
