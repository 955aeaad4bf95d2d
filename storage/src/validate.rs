//! Record-level checks a leader makes before appending producer batches, as Kafka's log
//! validator does: a compacted topic refuses records without a key (INVALID_RECORD), and a
//! CreateTime topic refuses timestamps outside `message.timestamp.before.max.ms` /
//! `message.timestamp.after.max.ms` of the broker's clock (INVALID_TIMESTAMP). Failures name
//! each offending record by its index in the request, which Produce v8+ returns to the client
//! as per-record errors.
//!
//! Batches stay as sent, so records are only walked when the header cannot settle the
//! question: a compacted topic (keys are per record), a finite `before` bound (the batch
//! header carries the largest timestamp but not the smallest), or a header whose timestamps
//! are already out of range (to say which records are). With the defaults (`before` unbounded,
//! `after` one hour, cleanup.policy=delete) the hot path reads only the header.

use crate::batch::{self, BatchRef, Compression, HEADER_SIZE, TimestampType};
use crate::compression;
use crate::config::LogConfig;
use crate::error::StorageError;

/// Kafka's "no timestamp" marker; such records are not range-checked.
const NO_TIMESTAMP: i64 = -1;

/// Why a request's records were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    /// Kafka: INVALID_RECORD.
    InvalidRecord,
    /// Kafka: INVALID_TIMESTAMP.
    InvalidTimestamp,
}

/// One refused record: its index among the request's records, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub index: i32,
    pub message: String,
}

/// The bounds a leader checks, taken from the topic's config and the clock once per append.
struct Rules {
    compacted: bool,
    create_time: bool,
    earliest: i64,
    latest: i64,
}

impl Rules {
    fn new(config: &LogConfig, now_ms: i64) -> Rules {
        Rules {
            compacted: config.cleanup_policy.compact,
            create_time: config.timestamp_type == TimestampType::CreateTime,
            earliest: now_ms.saturating_sub(config.message_timestamp_before_max_ms),
            latest: now_ms.saturating_add(config.message_timestamp_after_max_ms),
        }
    }

    fn timestamp_ok(&self, ts: i64) -> bool {
        ts == NO_TIMESTAMP || (self.earliest..=self.latest).contains(&ts)
    }
}

/// Checks the records of `batches` (found in `records` by `split_batches`) against the
/// topic's rules. `Ok` means append; `Err` carries every offending record.
pub fn check_records(
    records: &[u8],
    batches: &[BatchRef],
    config: &LogConfig,
    now_ms: i64,
) -> Result<(), StorageError> {
    let rules = Rules::new(config, now_ms);
    let mut errors = Vec::new();
    let mut reason = RejectReason::InvalidRecord;
    let mut first_index = 0i32;
    for b in batches {
        let h = &b.header;
        // A producer may not claim LogAppendTime on a LogAppendTime topic (Kafka refuses it
        // there; a CreateTime topic takes the batch's timestamps as they are).
        let claims_append_time = h.timestamp_type() == TimestampType::LogAppendTime;
        if !rules.create_time && claims_append_time {
            return Err(StorageError::RecordsRejected {
                reason: RejectReason::InvalidTimestamp,
                errors: vec![RecordError {
                    index: first_index,
                    message: "producers may not set the LogAppendTime timestamp type".into(),
                }],
            });
        }
        let check_timestamps = rules.create_time;
        let header_in_range = !check_timestamps
            || (rules.timestamp_ok(h.max_timestamp)
                && rules.timestamp_ok(h.base_timestamp)
                && config.message_timestamp_before_max_ms == i64::MAX);
        if header_in_range && !rules.compacted {
            first_index = first_index.saturating_add(h.records_count);
            continue;
        }
        let body = &records[b.position + HEADER_SIZE..b.position + h.size()];
        let codec = h.compression().ok_or(StorageError::corrupt(
            b.position,
            "unknown compression codec",
        ))?;
        let inflated;
        let body = match codec {
            Compression::None => body,
            c => {
                inflated = compression::decompress(c, body)?;
                &inflated[..]
            }
        };
        let mut found_timestamp_error = false;
        walk(body, h.records_count, |i, view| {
            let index = first_index.saturating_add(i);
            if rules.compacted && view.key_is_null {
                errors.push(RecordError {
                    index,
                    message: "a compacted topic cannot accept a record without a key".into(),
                });
            } else if check_timestamps && !claims_append_time {
                let ts = h.base_timestamp.wrapping_add(view.timestamp_delta);
                if !rules.timestamp_ok(ts) {
                    found_timestamp_error = true;
                    errors.push(RecordError {
                        index,
                        message: format!(
                            "timestamp {ts} is out of range; it must be within [{}, {}]",
                            rules.earliest, rules.latest
                        ),
                    });
                }
            }
        })
        .map_err(|e| e.at(b.position))?;
        // The header's own largest timestamp counts too: it is what the time index keeps.
        if check_timestamps && !rules.timestamp_ok(h.max_timestamp) && !found_timestamp_error {
            found_timestamp_error = true;
            errors.push(RecordError {
                index: first_index,
                message: format!(
                    "batch maxTimestamp {} is out of range; it must be within [{}, {}]",
                    h.max_timestamp, rules.earliest, rules.latest
                ),
            });
        }
        if found_timestamp_error {
            reason = RejectReason::InvalidTimestamp;
        }
        first_index = first_index.saturating_add(h.records_count);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(StorageError::RecordsRejected { reason, errors })
    }
}

/// What the validator needs of one record.
struct RecordView {
    timestamp_delta: i64,
    key_is_null: bool,
}

/// Walks `count` v2 records in an uncompressed batch body without allocating.
fn walk(body: &[u8], count: i32, mut f: impl FnMut(i32, RecordView)) -> Result<(), StorageError> {
    let truncated = || StorageError::corrupt(HEADER_SIZE, "truncated record");
    let mut at = 0usize;
    for i in 0..count.max(0) {
        let (len, n) = batch::read_varint(body, at).ok_or_else(truncated)?;
        let start = at + n;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= body.len())
            .ok_or_else(truncated)?;
        let record = &body[..end];
        let mut p = start + 1; // attributes
        let (timestamp_delta, n) = batch::read_varlong(record, p).ok_or_else(truncated)?;
        p += n;
        let (_offset_delta, n) = batch::read_varint(record, p).ok_or_else(truncated)?;
        p += n;
        let (key_len, _) = batch::read_varint(record, p).ok_or_else(truncated)?;
        f(
            i,
            RecordView {
                timestamp_delta,
                key_is_null: key_len < 0,
            },
        );
        at = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::batch::{BatchList, Validation, split_batches};
    use crate::config::CleanupPolicy;
    use crate::records::{BatchSpec, Record, encode_batch};

    fn record(ts: i64, key: Option<&'static [u8]>) -> Record {
        Record {
            offset: 0,
            timestamp: ts,
            key: key.map(Bytes::from_static),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
        }
    }

    fn check(
        config: &LogConfig,
        now: i64,
        codec: Compression,
        recs: &[Record],
    ) -> Result<(), StorageError> {
        let recs: Vec<Record> = recs
            .iter()
            .enumerate()
            .map(|(i, r)| Record {
                offset: i as i64,
                ..r.clone()
            })
            .collect();
        let bytes = encode_batch(&BatchSpec::new(0, codec), &recs).unwrap();
        let mut batches = BatchList::new();
        split_batches(&bytes, Validation::Producer, usize::MAX, &mut batches).unwrap();
        check_records(&bytes, &batches, config, now)
    }

    fn rejected(r: Result<(), StorageError>) -> (RejectReason, Vec<i32>) {
        match r {
            Err(StorageError::RecordsRejected { reason, errors }) => {
                (reason, errors.iter().map(|e| e.index).collect())
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn defaults_accept_recent_keyless_records() {
        let c = LogConfig::default();
        for codec in [Compression::None, Compression::Zstd] {
            check(
                &c,
                NOW,
                codec,
                &[record(NOW - 86_400_000, None), record(NOW, None)],
            )
            .unwrap();
        }
    }

    #[test]
    fn compacted_topic_names_each_keyless_record() {
        let c = LogConfig {
            cleanup_policy: CleanupPolicy {
                delete: false,
                compact: true,
            },
            ..LogConfig::default()
        };
        for codec in [Compression::None, Compression::Lz4, Compression::Gzip] {
            let recs = [
                record(NOW, Some(b"k")),
                record(NOW, None),
                record(NOW, Some(b"k")),
                record(NOW, None),
            ];
            assert_eq!(
                rejected(check(&c, NOW, codec, &recs)),
                (RejectReason::InvalidRecord, vec![1, 3])
            );
            check(&c, NOW, codec, &[record(NOW, Some(b"k"))]).unwrap();
        }
    }

    #[test]
    fn future_timestamps_beyond_after_max_are_refused() {
        let c = LogConfig::default();
        let hour = 3_600_000;
        let recs = [
            record(NOW, None),
            record(NOW + 2 * hour, None),
            record(NOW + hour - 1, None),
        ];
        for codec in [Compression::None, Compression::Snappy] {
            assert_eq!(
                rejected(check(&c, NOW, codec, &recs)),
                (RejectReason::InvalidTimestamp, vec![1])
            );
        }
    }

    #[test]
    fn old_timestamps_beyond_before_max_are_refused_even_behind_the_base() {
        let c = LogConfig {
            message_timestamp_before_max_ms: 1000,
            ..LogConfig::default()
        };
        // The second record is older than the batch's base timestamp: only a walk finds it.
        let recs = [
            record(NOW, None),
            record(NOW - 5000, None),
            record(NOW - 999, None),
        ];
        assert_eq!(
            rejected(check(&c, NOW, Compression::None, &recs)),
            (RejectReason::InvalidTimestamp, vec![1])
        );
    }

    #[test]
    fn log_append_time_topics_ignore_producer_timestamps() {
        let c = LogConfig {
            timestamp_type: TimestampType::LogAppendTime,
            ..LogConfig::default()
        };
        check(
            &c,
            NOW,
            Compression::None,
            &[record(NOW + 100 * 3_600_000, None)],
        )
        .unwrap();
    }
}
