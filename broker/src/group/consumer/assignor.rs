//! The server-side assignors of consumer groups, by the names Kafka gives them:
//!
//! - `uniform` (Kafka's default): every partition of a subscribed topic goes to exactly one
//!   subscribed member; members subscribed to the same topics end up with partition counts that
//!   differ by at most one; and a member keeps as much of its current target as balance allows
//!   (sticky), so a rebalance moves as few partitions as possible.
//! - `range`: per topic, the subscribed members in a fixed order (static members by instance
//!   id first, then the others by member id) take consecutive ranges of partitions, the first
//!   `partitions % members` one more than the rest. Members subscribed to the same
//!   equally-partitioned topics get the same partition numbers of each (co-partitioning). It
//!   ignores the current assignment.
//!
//! Both only see topics that exist: the caller resolves subscriptions to topic ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use crate::group::consumer::Assignment;

/// What an assignor knows about one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpec {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// The existing topics the member subscribes to.
    pub topics: BTreeSet<Uuid>,
    /// The member's current target assignment.
    pub current: Assignment,
}

/// A server-side assignor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServerAssignor {
    Uniform,
    Range,
}

impl ServerAssignor {
    pub const ALL: [ServerAssignor; 2] = [ServerAssignor::Uniform, ServerAssignor::Range];

    pub fn name(self) -> &'static str {
        match self {
            ServerAssignor::Uniform => "uniform",
            ServerAssignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<ServerAssignor> {
        ServerAssignor::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Assigns the partitions of `topics` (topic id → partition count) to `members`. Every
    /// member appears in the result, possibly with nothing.
    pub fn assign(
        self,
        members: &[MemberSpec],
        topics: &BTreeMap<Uuid, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            ServerAssignor::Uniform => uniform(members, topics),
            ServerAssignor::Range => range(members, topics),
        }
    }
}

type Tp = (Uuid, i32);

fn to_assignment(parts: &BTreeSet<Tp>) -> Assignment {
    let mut a = Assignment::new();
    for (t, p) in parts {
        a.entry(*t).or_default().insert(*p);
    }
    a
}

fn uniform(members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    // A fixed order (by member id) makes the result independent of the caller's order.
    let mut order: Vec<&MemberSpec> = members.iter().collect();
    order.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let eligible = |m: &MemberSpec, t: &Uuid| m.topics.contains(t) && topics.contains_key(t);

    let mut owned: Vec<BTreeSet<Tp>> = vec![BTreeSet::new(); order.len()];
    let mut taken: HashMap<Tp, usize> = HashMap::new();
    // Stickiness: every member keeps what it has and may still have.
    for (i, m) in order.iter().enumerate() {
        for (t, parts) in &m.current {
            if !eligible(m, t) {
                continue;
            }
            let n = topics.get(t).copied().unwrap_or(0);
            for p in parts.iter().filter(|p| (0..n).contains(*p)) {
                if let std::collections::hash_map::Entry::Vacant(e) = taken.entry((*t, *p)) {
                    e.insert(i);
                    owned[i].insert((*t, *p));
                }
            }
        }
    }

    // The rest, most constrained first, each to the least loaded member that may have it.
    let mut free: Vec<(usize, Tp)> = Vec::new();
    for (t, n) in topics {
        let candidates = order.iter().filter(|m| eligible(m, t)).count();
        if candidates == 0 {
            continue;
        }
        for p in 0..*n {
            if !taken.contains_key(&(*t, p)) {
                free.push((candidates, (*t, p)));
            }
        }
    }
    free.sort();
    for (_, (t, p)) in free {
        let best = order
            .iter()
            .enumerate()
            .filter(|(_, m)| eligible(m, &t))
            .min_by_key(|(i, _)| (owned[*i].len(), *i))
            .map(|(i, _)| i);
        if let Some(i) = best {
            owned[i].insert((t, p));
        }
    }

    let homogeneous = order.windows(2).all(|w| w[0].topics == w[1].topics);
    if homogeneous {
        balance_homogeneous(&mut owned);
    } else {
        balance_heterogeneous(&order, topics, &mut owned);
    }

    order
        .iter()
        .zip(owned.iter())
        .map(|(m, parts)| (m.member_id.clone(), to_assignment(parts)))
        .collect()
}

/// Moves partitions from the most to the least loaded member until counts differ by at most
/// one. Every member may own every partition, so each move is one unit of imbalance fixed:
/// the fewest moves possible.
fn balance_homogeneous(owned: &mut [BTreeSet<Tp>]) {
    let mut by_load: BTreeSet<(usize, usize)> = owned
        .iter()
        .enumerate()
        .map(|(i, p)| (p.len(), i))
        .collect();
    loop {
        let (Some(&(low, lo)), Some(&(high, hi))) = (by_load.first(), by_load.last()) else {
            return;
        };
        if high <= low + 1 {
            return;
        }
        let Some(tp) = owned[hi].pop_last() else {
            return;
        };
        owned[lo].insert(tp);
        by_load.remove(&(low, lo));
        by_load.remove(&(high, hi));
        by_load.insert((low + 1, lo));
        by_load.insert((high - 1, hi));
    }
}

/// Members subscribe to different topics: moves a partition from a member to another that
/// may own it while that narrows the gap between them by at least one, most loaded members
/// first. Bounded: every move lowers the sum of squared loads.
fn balance_heterogeneous(
    order: &[&MemberSpec],
    topics: &BTreeMap<Uuid, i32>,
    owned: &mut [BTreeSet<Tp>],
) {
    let total: usize = owned.iter().map(BTreeSet::len).sum();
    let bound = total.saturating_mul(total).max(1);
    for _ in 0..bound {
        let mut donors: Vec<usize> = (0..owned.len()).collect();
        donors.sort_by_key(|i| (std::cmp::Reverse(owned[*i].len()), *i));
        let mut moved = None;
        'search: for &d in &donors {
            for tp in owned[d].iter().rev() {
                let receiver = order
                    .iter()
                    .enumerate()
                    .filter(|(r, m)| {
                        *r != d && m.topics.contains(&tp.0) && topics.contains_key(&tp.0)
                    })
                    .min_by_key(|(r, _)| (owned[*r].len(), *r))
                    .map(|(r, _)| r);
                if let Some(r) = receiver
                    && owned[r].len() + 1 < owned[d].len()
                {
                    moved = Some((d, r, *tp));
                    break 'search;
                }
            }
        }
        let Some((d, r, tp)) = moved else {
            return;
        };
        owned[d].remove(&tp);
        owned[r].insert(tp);
    }
}

fn range(members: &[MemberSpec], topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut order: Vec<&MemberSpec> = members.iter().collect();
    // Static members first, by instance id, so a rolling restart (new member ids, same
    // instance ids) keeps the assignment; then the others by member id.
    order.sort_by(|a, b| match (&a.instance_id, &b.instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    });
    let mut out: BTreeMap<String, Assignment> = order
        .iter()
        .map(|m| (m.member_id.clone(), Assignment::new()))
        .collect();
    for (t, n) in topics {
        let subscribed: Vec<&&MemberSpec> = order.iter().filter(|m| m.topics.contains(t)).collect();
        if subscribed.is_empty() || *n <= 0 {
            continue;
        }
        let k = subscribed.len() as i32;
        let (quota, mut extra) = (n / k, n % k);
        let mut start = 0;
        for m in subscribed {
            let mut size = quota;
            if extra > 0 {
                size += 1;
                extra -= 1;
            }
            let end = (start + size).min(*n);
            if start < end
                && let Some(a) = out.get_mut(&m.member_id)
            {
                a.insert(*t, (start..end).collect());
            }
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::partition_count;

    fn topic(n: u8) -> Uuid {
        Uuid::from_bytes([n; 16])
    }

    fn spec(id: &str, topics: &[Uuid], current: Assignment) -> MemberSpec {
        MemberSpec {
            member_id: id.into(),
            instance_id: None,
            topics: topics.iter().copied().collect(),
            current,
        }
    }

    fn parts(t: Uuid, ps: &[i32]) -> Assignment {
        let mut a = Assignment::new();
        a.insert(t, ps.iter().copied().collect());
        a
    }

    /// Every partition of every topic some member subscribes to is assigned exactly once, and
    /// only to a subscriber.
    fn check_complete(
        members: &[MemberSpec],
        topics: &BTreeMap<Uuid, i32>,
        out: &BTreeMap<String, Assignment>,
    ) {
        assert_eq!(out.len(), members.len());
        let mut seen = BTreeSet::new();
        for m in members {
            for (t, ps) in &out[&m.member_id] {
                assert!(
                    m.topics.contains(t),
                    "{} got a topic it does not want",
                    m.member_id
                );
                for p in ps {
                    assert!(seen.insert((*t, *p)), "{t}-{p} twice");
                    assert!((0..topics[t]).contains(p));
                }
            }
        }
        let expected: usize = topics
            .iter()
            .filter(|(t, _)| members.iter().any(|m| m.topics.contains(t)))
            .map(|(_, n)| *n as usize)
            .sum();
        assert_eq!(seen.len(), expected);
    }

    #[test]
    fn uniform_balances_a_homogeneous_group() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 7)]);
        let members: Vec<MemberSpec> = ["a", "b", "c"]
            .iter()
            .map(|m| spec(m, &[t], Assignment::new()))
            .collect();
        let out = ServerAssignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        let mut counts: Vec<usize> = out.values().map(partition_count).collect();
        counts.sort();
        assert_eq!(counts, vec![2, 2, 3]);
    }

    #[test]
    fn uniform_is_sticky_when_members_join_and_leave() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 6)]);
        // One member owns everything; a second joins: the first keeps half of what it had.
        let members = vec![
            spec("a", &[t], parts(t, &[0, 1, 2, 3, 4, 5])),
            spec("b", &[t], Assignment::new()),
        ];
        let out = ServerAssignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        assert_eq!(partition_count(&out["a"]), 3);
        assert!(crate::group::consumer::is_subset(
            &out["a"],
            &parts(t, &[0, 1, 2, 3, 4, 5])
        ));

        // Three members with two each; one leaves: the survivors keep theirs and split the
        // leaver's.
        let members = vec![
            spec("a", &[t], parts(t, &[0, 1])),
            spec("c", &[t], parts(t, &[4, 5])),
        ];
        let out = ServerAssignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        assert!(crate::group::consumer::is_subset(
            &parts(t, &[0, 1]),
            &out["a"]
        ));
        assert!(crate::group::consumer::is_subset(
            &parts(t, &[4, 5]),
            &out["c"]
        ));
        assert_eq!(partition_count(&out["a"]), 3);
        assert_eq!(partition_count(&out["c"]), 3);

        // A stable assignment does not move at all.
        let again = vec![
            spec("a", &[t], out["a"].clone()),
            spec("c", &[t], out["c"].clone()),
        ];
        assert_eq!(ServerAssignor::Uniform.assign(&again, &topics), out);
    }

    #[test]
    fn uniform_drops_partitions_a_member_no_longer_may_have() {
        let (t1, t2) = (topic(1), topic(2));
        // The topic shrank to 2 partitions (recreated) and "a" unsubscribed from t2.
        let topics = BTreeMap::from([(t1, 2), (t2, 2)]);
        let mut current = parts(t1, &[0, 1, 2, 3]);
        current.insert(t2, [0, 1].into());
        let members = vec![
            spec("a", &[t1], current),
            spec("b", &[t1, t2], Assignment::new()),
        ];
        let out = ServerAssignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        assert!(!out["a"].contains_key(&t2));
    }

    #[test]
    fn uniform_balances_within_heterogeneous_subscriptions() {
        let (t1, t2) = (topic(1), topic(2));
        let topics = BTreeMap::from([(t1, 4), (t2, 4)]);
        // "a" may only have t1; "b" and "c" both topics. "a" starts with everything of t1.
        let members = vec![
            spec("a", &[t1], parts(t1, &[0, 1, 2, 3])),
            spec("b", &[t1, t2], Assignment::new()),
            spec("c", &[t1, t2], Assignment::new()),
        ];
        let out = ServerAssignor::Uniform.assign(&members, &topics);
        check_complete(&members, &topics, &out);
        let counts: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|m| partition_count(&out[*m]))
            .collect();
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= 1, "{counts:?}");
    }

    #[test]
    fn uniform_assigns_everything_exactly_once_for_many_shapes() {
        // A small linear congruential generator keeps the test deterministic without a
        // dependency.
        let mut seed: u64 = 42;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..200 {
            let n_topics = 1 + next(4) as u8;
            let topics: BTreeMap<Uuid, i32> = (0..n_topics)
                .map(|i| (topic(i + 1), 1 + next(12) as i32))
                .collect();
            let ids: Vec<Uuid> = topics.keys().copied().collect();
            let n_members = 1 + next(8) as usize;
            let members: Vec<MemberSpec> = (0..n_members)
                .map(|i| {
                    let subs: Vec<Uuid> = ids.iter().copied().filter(|_| next(3) > 0).collect();
                    let mut current = Assignment::new();
                    for t in &ids {
                        if next(2) == 0 {
                            current.insert(
                                *t,
                                (0..next(14) as i32).filter(|_| next(3) == 0).collect(),
                            );
                        }
                    }
                    spec(&format!("m{i}"), &subs, current)
                })
                .collect();
            let out = ServerAssignor::Uniform.assign(&members, &topics);
            check_complete(&members, &topics, &out);
            if members.windows(2).all(|w| w[0].topics == w[1].topics) {
                let counts: Vec<usize> = out.values().map(partition_count).collect();
                let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(max - min <= 1, "{counts:?}");
            }
            let range = ServerAssignor::Range.assign(&members, &topics);
            check_complete(&members, &topics, &range);
        }
    }

    #[test]
    fn range_gives_each_member_the_same_ranges_of_equal_topics() {
        let (t1, t2) = (topic(1), topic(2));
        let topics = BTreeMap::from([(t1, 3), (t2, 3)]);
        let members = vec![
            spec("m1", &[t1, t2], Assignment::new()),
            spec("m0", &[t1, t2], Assignment::new()),
        ];
        let out = ServerAssignor::Range.assign(&members, &topics);
        let mut m0 = parts(t1, &[0, 1]);
        m0.insert(t2, [0, 1].into());
        let mut m1 = parts(t1, &[2]);
        m1.insert(t2, [2].into());
        assert_eq!(out["m0"], m0);
        assert_eq!(out["m1"], m1);
    }

    #[test]
    fn range_orders_static_members_first_and_ignores_the_current_assignment() {
        let t = topic(1);
        let topics = BTreeMap::from([(t, 5)]);
        let mut s = spec("zz", &[t], parts(t, &[4]));
        s.instance_id = Some("i-0".into());
        let members = vec![spec("aa", &[t], parts(t, &[0, 1, 2])), s];
        let out = ServerAssignor::Range.assign(&members, &topics);
        assert_eq!(out["zz"], parts(t, &[0, 1, 2]));
        assert_eq!(out["aa"], parts(t, &[3, 4]));
    }

    #[test]
    fn range_per_topic_counts_only_subscribers() {
        let (t1, t2) = (topic(1), topic(2));
        let topics = BTreeMap::from([(t1, 4), (t2, 2)]);
        let members = vec![
            spec("a", &[t1, t2], Assignment::new()),
            spec("b", &[t1], Assignment::new()),
        ];
        let out = ServerAssignor::Range.assign(&members, &topics);
        let mut a = parts(t1, &[0, 1]);
        a.insert(t2, [0, 1].into());
        assert_eq!(out["a"], a);
        assert_eq!(out["b"], parts(t1, &[2, 3]));
    }

    #[test]
    fn names_round_trip() {
        for a in ServerAssignor::ALL {
            assert_eq!(ServerAssignor::from_name(a.name()), Some(a));
        }
        assert_eq!(ServerAssignor::from_name("sticky"), None);
    }
}
