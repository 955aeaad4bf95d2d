//! Incremental fetch sessions (KIP-227), with Kafka's rules:
//!
//! - session id 0 and epoch -1: a sessionless full fetch;
//! - epoch 0: a full fetch that opens a session (when the cache has room) holding every
//!   partition of the request; any session the request names is closed first;
//! - session id and epoch -1: close that session, then serve a sessionless full fetch;
//! - session id and epoch N > 0: an incremental fetch. The request lists only partitions that
//!   were added or changed (fetch offset, max bytes, epoch) and those to forget; the broker
//!   reads every partition of the session and answers only those with records, an error, or a
//!   high watermark / last stable offset / log start offset different from the last one it
//!   sent. An unknown id is FETCH_SESSION_ID_NOT_FOUND, a wrong epoch
//!   INVALID_FETCH_SESSION_EPOCH, and a session opened with topic names used with topic ids
//!   (or the reverse) FETCH_SESSION_TOPIC_ID_ERROR.
//!
//! The cache holds `max.incremental.fetch.session.cache.slots` sessions; when full, the least
//! recently used session idle for longer than `MIN_EVICTABLE_IDLE` makes room, otherwise no
//! session is created and the client keeps sending full fetches.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use uuid::Uuid;

/// Kafka's `FetchMetadata.INITIAL_EPOCH` and `FINAL_EPOCH`.
pub const INITIAL_EPOCH: i32 = 0;
pub const FINAL_EPOCH: i32 = -1;

/// A session idle for less than this is never evicted for a new one (Kafka uses
/// `min.incremental.fetch.session.eviction.ms`, default 120 s).
const MIN_EVICTABLE_IDLE: Duration = Duration::from_secs(120);

/// Most partitions one session remembers. Incremental requests add partitions across requests,
/// so without a bound a client could grow a session without limit; past it the session is
/// closed and the request served without one (the client then sends full requests again).
pub const MAX_SESSION_PARTITIONS: usize = 100_000;

/// How a request names its topics: by name before Fetch v13, by id from v13.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(String),
    Id(Uuid),
}

/// What the session remembers of one partition: what the client asked for, and what the
/// broker last told it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPartition {
    pub topic: TopicKey,
    pub partition: i32,
    pub fetch_offset: i64,
    pub max_bytes: i32,
    pub current_leader_epoch: i32,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl CachedPartition {
    pub fn new(
        topic: TopicKey,
        partition: i32,
        fetch_offset: i64,
        max_bytes: i32,
        current_leader_epoch: i32,
    ) -> CachedPartition {
        CachedPartition {
            topic,
            partition,
            fetch_offset,
            max_bytes,
            current_leader_epoch,
            // Unknown, so the first answer always includes the partition.
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
        }
    }

    fn key(&self) -> (TopicKey, i32) {
        (self.topic.clone(), self.partition)
    }
}

/// What the broker answered for one partition, to decide whether an incremental response
/// must include it.
#[derive(Clone, Copy, Debug)]
pub struct Answered {
    pub has_records: bool,
    pub error: bool,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

struct Session {
    epoch: i32,
    uses_topic_ids: bool,
    /// In the order partitions were added (responses keep it).
    partitions: Vec<CachedPartition>,
    /// Position of each partition in `partitions`, so requests cost per partition they name
    /// rather than per partition the session holds.
    index: HashMap<(TopicKey, i32), usize>,
    last_used: Instant,
}

impl Session {
    fn reindex(&mut self) {
        self.index = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, c)| (c.key(), i))
            .collect();
    }

    fn get_mut(&mut self, topic: &TopicKey, partition: i32) -> Option<&mut CachedPartition> {
        let i = *self.index.get(&(topic.clone(), partition))?;
        self.partitions.get_mut(i)
    }
}

/// The Kafka error a session request failed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionError {
    NotFound,
    InvalidEpoch,
    TopicIdMismatch,
}

/// How one fetch request is served.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchContext {
    /// Read the request's partitions; answer all of them; session id 0.
    Sessionless,
    /// Read the request's partitions; answer all; then open a session with them.
    Full,
    /// Read these (the whole session, updated by the request); answer the changed ones.
    Incremental {
        session_id: i32,
        partitions: Vec<CachedPartition>,
    },
}

pub struct FetchSessionCache {
    max_slots: usize,
    inner: Mutex<HashMap<i32, Session>>,
}

impl FetchSessionCache {
    pub fn new(max_slots: usize) -> FetchSessionCache {
        FetchSessionCache {
            max_slots,
            inner: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides how to serve a request and applies its session changes. `changed` are the
    /// partitions the request lists, `forgotten` those it drops.
    pub fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        uses_topic_ids: bool,
        changed: Vec<CachedPartition>,
        forgotten: &[(TopicKey, i32)],
    ) -> Result<FetchContext, SessionError> {
        let mut sessions = self.inner.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            if session_id != 0 {
                sessions.remove(&session_id);
            }
            return Ok(if epoch == FINAL_EPOCH {
                FetchContext::Sessionless
            } else {
                FetchContext::Full
            });
        }
        let session = sessions
            .get_mut(&session_id)
            .ok_or(SessionError::NotFound)?;
        if session.epoch != epoch {
            return Err(SessionError::InvalidEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Err(SessionError::TopicIdMismatch);
        }
        for p in changed {
            match session.get_mut(&p.topic, p.partition) {
                Some(c) => {
                    c.fetch_offset = p.fetch_offset;
                    c.max_bytes = p.max_bytes;
                    c.current_leader_epoch = p.current_leader_epoch;
                }
                None => {
                    session.index.insert(p.key(), session.partitions.len());
                    session.partitions.push(p);
                }
            }
        }
        if !forgotten.is_empty() {
            let gone: std::collections::HashSet<&(TopicKey, i32)> = forgotten.iter().collect();
            session.partitions.retain(|c| !gone.contains(&c.key()));
            session.reindex();
        }
        if session.partitions.is_empty() || session.partitions.len() > MAX_SESSION_PARTITIONS {
            // Kafka closes a session that has nothing left and serves the request without one;
            // an oversized one goes the same way.
            sessions.remove(&session_id);
            return Ok(FetchContext::Sessionless);
        }
        session.epoch = next_epoch(session.epoch);
        session.last_used = Instant::now();
        Ok(FetchContext::Incremental {
            session_id,
            partitions: session.partitions.clone(),
        })
    }

    /// Opens a session after a full fetch; returns its id, or 0 when the cache has no room.
    pub fn create(
        &self,
        uses_topic_ids: bool,
        partitions: Vec<(CachedPartition, Answered)>,
    ) -> i32 {
        let mut sessions = self.inner.lock();
        if self.max_slots == 0 || partitions.len() > MAX_SESSION_PARTITIONS {
            return 0;
        }
        if sessions.len() >= self.max_slots {
            let now = Instant::now();
            let oldest = sessions
                .iter()
                .filter(|(_, s)| now.duration_since(s.last_used) >= MIN_EVICTABLE_IDLE)
                .min_by_key(|(_, s)| s.last_used)
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => {
                    sessions.remove(&id);
                }
                None => return 0,
            }
        }
        let id = loop {
            let id = (Uuid::new_v4().as_u128() as i32) & i32::MAX;
            if id != 0 && !sessions.contains_key(&id) {
                break id;
            }
        };
        let partitions = partitions
            .into_iter()
            .map(|(mut c, a)| {
                remember(&mut c, &a);
                c
            })
            .collect();
        let mut session = Session {
            epoch: next_epoch(INITIAL_EPOCH),
            uses_topic_ids,
            partitions,
            index: HashMap::new(),
            last_used: Instant::now(),
        };
        session.reindex();
        sessions.insert(id, session);
        id
    }

    /// After an incremental read: which partitions the response includes (by position in
    /// the list `begin` returned), remembering what is sent.
    pub fn finish(&self, session_id: i32, answered: &[(TopicKey, i32, Answered)]) -> Vec<bool> {
        let mut sessions = self.inner.lock();
        let session = sessions.get_mut(&session_id);
        let mut include = Vec::with_capacity(answered.len());
        let mut session = session;
        for (topic, partition, a) in answered {
            let cached = session.as_mut().and_then(|s| s.get_mut(topic, *partition));
            include.push(match cached {
                Some(c) => {
                    let changed = a.has_records
                        || a.error
                        || c.high_watermark != a.high_watermark
                        || c.last_stable_offset != a.last_stable_offset
                        || c.log_start_offset != a.log_start_offset;
                    remember(c, a);
                    changed
                }
                // Forgotten or the session closed meanwhile: say what we have.
                None => true,
            });
        }
        include
    }
}

fn remember(c: &mut CachedPartition, a: &Answered) {
    c.high_watermark = a.high_watermark;
    c.last_stable_offset = a.last_stable_offset;
    c.log_start_offset = a.log_start_offset;
}

/// Kafka's `FetchMetadata.nextEpoch`: epochs wrap to 1, never 0 or -1.
fn next_epoch(epoch: i32) -> i32 {
    if epoch < 0 {
        // The epoch after FINAL is INITIAL, but sessions never hold it.
        INITIAL_EPOCH
    } else if epoch == i32::MAX {
        1
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(t: &str, p: i32, offset: i64) -> CachedPartition {
        CachedPartition::new(TopicKey::Name(t.into()), p, offset, 1 << 20, -1)
    }

    fn answered(records: bool, hw: i64) -> Answered {
        Answered {
            has_records: records,
            error: false,
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: 0,
        }
    }

    fn open(cache: &FetchSessionCache) -> i32 {
        assert_eq!(
            cache.begin(0, INITIAL_EPOCH, false, vec![], &[]),
            Ok(FetchContext::Full)
        );
        cache.create(
            false,
            vec![
                (part("a", 0, 0), answered(true, 10)),
                (part("a", 1, 0), answered(false, 0)),
            ],
        )
    }

    #[test]
    fn incremental_fetches_answer_only_changed_partitions() {
        let cache = FetchSessionCache::new(10);
        let id = open(&cache);
        assert!(id > 0);
        // The client consumed a-0 up to 10 and says so; a-1 is unchanged and not listed.
        let ctx = cache
            .begin(id, 1, false, vec![part("a", 0, 10)], &[])
            .unwrap();
        let FetchContext::Incremental { partitions, .. } = ctx else {
            panic!("{ctx:?}")
        };
        assert_eq!(partitions.len(), 2);
        assert_eq!(partitions[0].fetch_offset, 10);
        let include = cache.finish(
            id,
            &[
                (TopicKey::Name("a".into()), 0, answered(false, 10)),
                (TopicKey::Name("a".into()), 1, answered(false, 5)),
            ],
        );
        // a-0: nothing new; a-1: its high watermark moved.
        assert_eq!(include, vec![false, true]);
        // Epoch 2 next; repeating epoch 1 is refused.
        assert_eq!(
            cache.begin(id, 1, false, vec![], &[]),
            Err(SessionError::InvalidEpoch)
        );
        assert!(matches!(
            cache.begin(id, 2, false, vec![], &[]),
            Ok(FetchContext::Incremental { .. })
        ));
        assert_eq!(
            cache.begin(id, 3, true, vec![], &[]),
            Err(SessionError::TopicIdMismatch)
        );
    }

    #[test]
    fn forgetting_everything_or_a_final_epoch_closes_the_session() {
        let cache = FetchSessionCache::new(10);
        let id = open(&cache);
        let forget = [
            (TopicKey::Name("a".into()), 0),
            (TopicKey::Name("a".into()), 1),
        ];
        assert_eq!(
            cache.begin(id, 1, false, vec![], &forget),
            Ok(FetchContext::Sessionless)
        );
        assert_eq!(
            cache.begin(id, 2, false, vec![], &[]),
            Err(SessionError::NotFound)
        );
        let id = open(&cache);
        assert_eq!(
            cache.begin(id, FINAL_EPOCH, false, vec![], &[]),
            Ok(FetchContext::Sessionless)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn a_full_cache_refuses_new_sessions_while_all_are_recently_used() {
        let cache = FetchSessionCache::new(1);
        assert!(open(&cache) > 0);
        assert_eq!(open(&cache), 0);
        assert_eq!(FetchSessionCache::new(0).create(false, vec![]), 0);
    }

    #[test]
    fn sessions_stop_growing_at_the_partition_bound() {
        let cache = FetchSessionCache::new(10);
        let too_many: Vec<(CachedPartition, Answered)> = (0..=MAX_SESSION_PARTITIONS as i32)
            .map(|p| (part("big", p, 0), answered(false, 0)))
            .collect();
        assert_eq!(cache.create(false, too_many), 0);
        let id = open(&cache);
        let more: Vec<CachedPartition> = (2..=MAX_SESSION_PARTITIONS as i32)
            .map(|p| part("a", p, 0))
            .collect();
        assert_eq!(
            cache.begin(id, 1, false, more, &[]),
            Ok(FetchContext::Sessionless)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn epochs_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
