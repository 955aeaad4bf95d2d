//! Real clients against the real `fjord` binary: librdkafka (confluent-kafka) and kafka-python,
//! unchanged, on a broker started with a temporary data directory.

use std::path::Path;
use std::time::Duration;

use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, ALL, KAFKA_PYTHON, RDKAFKA};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");

struct Env {
    py: std::path::PathBuf,
    broker: BrokerProcess,
    _dir: tempfile::TempDir,
}

impl Env {
    /// `None` only when clients are missing and skipping was explicitly allowed.
    fn start(extra: &[(&str, &str)]) -> Option<Env> {
        let py = clients::python()?;
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerProcess::start(Path::new(BIN), dir.path(), extra);
        Some(Env {
            py,
            broker,
            _dir: dir,
        })
    }

    fn run(&self, client: &str, op: &str, mut args: Value) -> Value {
        args["bootstrap"] = json!(self.broker.bootstrap);
        clients::run(&self.py, client, op, &args)
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        self.create_topic_with(name, partitions, json!({}));
    }

    fn create_topic_with(&self, name: &str, partitions: u32, config: Value) {
        let r = self.run(
            RDKAFKA,
            "admin",
            json!({"op": "create_topics", "topics": [{"name": name, "partitions": partitions, "config": config}]}),
        );
        assert_eq!(r[name], Value::Null, "create {name}: {r}");
    }

    fn produce(&self, client: &str, topic: &str, records: &[Value], extra: Value) -> Vec<Value> {
        let mut args = json!({"topic": topic, "records": records});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                args[k] = v;
            }
        }
        let r = self.run(client, "produce", args);
        let results = r["results"].as_array().unwrap().clone();
        assert_eq!(results.len(), records.len(), "{r}");
        for res in &results {
            assert_eq!(
                res["error"],
                Value::Null,
                "{client} produce to {topic}: {res}\nbroker log:\n{}",
                self.broker.log_tail()
            );
        }
        results
    }

    fn consume(&self, client: &str, topic: &str, partitions: &[u32], count: usize) -> Vec<Value> {
        let r = self.run(
            client,
            "consume",
            json!({"topic": topic, "partitions": partitions, "count": count, "timeout": 30}),
        );
        let mut records = r["records"].as_array().unwrap().clone();
        records.sort_by_key(|r| (r["partition"].as_i64(), r["offset"].as_i64()));
        assert_eq!(
            records.len(),
            count,
            "{client} consumed {} of {count} from {topic}: {r}",
            records.len()
        );
        records
    }
}

/// Records with keys, null keys, null values, repeated header keys and explicit timestamps.
fn varied_records(n: usize, base_ts: i64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "key": if i % 4 == 1 { Value::Null } else { json!(format!("key-{i}")) },
                "value": if i % 5 == 2 && i % 4 != 1 { Value::Null } else { json!(format!("value-{i}-ünïcode")) },
                "headers": if i % 3 == 0 {
                    json!([["trace", format!("t{i}")], ["trace", "again"], ["empty", ""]])
                } else {
                    json!([])
                },
                "timestamp": base_ts + i as i64,
            })
        })
        .collect()
}

fn assert_same_records(sent: &[Value], got: &[Value], first_offset: i64) {
    for (i, (s, g)) in sent.iter().zip(got).enumerate() {
        assert_eq!(g["offset"].as_i64(), Some(first_offset + i as i64), "{g}");
        assert_eq!(g["key"], s["key"], "key of record {i}: {g}");
        assert_eq!(g["value"], s["value"], "value of record {i}: {g}");
        assert_eq!(g["headers"], s["headers"], "headers of record {i}: {g}");
        assert_eq!(
            g["timestamp"], s["timestamp"],
            "timestamp of record {i}: {g}"
        );
    }
}

#[test]
fn keys_headers_nulls_and_timestamps_round_trip_between_clients() {
    let Some(env) = Env::start(&[]) else { return };
    for producer in ALL {
        let topic = format!("varied-{producer}");
        env.create_topic(&topic, 1);
        let sent = varied_records(30, 1_700_000_000_000);
        env.produce(producer, &topic, &sent, json!({"acks": "all"}));
        for consumer in ALL {
            let got = env.consume(consumer, &topic, &[0], sent.len());
            assert_same_records(&sent, &got, 0);
        }
    }
}

#[test]
fn every_codec_produced_by_one_client_is_consumed_by_the_other() {
    let Some(env) = Env::start(&[]) else { return };
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        for (producer, consumer) in [(RDKAFKA, KAFKA_PYTHON), (KAFKA_PYTHON, RDKAFKA)] {
            let topic = format!("codec-{codec}-{producer}");
            env.create_topic(&topic, 1);
            let sent = varied_records(50, 1_700_000_100_000);
            env.produce(
                producer,
                &topic,
                &sent,
                json!({"compression": codec, "linger_ms": 20}),
            );
            let got = env.consume(consumer, &topic, &[0], sent.len());
            assert_same_records(&sent, &got, 0);
        }
    }
}

#[test]
fn acks_zero_one_and_all() {
    let Some(env) = Env::start(&[]) else { return };
    for client in ALL {
        let topic = format!("acks-{client}");
        env.create_topic(&topic, 2);
        let mut total = 0;
        for acks in ["0", "1", "all"] {
            let records: Vec<Value> = (0..20)
                .map(|i| json!({"key": format!("{acks}-{i}"), "value": format!("v{i}")}))
                .collect();
            let results = env.produce(client, &topic, &records, json!({"acks": acks}));
            if acks != "0" {
                // Acknowledged records carry their offsets.
                assert!(
                    results.iter().all(|r| r["offset"].as_i64() >= Some(0)),
                    "{results:?}"
                );
            }
            total += records.len();
        }
        let got = env.consume(RDKAFKA, &topic, &[0, 1], total);
        let keys: std::collections::BTreeSet<String> = got
            .iter()
            .map(|r| r["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys.len(), total, "every record exactly once");
    }
}

#[test]
fn admin_apis_of_both_clients() {
    let Some(env) = Env::start(&[]) else { return };
    for client in ALL {
        let topic = format!("admin-{client}");
        let r = env.run(
            client,
            "admin",
            json!({"op": "create_topics", "topics": [{"name": topic, "partitions": 2, "config": {"retention.ms": "3600000"}}]}),
        );
        assert_eq!(r[&topic], Value::Null, "{r}");
        // A second create is refused.
        let r = env.run(
            client,
            "admin",
            json!({"op": "create_topics", "topics": [{"name": topic, "partitions": 2}]}),
        );
        let err = r[&topic].as_str().unwrap_or_default().to_lowercase();
        assert!(err.contains("exist") || err.contains("36"), "{r}");

        let topics = env.run(client, "admin", json!({"op": "list_topics"}));
        assert!(topics.get(&topic).is_some(), "{topics}");

        let configs = env.run(
            client,
            "admin",
            json!({"op": "describe_configs", "topic": topic}),
        );
        assert_eq!(configs["retention.ms"]["value"], "3600000", "{configs}");

        let r = env.run(
            client,
            "admin",
            json!({"op": "alter_configs", "topic": topic, "set": {"retention.ms": "7200000", "cleanup.policy": "compact"}}),
        );
        assert!(r.as_object().unwrap().values().all(Value::is_null), "{r}");
        let configs = env.run(
            RDKAFKA,
            "admin",
            json!({"op": "describe_configs", "topic": topic}),
        );
        assert_eq!(configs["retention.ms"]["value"], "7200000", "{configs}");
        assert_eq!(configs["cleanup.policy"]["value"], "compact", "{configs}");
        // Kafka's TOPIC_CONFIG source id, and defaults reported as defaults.
        assert_eq!(configs["retention.ms"]["source"], 1, "{configs}");
        assert_eq!(configs["segment.bytes"]["source"], 5, "{configs}");

        let r = env.run(
            client,
            "admin",
            json!({"op": "create_partitions", "topic": topic, "count": 3}),
        );
        assert!(r.as_object().unwrap().values().all(Value::is_null), "{r}");
        let topics = env.run(RDKAFKA, "admin", json!({"op": "list_topics"}));
        assert_eq!(topics[&topic], 3, "{topics}");
        // The new partition takes writes.
        env.produce(
            client,
            &topic,
            &[json!({"key": "k", "value": "v"})],
            json!({"partition": 2}),
        );

        let r = env.run(
            client,
            "admin",
            json!({"op": "delete_topics", "topics": [topic]}),
        );
        assert_eq!(r[&topic], Value::Null, "{r}");
        let topics = env.run(client, "admin", json!({"op": "list_topics"}));
        assert!(topics.get(&topic).is_none(), "{topics}");
    }
}

#[test]
fn topics_are_auto_created_only_when_enabled() {
    let Some(env) = Env::start(&[("num.partitions", "3")]) else {
        return;
    };
    for client in ALL {
        let topic = format!("auto-{client}");
        let records: Vec<Value> = (0..10)
            .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}")}))
            .collect();
        env.produce(client, &topic, &records, json!({}));
        let topics = env.run(RDKAFKA, "admin", json!({"op": "list_topics"}));
        assert_eq!(topics[&topic], 3, "num.partitions applies: {topics}");
        env.consume(client, &topic, &[0, 1, 2], records.len());
    }
    drop(env);

    let Some(env) = Env::start(&[("auto.create.topics.enable", "false")]) else {
        return;
    };
    let r = env.run(
        RDKAFKA,
        "produce",
        json!({"topic": "not-there", "records": [{"value": "x"}],
               "extra": {"message.timeout.ms": 3000}}),
    );
    let err = r["results"][0]["error"].as_str().unwrap_or_default();
    assert!(!err.is_empty(), "produce to a missing topic must fail: {r}");
    let topics = env.run(RDKAFKA, "admin", json!({"op": "list_topics"}));
    assert!(topics.get("not-there").is_none(), "{topics}");
}

#[test]
fn large_record_offsets_by_time_and_replay_from_zero() {
    let Some(env) = Env::start(&[]) else { return };
    let topic = "big-and-time";
    // A 1 MiB record plus batch overhead exceeds Kafka's default max.message.bytes, as in
    // Kafka; the topic allows 2 MiB.
    env.create_topic_with(topic, 1, json!({"max.message.bytes": "2097152"}));
    // One 1 MiB record, then records at known times.
    env.produce(
        RDKAFKA,
        topic,
        &[json!({"key": "big", "value_size": 1 << 20})],
        json!({}),
    );
    // Later than the big record's, and within the hour ahead of the broker's clock that Kafka
    // 4.x's message.timestamp.after.max.ms allows.
    let base = fjord_storage::now_ms() + 600_000;
    let timed: Vec<Value> = (0..10)
        .map(|i| json!({"key": format!("t{i}"), "value": "v", "timestamp": base + i * 1000}))
        .collect();
    env.produce(KAFKA_PYTHON, topic, &timed, json!({}));
    for client in ALL {
        let got = env.consume(client, topic, &[0], 11);
        assert_eq!(got[0]["value_size"], 1 << 20, "{}", got[0]);
        // Replay: a second consumer from offset 0 sees the same records again.
        let again = env.consume(client, topic, &[0], 11);
        assert_eq!(got, again);
        let offsets = env.run(
            client,
            "list_offsets",
            json!({"topic": topic, "partition": 0, "timestamp": base + 4_500}),
        );
        assert_eq!(offsets["earliest"], 0, "{offsets}");
        assert_eq!(offsets["latest"], 11, "{offsets}");
        // The first record at or after the time is t5, at offset 6.
        assert_eq!(offsets["for_timestamp"], 6, "{offsets}");
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let Some(mut env) = Env::start(&[]) else {
        return;
    };
    let topic = "durable";
    env.create_topic(topic, 2);
    let mut sent = 0;
    for (round, client) in [RDKAFKA, KAFKA_PYTHON, RDKAFKA].iter().enumerate() {
        let records: Vec<Value> = (0..200)
            .map(|i| json!({"key": format!("r{round}-{i}"), "value": format!("value {i}")}))
            .collect();
        env.produce(client, topic, &records, json!({"acks": "all"}));
        sent += records.len();
    }
    env.broker.kill();
    env.broker.restart();
    for client in ALL {
        let got = env.consume(client, topic, &[0, 1], sent);
        let keys: std::collections::BTreeSet<&str> =
            got.iter().map(|r| r["key"].as_str().unwrap()).collect();
        assert_eq!(keys.len(), sent, "no record lost or duplicated");
    }
    // The topic keeps taking writes after recovery, after the recovered offsets.
    let more = env.produce(
        RDKAFKA,
        topic,
        &[json!({"value": "after"})],
        json!({"partition": 0}),
    );
    assert!(more[0]["offset"].as_i64().unwrap() > 0, "{more:?}");
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let Some(mut env) = Env::start(&[]) else {
        return;
    };
    env.create_topic("clean", 1);
    env.produce(RDKAFKA, "clean", &[json!({"value": "kept"})], json!({}));
    let status = env
        .broker
        .terminate(Duration::from_secs(30))
        .expect("broker exits after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}\n{}",
        env.broker.log_tail()
    );
    assert!(
        env.broker.log_dir().join(".kafka_cleanshutdown").exists(),
        "clean-shutdown marker written"
    );
    env.broker.restart();
    let got = env.consume(KAFKA_PYTHON, "clean", &[0], 1);
    assert_eq!(got[0]["value"], "kept");
}
