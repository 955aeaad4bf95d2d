//! Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and the expiry of old offsets
//! (Kafka's `OffsetMetadataManager`).

use crate::group::classic::{ClassicGroup, ExpiryBase, GroupState};
use crate::group::codes;
use crate::group::now_ms;
use crate::group::offsets::OffsetAndMetadata;
use crate::group::records::CoordinatorRecord;
use crate::group::state::ShardState;

/// An OffsetCommit whose topics and partitions exist (the handler answered the others).
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// -1: the broker's retention (`offsets.retention.minutes`).
    pub retention_time_ms: i64,
    pub api_version: i16,
    pub topics: Vec<(String, Vec<CommitPartition>)>,
}

#[derive(Clone, Debug)]
pub struct CommitPartition {
    pub index: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// Per topic, per partition error codes, and the log offset the answer must wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteResult {
    pub topics: Vec<(String, Vec<(i32, i16)>)>,
    pub end: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedOffset {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: i16,
}

impl FetchedOffset {
    fn none(partition: i32) -> Self {
        FetchedOffset {
            partition,
            offset: -1,
            leader_epoch: -1,
            metadata: String::new(),
            error: codes::NONE,
        }
    }

    fn of(partition: i32, o: &OffsetAndMetadata) -> Self {
        FetchedOffset {
            partition,
            offset: o.committed_offset,
            leader_epoch: o.leader_epoch,
            metadata: o.metadata.clone(),
            error: codes::NONE,
        }
    }
}

pub type FetchedTopics = Vec<(String, Vec<FetchedOffset>)>;

/// Topics with partition indexes, as requests name them.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

impl ShardState {
    /// OffsetCommit. `Err` fails every partition with that code.
    pub fn commit_offsets(&mut self, req: CommitRequest) -> Result<WriteResult, i16> {
        self.validate_offset_commit(&req)?;
        // Offset commits keep a classic member's session alive.
        if let Some(g) = self.groups.get(&req.group_id)
            && matches!(
                g.state(),
                GroupState::Stable | GroupState::PreparingRebalance
            )
            && let Some(m) = g.member(&req.member_id)
        {
            let session = i64::from(m.session_timeout_ms);
            self.env
                .reschedule_heartbeat(&req.group_id, &req.member_id, session);
        }
        let now = now_ms();
        let expire =
            (req.retention_time_ms >= 0).then(|| now.saturating_add(req.retention_time_ms));
        let max = self.env.config.offset_metadata_max_bytes;
        let mut records = Vec::new();
        let mut topics = Vec::with_capacity(req.topics.len());
        for (topic, partitions) in &req.topics {
            let mut out = Vec::with_capacity(partitions.len());
            for p in partitions {
                let metadata = p.metadata.clone().unwrap_or_default();
                // Kafka measures the metadata in UTF-16 code units (Java's String.length).
                if metadata.encode_utf16().count() > max {
                    out.push((p.index, codes::OFFSET_METADATA_TOO_LARGE));
                    continue;
                }
                out.push((p.index, codes::NONE));
                let o = OffsetAndMetadata {
                    committed_offset: p.offset,
                    leader_epoch: p.leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                    expire_timestamp_ms: expire,
                    record_offset: -1,
                };
                records.push(CoordinatorRecord::OffsetCommit {
                    group: req.group_id.clone(),
                    topic: topic.clone(),
                    partition: p.index,
                    value: Some(o.to_record()),
                });
            }
            topics.push((topic.clone(), out));
        }
        let end = self.write_and_replay(&records)?;
        Ok(WriteResult { topics, end })
    }

    fn validate_offset_commit(&self, req: &CommitRequest) -> Result<(), i16> {
        if let Some(g) = self.consumer_groups.get(&req.group_id) {
            return g.validate_offset_commit(&req.member_id, req.generation_id, req.api_version);
        }
        match self.groups.get(&req.group_id) {
            Some(g) => g.validate_offset_commit(
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
            ),
            // A commit without membership creates a simple group (when its record replays).
            None if req.generation_id < 0 => Ok(()),
            None if req.api_version >= 9 => Err(codes::GROUP_ID_NOT_FOUND),
            None => Err(codes::ILLEGAL_GENERATION),
        }
    }

    /// Appends records and applies them; returns the offset after them.
    pub(crate) fn write_and_replay(&mut self, records: &[CoordinatorRecord]) -> Result<i64, i16> {
        let (first, end) = self.env.append(records)?;
        for (i, r) in records.iter().enumerate() {
            self.replay(first + i as i64, r);
        }
        self.settle();
        Ok(end)
    }

    /// OffsetFetch for one group: the named partitions, or every committed one (`None`).
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<&[(String, Vec<i32>)]>,
    ) -> FetchedTopics {
        let exists = self.consumer_groups.contains_key(group_id)
            || self
                .groups
                .get(group_id)
                .is_some_and(|g| !g.is(GroupState::Dead));
        let offsets = exists.then(|| self.offsets.group(group_id)).flatten();
        match topics {
            Some(topics) => topics
                .iter()
                .map(|(t, parts)| {
                    let found = offsets.and_then(|o| o.get(t));
                    let out = parts
                        .iter()
                        .map(|p| match found.and_then(|f| f.get(p)) {
                            Some(o) => FetchedOffset::of(*p, o),
                            None => FetchedOffset::none(*p),
                        })
                        .collect();
                    (t.clone(), out)
                })
                .collect(),
            None => offsets
                .map(|o| {
                    o.iter()
                        .map(|(t, parts)| {
                            let out = parts
                                .iter()
                                .map(|(p, o)| FetchedOffset::of(*p, o))
                                .collect();
                            (t.clone(), out)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// OffsetFetch v9 names the member asking: for consumer groups it must be a member in
    /// its current epoch (classic groups do not check).
    pub fn validate_offset_fetch(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), i16> {
        match self.consumer_groups.get(group_id) {
            Some(g) => g.validate_offset_fetch(member_id, member_epoch),
            None => Ok(()),
        }
    }

    /// OffsetDelete: removes offsets of topics the group does not consume.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        topics: &[(String, Vec<i32>)],
    ) -> Result<WriteResult, i16> {
        // The topics the group consumes (their offsets stay).
        let subscribed: Vec<bool> = if let Some(g) = self.consumer_groups.get(group_id) {
            topics
                .iter()
                .map(|(t, _)| g.is_subscribed_to_topic(t))
                .collect()
        } else {
            let g = self.groups.get(group_id).ok_or(codes::GROUP_ID_NOT_FOUND)?;
            g.validate_offset_delete()?;
            topics
                .iter()
                .map(|(t, _)| g.is_subscribed_to_topic(t))
                .collect()
        };
        let mut records = Vec::new();
        let mut out = Vec::with_capacity(topics.len());
        for ((t, parts), subscribed) in topics.iter().zip(subscribed) {
            if subscribed {
                out.push((
                    t.clone(),
                    parts
                        .iter()
                        .map(|p| (*p, codes::GROUP_SUBSCRIBED_TO_TOPIC))
                        .collect(),
                ));
                continue;
            }
            for p in parts {
                if self.offsets.get(group_id, t, *p).is_some() {
                    records.push(offset_tombstone(group_id, t, *p));
                }
            }
            out.push((t.clone(), parts.iter().map(|p| (*p, codes::NONE)).collect()));
        }
        let end = self.write_and_replay(&records)?;
        Ok(WriteResult { topics: out, end })
    }

    /// DeleteGroups for the groups of this shard: per group, its error code; and the offset
    /// the answer must wait for.
    pub fn delete_groups(&mut self, ids: &[String]) -> Result<(Vec<(String, i16)>, i64), i16> {
        let mut records = Vec::new();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(g) = self.consumer_groups.get(id) {
                let code = match g.validate_delete() {
                    Err(code) => code,
                    Ok(()) => {
                        for (t, p) in self.offsets.partitions_of(id) {
                            records.push(offset_tombstone(id, &t, p));
                        }
                        records.extend(g.tombstones());
                        codes::NONE
                    }
                };
                out.push((id.clone(), code));
                continue;
            }
            let code = match self.groups.get(id) {
                None => codes::GROUP_ID_NOT_FOUND,
                Some(g) => match g.validate_delete() {
                    Err(code) => code,
                    Ok(()) => {
                        for (t, p) in self.offsets.partitions_of(id) {
                            records.push(offset_tombstone(id, &t, p));
                        }
                        records.push(CoordinatorRecord::GroupMetadata {
                            group: id.clone(),
                            value: None,
                        });
                        codes::NONE
                    }
                },
            };
            out.push((id.clone(), code));
        }
        let end = self.write_and_replay(&records)?;
        tracing::info!(groups = ?out.iter().filter(|(_, c)| *c == codes::NONE).map(|(g, _)| g).collect::<Vec<_>>(), "deleted groups");
        Ok((out, end))
    }

    /// Removes expired offsets, and groups that are empty and have no offsets left (Kafka's
    /// `cleanupGroupMetadata`).
    pub(crate) fn expire_offsets(&mut self) {
        let now = now_ms();
        let retention = self.env.config.offsets_retention.as_millis() as i64;
        let mut records = Vec::new();
        for (id, g) in &self.groups {
            if self.all_offsets_expired(id, g, now, retention, &mut records)
                && g.is(GroupState::Empty)
            {
                records.push(CoordinatorRecord::GroupMetadata {
                    group: id.clone(),
                    value: None,
                });
            }
        }
        for (id, g) in &self.consumer_groups {
            // Offsets of a consumer group count from their commit; the ones of topics the
            // group consumes never expire.
            let mut all = true;
            if let Some(offsets) = self.offsets.group(id) {
                for (t, parts) in offsets {
                    if g.is_subscribed_to_topic(t) {
                        all = false;
                        continue;
                    }
                    for (p, o) in parts {
                        if o.is_expired(ExpiryBase::CommitTimestamp, now, retention) {
                            records.push(offset_tombstone(id, t, *p));
                        } else {
                            all = false;
                        }
                    }
                }
            }
            if all && g.is_empty() {
                records.extend(g.tombstones());
            }
        }
        if records.is_empty() {
            return;
        }
        let count = records.len();
        match self.write_and_replay(&records) {
            Ok(_) => tracing::info!(records = count, "removed expired offsets and groups"),
            Err(code) => tracing::warn!(code, "could not write the removal of expired offsets"),
        }
    }

    /// Adds tombstones for `g`'s expired offsets; true if the group has no offsets left.
    fn all_offsets_expired(
        &self,
        id: &str,
        g: &ClassicGroup,
        now: i64,
        retention: i64,
        records: &mut Vec<CoordinatorRecord>,
    ) -> bool {
        let Some(offsets) = self.offsets.group(id) else {
            return true;
        };
        let Some(base) = g.offset_expiry_base() else {
            return false;
        };
        let mut all = true;
        for (t, parts) in offsets {
            if g.is_subscribed_to_topic(t) {
                all = false;
                continue;
            }
            for (p, o) in parts {
                if o.is_expired(base, now, retention) {
                    records.push(offset_tombstone(id, t, *p));
                } else {
                    all = false;
                }
            }
        }
        all
    }
}

fn offset_tombstone(group: &str, topic: &str, partition: i32) -> CoordinatorRecord {
    CoordinatorRecord::OffsetCommit {
        group: group.to_string(),
        topic: topic.to_string(),
        partition,
        value: None,
    }
}
