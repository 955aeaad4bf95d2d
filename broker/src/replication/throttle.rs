//! Replication throttles (Kafka's replication quotas, used while reassigning partitions).
//!
//! The dynamic broker configs `leader.replication.throttled.rate` and
//! `follower.replication.throttled.rate` (bytes/s, default unlimited) cap the replication
//! traffic of the replicas that the topic configs `leader.replication.throttled.replicas` and
//! `follower.replication.throttled.replicas` name (`partition:broker` pairs, or `*`). As in
//! Kafka, the bytes of every named replica count against the rate, but only replicas outside
//! the ISR are held back, so a throttle never slows the
//! replication that `acks=all` produce requests wait for: a leader stops sending records to a
//! throttled out-of-sync follower while its rate is over, and a follower stops asking for
//! throttled partitions it is not in sync on.
//!
//! The rate is a token bucket holding at most one second of traffic: bytes are recorded as
//! they pass, and the quota counts as exceeded while the bucket is below zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use fjord_raft::MetadataImage;
use fjord_raft::records::ConfigResourceType;
use parking_lot::Mutex;

pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";

/// One direction's byte rate limit.
pub struct Quota {
    /// Bytes per second; `u64::MAX` is unlimited.
    rate: AtomicU64,
    /// (tokens in bytes, when last refilled).
    bucket: Mutex<(f64, Instant)>,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            rate: AtomicU64::new(u64::MAX),
            bucket: Mutex::new((0.0, Instant::now())),
        }
    }
}

impl Quota {
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub fn set_rate(&self, rate: u64) {
        if self.rate.swap(rate, Ordering::Relaxed) != rate {
            // A new rate starts with a full second's allowance.
            *self.bucket.lock() = (rate as f64, Instant::now());
        }
    }

    fn refill(&self, bucket: &mut (f64, Instant), rate: u64) {
        let now = Instant::now();
        let secs = now.duration_since(bucket.1).as_secs_f64();
        bucket.0 = (bucket.0 + secs * rate as f64).min(rate as f64);
        bucket.1 = now;
    }

    /// Whether throttled traffic must wait now.
    pub fn exceeded(&self) -> bool {
        let rate = self.rate();
        if rate == u64::MAX {
            return false;
        }
        let mut b = self.bucket.lock();
        self.refill(&mut b, rate);
        b.0 < 0.0
    }

    /// Accounts for `bytes` of throttled traffic.
    pub fn record(&self, bytes: u64) {
        let rate = self.rate();
        if rate == u64::MAX || bytes == 0 {
            return;
        }
        let mut b = self.bucket.lock();
        self.refill(&mut b, rate);
        b.0 -= bytes as f64;
    }
}

/// This broker's two replication quotas.
#[derive(Default)]
pub struct ReplicationQuotas {
    pub leader: Quota,
    pub follower: Quota,
}

impl ReplicationQuotas {
    /// Takes the rates from the dynamic broker configs in `image`: this broker's own
    /// override, else the cluster-wide default, else unlimited.
    pub fn update(&self, image: &MetadataImage, local_id: i32) {
        let rate = |key: &str| {
            [local_id.to_string(), String::new()]
                .iter()
                .find_map(|name| {
                    image
                        .config_overrides(ConfigResourceType::Broker, name)
                        .and_then(|o| o.get(key))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                })
                .unwrap_or(u64::MAX)
        };
        self.leader.set_rate(rate(LEADER_RATE));
        self.follower.set_rate(rate(FOLLOWER_RATE));
    }
}

/// Whether a `*.replication.throttled.replicas` value names `partition` on `broker`.
pub fn names_replica(list: Option<&String>, partition: i32, broker: i32) -> bool {
    let Some(list) = list.map(|l| l.trim()).filter(|l| !l.is_empty()) else {
        return false;
    };
    list == "*"
        || list.split(',').any(|pair| {
            pair.split_once(':').is_some_and(|(p, b)| {
                p.trim().parse::<i32>() == Ok(partition) && b.trim().parse::<i32>() == Ok(broker)
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_match_like_kafka() {
        let l = |s: &str| Some(s.to_string());
        assert!(names_replica(l("*").as_ref(), 3, 9));
        assert!(names_replica(l("0:1, 3:9").as_ref(), 3, 9));
        assert!(!names_replica(l("0:1,3:8").as_ref(), 3, 9));
        assert!(!names_replica(l("").as_ref(), 0, 1));
        assert!(!names_replica(None, 0, 1));
    }

    #[test]
    fn a_quota_is_exceeded_once_a_seconds_worth_is_spent() {
        let q = Quota::default();
        q.record(u64::MAX / 2);
        assert!(!q.exceeded(), "unlimited by default");
        q.set_rate(1_000_000);
        assert!(!q.exceeded());
        q.record(600_000);
        assert!(!q.exceeded());
        q.record(600_000);
        assert!(q.exceeded(), "1.2 MB against a 1 MB/s bucket");
        // Refilling at 1 MB/s brings it back within about 0.2 s.
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert!(!q.exceeded());
    }
}
