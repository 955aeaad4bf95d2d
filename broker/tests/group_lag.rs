//! `Broker::group_lag` on an in-process broker: a group's committed offsets against the high
//! watermarks of the partitions, with the members that own them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjord_broker::broker::Broker;
use fjord_broker::dispatch::{Reply, RequestContext, dispatch};
use fjord_broker::group::codes;
use fjord_broker::group::commits::{CommitPartition, CommitRequest};
use fjord_broker::group::consumer::heartbeat::HeartbeatRequest;
use fjord_broker::{BrokerConfig, Node};
use fjord_protocol::RequestHeader;
use fjord_protocol::kafka_protocol::messages::create_topics_request::CreatableTopic;
use fjord_protocol::kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, RequestKind, ResponseKind, TopicName,
};
use fjord_protocol::kafka_protocol::protocol::StrBytes;
use fjord_storage::Compression;
use fjord_storage::records::{BatchSpec, Record, encode_batch};

async fn call(broker: &Arc<Broker>, key: ApiKey, version: i16, body: RequestKind) -> ResponseKind {
    let ctx = RequestContext {
        header: RequestHeader {
            api_key: key,
            api_version: version,
            correlation_id: 1,
            client_id: Some(StrBytes::from_static_str("lag-test")),
            header_version: key.request_header_version(version),
        },
        listener: "PLAINTEXT".into(),
        peer: None,
    };
    match dispatch(broker, ctx, body) {
        Reply::Now(Some(r)) => *r,
        Reply::Later(f) => f.await.expect("an answer"),
        _ => panic!("no answer"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_lag_reports_committed_offsets_against_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let props: BTreeMap<String, String> = [
        ("node.id", "1".to_string()),
        ("process.roles", "broker,controller".into()),
        (
            "listeners",
            format!("PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:{port}"),
        ),
        ("controller.quorum.voters", format!("1@127.0.0.1:{port}")),
        ("log.dirs", format!("{d}/logs")),
        ("metadata.log.dir", format!("{d}/metadata")),
        ("offsets.topic.replication.factor", "1".into()),
        ("offsets.topic.num.partitions", "2".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let node = Node::start(BrokerConfig::from_properties(props).unwrap())
        .await
        .unwrap();
    let broker = node.broker().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);

    // A topic of two partitions; ten records in partition 0.
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("lagged")))
                .with_num_partitions(2)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(10_000);
    let ResponseKind::CreateTopics(r) = call(
        &broker,
        ApiKey::CreateTopics,
        7,
        RequestKind::CreateTopics(req),
    )
    .await
    else {
        panic!("not a CreateTopics answer");
    };
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    let p0 = loop {
        if let Some(p) = broker.replicas.get("lagged", 0).filter(|p| p.is_leader()) {
            break p;
        }
        assert!(Instant::now() < deadline, "partition never led here");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let records: Vec<Record> = (0..10)
        .map(|i| Record {
            offset: i,
            timestamp: 0,
            key: None,
            value: Some(bytes::Bytes::from_static(b"v")),
            headers: Vec::new(),
        })
        .collect();
    let batch = encode_batch(&BatchSpec::new(0, Compression::None), &records).unwrap();
    p0.append_as_leader(&batch, -1, 1).unwrap();

    // The group's coordinator: __consumer_offsets is created on demand.
    let group = "lag-group";
    let shard = loop {
        broker.groups.request_offsets_topic();
        if let Ok(s) = broker.groups.shard_for(group, &broker.image())
            && s.read(|_| ()).is_ok()
        {
            break s;
        }
        assert!(Instant::now() < deadline, "no coordinator");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        broker.group_lag(group).unwrap_err(),
        codes::GROUP_ID_NOT_FOUND
    );

    // A consumer group member owns both partitions; it committed offset 4 of partition 0.
    let image = broker.image();
    let joined = shard
        .write(|st| {
            st.consumer_group_heartbeat(
                &HeartbeatRequest {
                    group_id: group.into(),
                    member_id: "m".into(),
                    member_epoch: 0,
                    instance_id: None,
                    rack_id: None,
                    rebalance_timeout_ms: 30_000,
                    client_id: "lag-client".into(),
                    client_host: "/127.0.0.1".into(),
                    subscribed_topic_names: Some(vec!["lagged".into()]),
                    subscribed_topic_regex: None,
                    server_assignor: None,
                    owned: Some(Default::default()),
                    api_version: 1,
                },
                &image,
            )
        })
        .unwrap()
        .unwrap();
    let w = shard
        .write(|st| {
            st.commit_offsets(CommitRequest {
                group_id: group.into(),
                member_id: "m".into(),
                group_instance_id: None,
                generation_id: joined.member_epoch,
                retention_time_ms: -1,
                api_version: 9,
                topics: vec![(
                    "lagged".into(),
                    vec![CommitPartition {
                        index: 0,
                        offset: 4,
                        leader_epoch: -1,
                        metadata: None,
                    }],
                )],
            })
        })
        .unwrap()
        .unwrap();
    shard.committed(w.end).await.unwrap();

    let lag = broker.group_lag(group).unwrap();
    assert_eq!((lag.state.as_str(), lag.group_type), ("Stable", "consumer"));
    assert_eq!(lag.partitions.len(), 2, "{lag:?}");
    let p = &lag.partitions[0];
    assert_eq!((p.topic.as_str(), p.partition), ("lagged", 0));
    assert_eq!(p.committed_offset, Some(4));
    assert_eq!(p.high_watermark, Some(10));
    assert_eq!(p.log_end_offset, Some(10));
    assert_eq!(p.lag, Some(6));
    let owner = p.owner.as_ref().expect("owned");
    assert_eq!(
        (owner.member_id.as_str(), owner.client_id.as_str()),
        ("m", "lag-client")
    );
    // Partition 1: owned, nothing committed, so no lag figure.
    let p = &lag.partitions[1];
    assert_eq!(
        (p.partition, p.committed_offset, p.high_watermark, p.lag),
        (1, None, Some(0), None)
    );
    assert!(p.owner.is_some());
    assert_eq!(lag.total_lag(), 6);

    node.shutdown().await.unwrap();
}
