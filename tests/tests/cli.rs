//! End-to-end tests of the `fjord` admin CLI against a real broker: every subcommand, with
//! `--output json` parsed back, the replay workflow (reset-offsets), refusal while a group is
//! active, and the documented exit codes on error paths.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fjord_tests::broker::{BrokerProcess, free_port};
use fjord_tests::clients::{self, RDKAFKA};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fjord-under-test");
/// Bound on one CLI invocation.
const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on waiting for a group member to show up or go away.
const SETTLE: Duration = Duration::from_secs(60);

struct Env {
    broker: BrokerProcess,
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("bad JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }

    fn ok(self) -> Out {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Env {
    fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let broker_dir = dir.path().join("broker");
        std::fs::create_dir_all(&broker_dir).unwrap();
        let broker = BrokerProcess::start(
            Path::new(BIN),
            &broker_dir,
            &[
                ("offsets.topic.num.partitions", "4"),
                ("group.initial.rebalance.delay.ms", "100"),
            ],
        );
        Env { broker, dir }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("-b").arg(&self.broker.bootstrap).args(args);
        isolate(&mut c, self.dir.path());
        c
    }

    /// Runs `fjord -b <broker> args...` with `stdin`, bounded in time.
    fn run_with(&self, args: &[&str], stdin: &[u8]) -> Out {
        run_bounded(self.command(args), stdin, &format!("{args:?}"))
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, b"")
    }

    /// Runs with `-o json`, expects success, parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        self.run(&a).ok().json()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let p = partitions.to_string();
        let v = self.json(&["topic", "create", name, "-p", &p]);
        assert_eq!(v[0]["status"], "created", "{v}");
    }

    /// Consumes with -o json and returns the records (JSON lines).
    fn consume(&self, args: &[&str]) -> Vec<Value> {
        let mut a = vec!["-o", "json", "consume"];
        a.extend_from_slice(args);
        let out = self.run(&a).ok();
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
            .collect()
    }
}

/// Keeps the caller's environment (profiles, FJORD_BROKERS) out of the test.
fn isolate(c: &mut Command, dir: &Path) {
    c.env_remove("FJORD_BROKERS")
        .env_remove("FJORD_PROFILE")
        .env("FJORD_CONFIG", dir.join("no-such-config.toml"))
        .env("RUST_LOG", "warn");
}

fn run_bounded(mut c: Command, stdin: &[u8], what: &str) -> Out {
    let tmp = tempfile::tempdir().unwrap();
    let (o, e) = (tmp.path().join("out"), tmp.path().join("err"));
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&o).unwrap())
        .stderr(std::fs::File::create(&e).unwrap())
        .spawn()
        .expect("spawn fjord");
    {
        let mut si = child.stdin.take().unwrap();
        si.write_all(stdin).unwrap();
    }
    let status = wait_bounded(&mut child, CMD_TIMEOUT)
        .unwrap_or_else(|| panic!("fjord {what} ran longer than {CMD_TIMEOUT:?}"));
    Out {
        code: status.code().unwrap_or(-1),
        stdout: std::fs::read_to_string(&o).unwrap(),
        stderr: std::fs::read_to_string(&e).unwrap(),
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn lines(n: usize, prefix: &str) -> Vec<u8> {
    (0..n)
        .map(|i| format!("k{i}:{prefix}{i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn topic_commands_end_to_end() {
    let env = Env::start();
    let v = env.json(&[
        "topic",
        "create",
        "orders",
        "-p",
        "3",
        "-c",
        "retention.ms=3600000",
    ]);
    assert_eq!(v[0]["name"], "orders");
    assert_eq!(v[0]["status"], "created");

    // Exists already: conflict (5), unless --if-not-exists.
    let again = env.run(&["topic", "create", "orders", "-p", "3"]);
    assert_eq!(again.code, 5, "{}", again.stderr);
    assert!(
        again.stderr.contains("TOPIC_ALREADY_EXISTS"),
        "{}",
        again.stderr
    );
    let v = env.json(&["topic", "create", "orders", "-p", "3", "--if-not-exists"]);
    assert_eq!(v[0]["status"], "exists");
    let v = env.json(&["topic", "create", "checked", "-p", "1", "--validate-only"]);
    assert_eq!(v[0]["status"], "valid");
    // Without -p/-r the broker's defaults apply (num.partitions = 1).
    let v = env.json(&["topic", "create", "defaults"]);
    assert_eq!(v[0]["status"], "created");
    let d = env.json(&["topic", "describe", "defaults"]);
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 1);
    env.json(&["topic", "delete", "defaults"]);

    let list = env.json(&["topic", "list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["orders"],
        "validate-only created nothing: {list}"
    );
    assert_eq!(list[0]["partitions"], 3);

    env.run_with(&["produce", "orders", "-p", "1", "-k", ":"], &lines(7, "v"))
        .ok();
    let d = env.json(&["topic", "describe", "orders"]);
    let t = &d[0];
    assert_eq!(t["name"], "orders");
    assert_eq!(t["configs"]["retention.ms"], "3600000", "{d}");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    for p in parts {
        assert_eq!(p["leader"], 1);
        assert_eq!(p["replicas"], json!([1]));
        assert_eq!(p["isr"], json!([1]));
        assert_eq!(p["earliest_offset"], 0);
        let expect = if p["partition"] == 1 { 7 } else { 0 };
        assert_eq!(p["latest_offset"], expect, "{p}");
    }
    let human = env.run(&["topic", "describe", "orders"]).ok().stdout;
    assert!(
        human.contains("retention.ms=3600000") && human.contains("LATEST"),
        "{human}"
    );

    // alter-config and config describe/set see the same thing.
    let v = env.json(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "cleanup.policy=compact",
        "--delete",
        "retention.ms",
    ]);
    assert_eq!(v["changes"].as_array().unwrap().len(), 2);
    let c = env.json(&["config", "describe", "--topic", "orders"]);
    let cfg: Vec<(&str, &str)> = c["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap(),
                e["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(cfg, vec![("cleanup.policy", "compact")], "{c}");
    env.json(&["config", "set", "--topic", "orders", "retention.ms=60000"]);
    let all = env.json(&["config", "describe", "--topic", "orders", "--all"]);
    let find = |n: &str| {
        all["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("retention.ms")["value"], "60000");
    assert_eq!(find("retention.ms")["source"], "DYNAMIC_TOPIC_CONFIG");
    assert_eq!(find("segment.bytes")["source"], "DEFAULT_CONFIG", "{all}");

    let v = env.json(&["topic", "add-partitions", "orders", "--total", "5"]);
    assert_eq!(v["partitions"], 5);
    let d = env.json(&["topic", "describe", "orders"]);
    assert_eq!(d[0]["partitions"].as_array().unwrap().len(), 5);
    let shrink = env.run(&["topic", "add-partitions", "orders", "--total", "2"]);
    assert_eq!(shrink.code, 2, "{}", shrink.stderr);

    let v = env.json(&["topic", "delete", "orders"]);
    assert_eq!(v[0]["status"], "deleted");
    let gone = env.run(&["topic", "describe", "orders"]);
    assert_eq!(gone.code, 4, "{}", gone.stderr);
    let v = env.json(&["topic", "delete", "orders", "--if-exists"]);
    assert_eq!(v[0]["status"], "absent");
    let missing = env.run(&["topic", "delete", "orders"]);
    assert_eq!(missing.code, 4, "{}", missing.stderr);
}

#[test]
fn produce_and_consume_formats() {
    let env = Env::start();
    env.create_topic("events", 2);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let input = format!("{codec}-key|{codec}-value\n");
        let v = env
            .run_with(
                &[
                    "-o", "json", "produce", "events", "-k", "|", "-H", "a=1", "-H", "b=two", "-p",
                    "0", "-a", "1", "-z", codec,
                ],
                input.as_bytes(),
            )
            .ok()
            .json();
        assert_eq!(v["records"], 1, "{v}");
    }
    // Lines without the separator have a null key; acks=0 is fire and forget.
    env.run_with(
        &["produce", "events", "-p", "1", "-k", "|", "-a", "0"],
        b"no separator here\n",
    )
    .ok();

    let recs = env.consume(&[
        "events",
        "--from-beginning",
        "-n",
        "6",
        "--timeout-ms",
        "20000",
    ]);
    assert_eq!(recs.len(), 6, "{recs:?}");
    let p0: Vec<&Value> = recs.iter().filter(|r| r["partition"] == 0).collect();
    assert_eq!(p0.len(), 5);
    for (i, codec) in ["none", "gzip", "snappy", "lz4", "zstd"].iter().enumerate() {
        let r = p0.iter().find(|r| r["offset"] == i as i64).unwrap();
        assert_eq!(r["key"], format!("{codec}-key"));
        assert_eq!(r["value"], format!("{codec}-value"));
        assert_eq!(
            r["headers"],
            json!([{"key": "a", "value": "1"}, {"key": "b", "value": "two"}])
        );
        assert_eq!(r["timestamp_type"], "CreateTime");
    }
    let p1: Vec<&Value> = recs.iter().filter(|r| r["partition"] == 1).collect();
    assert_eq!(p1[0]["key"], Value::Null);
    assert_eq!(p1[0]["value"], "no separator here");

    // --offset, --partitions and a template.
    let out = env
        .run(&[
            "consume",
            "events",
            "-p",
            "0",
            "--offset",
            "3",
            "-n",
            "2",
            "-f",
            "{partition}/{offset} {key}={value} [{headers}]",
        ])
        .ok();
    assert_eq!(
        out.stdout,
        "0/3 lz4-key=lz4-value [a=1,b=two]\n0/4 zstd-key=zstd-value [a=1,b=two]\n"
    );

    // --from-timestamp: a time before everything reads everything, one after reads nothing.
    let all = env.consume(&["events", "--from-timestamp", "2000-01-01T00:00:00Z", "-e"]);
    assert_eq!(all.len(), 6);
    let none = env.consume(&["events", "--from-timestamp", "2999-01-01", "-e"]);
    assert!(none.is_empty(), "{none:?}");
    // --from-end with an idle timeout: nothing new arrives.
    let t0 = Instant::now();
    let none = env.consume(&["events", "--from-end", "--timeout-ms", "1500"]);
    assert!(none.is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(1400));

    // Keyed records land where Kafka's murmur2 partitioner puts them (stable across runs).
    env.create_topic("keyed", 4);
    env.run_with(&["produce", "keyed", "-k", ":"], &lines(40, "x"))
        .ok();
    let recs = env.consume(&["keyed", "--from-beginning", "-e"]);
    assert_eq!(recs.len(), 40);
    for k in ["k1", "k2", "k3"] {
        let parts: Vec<&Value> = recs
            .iter()
            .filter(|r| r["key"] == k)
            .map(|r| &r["partition"])
            .collect();
        assert_eq!(parts.len(), 1);
    }
    // File input.
    let f = env.dir.path().join("input.txt");
    std::fs::write(&f, "from-file-1\nfrom-file-2\n").unwrap();
    let v = env
        .run(&[
            "-o",
            "json",
            "produce",
            "events",
            "--file",
            f.to_str().unwrap(),
            "-p",
            "1",
        ])
        .ok()
        .json();
    assert_eq!(v["records"], 2);
    assert_eq!(v["partitions"][0]["first_offset"], 1);
    assert_eq!(v["partitions"][0]["last_offset"], 2);
}

#[test]
fn group_reset_offsets_replays_a_topic() {
    let env = Env::start();
    env.create_topic("payments", 3);
    env.run_with(&["produce", "payments", "-k", ":"], &lines(30, "p"))
        .ok();

    // A group member reads everything and commits.
    let first = env.consume(&[
        "payments",
        "-g",
        "audit",
        "--from-beginning",
        "-n",
        "30",
        "--timeout-ms",
        "30000",
    ]);
    assert_eq!(first.len(), 30);
    let lag = env.json(&["group", "lag", "audit"]);
    assert_eq!(lag["total_lag"], 0, "{lag}");
    assert_eq!(lag["partitions"].as_array().unwrap().len(), 3);
    // Consuming again with the same group finds nothing new.
    let again = env.consume(&["payments", "-g", "audit", "-e"]);
    assert!(again.is_empty(), "{again:?}");

    let internal = env.json(&["topic", "list", "--internal"]);
    assert!(
        internal
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "__consumer_offsets" && t["internal"] == true),
        "{internal}"
    );
    let groups = env.json(&["group", "list"]);
    let g = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "audit")
        .unwrap();
    assert_eq!(g["state"], "Empty");
    assert_eq!(g["protocol_type"], "consumer");
    let d = env.json(&["group", "describe", "audit"]);
    assert_eq!(d["state"], "Empty");
    assert_eq!(d["members"], json!([]));
    assert_eq!(d["total_lag"], 0);

    // Dry run (the default) changes nothing.
    let plan = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "payments",
        "--to-earliest",
    ]);
    assert_eq!(plan["executed"], false);
    for p in plan["partitions"].as_array().unwrap() {
        assert_eq!(p["new_offset"], 0);
    }
    assert_eq!(env.json(&["group", "lag", "audit"])["total_lag"], 0);

    // Execute: the group replays the whole topic.
    let done = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "payments",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(done["executed"], true);
    assert_eq!(env.json(&["group", "lag", "audit"])["total_lag"], 30);
    let replay = env.consume(&["payments", "-g", "audit", "-e"]);
    assert_eq!(replay.len(), 30, "replay must return every record");
    let mut a: Vec<String> = first.iter().map(|r| r["value"].to_string()).collect();
    let mut b: Vec<String> = replay.iter().map(|r| r["value"].to_string()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);

    // Per partition and relative moves, kept within the log.
    let p0_end = done["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["partition"] == 0)
        .unwrap()["log_end_offset"]
        .as_i64()
        .unwrap();
    let v = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "payments:0",
        "--shift-by",
        "-2",
        "--execute",
    ]);
    assert_eq!(v["partitions"].as_array().unwrap().len(), 1);
    assert_eq!(v["partitions"][0]["new_offset"], p0_end - 2);
    let v = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--topic",
        "payments:1,2",
        "--to-offset",
        "1000000",
        "--execute",
    ]);
    for p in v["partitions"].as_array().unwrap() {
        assert_eq!(
            p["new_offset"], p["log_end_offset"],
            "clamped to the end: {p}"
        );
    }
    let lag = env.json(&["group", "lag", "audit"]);
    assert_eq!(lag["total_lag"], 2, "{lag}");
    let v = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--to-datetime",
        "2000-01-01T00:00:00Z",
        "--execute",
    ]);
    assert_eq!(
        v["partitions"].as_array().unwrap().len(),
        3,
        "all committed partitions by default"
    );
    assert_eq!(env.json(&["group", "lag", "audit"])["total_lag"], 30);
    let v = env.json(&[
        "group",
        "reset-offsets",
        "audit",
        "--to-latest",
        "--execute",
    ]);
    assert_eq!(v["executed"], true);
    assert_eq!(env.json(&["group", "lag", "audit"])["total_lag"], 0);

    // Usage errors: no target, unknown partition.
    assert_eq!(env.run(&["group", "reset-offsets", "audit"]).code, 2);
    assert_eq!(
        env.run(&[
            "group",
            "reset-offsets",
            "audit",
            "--topic",
            "payments:9",
            "--to-earliest"
        ])
        .code,
        4
    );

    let v = env.json(&["group", "delete", "audit"]);
    assert_eq!(v[0]["status"], "deleted");
    let gone = env.run(&["group", "lag", "audit"]);
    assert_eq!(gone.code, 4, "{}\n{}", gone.stdout, gone.stderr);
}

#[test]
fn reset_offsets_is_refused_while_the_group_has_members() {
    let env = Env::start();
    env.create_topic("jobs", 2);
    env.run_with(&["produce", "jobs"], &lines(4, "j")).ok();

    // A long-running member: `fjord consume --group` itself.
    let mut member = env
        .command(&[
            "consume",
            "jobs",
            "-g",
            "workers",
            "--from-beginning",
            "--timeout-ms",
            "60000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + SETTLE;
    let described = loop {
        let d = env.run(&["-o", "json", "group", "describe", "workers"]);
        if d.code == 0 {
            let v = d.json();
            if v["state"] == "Stable" && v["members"].as_array().is_some_and(|m| m.len() == 1) {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "the member never became stable");
        std::thread::sleep(Duration::from_millis(200));
    };
    let m = &described["members"][0];
    assert_eq!(m["client_id"], "fjord-cli");
    assert_eq!(m["assignment"]["jobs"], json!([0, 1]), "{described}");

    let refused = env.run(&[
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(refused.code, 5, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("active member"),
        "{}",
        refused.stderr
    );
    let refused_json = env.run(&[
        "-o",
        "json",
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
    ]);
    assert_eq!(refused_json.code, 5, "even a dry run is refused");
    let err: Value = serde_json::from_str(refused_json.stderr.trim()).unwrap();
    assert_eq!(err["exit_code"], 5);

    // SIGINT: the member commits, leaves the group and exits 0.
    // Safety: signalling a child we spawned and have not reaped.
    unsafe {
        libc::kill(member.id() as libc::pid_t, libc::SIGINT);
    }
    let status = wait_bounded(&mut member, SETTLE).expect("member exits after SIGINT");
    assert!(status.success(), "{status}");
    let d = env.json(&["group", "describe", "workers"]);
    assert_eq!(d["state"], "Empty", "{d}");
    assert_eq!(d["total_lag"], 0, "the member committed what it read: {d}");
    let ok = env.json(&[
        "group",
        "reset-offsets",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
        "--execute",
    ]);
    assert_eq!(ok["executed"], true);
}

#[test]
fn cluster_and_broker_configs() {
    let env = Env::start();
    env.create_topic("c1", 2);
    let info = env.json(&["cluster", "info"]);
    assert_eq!(info["controller"], 1);
    assert_eq!(info["brokers"].as_array().unwrap().len(), 1);
    assert_eq!(info["brokers"][0]["address"], env.broker.bootstrap);
    assert_eq!(info["fenced_brokers"], json!([]));
    assert_eq!(info["offline_partitions"], 0);
    assert!(info["partitions"].as_u64().unwrap() >= 2);
    assert!(info["cluster_id"].as_str().is_some_and(|s| !s.is_empty()));
    let human = env.run(&["cluster", "info"]).ok().stdout;
    assert!(human.contains("controller"), "{human}");

    let health = env.run(&["-o", "json", "cluster", "health"]);
    assert_eq!(health.code, 0, "{}", health.stderr);
    let h = health.json();
    assert_eq!(h["healthy"], true);
    assert_eq!(h["offline_partitions"], json!([]));
    assert_eq!(h["under_replicated_partitions"], json!([]));

    let b = env.json(&["config", "describe", "--broker", "1"]);
    let names: Vec<&str> = b["configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"node.id"), "{b}");
    assert!(names.contains(&"offsets.topic.num.partitions"), "{b}");
    let all = env.json(&["config", "describe", "--broker", "1", "--all"]);
    assert!(all["configs"].as_array().unwrap().len() > names.len());
    // A config the broker refuses: a plain error (1) naming the broker.
    let bad = env.run(&["config", "set", "--broker", "1", "no.such.config=1"]);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("broker 1"), "{}", bad.stderr);
    assert_eq!(
        env.run(&["config", "set", "--topic", "c1"]).code,
        2,
        "nothing to change"
    );
}

#[test]
fn perf_produce_and_consume_print_tables_and_json() {
    let env = Env::start();
    env.create_topic("bench", 2);
    let p = env.json(&[
        "perf",
        "produce",
        "bench",
        "-n",
        "200000",
        "-s",
        "64",
        "-c",
        "2",
        "--batch-size",
        "65536",
    ]);
    assert_eq!(p["records"], 200000, "{p}");
    assert_eq!(p["errors"], 0);
    assert!(p["records_per_sec"].as_f64().unwrap() > 0.0);
    let l = &p["latency_ms"];
    let q: Vec<f64> = ["p50", "p95", "p99", "p999", "max"]
        .iter()
        .map(|k| l[*k].as_f64().unwrap())
        .collect();
    assert!(
        q.windows(2).all(|w| w[0] <= w[1]),
        "percentiles ordered: {l}"
    );
    let d = env.json(&["topic", "describe", "bench"]);
    let stored: i64 = d[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest_offset"].as_i64().unwrap())
        .sum();
    assert_eq!(stored, 200000);

    // Rate-limited: 2000 records at 4000/s take about half a second.
    let t = env.json(&[
        "perf", "produce", "bench", "-n", "2000", "-t", "4000", "-a", "all", "-z", "lz4",
    ]);
    assert_eq!(t["records"], 2000);
    let secs = t["elapsed_s"].as_f64().unwrap();
    assert!((0.4..5.0).contains(&secs), "{t}");

    let c = env.json(&["perf", "consume", "bench"]);
    assert_eq!(c["records"], 202000, "{c}");
    assert!(c["mib_per_sec"].as_f64().unwrap() > 0.0);

    let table = env
        .run(&["perf", "produce", "bench", "-n", "1000"])
        .ok()
        .stdout;
    for h in [
        "RECORDS/S",
        "MIB/S",
        "P50 MS",
        "P95 MS",
        "P99 MS",
        "P999 MS",
        "MAX MS",
    ] {
        assert!(table.contains(h), "{h} missing:\n{table}");
    }
}

#[test]
fn error_paths_have_their_exit_codes() {
    let env = Env::start();
    // Unreachable: a closed port on 127.0.0.1.
    let closed = {
        let port = free_port();
        format!("127.0.0.1:{port}")
    };
    for args in [
        vec!["topic", "list"],
        vec!["group", "list"],
        vec!["cluster", "health"],
        vec!["consume", "t", "-n", "1"],
    ] {
        let mut c = Command::new(BIN);
        c.arg("-b").arg(&closed).args(&args);
        isolate(&mut c, env.dir.path());
        let out = run_bounded(c, b"", "unreachable");
        assert_eq!(out.code, 3, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&closed),
            "names the broker: {}",
            out.stderr
        );
    }
    let mut c = Command::new(BIN);
    c.args(["-o", "json", "-b", &closed, "produce", "t"]);
    isolate(&mut c, env.dir.path());
    let out = run_bounded(c, b"x\n", "unreachable json");
    assert_eq!(out.code, 3);
    let err: Value = serde_json::from_str(out.stderr.trim()).unwrap();
    assert_eq!(err["exit_code"], 3);
    assert!(err["error"].as_str().unwrap().contains(&closed));

    // Unknown topic: not found (4), naming the topic.
    for args in [
        vec!["topic", "describe", "nope"],
        vec!["consume", "nope", "-n", "1"],
        vec!["topic", "alter-config", "nope", "--set", "retention.ms=1"],
        vec!["config", "describe", "--topic", "nope"],
        vec!["perf", "produce", "nope", "-n", "1"],
    ] {
        let out = env.run(&args);
        assert_eq!(out.code, 4, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("nope"), "{args:?}: {}", out.stderr);
    }
    let out = env.run_with(&["produce", "nope"], b"x\n");
    assert_eq!(out.code, 4, "{}", out.stderr);
    // Unknown group.
    assert_eq!(env.run(&["group", "describe", "no-such-group"]).code, 4);
    // Usage errors.
    env.create_topic("u", 1);
    assert_eq!(env.run_with(&["produce", "u", "-a", "2"], b"x\n").code, 2);
    assert_eq!(
        env.run_with(&["produce", "u", "-H", "a=1", "-H", "a=2"], b"x\n")
            .code,
        2
    );
    assert_eq!(env.run_with(&["produce", "u", "-p", "7"], b"x\n").code, 4);
    assert_eq!(
        env.run(&["consume", "u", "--from-timestamp", "yesterday"])
            .code,
        2
    );
    assert_eq!(env.run(&["topic", "frobnicate"]).code, 2);
    assert_eq!(env.run(&["-b", "no-port", "topic", "list"]).code, 2);
}

#[test]
fn profiles_env_and_completions() {
    let env = Env::start();
    env.create_topic("via-profile", 1);
    let cfg = env.dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "default_profile = \"dev\"\n[profiles.dev]\nbrokers = \"{}\"\n[profiles.broken]\nbrokers = [\"127.0.0.1:{}\"]\n",
            env.broker.bootstrap,
            free_port()
        ),
    )
    .unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(args);
        isolate(&mut c, env.dir.path());
        c.env("FJORD_CONFIG", &cfg);
        for (k, v) in envs {
            c.env(k, v);
        }
        run_bounded(c, b"", "profile")
    };
    // The default profile, an explicit one, FJORD_BROKERS over the profile, -b over both.
    let out = run(&["-o", "json", "topic", "list"], &[]).ok();
    assert_eq!(out.json()[0]["name"], "via-profile");
    assert_eq!(run(&["--profile", "broken", "topic", "list"], &[]).code, 3);
    assert_eq!(
        run(&["topic", "list"], &[("FJORD_PROFILE", "broken")]).code,
        3
    );
    run(
        &["--profile", "broken", "topic", "list"],
        &[("FJORD_BROKERS", &env.broker.bootstrap)],
    )
    .ok();
    run(
        &["-b", &env.broker.bootstrap, "topic", "list"],
        &[("FJORD_BROKERS", "127.0.0.1:1")],
    )
    .ok();
    let unknown = run(&["--profile", "nope", "topic", "list"], &[]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("nope"), "{}", unknown.stderr);

    for shell in ["bash", "zsh", "fish"] {
        let mut c = Command::new(BIN);
        c.args(["completions", shell]);
        let out = run_bounded(c, b"", "completions").ok();
        assert!(out.stdout.contains("reset-offsets"), "{shell}");
    }
}

/// Records written by `fjord produce` read back by librdkafka, and records written by
/// librdkafka (compressed, with headers) read back by `fjord consume`.
#[test]
fn interoperates_with_librdkafka() {
    let Some(py) = clients::python() else { return };
    let env = Env::start();
    env.create_topic("interop", 1);
    env.run_with(
        &["produce", "interop", "-k", "=", "-H", "h=1", "-z", "gzip"],
        b"a=1\nb=2\n",
    )
    .ok();
    let r = clients::run(
        &py,
        RDKAFKA,
        "consume",
        &json!({"bootstrap": env.broker.bootstrap, "topic": "interop", "partitions": [0], "count": 2}),
    );
    let recs = r["records"].as_array().unwrap();
    assert_eq!(recs.len(), 2, "{r}");
    assert_eq!(recs[0]["key"], "a");
    assert_eq!(recs[1]["key"], "b");
    assert_eq!(recs[0]["headers"], json!([["h", "1"]]));

    let records: Vec<Value> = (0..3)
        .map(|i| json!({"key": format!("rk{i}"), "value": format!("rv{i}"), "headers": [["x", "y"], ["x", "z"]]}))
        .collect();
    clients::run(
        &py,
        RDKAFKA,
        "produce",
        &json!({"bootstrap": env.broker.bootstrap, "topic": "interop", "records": records, "compression": "zstd", "partition": 0}),
    );
    let got = env.consume(&["interop", "--offset", "2", "-e"]);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0]["key"], "rk0");
    assert_eq!(got[2]["value"], "rv2");
    // Duplicate header keys survive our decoder.
    assert_eq!(
        got[0]["headers"],
        json!([{"key": "x", "value": "y"}, {"key": "x", "value": "z"}])
    );
}

/// An admin command whose output pipe closes ends quietly (SIGPIPE) instead of panicking.
#[test]
fn a_closed_output_pipe_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // The bash completion script (about 84 KB) is larger than a pipe's buffer, so writing it
    // must meet the closed read end.
    let mut child = Command::new(BIN)
        .args(["completions", "bash"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = wait_bounded(&mut child, Duration::from_secs(30)).expect("fjord exited");
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?} {stderr}");
}

// ------------------------------------------------------------------ partition reassignment

/// The CLI against a three-node cluster (a reassignment needs somewhere to move to).
struct ClusterEnv {
    cluster: fjord_tests::cluster::Cluster,
    dir: tempfile::TempDir,
}

impl ClusterEnv {
    fn start() -> ClusterEnv {
        // Small replica fetches, so a throttle is felt within a partition of 200 kB (the
        // broker checks it between fetches).
        let spec =
            fjord_tests::cluster::ClusterSpec::new(3).with("replica.fetch.max.bytes", "16384");
        let cluster = fjord_tests::cluster::Cluster::start(Path::new(BIN), spec)
            .unwrap_or_else(|e| panic!("cluster: {e}"));
        ClusterEnv {
            cluster,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run_with(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut c = Command::new(BIN);
        c.arg("-b").arg(self.cluster.bootstrap()).args(args);
        isolate(&mut c, self.dir.path());
        run_bounded(c, stdin, &format!("{args:?}"))
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, b"")
    }

    /// `-o json` and the exit code expected.
    fn json_code(&self, args: &[&str], code: i32) -> Value {
        let mut a = vec!["-o", "json"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        assert_eq!(
            out.code,
            code,
            "{args:?}\nstdout:\n{}\nstderr:\n{}\n{}",
            out.stdout,
            out.stderr,
            self.cluster.log_tails(30)
        );
        out.json()
    }

    fn json(&self, args: &[&str]) -> Value {
        self.json_code(args, 0)
    }

    /// An RF=1 topic of one partition (min.insync.replicas=1: acks=all with one replica).
    fn create_topic(&self, name: &str) {
        let v = self.json(&[
            "topic",
            "create",
            name,
            "-p",
            "1",
            "-r",
            "1",
            "-c",
            "min.insync.replicas=1",
        ]);
        assert_eq!(v[0]["status"], "created", "{v}");
    }

    /// Partition 0 as `fjord topic describe` shows it.
    fn partition0(&self, topic: &str) -> Value {
        self.json(&["topic", "describe", topic])[0]["partitions"][0].clone()
    }

    fn replicas(&self, topic: &str) -> Vec<i64> {
        ids_of(&self.partition0(topic)["replicas"])
    }

    /// Every value of the topic, read from the beginning to the end.
    fn values(&self, topic: &str) -> Vec<String> {
        let out = self
            .run(&["-o", "json", "consume", topic, "--from-beginning", "-e"])
            .ok();
        out.stdout
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"));
                v["value"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// The reassignments `fjord topic reassignments [topics]` lists, as (topic, partition).
    fn moving(&self, topics: &[&str]) -> Vec<Value> {
        let mut a = vec!["topic", "reassignments"];
        a.extend_from_slice(topics);
        self.json(&a).as_array().unwrap().clone()
    }
}

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// Moves, a throttled move held in progress and listed, its cancel, throttle cleanup, and the
/// error paths, on one three-node cluster (cluster start-up is the expensive part).
#[test]
fn topic_reassign_moves_throttles_and_cancels() {
    let env = ClusterEnv::start();

    // 1. A plain move with --wait: done when the command returns, records still readable.
    env.create_topic("moved");
    let sent: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    env.run_with(&["produce", "moved"], sent.join("\n").as_bytes())
        .ok();
    let from = env.replicas("moved");
    assert_eq!(from.len(), 1);
    let to = (1..=3).find(|b| !from.contains(b)).unwrap();
    let spec = format!("0={to}");
    let v = env.json(&["topic", "reassign", "moved", "--replicas", &spec, "--wait"]);
    assert_eq!(v["partitions"][0]["status"], "accepted", "{v}");
    assert_eq!(v["partitions"][0]["error"], Value::Null, "{v}");
    assert_eq!(ids_of(&v["partitions"][0]["current_replicas"]), from);
    assert_eq!(v["wait"]["completed"], true, "{v}");
    assert_eq!(v["throttle"], Value::Null);
    let p = env.partition0("moved");
    assert_eq!(ids_of(&p["replicas"]), vec![to], "{p}");
    assert_eq!(p["leader"], to, "{p}");
    assert_eq!(env.values("moved"), sent);
    assert!(env.moving(&[]).is_empty());

    // 2. A move held by a tiny throttle: --wait gives up after its timeout (exit 1), the
    //    move stays listed with its adding and removing replicas, and so does the throttle.
    env.create_topic("slow");
    let pad = "x".repeat(1000);
    let mut slow_sent = Vec::new();
    // 25 runs of 8 kB: small batches, so that the copy takes many throttled fetches.
    for run in 0..25 {
        let batch: Vec<String> = (0..8).map(|i| format!("s{run:02}-{i}-{pad}")).collect();
        env.run_with(&["produce", "slow", "-p", "0"], batch.join("\n").as_bytes())
            .ok();
        slow_sent.extend(batch);
    }
    let slow_from = env.replicas("slow");
    let a = slow_from[0];
    let c = (1..=3).find(|b| *b != a).unwrap();
    let spec = format!("0={c}");
    let v = env.json_code(
        &[
            "topic",
            "reassign",
            "slow",
            "--replicas",
            &spec,
            "--throttle",
            "1000",
            "--wait",
            "--timeout",
            "3",
        ],
        1,
    );
    assert_eq!(v["partitions"][0]["status"], "accepted", "{v}");
    assert_eq!(v["wait"]["completed"], false, "{v}");
    assert_eq!(v["wait"]["throttle_cleared"], Value::Null, "{v}");
    assert_eq!(v["throttle"]["rate"], 1000);
    let leader_list = format!("0:{a}");
    let follower_list = format!("0:{c}");
    assert_eq!(
        v["throttle"]["leader.replication.throttled.replicas"],
        leader_list.as_str(),
        "{v}"
    );
    assert_eq!(
        v["throttle"]["follower.replication.throttled.replicas"],
        follower_list.as_str(),
        "{v}"
    );
    let configs = &env.json(&["topic", "describe", "slow"])[0]["configs"];
    assert_eq!(
        configs["leader.replication.throttled.replicas"],
        leader_list.as_str(),
        "{configs}"
    );
    assert_eq!(
        configs["follower.replication.throttled.replicas"],
        follower_list.as_str(),
        "{configs}"
    );
    let rate_source = |env: &ClusterEnv| {
        let d = env.json(&["config", "describe", "--broker", "1", "--all"]);
        d["configs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "leader.replication.throttled.rate")
            .map(|e| (e["value"].clone(), e["source"].clone()))
            .unwrap_or_else(|| panic!("no rate in {d}"))
    };
    assert_eq!(
        rate_source(&env),
        (json!("1000"), json!("DYNAMIC_DEFAULT_BROKER_CONFIG"))
    );
    for listed in [env.moving(&[]), env.moving(&["slow"])] {
        assert_eq!(listed.len(), 1, "{listed:?}");
        let m = &listed[0];
        assert_eq!(m["topic"], "slow");
        assert_eq!(m["partition"], 0);
        assert_eq!(ids_of(&m["adding_replicas"]), vec![c], "{m}");
        assert_eq!(ids_of(&m["removing_replicas"]), vec![a], "{m}");
        let mut all = ids_of(&m["replicas"]);
        all.sort();
        let mut want = vec![a, c];
        want.sort();
        assert_eq!(all, want, "{m}");
    }
    assert!(env.moving(&["moved"]).is_empty());
    // The table names the columns and the move.
    let table = env.run(&["topic", "reassignments"]).ok().stdout;
    assert!(
        table.starts_with("TOPIC") && table.contains("ADDING") && table.contains("slow"),
        "{table}"
    );

    // 3. Cancel: back to the original replica, nothing listed; cancelling again is refused.
    let v = env.json(&["topic", "reassign", "slow", "--cancel", "0"]);
    assert_eq!(v["partitions"][0]["action"], "cancel", "{v}");
    assert_eq!(v["partitions"][0]["status"], "accepted", "{v}");
    let deadline = Instant::now() + SETTLE;
    while !env.moving(&[]).is_empty() {
        assert!(Instant::now() < deadline, "the cancelled move stays listed");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + SETTLE;
    while env.replicas("slow") != slow_from {
        assert!(Instant::now() < deadline, "replicas not restored");
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = env.run(&["-o", "json", "topic", "reassign", "slow", "--cancel", "0"]);
    assert_eq!(again.code, 1, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(
        again.json()["partitions"][0]["error"],
        "NO_REASSIGNMENT_IN_PROGRESS"
    );

    // 4. clear-throttle removes the topic lists and the cluster-wide rates.
    let v = env.json(&["topic", "clear-throttle", "slow"]);
    assert_eq!(v["resources"].as_array().unwrap().len(), 2, "{v}");
    let configs = &env.json(&["topic", "describe", "slow"])[0]["configs"];
    assert!(
        configs
            .get("leader.replication.throttled.replicas")
            .is_none()
            && configs
                .get("follower.replication.throttled.replicas")
                .is_none(),
        "{configs}"
    );
    assert_eq!(rate_source(&env).1, json!("DEFAULT_CONFIG"));

    // 5. Throttled (generously) and waited for: the move completes, --wait removes the
    //    throttle it set, and every record is still there.
    let v = env.json(&[
        "topic",
        "reassign",
        "slow",
        "--replicas",
        &spec,
        "--throttle",
        "100000000",
        "--wait",
        "--timeout",
        "120",
    ]);
    assert_eq!(v["wait"]["completed"], true, "{v}");
    assert_eq!(v["wait"]["throttle_cleared"]["topic_configs"], true, "{v}");
    assert_eq!(v["wait"]["throttle_cleared"]["rates"], true, "{v}");
    assert_eq!(env.replicas("slow"), vec![c]);
    let configs = &env.json(&["topic", "describe", "slow"])[0]["configs"];
    assert!(
        configs
            .get("leader.replication.throttled.replicas")
            .is_none(),
        "{configs}"
    );
    assert_eq!(rate_source(&env).1, json!("DEFAULT_CONFIG"));
    assert_eq!(env.values("slow"), slow_sent);

    // 6. Errors. An unknown broker: the row shows INVALID_REPLICA_ASSIGNMENT, exit 1.
    let out = env.run(&["topic", "reassign", "moved", "--replicas", "0=99"]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("INVALID_REPLICA_ASSIGNMENT"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("INVALID_REPLICA_ASSIGNMENT"),
        "{}",
        out.stderr
    );
    let v = env.json_code(&["topic", "reassign", "moved", "--replicas", "0=99"], 1);
    assert_eq!(v["partitions"][0]["error"], "INVALID_REPLICA_ASSIGNMENT");
    assert_eq!(v["partitions"][0]["error_code"], 39);
    assert_eq!(
        env.replicas("moved"),
        vec![to],
        "a refused move changes nothing"
    );
    // Unknown topic or partition: not found (4), before anything is changed.
    let out = env.run(&["topic", "reassign", "nope", "--replicas", "0=1"]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("UNKNOWN_TOPIC_OR_PARTITION"),
        "{}",
        out.stderr
    );
    let out = env.run(&[
        "topic",
        "reassign",
        "moved",
        "--replicas",
        "7=1",
        "--throttle",
        "5",
    ]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        env.json(&["topic", "describe", "moved"])[0]["configs"]
            .get("leader.replication.throttled.replicas")
            .is_none(),
        "no throttle is set for a refused partition"
    );
    assert_eq!(env.run(&["topic", "reassignments", "nope"]).code, 4);
    assert_eq!(env.run(&["topic", "clear-throttle", "nope"]).code, 4);
    // Usage (2): a malformed assignment, a partition named twice, a zero throttle.
    for bad in [
        vec!["topic", "reassign", "moved", "--replicas", "0=a"],
        vec![
            "topic",
            "reassign",
            "moved",
            "--replicas",
            "0=1",
            "--cancel",
            "0",
        ],
        vec![
            "topic",
            "reassign",
            "moved",
            "--replicas",
            "0=1",
            "--throttle",
            "0",
        ],
        vec!["topic", "reassign", "moved"],
    ] {
        assert_eq!(env.run(&bad).code, 2, "{bad:?}");
    }
    assert!(env.moving(&[]).is_empty());
}
