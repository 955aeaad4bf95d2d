//! The follower-read rules of one partition read, on partitions built in memory: what a
//! follower serves consumers, and what a rack-aware leader answers.

use std::sync::Arc;
use std::time::Duration;

use fjord_raft::MetadataImage;
use fjord_raft::image::BrokerRegistration;
use fjord_raft::records::Endpoint;
use fjord_storage::records::simple_batch;
use fjord_storage::{Compression, LoadParams, Log, LogConfig, TopicPartition};
use uuid::Uuid;

use super::*;
use crate::partition::ReplicaState;

const NOW: i64 = 1_700_000_000_000;
const EPOCH: i32 = 3;

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

/// `n` one-record batches at offsets from the log end.
fn write(log: &Log, n: usize) {
    for i in 0..n {
        let v = format!("v{i}");
        let batch = simple_batch(0, NOW, Compression::None, &[(None, Some(v.as_bytes()))]);
        log.append_as_leader(&batch, EPOCH, NOW).unwrap();
    }
}

/// Broker `local` hosting the partition led by broker `leader` on replicas 1, 2, 3.
fn partition(log: Arc<Log>, local: i32, leader: i32) -> Arc<Partition> {
    Partition::new(
        TopicPartition::new("t", 0),
        Uuid::new_v4(),
        local,
        log,
        ReplicaState {
            leader,
            leader_epoch: EPOCH,
            partition_epoch: 0,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        },
    )
}

/// Brokers 1, 2, 3 on racks r1, r2, r3.
fn racks() -> MetadataImage {
    let mut image = MetadataImage::default();
    for id in 1..=3 {
        image.brokers.insert(
            id,
            BrokerRegistration {
                id,
                incarnation_id: Uuid::new_v4(),
                epoch: 1,
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "127.0.0.1".into(),
                    port: 9000 + id as u16,
                    security_protocol: 0,
                }],
                rack: Some(format!("r{id}")),
                fenced: false,
            },
        );
    }
    image
}

fn wanted(p: &Arc<Partition>, fetch_offset: i64, current_leader_epoch: i32) -> Wanted {
    Wanted {
        key: TopicKey::Name("t".into()),
        partition_index: 0,
        fetch_offset,
        max_bytes: 1 << 20,
        current_leader_epoch,
        last_fetched_epoch: -1,
        log_start_offset: -1,
        target: Ok(p.clone()),
    }
}

fn client(rack: &str) -> ClientMetadata {
    ClientMetadata {
        rack: rack.into(),
        listener: "PLAINTEXT".into(),
    }
}

fn params<'a>(
    client: Option<&'a ClientMetadata>,
    selector: ReplicaSelector,
    image: &'a MetadataImage,
) -> ReadParams<'a> {
    ReadParams {
        max_bytes: 1 << 20,
        read_committed: false,
        replica: None,
        client,
        selector,
        image,
        replicas: None,
    }
}

/// The offsets of the records in `data` (first, one past the last), or `None` when empty.
fn offsets(data: &PartitionData) -> Option<(i64, i64)> {
    let records = data.records.as_ref()?;
    let headers: Vec<_> = fjord_storage::log::batch_headers(records).collect();
    Some((
        headers.first()?.base_offset,
        headers.last()?.last_offset() + 1,
    ))
}

fn read(p: &Arc<Partition>, w: &Wanted, params: &ReadParams<'_>) -> Result<PartitionData, i16> {
    read_partition(p, w, params, params.max_bytes, true)
        .map(|(d, _)| d)
        .map_err(|e| e.code)
}

#[test]
fn a_follower_serves_consumers_only_below_its_high_watermark() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    write(&log, 5);
    let p = partition(log, 3, 1);
    p.follow_high_watermark(3);
    let image = racks();
    let c = client("r3");
    let consumer = params(Some(&c), ReplicaSelector::RackAware, &image);

    let data = read(&p, &wanted(&p, 0, EPOCH), &consumer).unwrap();
    assert_eq!(offsets(&data), Some((0, 3)));
    assert_eq!(data.high_watermark, 3);
    assert_eq!(data.last_stable_offset, 3);
    assert_eq!(data.log_start_offset, 0);
    // A follower never names another replica.
    assert_eq!(data.preferred_read_replica.0, -1);
    // In its log but not committed as far as it knows: nothing yet, no error.
    for offset in [3, 4, 5] {
        let data = read(&p, &wanted(&p, offset, -1), &consumer).unwrap();
        assert_eq!(offsets(&data), None, "offset {offset}");
        assert_eq!(data.error_code, codes::NONE);
        assert_eq!(data.high_watermark, 3);
    }
    // Past its log end.
    assert_eq!(
        read(&p, &wanted(&p, 6, -1), &consumer),
        Err(codes::OFFSET_OUT_OF_RANGE)
    );
}

#[test]
fn a_follower_checks_leader_epochs_and_refuses_leader_only_fetches() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    write(&log, 2);
    let p = partition(log, 3, 1);
    p.follow_high_watermark(2);
    let image = racks();
    let c = client("");
    let consumer = params(Some(&c), ReplicaSelector::LeaderOnly, &image);
    assert_eq!(
        read(&p, &wanted(&p, 0, EPOCH - 1), &consumer),
        Err(codes::FENCED_LEADER_EPOCH)
    );
    assert_eq!(
        read(&p, &wanted(&p, 0, EPOCH + 1), &consumer),
        Err(codes::UNKNOWN_LEADER_EPOCH)
    );
    assert!(read(&p, &wanted(&p, 0, EPOCH), &consumer).is_ok());
    // Consumers before Fetch v11 and replicas fetch from the leader only.
    let old = params(None, ReplicaSelector::RackAware, &image);
    assert_eq!(
        read(&p, &wanted(&p, 0, -1), &old),
        Err(codes::NOT_LEADER_OR_FOLLOWER)
    );
    let mut replica = params(None, ReplicaSelector::RackAware, &image);
    replica.replica = Some(2);
    assert_eq!(
        read(&p, &wanted(&p, 0, -1), &replica),
        Err(codes::NOT_LEADER_OR_FOLLOWER)
    );
}

#[test]
fn a_rack_aware_leader_names_the_in_sync_follower_of_the_clients_rack() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    write(&log, 4);
    let p = partition(log, 1, 1);
    let image = racks();
    let r3 = client("r3");
    let rack_aware = params(Some(&r3), ReplicaSelector::RackAware, &image);

    // No follower has fetched in this epoch: the leader does not know they have the offset
    // (and nothing is committed yet).
    let data = read(&p, &wanted(&p, 0, EPOCH), &rack_aware).unwrap();
    assert_eq!(data.preferred_read_replica.0, -1);
    assert_eq!(data.high_watermark, 0);

    // Follower 2 has everything, follower 3 the first two records.
    p.on_follower_fetch(2, 4, 4, NOW);
    p.on_follower_fetch(3, 2, 4, NOW);
    assert_eq!(p.high_watermark(), 2);
    for offset in [0, 2] {
        let data = read(&p, &wanted(&p, offset, EPOCH), &rack_aware).unwrap();
        assert_eq!(data.preferred_read_replica.0, 3, "offset {offset}");
        assert_eq!(offsets(&data), None);
        assert_eq!(data.error_code, codes::NONE);
        assert_eq!(data.high_watermark, 2);
        assert_eq!(data.log_start_offset, 0);
    }
    // The epoch is still checked first.
    assert_eq!(
        read(&p, &wanted(&p, 0, EPOCH - 1), &rack_aware),
        Err(codes::FENCED_LEADER_EPOCH)
    );
    // Past what follower 3 has: the leader answers itself (nothing committed there yet).
    let data = read(&p, &wanted(&p, 3, EPOCH), &rack_aware).unwrap();
    assert_eq!(data.preferred_read_replica.0, -1);
    assert_eq!(offsets(&data), None);

    // No selector, no rack, or the leader's own rack: served here.
    for (rack, selector) in [
        ("r3", ReplicaSelector::LeaderOnly),
        ("", ReplicaSelector::RackAware),
        ("r1", ReplicaSelector::RackAware),
    ] {
        let c = client(rack);
        let data = read(
            &p,
            &wanted(&p, 0, EPOCH),
            &params(Some(&c), selector, &image),
        )
        .unwrap();
        assert_eq!(data.preferred_read_replica.0, -1, "{rack} {selector:?}");
        assert_eq!(offsets(&data), Some((0, 2)), "{rack} {selector:?}");
    }

    // A follower out of the ISR is not a read replica.
    p.update(ReplicaState {
        leader: 1,
        leader_epoch: EPOCH,
        partition_epoch: 1,
        replicas: vec![1, 2, 3],
        isr: vec![1, 2],
    });
    let data = read(&p, &wanted(&p, 0, EPOCH), &rack_aware).unwrap();
    assert_eq!(data.preferred_read_replica.0, -1);
}

#[tokio::test]
async fn a_followers_high_watermark_wakes_its_consumers_when_it_advances() {
    let d = tempfile::tempdir().unwrap();
    let log = open(d.path());
    write(&log, 5);
    let p = partition(log, 3, 1);
    p.follow_high_watermark(1);

    let waiter = {
        let p = p.clone();
        tokio::spawn(async move {
            let advanced = p.hw_advanced();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            tokio::time::timeout(Duration::from_secs(10), advanced)
                .await
                .is_ok()
        })
    };
    tokio::task::yield_now().await;
    // A value past the log end stops at the log end.
    p.follow_high_watermark(9);
    assert!(waiter.await.unwrap());
    assert_eq!(p.high_watermark(), 5);

    // Once leading, the ISR decides the high watermark, not a stale fetch response.
    p.update(ReplicaState {
        leader: 3,
        leader_epoch: EPOCH + 1,
        partition_epoch: 1,
        replicas: vec![1, 2, 3],
        isr: vec![3],
    });
    p.follow_high_watermark(2);
    assert_eq!(p.high_watermark(), 5);
}
