//! Committed offsets of one shard's groups.

use std::collections::{BTreeMap, HashMap};

use crate::group::classic::ExpiryBase;
use crate::group::records::OffsetCommitValue;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    pub committed_offset: i64,
    /// -1 when unknown.
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
    /// Set by commits that asked for their own retention (OffsetCommit v2-v4).
    pub expire_timestamp_ms: Option<i64>,
    /// Where the commit's record is in `__consumer_offsets`.
    pub record_offset: i64,
}

impl OffsetAndMetadata {
    pub fn from_record(record_offset: i64, v: &OffsetCommitValue) -> Self {
        OffsetAndMetadata {
            committed_offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata.clone(),
            commit_timestamp_ms: v.commit_timestamp,
            expire_timestamp_ms: (v.expire_timestamp >= 0).then_some(v.expire_timestamp),
            record_offset,
        }
    }

    pub fn to_record(&self) -> OffsetCommitValue {
        OffsetCommitValue {
            offset: self.committed_offset,
            leader_epoch: self.leader_epoch,
            metadata: self.metadata.clone(),
            commit_timestamp: self.commit_timestamp_ms,
            expire_timestamp: self.expire_timestamp_ms.unwrap_or(-1),
        }
    }

    /// Kafka's `OffsetExpirationConditionImpl.isOffsetExpired`.
    pub fn is_expired(&self, base: ExpiryBase, now_ms: i64, retention_ms: i64) -> bool {
        match self.expire_timestamp_ms {
            Some(t) => now_ms >= t,
            None => {
                let from = match base {
                    ExpiryBase::CommitTimestamp => self.commit_timestamp_ms,
                    ExpiryBase::Fixed(t) => t,
                };
                now_ms.saturating_sub(from) >= retention_ms
            }
        }
    }
}

/// topic → partition → offset.
pub type GroupOffsets = BTreeMap<String, BTreeMap<i32, OffsetAndMetadata>>;

#[derive(Default)]
pub struct OffsetStore {
    by_group: HashMap<String, GroupOffsets>,
}

impl OffsetStore {
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetAndMetadata> {
        self.by_group.get(group)?.get(topic)?.get(&partition)
    }

    pub fn group(&self, group: &str) -> Option<&GroupOffsets> {
        self.by_group.get(group)
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.by_group.contains_key(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.by_group.keys()
    }

    pub fn put(&mut self, group: &str, topic: &str, partition: i32, o: OffsetAndMetadata) {
        self.by_group
            .entry(group.to_string())
            .or_default()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, o);
    }

    pub fn remove(
        &mut self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Option<OffsetAndMetadata> {
        let topics = self.by_group.get_mut(group)?;
        let parts = topics.get_mut(topic)?;
        let removed = parts.remove(&partition);
        if parts.is_empty() {
            topics.remove(topic);
        }
        if topics.is_empty() {
            self.by_group.remove(group);
        }
        removed
    }

    /// Every (topic, partition) with an offset in `group`.
    pub fn partitions_of(&self, group: &str) -> Vec<(String, i32)> {
        self.by_group
            .get(group)
            .map(|topics| {
                topics
                    .iter()
                    .flat_map(|(t, parts)| parts.keys().map(move |p| (t.clone(), *p)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn count(&self) -> usize {
        self.by_group
            .values()
            .flat_map(|t| t.values())
            .map(BTreeMap::len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(offset: i64, ts: i64, expire: Option<i64>) -> OffsetAndMetadata {
        OffsetAndMetadata {
            committed_offset: offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: ts,
            expire_timestamp_ms: expire,
            record_offset: 0,
        }
    }

    #[test]
    fn store_removes_empty_levels() {
        let mut s = OffsetStore::default();
        s.put("g", "t", 0, o(5, 0, None));
        s.put("g", "t", 1, o(6, 0, None));
        assert_eq!(s.count(), 2);
        assert_eq!(s.partitions_of("g"), vec![("t".into(), 0), ("t".into(), 1)]);
        s.remove("g", "t", 0);
        s.remove("g", "t", 1);
        assert!(!s.has_group("g"));
    }

    #[test]
    fn expiry_follows_kafkas_condition() {
        let retention = 1000;
        assert!(!o(1, 100, None).is_expired(ExpiryBase::CommitTimestamp, 1099, retention));
        assert!(o(1, 100, None).is_expired(ExpiryBase::CommitTimestamp, 1100, retention));
        // An empty group counts from when it became empty.
        assert!(!o(1, 100, None).is_expired(ExpiryBase::Fixed(500), 1100, retention));
        // An explicit expiry time wins.
        assert!(o(1, 100, Some(200)).is_expired(ExpiryBase::Fixed(500), 200, retention));
    }
}
