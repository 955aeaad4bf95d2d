//! KIP-392: the replica a consumer should fetch a partition from, decided by the leader as
//! Kafka's `ReplicaManager.findPreferredReadReplica` does with `RackAwareReplicaSelector`.
//!
//! Candidates are the leader and the in-sync followers that hold the fetch offset (log start at
//! or below it, log end at or above it, as their last fetches said) and whose broker is
//! registered, unfenced and reachable on the client's listener. A consumer without a rack, or
//! whose rack holds the leader or no candidate, reads from the leader; otherwise the most
//! caught-up candidate in its rack is named (largest log end offset, then the one caught up
//! most recently, then the highest id).

use fjord_raft::MetadataImage;

use crate::config::ReplicaSelector;
use crate::partition::FollowerView;

/// What a consumer's fetch (v11+) says about where it is (Kafka's `ClientMetadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMetadata {
    /// `rack_id` (`client.rack`); empty when not set.
    pub rack: String,
    /// The listener the request came in on: a replica must be reachable there.
    pub listener: String,
}

/// The broker the consumer should read from instead of `leader` (this broker), or `None` to
/// read here.
pub fn preferred_read_replica(
    selector: ReplicaSelector,
    client: &ClientMetadata,
    image: &MetadataImage,
    leader: i32,
    followers: &[FollowerView],
    fetch_offset: i64,
    now_ms: i64,
) -> Option<i32> {
    if selector == ReplicaSelector::LeaderOnly || client.rack.is_empty() {
        return None;
    }
    let rack_of = |id: i32| image.broker(id).and_then(|b| b.rack.as_deref());
    if rack_of(leader) == Some(client.rack.as_str()) {
        return None;
    }
    followers
        .iter()
        .filter(|f| f.log_end_offset >= fetch_offset && f.log_start_offset <= fetch_offset)
        .filter(|f| {
            image.broker(f.replica).is_some_and(|b| {
                !b.fenced
                    && b.endpoint(&client.listener).is_some()
                    && b.rack.as_deref() == Some(client.rack.as_str())
            })
        })
        .max_by_key(|f| {
            (
                f.log_end_offset,
                // Less time since it was last caught up ranks higher.
                std::cmp::Reverse(now_ms.saturating_sub(f.last_caught_up_ms)),
                f.replica,
            )
        })
        .map(|f| f.replica)
}

#[cfg(test)]
mod tests {
    use fjord_raft::image::BrokerRegistration;
    use fjord_raft::records::Endpoint;
    use uuid::Uuid;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn image(brokers: &[(i32, Option<&str>, bool)]) -> MetadataImage {
        let mut image = MetadataImage::default();
        for (id, rack, fenced) in brokers {
            image.brokers.insert(
                *id,
                BrokerRegistration {
                    id: *id,
                    incarnation_id: Uuid::new_v4(),
                    epoch: 1,
                    endpoints: vec![Endpoint {
                        name: "PLAINTEXT".into(),
                        host: "127.0.0.1".into(),
                        port: 9000 + *id as u16,
                        security_protocol: 0,
                    }],
                    rack: rack.map(str::to_string),
                    fenced: *fenced,
                },
            );
        }
        image
    }

    fn follower(replica: i32, leo: i64, caught_up_ago_ms: i64) -> FollowerView {
        FollowerView {
            replica,
            log_start_offset: 0,
            log_end_offset: leo,
            last_caught_up_ms: NOW - caught_up_ago_ms,
        }
    }

    fn client(rack: &str) -> ClientMetadata {
        ClientMetadata {
            rack: rack.into(),
            listener: "PLAINTEXT".into(),
        }
    }

    fn racks() -> MetadataImage {
        image(&[
            (1, Some("r1"), false),
            (2, Some("r2"), false),
            (3, Some("r3"), false),
            (4, Some("r3"), false),
        ])
    }

    fn pick(selector: ReplicaSelector, rack: &str, followers: &[FollowerView]) -> Option<i32> {
        preferred_read_replica(selector, &client(rack), &racks(), 1, followers, 10, NOW)
    }

    #[test]
    fn a_follower_in_the_clients_rack_is_named() {
        let f = [follower(2, 10, 0), follower(3, 10, 0)];
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &f), Some(3));
        assert_eq!(pick(ReplicaSelector::RackAware, "r2", &f), Some(2));
    }

    #[test]
    fn the_leader_serves_without_a_selector_a_rack_or_a_match() {
        let f = [follower(2, 10, 0), follower(3, 10, 0)];
        assert_eq!(pick(ReplicaSelector::LeaderOnly, "r3", &f), None);
        assert_eq!(pick(ReplicaSelector::RackAware, "", &f), None);
        assert_eq!(pick(ReplicaSelector::RackAware, "r9", &f), None);
        // Racks compare exactly, as Kafka's selector does.
        assert_eq!(pick(ReplicaSelector::RackAware, "R3", &f), None);
        // The leader's own rack keeps the consumer on the leader.
        assert_eq!(pick(ReplicaSelector::RackAware, "r1", &f), None);
    }

    #[test]
    fn a_follower_that_cannot_serve_the_offset_is_skipped() {
        // Behind the fetch offset.
        assert_eq!(
            pick(ReplicaSelector::RackAware, "r3", &[follower(3, 9, 0)]),
            None
        );
        // Its log starts after the fetch offset.
        let mut f = follower(3, 20, 0);
        f.log_start_offset = 11;
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &[f]), None);
        // An unknown log start (-1) does not exclude it, as in Kafka.
        f.log_start_offset = -1;
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &[f]), Some(3));
    }

    #[test]
    fn fenced_unregistered_or_unreachable_brokers_are_skipped() {
        let fenced = image(&[(1, Some("r1"), false), (3, Some("r3"), true)]);
        let f = [follower(3, 10, 0), follower(5, 10, 0)];
        assert_eq!(
            preferred_read_replica(
                ReplicaSelector::RackAware,
                &client("r3"),
                &fenced,
                1,
                &f,
                10,
                NOW
            ),
            None
        );
        let other_listener = ClientMetadata {
            rack: "r3".into(),
            listener: "INTERNAL".into(),
        };
        assert_eq!(
            preferred_read_replica(
                ReplicaSelector::RackAware,
                &other_listener,
                &racks(),
                1,
                &f,
                10,
                NOW
            ),
            None
        );
    }

    #[test]
    fn the_most_caught_up_follower_of_the_rack_wins() {
        // Largest log end offset first.
        let f = [follower(3, 12, 0), follower(4, 15, 5_000)];
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &f), Some(4));
        // Then the most recently caught up.
        let f = [follower(3, 15, 100), follower(4, 15, 5_000)];
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &f), Some(3));
        // Then the highest id.
        let f = [follower(3, 15, 100), follower(4, 15, 100)];
        assert_eq!(pick(ReplicaSelector::RackAware, "r3", &f), Some(4));
    }
}
