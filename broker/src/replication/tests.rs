//! Truncation cases between a leader's and a follower's logs: the divergence a leader reports
//! and the truncation a follower applies, through the same functions the fetch path uses.

use std::sync::Arc;

use fjord_protocol::kafka_protocol::messages::fetch_response::{EpochEndOffset, PartitionData};
use fjord_storage::records::{decode_batch, simple_batch};
use fjord_storage::{Compression, LoadParams, Log, LogConfig, TopicPartition};
use uuid::Uuid;

use super::fetcher::apply_partition;
use super::{divergence, truncation_offset};
use crate::partition::{Commit, Partition, ReplicaState};

const NOW: i64 = 1_700_000_000_000;

fn open(dir: &std::path::Path) -> Arc<Log> {
    Arc::new(
        Log::open(
            dir,
            TopicPartition::new("t", 0),
            Arc::new(LogConfig::default()),
            LoadParams::new_log(NOW),
        )
        .unwrap(),
    )
}

/// Appends `n` one-record batches written by the leader of `epoch`.
fn write(log: &Log, epoch: i32, tag: &str, n: usize) {
    for i in 0..n {
        let v = format!("{tag}{i}");
        let batch = simple_batch(0, NOW, Compression::None, &[(None, Some(v.as_bytes()))]);
        log.append_as_leader(&batch, epoch, NOW).unwrap();
    }
}

fn values(log: &Log) -> Vec<String> {
    let read = log.read(0, 1 << 20, log.log_end_offset()).unwrap();
    fjord_storage::log::batch_headers(&read.records)
        .scan(0usize, |at, h| {
            let b = read.records.slice(*at..*at + h.size());
            *at += h.size();
            Some(b)
        })
        .flat_map(|b| decode_batch(&b).unwrap().1)
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

/// The follower's replica of the partition led by broker 1.
fn follower(log: Arc<Log>, leader_epoch: i32) -> Partition {
    Arc::try_unwrap(Partition::new(
        TopicPartition::new("t", 0),
        Uuid::new_v4(),
        2,
        log,
        ReplicaState {
            leader: 1,
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
        },
    ))
    .ok()
    .unwrap()
}

fn diverging(epoch: i32, end: i64) -> PartitionData {
    PartitionData::default()
        .with_high_watermark(0)
        .with_diverging_epoch(
            EpochEndOffset::default()
                .with_epoch(epoch)
                .with_end_offset(end),
        )
}

#[test]
fn a_follower_with_a_divergent_tail_truncates_to_the_shared_prefix() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, flog) = (open(ld.path()), open(fd.path()));
    // Both have epoch 0's five records. The follower then led epoch 1 briefly and wrote three
    // records nobody else has; the leader wrote four in epoch 2.
    write(&leader, 0, "a", 5);
    write(&flog, 0, "a", 5);
    write(&flog, 1, "x", 3);
    write(&leader, 2, "b", 4);

    // The follower asks from 8 with last epoch 1: the leader knows epoch 0 ending at 5.
    let (epoch, end) = divergence(&leader, 1, flog.log_end_offset()).unwrap();
    assert_eq!((epoch, end), (0, 5));
    assert_eq!(truncation_offset(&flog, epoch, end), 5);

    let p = follower(flog.clone(), 2);
    assert!(apply_partition(&p, &diverging(epoch, end)).is_ok());
    assert_eq!(flog.log_end_offset(), 5);
    assert_eq!(flog.latest_epoch(), Some(0));
    // Now it fetches from 5 with epoch 0: no divergence, and it copies the leader's records.
    assert_eq!(divergence(&leader, 0, 5), None);
    let read = leader.read(5, 1 << 20, leader.log_end_offset()).unwrap();
    let data = PartitionData::default()
        .with_high_watermark(leader.log_end_offset())
        .with_records(Some(read.records));
    assert!(apply_partition(&p, &data).is_ok());
    assert_eq!(values(&flog), values(&leader));
    assert_eq!(flog.latest_epoch(), Some(2));
    assert_eq!(flog.high_watermark(), 9);
}

#[test]
fn a_follower_that_is_merely_behind_does_not_truncate() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, flog) = (open(ld.path()), open(fd.path()));
    write(&leader, 0, "a", 5);
    write(&leader, 3, "b", 5);
    write(&flog, 0, "a", 5);
    write(&flog, 3, "b", 2);
    assert_eq!(divergence(&leader, 3, 7), None);
    assert_eq!(divergence(&leader, 0, 5), None);
    // An empty follower sends no epoch.
    assert_eq!(divergence(&leader, -1, 0), None);
}

#[test]
fn a_broker_returning_with_a_stale_log_loses_what_the_new_leader_never_had() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (new_leader, stale) = (open(ld.path()), open(fd.path()));
    // The old leader (now `stale`) wrote 0..10 in epoch 4; the new leader had copied only
    // 0..6 when it took over in epoch 5 and has written nothing since.
    write(&stale, 4, "a", 10);
    write(&new_leader, 4, "a", 6);
    let (epoch, end) = divergence(&new_leader, 4, 10).unwrap();
    assert_eq!((epoch, end), (4, 6));
    let p = follower(stale.clone(), 5);
    assert!(apply_partition(&p, &diverging(epoch, end)).is_ok());
    assert_eq!(stale.log_end_offset(), 6);
    assert_eq!(values(&stale), values(&new_leader));
}

#[test]
fn a_leader_without_epochs_makes_a_follower_drop_what_it_lacks() {
    let (ld, fd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, flog) = (open(ld.path()), open(fd.path()));
    write(&flog, 1, "x", 3);
    let (epoch, end) = divergence(&leader, 1, 3).unwrap();
    assert_eq!((epoch, end), (-1, 0));
    assert_eq!(truncation_offset(&flog, epoch, end), 0);
}

fn leader(log: Arc<Log>) -> Arc<Partition> {
    Partition::new(
        TopicPartition::new("t", 0),
        Uuid::new_v4(),
        1,
        log,
        ReplicaState {
            leader: 1,
            leader_epoch: 7,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        },
    )
}

#[tokio::test]
async fn acks_all_waits_for_the_isr_and_fails_when_leadership_moves_during_the_wait() {
    let d = tempfile::tempdir().unwrap();
    let p = leader(open(d.path()));
    let batch = simple_batch(0, NOW, Compression::None, &[(None, Some(b"v"))]);
    let (info, epoch) = p.append_in_epoch(&batch, -1, 2).unwrap();
    assert_eq!(epoch, 7);
    let end = info.last_offset + 1;
    // Nobody has fetched: the high watermark waits for the whole ISR.
    let short = std::time::Duration::from_millis(50);
    assert_eq!(p.wait_for_commit(end, epoch, short).await, Commit::TimedOut);
    p.on_follower_fetch(2, end, end, NOW);
    assert_eq!(p.high_watermark(), 0);
    p.on_follower_fetch(3, end, end, NOW);
    assert_eq!(p.high_watermark(), end);
    assert_eq!(
        p.wait_for_commit(end, epoch, short).await,
        Commit::Committed
    );

    // A second record; leadership moves to broker 2 while the producer waits.
    let (info, epoch) = p.append_in_epoch(&batch, -1, 2).unwrap();
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            p.wait_for_commit(
                info.last_offset + 1,
                epoch,
                std::time::Duration::from_secs(30),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    p.update(ReplicaState {
        leader: 2,
        leader_epoch: 8,
        partition_epoch: 1,
        replicas: vec![1, 2, 3],
        isr: vec![2, 3],
    });
    assert_eq!(waiter.await.unwrap(), Commit::NotLeader);
}

#[test]
fn laggards_leave_the_isr_and_caught_up_followers_are_proposed_back() {
    let d = tempfile::tempdir().unwrap();
    let p = leader(open(d.path()));
    // ISR members count as caught up when leadership starts (now).
    let t = fjord_storage::now_ms();
    write(p.log(), 7, "a", 3);
    // Follower 2 keeps up; follower 3 never fetches.
    p.on_follower_fetch(2, 3, 3, t + 10_000);
    let shrink = p.isr_without_laggards(t + 20_000, 15_000).unwrap();
    assert_eq!(shrink.isr, vec![1, 2]);
    // One proposal at a time.
    assert!(p.isr_without_laggards(t + 20_000, 15_000).is_none());
    p.on_isr_change(Some(fjord_raft::controller::requests::PartitionState {
        partition_epoch: 1,
        ..shrink
    }));
    assert_eq!(p.state().isr, vec![1, 2]);
    // Follower 3 returns, behind: not proposed until it reaches the high watermark.
    assert!(p.on_follower_fetch(3, 1, 3, t + 21_000).is_none());
    let expand = p.on_follower_fetch(3, 3, 3, t + 22_000).unwrap();
    assert_eq!(expand.isr, vec![1, 2, 3]);
}
