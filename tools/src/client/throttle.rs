//! Kafka's replication throttle as `kafka-reassign-partitions.sh --throttle` sets it up: a rate
//! in bytes per second (dynamic broker configs) that applies to the replicas a topic names in
//! its throttled-replicas configs. The leader side names a moving partition's current
//! replicas (which serve the new ones), the follower side the replicas being added.

use std::collections::BTreeMap;

/// Topic config: replicas whose leader side is throttled (`partition:broker,...` or `*`).
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// Topic config: replicas whose follower side is throttled.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
/// Dynamic broker config: bytes/s a leader sends to throttled replicas.
pub const LEADER_RATE: &str = "leader.replication.throttled.rate";
/// Dynamic broker config: bytes/s a follower fetches for throttled replicas.
pub const FOLLOWER_RATE: &str = "follower.replication.throttled.rate";

/// The throttled-replica entries for a set of moves, as `partition:broker` strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThrottledReplicas {
    pub leader: Vec<String>,
    pub follower: Vec<String>,
}

/// For each partition `p -> (current replicas, target replicas)`: the leader side throttles
/// every current replica of `p` (any of them may be the one the new replicas fetch from, and
/// the leader can change during the move), the follower side the target replicas that are
/// not current. Partitions in ascending order, brokers in the order given, no duplicates.
pub fn for_moves(moves: &BTreeMap<i32, (Vec<i32>, Vec<i32>)>) -> ThrottledReplicas {
    let mut out = ThrottledReplicas::default();
    for (p, (current, target)) in moves {
        for b in current {
            push_unique(&mut out.leader, format!("{p}:{b}"));
        }
        for b in target.iter().filter(|b| !current.contains(b)) {
            push_unique(&mut out.follower, format!("{p}:{b}"));
        }
    }
    out
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.contains(&s) {
        v.push(s);
    }
}

/// The value to SET for a throttled-replicas config that currently holds `existing` (a topic
/// override, or `None`), adding `entries`: the union, existing entries first, so that the
/// throttle of another move of the same topic still in progress stays in place. `*` (every
/// replica) already covers the new entries and stays. `None` when there is nothing to set.
pub fn merged(existing: Option<&str>, entries: &[String]) -> Option<String> {
    let existing = existing.map(str::trim).unwrap_or("");
    if existing == "*" {
        return Some("*".into());
    }
    let mut all: Vec<String> = Vec::new();
    for e in existing
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .chain(entries.iter().cloned())
    {
        push_unique(&mut all, e);
    }
    (!all.is_empty()).then(|| all.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_side_is_current_follower_side_is_added() {
        let moves = BTreeMap::from([
            (0, (vec![1, 2], vec![2, 3])),
            (2, (vec![3], vec![1, 3])),
            // A pure removal adds no follower entry.
            (4, (vec![1, 2], vec![1])),
        ]);
        let t = for_moves(&moves);
        assert_eq!(t.leader, ["0:1", "0:2", "2:3", "4:1", "4:2"]);
        assert_eq!(t.follower, ["0:3", "2:1"]);
    }

    #[test]
    fn merging_keeps_existing_entries_and_star() {
        let new = vec!["0:1".to_string(), "1:2".to_string()];
        assert_eq!(merged(None, &new).as_deref(), Some("0:1,1:2"));
        assert_eq!(merged(Some(""), &new).as_deref(), Some("0:1,1:2"));
        assert_eq!(
            merged(Some("3:3, 0:1"), &new).as_deref(),
            Some("3:3,0:1,1:2")
        );
        assert_eq!(merged(Some(" * "), &new).as_deref(), Some("*"));
        assert_eq!(merged(None, &[]), None);
        assert_eq!(merged(Some("5:1"), &[]).as_deref(), Some("5:1"));
    }
}
