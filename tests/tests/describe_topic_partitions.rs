//! DescribeTopicPartitions (API key 75, v0) against the `fjord` binary: encoded and decoded with
//! kafka-protocol's client side, and through kafka-python's `describe_topic_partitions` (the
//! one client here that sends it; librdkafka 2.16's DescribeTopics uses Metadata).

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, KAFKA_PYTHON};
use fjord_tests::wire::Conn;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUEST: i16 = 42;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Creates the topics and returns their ids.
fn create_topics(conn: &mut Conn, topics: &[(&str, i32)]) -> BTreeMap<String, String> {
    let req = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|(t, n)| {
                    CreatableTopic::default()
                        .with_name(name(t))
                        .with_num_partitions(*n)
                        .with_replication_factor(1)
                })
                .collect(),
        )
        .with_timeout_ms(10_000);
    let resp = conn.call(7, &req);
    resp.topics
        .iter()
        .map(|t| {
            assert_eq!(t.error_code, 0, "{t:?}");
            (t.name.as_str().to_string(), t.topic_id.to_string())
        })
        .collect()
}

fn describe(
    conn: &mut Conn,
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsResponse {
    let req = DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(name(t)))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(name(t))
                .with_partition_index(p)
        }));
    conn.call(0, &req)
}

type Page = (Vec<(String, i32)>, Option<(String, i32)>);

fn page(r: &DescribeTopicPartitionsResponse) -> Page {
    let mut out = Vec::new();
    for t in &r.topics {
        assert_eq!(t.error_code, 0, "{t:?}");
        for p in &t.partitions {
            out.push((
                t.name.as_ref().unwrap().as_str().to_string(),
                p.partition_index,
            ));
        }
    }
    let cursor = r
        .next_cursor
        .as_ref()
        .map(|c| (c.topic_name.as_str().to_string(), c.partition_index));
    (out, cursor)
}

fn all(topics: &[(&str, i32)]) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
        .collect()
}

#[test]
fn describe_topic_partitions_at_the_wire_level() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    let versions = conn.call(3, &ApiVersionsRequest::default());
    let k = versions
        .api_keys
        .iter()
        .find(|k| k.api_key == 75)
        .expect("DescribeTopicPartitions advertised");
    assert_eq!((k.min_version, k.max_version), (0, 0));

    let topics = [("dtp-a", 3), ("dtp-b", 1), ("dtp-c", 2)];
    let ids = create_topics(&mut conn, &topics);

    // Named topics: answered in name order, unknown and invalid names with their errors.
    let resp = describe(
        &mut conn,
        &["dtp-c", "dtp-a", "dtp-missing", "bad/name"],
        2000,
        None,
    );
    let summary: Vec<(&str, i16, usize)> = resp
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().unwrap().as_str(),
                t.error_code,
                t.partitions.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("bad/name", INVALID_TOPIC_EXCEPTION, 0),
            ("dtp-a", 0, 3),
            ("dtp-c", 0, 2),
            ("dtp-missing", UNKNOWN_TOPIC_OR_PARTITION, 0),
        ]
    );
    assert!(resp.next_cursor.is_none());
    for t in &resp.topics {
        assert_eq!(t.topic_authorized_operations, i32::MIN, "{t:?}");
        assert!(!t.is_internal);
        let n = t.name.as_ref().unwrap().as_str();
        match ids.get(n) {
            Some(id) => assert_eq!(&t.topic_id.to_string(), id),
            None => assert!(t.topic_id.is_nil()),
        }
        for (i, p) in t.partitions.iter().enumerate() {
            assert_eq!(p.error_code, 0);
            assert_eq!(p.partition_index, i as i32);
            assert_eq!(p.leader_id, BrokerId(1), "{p:?}");
            assert_eq!(p.leader_epoch, 0, "{p:?}");
            assert_eq!(p.replica_nodes, vec![BrokerId(1)]);
            assert_eq!(p.isr_nodes, vec![BrokerId(1)]);
            assert_eq!(p.eligible_leader_replicas, Some(vec![]));
            assert_eq!(p.last_known_elr, Some(vec![]));
            assert!(p.offline_replicas.is_empty());
        }
    }

    // All topics, two partitions per page: the cursor walks through them in order.
    let first = describe(&mut conn, &[], 2, None);
    assert_eq!(
        page(&first),
        (
            vec![("dtp-a".into(), 0), ("dtp-a".into(), 1)],
            Some(("dtp-a".into(), 2))
        )
    );
    let second = describe(&mut conn, &[], 2, Some(("dtp-a", 2)));
    assert_eq!(
        page(&second),
        (
            vec![("dtp-a".into(), 2), ("dtp-b".into(), 0)],
            Some(("dtp-c".into(), 0))
        )
    );
    let third = describe(&mut conn, &[], 2, Some(("dtp-c", 0)));
    assert_eq!(
        page(&third),
        (vec![("dtp-c".into(), 0), ("dtp-c".into(), 1)], None)
    );
    // Any page size visits every partition exactly once.
    for limit in [1, 3, 4, 6, 7] {
        let mut seen = Vec::new();
        let mut cursor: Option<(String, i32)> = None;
        for _ in 0..20 {
            let r = describe(
                &mut conn,
                &[],
                limit,
                cursor.as_ref().map(|(t, p)| (t.as_str(), *p)),
            );
            let (got, next) = page(&r);
            assert!(got.len() <= limit as usize);
            seen.extend(got);
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        assert!(cursor.is_none(), "limit {limit}");
        assert_eq!(seen, all(&topics), "limit {limit}");
    }

    // A cursor must name a listed topic and a partition >= 0.
    for cursor in [("dtp-c", 0), ("dtp-a", -1)] {
        let r = describe(&mut conn, &["dtp-a", "dtp-b"], 10, Some(cursor));
        let codes: Vec<i16> = r.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(codes, vec![INVALID_REQUEST, INVALID_REQUEST], "{cursor:?}");
        assert!(r.topics.iter().all(|t| t.partitions.is_empty()));
    }
    // The connection is still usable after those answers.
    let r = describe(&mut conn, &["dtp-b"], 10, None);
    assert_eq!(r.topics[0].partitions.len(), 1);
}

#[test]
fn kafka_python_describe_topic_partitions_pages_through_topics() {
    let Some(py) = clients::python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(Path::new(BIN), dir.path(), &[]);
    let mut conn = Conn::connect(&broker.bootstrap);
    let topics = [("kp-a", 2), ("kp-b", 3)];
    let ids = create_topics(&mut conn, &topics);

    let run = |args: Value| {
        let mut args = args;
        args["bootstrap"] = json!(broker.bootstrap);
        support::run(&py, KAFKA_PYTHON, "describe_topic_partitions", &args)
    };
    // One partition per page, following the cursor until there is none.
    let r = run(json!({"topics": ["kp-b", "kp-a"], "limit": 1, "all_pages": true}));
    let pages = r["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 5, "{r}");
    let mut seen = Vec::new();
    for p in pages {
        for t in p["topics"].as_array().unwrap() {
            let n = t["name"].as_str().unwrap();
            assert_eq!(t["error_code"], 0, "{t}");
            let want = ids[n].replace('-', "");
            let got = t["topic_id"].as_str().unwrap().replace('-', "");
            assert_eq!(got, want, "{t}");
            for part in t["partitions"].as_array().unwrap() {
                assert_eq!(part["leader_id"], 1, "{part}");
                assert_eq!(part["isr_nodes"], json!([1]), "{part}");
                seen.push((
                    n.to_string(),
                    part["partition_index"].as_i64().unwrap() as i32,
                ));
            }
        }
    }
    assert_eq!(seen, all(&topics), "{r}");
    assert!(pages.last().unwrap()["next_cursor"].is_null());

    // A missing topic comes back with its error next to the ones that exist.
    let r = run(json!({"topics": ["kp-a", "kp-missing"]}));
    let t = &r["pages"][0]["topics"];
    assert_eq!(t[0]["name"], "kp-a", "{r}");
    assert_eq!(t[0]["partitions"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(t[1]["name"], "kp-missing", "{r}");
    assert_eq!(t[1]["error_code"], UNKNOWN_TOPIC_OR_PARTITION, "{r}");
}
