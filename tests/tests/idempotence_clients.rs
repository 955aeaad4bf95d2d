//! Real idempotent producers (librdkafka through confluent-kafka, and kafka-python) whose first
//! produce response is lost: a proxy between client and broker forwards the request, lets the
//! broker append it, then drops the response and both connections. The client must retry the
//! same batch with the same sequence, and the broker must answer that retry as a duplicate with
//! the original offset instead of appending it again. The broker advertises the proxy's address,
//! so every client connection goes through it.
//!
//! Oracles: every record is acknowledged without error, the proxy dropped exactly one produce
//! response and saw at least one more produce request (the retry), and the partition holds
//! exactly the records sent (a retry appended twice would leave more).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, ALL, RDKAFKA};
use fjord_tests::wire::Conn;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const PRODUCE: i16 = 0;
/// Largest frame the proxy relays (the broker's default `socket.request.max.bytes`).
const MAX_FRAME: usize = 100 << 20;
/// How long a relayed connection may stay idle before the proxy gives up on it.
const IDLE: Duration = Duration::from_secs(120);

/// Relays Kafka frames between clients and the broker; drops the first produce response.
struct DropProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    produce_requests: Arc<AtomicUsize>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl DropProxy {
    fn start(listener: TcpListener, upstream: String) -> DropProxy {
        let addr = listener.local_addr().unwrap().to_string();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let armed = Arc::new(AtomicBool::new(true));
        let dropped = Arc::new(AtomicUsize::new(0));
        let produce_requests = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (stop, armed, dropped, produce_requests) = (
                stop.clone(),
                armed.clone(),
                dropped.clone(),
                produce_requests.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let Ok(broker) = TcpStream::connect(&upstream) else {
                                continue;
                            };
                            relay(
                                client,
                                broker,
                                armed.clone(),
                                dropped.clone(),
                                produce_requests.clone(),
                            );
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        DropProxy {
            addr,
            stop,
            dropped,
            produce_requests,
            accept: Some(accept),
        }
    }
}

impl Drop for DropProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|n| *n <= MAX_FRAME)?;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}

fn close(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

/// Two threads per connection: requests up (noting each correlation id's API key), responses
/// down (dropping the first produce response and closing both sides instead).
fn relay(
    client: TcpStream,
    broker: TcpStream,
    armed: Arc<AtomicBool>,
    dropped: Arc<AtomicUsize>,
    produce_requests: Arc<AtomicUsize>,
) {
    for s in [&client, &broker] {
        let _ = s.set_read_timeout(Some(IDLE));
        let _ = s.set_nodelay(true);
    }
    let keys: Arc<Mutex<HashMap<i32, i16>>> = Default::default();
    let (mut c_in, mut b_out) = (client.try_clone().unwrap(), broker.try_clone().unwrap());
    let up_keys = keys.clone();
    std::thread::spawn(move || {
        while let Some(frame) = read_frame(&mut c_in) {
            if frame.len() >= 12 {
                let key = i16::from_be_bytes([frame[4], frame[5]]);
                let id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
                if key == PRODUCE {
                    produce_requests.fetch_add(1, Ordering::SeqCst);
                }
                up_keys.lock().unwrap().insert(id, key);
            }
            if b_out.write_all(&frame).is_err() {
                break;
            }
        }
        close(&c_in, &b_out);
    });
    let (mut b_in, mut c_out) = (broker, client);
    std::thread::spawn(move || {
        while let Some(frame) = read_frame(&mut b_in) {
            if frame.len() >= 8 {
                let id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
                let key = keys.lock().unwrap().remove(&id);
                if key == Some(PRODUCE) && armed.swap(false, Ordering::SeqCst) {
                    // The broker has appended; the client never hears of it.
                    dropped.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
            if c_out.write_all(&frame).is_err() {
                break;
            }
        }
        close(&b_in, &c_out);
    });
}

fn log_end_offset(conn: &mut Conn, topic: &str) -> i64 {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_current_leader_epoch(-1)
                        .with_timestamp(-1),
                ]),
        ]);
    let resp = conn.call(7, &req);
    resp.topics[0].partitions[0].offset
}

#[test]
fn idempotent_clients_retry_a_lost_produce_response_without_duplicates() {
    let Some(py) = clients::python() else { return };
    for client in ALL {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let advertised = format!(
            "PLAINTEXT://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerProcess::start(
            Path::new(BIN),
            dir.path(),
            &[("advertised.listeners", &advertised)],
        );
        let proxy = DropProxy::start(listener, broker.bootstrap.clone());
        let topic = format!("retry-{client}");
        let mut admin = Conn::connect(&broker.bootstrap);
        let created = admin.call(
            7,
            &CreateTopicsRequest::default()
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_num_partitions(1)
                        .with_replication_factor(1),
                ])
                .with_timeout_ms(10_000),
        );
        assert_eq!(created.topics[0].error_code, 0, "{created:?}");

        let records: Vec<Value> = (0..40)
            .map(|i| json!({"key": format!("k{i}"), "value": format!("value {i}")}))
            .collect();
        let started = Instant::now();
        let r = clients::run(
            &py,
            client,
            "produce",
            &json!({"bootstrap": proxy.addr, "topic": topic, "records": records,
                    "idempotent": true, "acks": "all", "partition": 0, "linger_ms": 0,
                    "timeout": 60}),
        );
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), records.len(), "{r}");
        for res in results {
            assert_eq!(
                res["error"],
                Value::Null,
                "{client}: {res}\n{}",
                broker.log_tail()
            );
        }
        let mut offsets: Vec<i64> = results
            .iter()
            .map(|r| r["offset"].as_i64().unwrap())
            .collect();
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            (0..40).collect::<Vec<i64>>(),
            "{client}: each record acknowledged once, at its own offset"
        );
        assert_eq!(
            proxy.dropped.load(Ordering::SeqCst),
            1,
            "{client}: a produce response was dropped"
        );
        assert!(
            proxy.produce_requests.load(Ordering::SeqCst) >= 2,
            "{client}: the lost request was retried"
        );
        assert_eq!(
            log_end_offset(&mut admin, &topic),
            40,
            "{client}: the retried batch was not appended twice"
        );
        let got = clients::run(
            &py,
            RDKAFKA,
            "consume",
            &json!({"bootstrap": broker.bootstrap, "topic": topic, "partitions": [0],
                    "count": 40, "timeout": 30}),
        );
        let keys: std::collections::BTreeSet<&str> = got["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), 40, "{client}: every record exactly once");
        eprintln!(
            "{client}: retried and deduplicated in {:?}",
            started.elapsed()
        );
    }
}
