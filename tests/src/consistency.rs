//! The chaos suite's checker: Kafka's guarantees for acks=all idempotent producers, verified
//! against the replicas' logs after the run.
//!
//! - Every acknowledged record is committed (below the high watermark) exactly once, at the
//!   offset the broker acknowledged, and each producer's acknowledged records of a partition
//!   appear in the order they were acknowledged.
//! - No value appears twice anywhere, acknowledged or not (the idempotent producer retries
//!   unacknowledged batches; those must be deduplicated).
//! - All replicas of a partition hold identical batches below the high watermark (same
//!   offsets, leader epochs and CRCs). A replica in the final ISR must hold all of it; one
//!   outside the ISR may be shorter (it is reported, not failed).
//! - Records a consumer received are in the final log at the offset it received them (a
//!   consumer only ever sees committed records, which are never lost).
//!
//! Pure logic over plain data, so it is unit-tested below without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// A record the producer's delivery report acknowledged, in acknowledgement order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub producer: String,
    pub partition: i32,
    /// -1 when the acknowledgement carried no offset (librdkafka reports a retried batch the
    /// broker recognised as a duplicate that way when it cannot tell the original offset);
    /// such a record must still be committed exactly once, but its position is not checked.
    pub offset: i64,
    pub value: String,
}

/// A record a consumer received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// One record in a replica's log, with the identity of its batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub value: Option<String>,
    /// (base offset, last offset, partition leader epoch, CRC) of the batch holding it.
    pub batch: (i64, i64, i32, u32),
}

/// One replica's log of a partition, read from its node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaLog {
    pub node: i32,
    pub log_start: i64,
    pub log_end: i64,
    pub records: Vec<StoredRecord>,
}

/// Everything known about one partition at the end of a run.
#[derive(Clone, Debug)]
pub struct PartitionState {
    pub partition: i32,
    /// The committed end: records below it are acknowledged-safe.
    pub high_watermark: i64,
    /// Node id of the replica to check acknowledgements against (the final leader).
    pub reference: i32,
    /// The final ISR (node ids).
    pub isr: Vec<i32>,
    pub replicas: Vec<ReplicaLog>,
}

/// What the checker found. A run fails on any lost, duplicated, misplaced, out-of-order,
/// divergent or phantom record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub acknowledged: usize,
    /// Acknowledged records found committed in their partition.
    pub found: usize,
    /// Acknowledged records missing from the committed log.
    pub lost: usize,
    /// Values present more than once (each extra copy counts one).
    pub duplicated: usize,
    /// Acknowledged records found at another offset than acknowledged.
    pub misplaced: usize,
    /// Acknowledgements without an offset (found or lost like the others, position unchecked).
    pub acknowledged_without_offset: usize,
    /// Acknowledged records found before an earlier acknowledgement of the same producer
    /// and partition.
    pub out_of_order: usize,
    /// Offsets below the high watermark where a replica differs from the reference, or that a
    /// replica in the ISR lacks.
    pub divergent: usize,
    /// Offsets below the high watermark missing on replicas outside the ISR (not a failure).
    pub behind: usize,
    /// Records in the log that no producer acknowledged (failed or unknown deliveries).
    pub unacknowledged_present: usize,
    /// Records past the high watermark on the reference replica (uncommitted).
    pub uncommitted: usize,
    pub consumed: usize,
    /// Consumed records not in the final log at the offset they were consumed from.
    pub phantom_reads: usize,
    /// The first problems, for the failure message.
    pub problems: Vec<String>,
}

const MAX_PROBLEMS: usize = 40;

impl Report {
    pub fn failed(&self) -> bool {
        self.lost
            + self.duplicated
            + self.misplaced
            + self.out_of_order
            + self.divergent
            + self.phantom_reads
            > 0
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        }
    }

    /// The counts on a few lines.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "acknowledged {}, found {}, lost {}, duplicated {}, divergent {}",
            self.acknowledged, self.found, self.lost, self.duplicated, self.divergent
        );
        let _ = writeln!(
            s,
            "misplaced {}, out of order {}, acknowledged without offset {}, replicas behind \
             (outside ISR) {}, unacknowledged present {}, uncommitted tail {}, consumed {}, \
             phantom reads {}",
            self.misplaced,
            self.acknowledged_without_offset,
            self.out_of_order,
            self.behind,
            self.unacknowledged_present,
            self.uncommitted,
            self.consumed,
            self.phantom_reads
        );
        for p in &self.problems {
            let _ = writeln!(s, "  {p}");
        }
        s
    }
}

/// Checks `acks` (each producer's in acknowledgement order) and `consumed` against the
/// partitions' final state.
pub fn check(acks: &[Ack], consumed: &[Consumed], partitions: &[PartitionState]) -> Report {
    let mut r = Report {
        acknowledged: acks.len(),
        consumed: consumed.len(),
        ..Report::default()
    };

    // The reference log of each partition: offset -> value, and where each value is.
    let mut at: HashMap<(i32, i64), Option<&str>> = HashMap::new();
    let mut places: HashMap<&str, Vec<(i32, i64)>> = HashMap::new();
    let mut hw_of: BTreeMap<i32, i64> = BTreeMap::new();
    for p in partitions {
        hw_of.insert(p.partition, p.high_watermark);
        let Some(reference) = p.replicas.iter().find(|l| l.node == p.reference) else {
            r.problem(format!(
                "partition {}: no log from the reference replica {}",
                p.partition, p.reference
            ));
            continue;
        };
        for rec in &reference.records {
            at.insert((p.partition, rec.offset), rec.value.as_deref());
            if rec.offset >= p.high_watermark {
                r.uncommitted += 1;
            }
            if let Some(v) = rec.value.as_deref() {
                places.entry(v).or_default().push((p.partition, rec.offset));
            }
        }
        check_replicas(p, reference, &mut r);
    }

    for (v, where_) in &places {
        if where_.len() > 1 {
            r.duplicated += where_.len() - 1;
            r.problem(format!(
                "value {v} appears {} times: {where_:?}",
                where_.len()
            ));
        }
    }

    // Acknowledged records: present, committed, where acknowledged, in order.
    let mut acked: HashMap<&str, ()> = HashMap::new();
    let mut last_offset: HashMap<(&str, i32), i64> = HashMap::new();
    for a in acks {
        acked.insert(a.value.as_str(), ());
        let hw = hw_of.get(&a.partition).copied().unwrap_or(0);
        let committed: Vec<(i32, i64)> = places
            .get(a.value.as_str())
            .map(|w| {
                w.iter()
                    .copied()
                    .filter(|(p, o)| *p == a.partition && *o < hw)
                    .collect()
            })
            .unwrap_or_default();
        let Some(&(_, offset)) = committed.first() else {
            r.lost += 1;
            let elsewhere = places.get(a.value.as_str());
            r.problem(format!(
                "lost: {} acknowledged at partition {} offset {} (high watermark {hw}); \
                 present at {elsewhere:?}",
                a.value, a.partition, a.offset
            ));
            continue;
        };
        r.found += 1;
        if a.offset < 0 {
            r.acknowledged_without_offset += 1;
            continue;
        }
        if offset != a.offset {
            r.misplaced += 1;
            r.problem(format!(
                "misplaced: {} acknowledged at partition {} offset {} but found at {offset}",
                a.value, a.partition, a.offset
            ));
        }
        let key = (a.producer.as_str(), a.partition);
        if let Some(prev) = last_offset.get(&key)
            && offset <= *prev
        {
            r.out_of_order += 1;
            r.problem(format!(
                "out of order: {} at partition {} offset {offset}, acknowledged after a record \
                 at offset {prev}",
                a.value, a.partition
            ));
        }
        last_offset.insert(key, offset);
    }
    r.unacknowledged_present = places.keys().filter(|v| !acked.contains_key(*v)).count();

    for c in consumed {
        let stored = at.get(&(c.partition, c.offset)).copied().flatten();
        if stored != Some(c.value.as_str()) {
            r.phantom_reads += 1;
            r.problem(format!(
                "phantom read: consumed {} at partition {} offset {}, the log has {stored:?}",
                c.value, c.partition, c.offset
            ));
        }
    }
    r
}

/// Compares every replica with the reference below the high watermark.
fn check_replicas(p: &PartitionState, reference: &ReplicaLog, r: &mut Report) {
    let by_offset = |l: &ReplicaLog| -> HashMap<i64, StoredRecord> {
        l.records
            .iter()
            .filter(|rec| rec.offset < p.high_watermark)
            .map(|rec| (rec.offset, rec.clone()))
            .collect()
    };
    let want = by_offset(reference);
    for replica in &p.replicas {
        if replica.node == reference.node {
            continue;
        }
        let got = by_offset(replica);
        let in_isr = p.isr.contains(&replica.node);
        let mut first: Option<i64> = None;
        let mut differ = 0;
        let mut missing = 0;
        let start = replica.log_start.max(reference.log_start);
        for (offset, rec) in &want {
            if *offset < start {
                continue;
            }
            match got.get(offset) {
                Some(g) if g == rec => {}
                Some(_) => {
                    differ += 1;
                    first = Some(first.map_or(*offset, |f| f.min(*offset)));
                }
                None if *offset >= replica.log_end => missing += 1,
                None => {
                    differ += 1;
                    first = Some(first.map_or(*offset, |f| f.min(*offset)));
                }
            }
        }
        // Records the replica has below the high watermark where the reference has none.
        for offset in got.keys() {
            if *offset >= start && !want.contains_key(offset) {
                differ += 1;
                first = Some(first.map_or(*offset, |f| f.min(*offset)));
            }
        }
        r.divergent += differ;
        if let Some(f) = first {
            r.problem(format!(
                "divergent: partition {} replica {} differs from leader {} at {differ} offsets \
                 below the high watermark {}, first at {f}",
                p.partition, replica.node, reference.node, p.high_watermark
            ));
        }
        if missing > 0 {
            if in_isr {
                r.divergent += missing;
                r.problem(format!(
                    "divergent: partition {} replica {} is in the ISR but its log ends at {} \
                     below the high watermark {}",
                    p.partition, replica.node, replica.log_end, p.high_watermark
                ));
            } else {
                r.behind += missing;
            }
        }
    }
    for node in &p.isr {
        if !p.replicas.iter().any(|l| l.node == *node) && p.high_watermark > 0 {
            r.divergent += p.high_watermark.max(0) as usize;
            r.problem(format!(
                "divergent: partition {} replica {node} is in the ISR but has no log",
                p.partition
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, v: &str, epoch: i32) -> StoredRecord {
        StoredRecord {
            offset,
            value: Some(v.to_string()),
            batch: (offset, offset, epoch, offset as u32 ^ 0xabc),
        }
    }

    fn log(node: i32, recs: &[(i64, &str)]) -> ReplicaLog {
        ReplicaLog {
            node,
            log_start: 0,
            log_end: recs.last().map_or(0, |r| r.0 + 1),
            records: recs.iter().map(|(o, v)| rec(*o, v, 0)).collect(),
        }
    }

    fn ack(p: i32, o: i64, v: &str) -> Ack {
        Ack {
            producer: "p0".into(),
            partition: p,
            offset: o,
            value: v.into(),
        }
    }

    fn state(hw: i64, logs: Vec<ReplicaLog>) -> PartitionState {
        PartitionState {
            partition: 0,
            high_watermark: hw,
            reference: 1,
            isr: logs.iter().map(|l| l.node).collect(),
            replicas: logs,
        }
    }

    const ABC: &[(i64, &str)] = &[(0, "a"), (1, "b"), (2, "c")];

    #[test]
    fn a_clean_run_passes() {
        let acks = [ack(0, 0, "a"), ack(0, 1, "b"), ack(0, 2, "c")];
        let consumed = [Consumed {
            partition: 0,
            offset: 1,
            value: "b".into(),
        }];
        let p = state(3, vec![log(1, ABC), log(2, ABC), log(3, ABC)]);
        let r = check(&acks, &consumed, &[p]);
        assert!(!r.failed(), "{}", r.summary());
        assert_eq!((r.acknowledged, r.found, r.consumed), (3, 3, 1));
    }

    #[test]
    fn loss_duplicates_and_order_are_caught() {
        // "b" was acknowledged but is gone; "c" is twice; "d" is acked before "a" but stored
        // after it.
        let stored = &[(0, "a"), (1, "c"), (2, "c"), (3, "d")];
        let acks = [
            ack(0, 3, "d"),
            ack(0, 0, "a"),
            ack(0, 1, "b"),
            ack(0, 1, "c"),
        ];
        let r = check(&acks, &[], &[state(4, vec![log(1, stored)])]);
        assert_eq!(r.lost, 1, "{}", r.summary());
        assert_eq!(r.duplicated, 1, "{}", r.summary());
        assert_eq!(r.out_of_order, 1, "{}", r.summary());
        assert!(r.failed());
    }

    #[test]
    fn acknowledged_but_uncommitted_is_lost_and_offsets_must_match() {
        let acks = [ack(0, 0, "a"), ack(0, 5, "b"), ack(0, 2, "c")];
        let r = check(&acks, &[], &[state(2, vec![log(1, ABC)])]);
        // "c" is past the high watermark; "b" is committed but at offset 1, not 5.
        assert_eq!((r.found, r.lost, r.misplaced), (2, 1, 1), "{}", r.summary());
        assert_eq!(r.uncommitted, 1);
    }

    #[test]
    fn an_acknowledgement_without_offset_is_checked_for_presence_only() {
        let acks = [ack(0, 0, "a"), ack(0, -1, "b"), ack(0, -1, "z")];
        let r = check(&acks, &[], &[state(3, vec![log(1, ABC)])]);
        assert_eq!((r.found, r.lost, r.misplaced), (2, 1, 0), "{}", r.summary());
        assert_eq!(r.acknowledged_without_offset, 1);
    }

    #[test]
    fn divergent_and_short_replicas() {
        let mut other = log(2, ABC);
        other.records[1].batch.2 = 7; // same value, different leader epoch
        let short = log(3, &[(0, "a")]);
        let mut p = state(3, vec![log(1, ABC), other, short]);
        let r = check(&[], &[], std::slice::from_ref(&p));
        // Replica 2 differs at one offset; replica 3 is in the ISR but lacks two.
        assert_eq!(r.divergent, 3, "{}", r.summary());
        p.isr = vec![1, 2];
        let r = check(&[], &[], &[p]);
        assert_eq!((r.divergent, r.behind), (1, 2), "{}", r.summary());
        // Offsets at or past the high watermark may differ.
        let tail = log(2, &[(0, "a"), (1, "b"), (2, "x")]);
        let r = check(&[], &[], &[state(2, vec![log(1, ABC), tail])]);
        assert!(!r.failed(), "{}", r.summary());
    }

    #[test]
    fn consumed_records_must_survive() {
        let consumed = [
            Consumed {
                partition: 0,
                offset: 2,
                value: "z".into(),
            },
            Consumed {
                partition: 0,
                offset: 0,
                value: "a".into(),
            },
        ];
        let r = check(&[], &consumed, &[state(3, vec![log(1, ABC)])]);
        assert_eq!(r.phantom_reads, 1, "{}", r.summary());
        assert_eq!(r.unacknowledged_present, 3);
    }
}
