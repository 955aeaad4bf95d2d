//! Consumer groups with real clients (librdkafka through confluent-kafka, and kafka-python)
//! against the `fjord` binary: work shared across members, rebalances when members leave or
//! die, committed offsets across consumer and broker restarts, static membership, group
//! administration, and a KIP-848 group (librdkafka with `group.protocol=consumer`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_tests::broker::BrokerProcess;
use fjord_tests::clients::{self, ALL, KAFKA_PYTHON, RDKAFKA};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/groups_client.py");
/// Bound on one admin invocation or on a member's exit after being told to stop.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for a group to settle or for records to arrive.
const SETTLE: Duration = Duration::from_secs(90);

struct Env {
    py: PathBuf,
    broker: BrokerProcess,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Option<Env> {
        let py = clients::python()?;
        let dir = tempfile::tempdir().unwrap();
        let broker = BrokerProcess::start(
            Path::new(BIN),
            dir.path(),
            &[
                // One broker: Kafka's default of 3 replicas would keep the topic from being
                // created (as in Kafka).
                ("offsets.topic.replication.factor", "1"),
                ("offsets.topic.num.partitions", "10"),
                ("group.initial.rebalance.delay.ms", "300"),
                // KIP-848 groups: the coordinator sets the heartbeat interval and session.
                ("group.consumer.heartbeat.interval.ms", "500"),
                ("group.consumer.session.timeout.ms", "6000"),
            ],
        );
        Some(Env { py, broker, dir })
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let r = clients::run(
            &self.py,
            RDKAFKA,
            "admin",
            &json!({"bootstrap": self.broker.bootstrap, "op": "create_topics",
                    "topics": [{"name": name, "partitions": partitions}]}),
        );
        assert_eq!(r[name], Value::Null, "create {name}: {r}");
    }

    /// Produces records with keys `k{from}`..`k{to-1}` (spread over partitions by key).
    fn produce(&self, topic: &str, from: usize, to: usize) {
        let records: Vec<Value> = (from..to)
            .map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}")}))
            .collect();
        let r = clients::run(
            &self.py,
            RDKAFKA,
            "produce",
            &json!({"bootstrap": self.broker.bootstrap, "topic": topic, "records": records}),
        );
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), to - from, "{r}");
        assert!(results.iter().all(|x| x["error"].is_null()), "{r}");
    }

    fn admin(&self, client: &str, mut args: Value) -> Value {
        args["bootstrap"] = json!(self.broker.bootstrap);
        run_script(&self.py, client, "admin", &args, &self.broker)
    }

    fn member(&self, client: &str, name: &str, args: Value) -> Member {
        Member::start(self, client, name, args)
    }
}

/// Runs `groups_client.py` to completion (bounded) and returns its JSON answer.
fn run_script(py: &Path, client: &str, op: &str, args: &Value, broker: &BrokerProcess) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let err = dir.path().join("err");
    let mut child = Command::new(py)
        .args([SCRIPT, client, op, &args.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn the client");
    let status = wait_child(&mut child, CLIENT_TIMEOUT);
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{client} {op} timed out:\n{stderr}\nbroker log:\n{}",
            broker.log_tail()
        );
    };
    assert!(
        status.success(),
        "{client} {op} {args} failed:\n{stderr}\nbroker log:\n{}",
        broker.log_tail()
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{client} {op}: bad JSON ({e}): {stdout}\n{stderr}"))
}

/// Waits for `child` at most `timeout`; kills it and returns `None` if it is still running.
fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it returns `Some`, at most `timeout`.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    broker: &BrokerProcess,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; broker log:\n{}",
                broker.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One group member: a client process consuming until told to stop.
struct Member {
    name: String,
    child: Option<Child>,
    dir: PathBuf,
}

impl Member {
    fn start(env: &Env, client: &str, name: &str, mut args: Value) -> Member {
        let dir = env.dir.path().join(format!("member-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("stop"));
        let _ = std::fs::remove_file(dir.join("progress"));
        args["bootstrap"] = json!(env.broker.bootstrap);
        args["progress"] = json!(dir.join("progress"));
        args["stop"] = json!(dir.join("stop"));
        if args.get("deadline").is_none() {
            args["deadline"] = json!(300);
        }
        let child = Command::new(&env.py)
            .args([SCRIPT, client, "member", &args.to_string()])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("out")).unwrap())
            .stderr(std::fs::File::create(dir.join("err")).unwrap())
            .spawn()
            .expect("spawn a member");
        Member {
            name: name.to_string(),
            child: Some(child),
            dir,
        }
    }

    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("progress"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The partitions the member owns now.
    fn assignment(&self) -> Option<BTreeSet<i64>> {
        self.partitions_of_last("owned")
    }

    fn partitions_of_last(&self, event: &str) -> Option<BTreeSet<i64>> {
        self.events()
            .iter()
            .rev()
            .find(|e| e["event"] == event)
            .map(|e| {
                e["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_i64)
                    .collect()
            })
    }

    /// How many times the member's rebalance callback assigned it partitions.
    fn assign_events(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "assign")
            .count()
    }

    /// Every partition a rebalance callback took from the member.
    fn revoked(&self) -> BTreeSet<i64> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "revoke")
            .flat_map(|e| {
                e["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_i64)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn consumed(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| e["event"] == "record")
            .count()
    }

    /// Tells the member to stop (it commits, leaves the group and exits); returns its answer.
    fn stop(mut self, broker: &BrokerProcess) -> Value {
        std::fs::File::create(self.dir.join("stop")).unwrap();
        self.finish(broker)
    }

    /// Waits for a member that stops by itself (a `count` was given).
    fn finish(&mut self, broker: &BrokerProcess) -> Value {
        let mut child = self.child.take().unwrap();
        let status = wait_child(&mut child, CLIENT_TIMEOUT);
        let err = std::fs::read_to_string(self.dir.join("err")).unwrap_or_default();
        let out = std::fs::read_to_string(self.dir.join("out")).unwrap_or_default();
        match status {
            Some(s) if s.success() => {}
            other => panic!(
                "member {} ended with {other:?}:\n{err}\nbroker log:\n{}",
                self.name,
                broker.log_tail()
            ),
        }
        serde_json::from_str(out.lines().last().unwrap_or("null"))
            .unwrap_or_else(|e| panic!("member {}: bad JSON ({e}): {out}\n{err}", self.name))
    }

    /// SIGKILL: the member leaves nothing behind but its session.
    fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn keys_of(answer: &Value) -> Vec<String> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

fn positions_of(answer: &Value) -> Vec<(i64, i64)> {
    answer["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().unwrap(),
                r["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn expected_keys(from: usize, to: usize) -> BTreeSet<String> {
    (from..to).map(|i| format!("k{i}")).collect()
}

/// Waits until the members' latest assignments are disjoint, non-empty and cover
/// `partitions`.
fn wait_for_balance(env: &Env, members: &[&Member], partitions: i64) {
    let all: BTreeSet<i64> = (0..partitions).collect();
    wait_for("the group to balance", SETTLE, &env.broker, || {
        // Every partition owned exactly once and the counts even (within one): KIP-848
        // moves partitions one revocation at a time, so "all owned" alone also matches a
        // transitional state where one member still holds a partition meant for another.
        let mut seen = BTreeSet::new();
        let mut sizes = Vec::new();
        for m in members {
            let a = m.assignment()?;
            if a.is_empty() || a.iter().any(|p| !seen.insert(*p)) {
                return None;
            }
            sizes.push(a.len());
        }
        let even = sizes.iter().max()? - sizes.iter().min()? <= 1;
        (seen == all && even).then_some(())
    });
}

#[test]
fn three_members_share_six_partitions_and_a_leave_loses_nothing() {
    let Some(env) = Env::start() else { return };
    for client in ALL {
        let topic = format!("shared-{client}");
        let group = format!("shared-group-{client}");
        env.create_topic(&topic, 6);
        let args = json!({"group": group, "topic": topic});
        let a = env.member(client, &format!("{client}-a"), args.clone());
        let b = env.member(client, &format!("{client}-b"), args.clone());
        let c = env.member(client, &format!("{client}-c"), args.clone());
        wait_for_balance(&env, &[&a, &b, &c], 6);

        // Phase 1: a stable group of three; every record exactly once.
        env.produce(&topic, 0, 600);
        wait_for(
            "600 records across the members",
            SETTLE,
            &env.broker,
            || (a.consumed() + b.consumed() + c.consumed() >= 600).then_some(()),
        );
        let c_answer = c.stop(&env.broker);
        let from_c = keys_of(&c_answer);
        assert!(!from_c.is_empty(), "{client}: c had partitions, so records");

        // Phase 2: c left; the other two take over its partitions.
        wait_for_balance(&env, &[&a, &b], 6);
        env.produce(&topic, 600, 900);
        wait_for("the last 300 records", SETTLE, &env.broker, || {
            (a.consumed() + b.consumed() >= 900 - from_c.len()).then_some(())
        });
        let a_answer = a.stop(&env.broker);
        let b_answer = b.stop(&env.broker);

        let mut all_positions: Vec<(i64, i64)> = Vec::new();
        let mut all_keys: Vec<String> = Vec::new();
        let mut errors = Vec::new();
        for ans in [&a_answer, &b_answer, &c_answer] {
            all_positions.extend(positions_of(ans));
            all_keys.extend(keys_of(ans));
            errors.extend(ans["errors"].as_array().unwrap().iter().cloned());
        }
        let distinct: BTreeSet<String> = all_keys.iter().cloned().collect();
        assert_eq!(
            distinct,
            expected_keys(0, 900),
            "{client}: every record consumed"
        );
        let unique: BTreeSet<(i64, i64)> = all_positions.iter().copied().collect();
        // Members commit each record before taking the next, so a clean leave duplicates
        // nothing; a failed commit would be reported in `errors`.
        assert_eq!(
            unique.len(),
            all_positions.len(),
            "{client}: duplicates without commit errors? errors: {errors:?}"
        );
        assert!(errors.is_empty(), "{client}: {errors:?}");
    }
}

#[test]
fn committed_offsets_survive_consumer_and_broker_restarts() {
    let Some(mut env) = Env::start() else { return };
    for client in ALL {
        let topic = format!("durable-{client}");
        let group = format!("durable-group-{client}");
        env.create_topic(&topic, 3);
        env.produce(&topic, 0, 30);
        let args = json!({"group": group, "topic": topic, "count": 30, "deadline": 90});
        let mut m = env.member(client, &format!("{client}-1"), args);
        let first = m.finish(&env.broker);
        assert_eq!(
            keys_of(&first).into_iter().collect::<BTreeSet<_>>(),
            expected_keys(0, 30),
            "{client}"
        );

        // A restarted consumer resumes from the committed offsets.
        env.produce(&topic, 30, 40);
        let args = json!({"group": group, "topic": topic, "count": 10, "deadline": 90});
        let mut m = env.member(client, &format!("{client}-2"), args.clone());
        let second = m.finish(&env.broker);
        assert_eq!(
            keys_of(&second).into_iter().collect::<BTreeSet<_>>(),
            expected_keys(30, 40),
            "{client}: only the records after the commit"
        );
        assert_eq!(keys_of(&second).len(), 10, "{client}: {second}");
    }

    // The broker dies without a chance to flush anything and comes back.
    env.broker.restart();
    for client in ALL {
        let topic = format!("durable-{client}");
        let group = format!("durable-group-{client}");
        env.produce(&topic, 40, 50);
        let args = json!({"group": group, "topic": topic, "count": 10, "deadline": 90});
        let mut m = env.member(client, &format!("{client}-3"), args);
        let third = m.finish(&env.broker);
        assert_eq!(
            keys_of(&third).into_iter().collect::<BTreeSet<_>>(),
            expected_keys(40, 50),
            "{client}: offsets committed before the SIGKILL are still there"
        );
        assert_eq!(keys_of(&third).len(), 10, "{client}: {third}");
        let offsets = env.admin(
            client,
            json!({"op": "offsets", "group": group, "topic": topic}),
        );
        let total: i64 = offsets
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum();
        assert_eq!(total, 50, "{client}: committed offsets {offsets}");
    }
}

#[test]
fn a_killed_member_loses_its_partitions_when_its_session_ends() {
    let Some(env) = Env::start() else { return };
    let topic = "killed";
    env.create_topic(topic, 4);
    let args = json!({"group": "killed-group", "topic": topic, "session_ms": 6000});
    let survivor = env.member(RDKAFKA, "survivor", args.clone());
    let victim = env.member(KAFKA_PYTHON, "victim", args);
    wait_for_balance(&env, &[&survivor, &victim], 4);
    let started = Instant::now();
    victim.kill();
    // No LeaveGroup was sent: the session (6 s) must run out first.
    wait_for_balance(&env, &[&survivor], 4);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "the partitions moved before the session could expire ({:?})",
        started.elapsed()
    );
    env.produce(topic, 0, 100);
    wait_for(
        "the survivor to consume everything",
        SETTLE,
        &env.broker,
        || (survivor.consumed() >= 100).then_some(()),
    );
    let answer = survivor.stop(&env.broker);
    assert_eq!(
        keys_of(&answer).into_iter().collect::<BTreeSet<_>>(),
        expected_keys(0, 100)
    );
}

#[test]
fn a_static_member_restarts_without_a_rebalance() {
    let Some(env) = Env::start() else { return };
    let topic = "static";
    env.create_topic(topic, 4);
    let other = env.member(
        RDKAFKA,
        "dynamic",
        json!({"group": "static-group", "topic": topic, "session_ms": 30000}),
    );
    let static_args = json!({"group": "static-group", "topic": topic, "session_ms": 30000,
                             "instance": "static-1"});
    let first = env.member(RDKAFKA, "static-1", static_args.clone());
    wait_for_balance(&env, &[&other, &first], 4);
    let before = first.assignment().unwrap();
    let rebalances = other.assign_events();
    // A static member leaves no LeaveGroup behind; it comes back within its session.
    first.kill();
    let second = env.member(RDKAFKA, "static-1-again", static_args);
    let after = wait_for(
        "the restarted static member's assignment",
        SETTLE,
        &env.broker,
        || second.assignment(),
    );
    assert_eq!(after, before, "the same partitions come back");
    // Give a rebalance, if one were triggered, time to reach the other member.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        other.assign_events(),
        rebalances,
        "the other member saw no rebalance"
    );
    env.produce(topic, 0, 60);
    wait_for("both members to consume", SETTLE, &env.broker, || {
        (other.consumed() + second.consumed() >= 60).then_some(())
    });
    let a = other.stop(&env.broker);
    let b = second.stop(&env.broker);
    let mut keys = keys_of(&a);
    keys.extend(keys_of(&b));
    assert_eq!(keys.len(), 60);
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        expected_keys(0, 60)
    );
}

#[test]
fn admin_clients_list_describe_reset_and_delete_groups() {
    let Some(env) = Env::start() else { return };
    let topic = "admin-groups";
    env.create_topic(topic, 2);
    env.produce(topic, 0, 10);

    // A finished group: Empty, with committed offsets.
    let mut done = env.member(
        RDKAFKA,
        "done",
        json!({"group": "adm-done", "topic": topic, "count": 10, "deadline": 90}),
    );
    assert_eq!(keys_of(&done.finish(&env.broker)).len(), 10);
    // A live group.
    let live = env.member(
        KAFKA_PYTHON,
        "live",
        json!({"group": "adm-live", "topic": topic, "client_id": "live-client"}),
    );
    wait_for_balance(&env, &[&live], 2);

    for client in ALL {
        let list = env.admin(client, json!({"op": "list"}));
        let groups: BTreeMap<String, String> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["group_id"].as_str().unwrap().to_string(),
                    g["state"].as_str().unwrap_or_default().to_uppercase(),
                )
            })
            .collect();
        assert_eq!(
            groups.get("adm-done").map(String::as_str),
            Some("EMPTY"),
            "{client}: {list}"
        );
        assert_eq!(
            groups.get("adm-live").map(String::as_str),
            Some("STABLE"),
            "{client}: {list}"
        );
    }

    let d = env.admin(
        RDKAFKA,
        json!({"op": "describe", "groups": ["adm-live", "adm-done"]}),
    );
    assert_eq!(d["adm-live"]["state"], "STABLE", "{d}");
    assert_eq!(d["adm-live"]["protocol"], "range", "{d}");
    assert_eq!(d["adm-live"]["coordinator"], 1, "{d}");
    let members = d["adm-live"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{d}");
    assert_eq!(members[0]["client_id"], "live-client");
    assert!(
        members[0]["host"].as_str().unwrap().contains("127.0.0.1"),
        "{d}"
    );
    assert_eq!(members[0]["partitions"], json!([0, 1]), "{d}");
    assert_eq!(d["adm-done"]["state"], "EMPTY", "{d}");

    let d = env.admin(
        KAFKA_PYTHON,
        json!({"op": "describe", "groups": ["adm-live"]}),
    );
    assert_eq!(d["adm-live"]["state"], "Stable", "{d}");
    assert_eq!(d["adm-live"]["protocol_type"], "consumer", "{d}");
    assert_eq!(d["adm-live"]["members"][0]["host"], "/127.0.0.1", "{d}");

    // Offsets: read, reset to the start (the group then replays the topic), delete one.
    let offsets = env.admin(
        RDKAFKA,
        json!({"op": "offsets", "group": "adm-done", "topic": topic}),
    );
    let total: i64 = offsets
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, 10, "{offsets}");
    let reset = env.admin(
        RDKAFKA,
        json!({"op": "reset", "group": "adm-done", "topic": topic, "offsets": {"0": 0, "1": 0}}),
    );
    assert_eq!(reset, json!({"0": null, "1": null}));
    let mut replay = env.member(
        RDKAFKA,
        "replay",
        json!({"group": "adm-done", "topic": topic, "count": 10, "deadline": 90}),
    );
    assert_eq!(
        keys_of(&replay.finish(&env.broker))
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected_keys(0, 10),
        "after the reset the group reads the topic again"
    );
    let deleted = env.admin(
        KAFKA_PYTHON,
        json!({"op": "delete_offsets", "group": "adm-done", "topic": topic, "partitions": [0]}),
    );
    assert_eq!(deleted, json!({"0": null}), "{deleted}");
    let offsets = env.admin(
        KAFKA_PYTHON,
        json!({"op": "offsets", "group": "adm-done", "topic": topic}),
    );
    assert!(
        offsets.get("0").is_none() && offsets.get("1").is_some(),
        "{offsets}"
    );

    // A group with members cannot be deleted; an empty one can.
    let r = env.admin(
        RDKAFKA,
        json!({"op": "delete", "groups": ["adm-live", "adm-done"]}),
    );
    assert!(
        r["adm-live"]
            .as_str()
            .unwrap_or_default()
            .contains("NON_EMPTY_GROUP"),
        "{r}"
    );
    assert_eq!(r["adm-done"], Value::Null, "{r}");
    live.stop(&env.broker);
    let r = env.admin(
        KAFKA_PYTHON,
        json!({"op": "delete", "groups": ["adm-live"]}),
    );
    assert_eq!(r["adm-live"], Value::Null, "{r}");
    for client in ALL {
        let list = env.admin(client, json!({"op": "list"}));
        let ids: Vec<&str> = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|g| g["group_id"].as_str())
            .collect();
        assert!(
            !ids.contains(&"adm-live") && !ids.contains(&"adm-done"),
            "{client}: {list}"
        );
    }
    let d = env.admin(
        KAFKA_PYTHON,
        json!({"op": "describe", "groups": ["adm-done"]}),
    );
    assert!(
        d["adm-done"]["state"] == "Dead"
            || d["adm-done"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("GroupIdNotFound")),
        "{d}"
    );
    // The broker's log is free of panics.
    let log = std::fs::read_to_string(env.broker.stderr_path()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "broker log:\n{}",
        env.broker.log_tail()
    );
}

#[test]
fn a_cooperative_sticky_group_moves_only_the_partitions_it_must() {
    let Some(env) = Env::start() else { return };
    let topic = "cooperative";
    env.create_topic(topic, 4);
    let args = json!({"group": "cooperative-group", "topic": topic,
                      "strategy": "cooperative-sticky"});
    let first = env.member(RDKAFKA, "first", args.clone());
    wait_for_balance(&env, &[&first], 4);
    env.produce(topic, 0, 100);
    wait_for("the first member to consume", SETTLE, &env.broker, || {
        (first.consumed() >= 100).then_some(())
    });
    let second = env.member(RDKAFKA, "second", args);
    wait_for_balance(&env, &[&first, &second], 4);
    let moved = second.assignment().unwrap();
    assert_eq!(moved.len(), 2, "the four partitions are split evenly");
    // Incremental rebalancing: the first member gave up only what moved, and kept the rest
    // throughout.
    assert_eq!(first.revoked(), moved, "{:?}", first.events());
    env.produce(topic, 100, 200);
    wait_for("the rest of the records", SETTLE, &env.broker, || {
        (first.consumed() + second.consumed() >= 200).then_some(())
    });
    let a = first.stop(&env.broker);
    let b = second.stop(&env.broker);
    let mut keys = keys_of(&a);
    keys.extend(keys_of(&b));
    assert_eq!(
        keys.len(),
        200,
        "no record twice: {:?} {:?}",
        a["errors"],
        b["errors"]
    );
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        expected_keys(0, 200)
    );
}

#[test]
fn a_kip848_group_consumes_everything_once_across_a_leave_and_a_restart() {
    let Some(env) = Env::start() else { return };
    let topic = "kip848";
    let group = "kip848-group";
    env.create_topic(topic, 6);
    let args = json!({"group": group, "topic": topic, "protocol": "consumer"});
    let a = env.member(RDKAFKA, "kip848-a", args.clone());
    let b = env.member(RDKAFKA, "kip848-b", args.clone());
    let c = env.member(RDKAFKA, "kip848-c", args.clone());
    wait_for_balance(&env, &[&a, &b, &c], 6);
    // The uniform assignor: two partitions each.
    for m in [&a, &b, &c] {
        assert_eq!(
            m.assignment().unwrap().len(),
            2,
            "{}: {:?}",
            m.name,
            m.events()
        );
    }

    env.produce(topic, 0, 600);
    wait_for(
        "600 records across the members",
        SETTLE,
        &env.broker,
        || (a.consumed() + b.consumed() + c.consumed() >= 600).then_some(()),
    );
    let list = env.admin(RDKAFKA, json!({"op": "list"}));
    let listed = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == group)
        .cloned()
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(listed["type"], "CONSUMER", "{list}");
    assert_eq!(listed["state"], "STABLE", "{list}");
    let d = env.admin(RDKAFKA, json!({"op": "describe", "groups": [group]}));
    assert_eq!(d[group]["type"], "CONSUMER", "{d}");
    assert_eq!(d[group]["protocol"], "uniform", "{d}");
    assert_eq!(d[group]["members"].as_array().unwrap().len(), 3, "{d}");

    // c leaves: its partitions move to a and b.
    let c_answer = c.stop(&env.broker);
    assert!(
        !keys_of(&c_answer).is_empty(),
        "c had partitions, so records"
    );
    wait_for_balance(&env, &[&a, &b], 6);
    env.produce(topic, 600, 900);
    wait_for("the last 300 records", SETTLE, &env.broker, || {
        (a.consumed() + b.consumed() + keys_of(&c_answer).len() >= 900).then_some(())
    });
    let a_answer = a.stop(&env.broker);
    let b_answer = b.stop(&env.broker);
    let mut positions: Vec<(i64, i64)> = Vec::new();
    let mut keys: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for ans in [&a_answer, &b_answer, &c_answer] {
        positions.extend(positions_of(ans));
        keys.extend(keys_of(ans));
        errors.extend(ans["errors"].as_array().unwrap().iter().cloned());
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        keys.iter().cloned().collect::<BTreeSet<_>>(),
        expected_keys(0, 900),
        "every record consumed"
    );
    assert_eq!(
        positions.iter().copied().collect::<BTreeSet<_>>().len(),
        positions.len(),
        "no record consumed twice"
    );

    // A restarted consumer resumes from the committed offsets.
    env.produce(topic, 900, 950);
    let mut again = env.member(
        RDKAFKA,
        "kip848-again",
        json!({"group": group, "topic": topic, "protocol": "consumer", "count": 50,
               "deadline": 90}),
    );
    let resumed = again.finish(&env.broker);
    assert_eq!(keys_of(&resumed).len(), 50, "{resumed}");
    assert_eq!(
        keys_of(&resumed).into_iter().collect::<BTreeSet<_>>(),
        expected_keys(900, 950),
        "only the records after the commits"
    );
    let log = std::fs::read_to_string(env.broker.stderr_path()).unwrap_or_default();
    assert!(!log.contains("panicked"), "{}", env.broker.log_tail());
}

#[test]
fn a_kip848_member_subscribes_by_regular_expression() {
    let Some(env) = Env::start() else { return };
    env.create_topic("kip848re-a", 2);
    env.create_topic("kip848re-b", 1);
    env.create_topic("kip848other", 1);
    for t in ["kip848re-a", "kip848re-b", "kip848other"] {
        env.produce(t, 0, 5);
    }
    // librdkafka sends a subscription starting with ^ as the heartbeat's topic regex; the
    // coordinator resolves it against the topics that exist.
    let mut m = env.member(
        RDKAFKA,
        "kip848-regex",
        json!({"group": "kip848-regex", "topic": "^kip848re-.*", "protocol": "consumer",
               "count": 10, "deadline": 60}),
    );
    let answer = m.finish(&env.broker);
    assert_eq!(keys_of(&answer).len(), 10, "{answer}");
    // What it consumed, it committed: everything of the matching topics, nothing else.
    let committed = |topic: &str| -> i64 {
        let o = env.admin(
            RDKAFKA,
            json!({"op": "offsets", "group": "kip848-regex", "topic": topic}),
        );
        o.as_object()
            .unwrap()
            .values()
            .filter_map(Value::as_i64)
            .sum()
    };
    assert_eq!(committed("kip848re-a"), 5);
    assert_eq!(committed("kip848re-b"), 5);
    assert_eq!(committed("kip848other"), 0);
}

#[test]
fn a_kip848_static_member_comes_back_to_its_partitions_without_a_rebalance() {
    let Some(env) = Env::start() else { return };
    let topic = "kip848-static";
    env.create_topic(topic, 4);
    let other = env.member(
        RDKAFKA,
        "kip848-dynamic",
        json!({"group": "kip848-static", "topic": topic, "protocol": "consumer"}),
    );
    let static_args = json!({"group": "kip848-static", "topic": topic, "protocol": "consumer",
                             "instance": "kip848-static-1"});
    let first = env.member(RDKAFKA, "kip848-static-1", static_args.clone());
    wait_for_balance(&env, &[&other, &first], 4);
    let before = first.assignment().unwrap();
    let rebalances = other.assign_events();
    // A static member's close is a temporary leave (member epoch -2): its partitions wait for
    // it, and it comes back to them under a new member id.
    first.stop(&env.broker);
    let second = env.member(RDKAFKA, "kip848-static-1-again", static_args);
    let after = wait_for(
        "the restarted static member's assignment",
        SETTLE,
        &env.broker,
        || second.assignment().filter(|a| !a.is_empty()),
    );
    assert_eq!(after, before, "the same partitions come back");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        other.assign_events(),
        rebalances,
        "the other member's assignment never changed: {:?}",
        other.events()
    );
    env.produce(topic, 0, 60);
    wait_for("both members to consume", SETTLE, &env.broker, || {
        (other.consumed() + second.consumed() >= 60).then_some(())
    });
    let mut keys = keys_of(&other.stop(&env.broker));
    keys.extend(keys_of(&second.stop(&env.broker)));
    assert_eq!(keys.len(), 60);
    assert_eq!(
        keys.into_iter().collect::<BTreeSet<_>>(),
        expected_keys(0, 60)
    );
}
