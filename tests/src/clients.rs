//! Real Kafka clients, driven through `tests/clients/client.py` (and kafkajs through
//! `tests/clients/kafkajs_admin.js`).
//!
//! The clients are installed by `scripts/clients.sh` into a private virtualenv the first time a
//! test needs them. A missing client is a test failure unless `FJORD_SKIP_CLIENT_TESTS=1` says
//! that skipping is acceptable (for machines without PyPI access). `FJORD_CLIENTS_PYTHON` points
//! at an interpreter that already has them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on one client invocation.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

pub const RDKAFKA: &str = "rdkafka";
pub const KAFKA_PYTHON: &str = "kafka-python";
pub const ALL: [&str; 2] = [RDKAFKA, KAFKA_PYTHON];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .to_path_buf()
}

fn install() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("FJORD_CLIENTS_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let script = repo_root().join("scripts/clients.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let python = stdout
        .lines()
        .last()
        .ok_or("clients.sh printed no interpreter path")?;
    Ok(PathBuf::from(python.trim()))
}

/// The interpreter with the clients installed, or `None` when clients are missing and skipping
/// was explicitly allowed. Panics when they are missing otherwise.
pub fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PYTHON.get_or_init(install) {
        Ok(p) => Some(p.clone()),
        Err(e) if std::env::var("FJORD_SKIP_CLIENT_TESTS").as_deref() == Ok("1") => {
            eprintln!("skipping: real clients unavailable and FJORD_SKIP_CLIENT_TESTS=1: {e}");
            None
        }
        Err(e) => panic!("real Kafka clients are not available: {e}"),
    }
}

/// Runs `op` with `client` and returns its JSON answer; panics with the client's stderr if it
/// fails or runs longer than the bound.
pub fn run(python: &Path, client: &str, op: &str, args: &Value) -> Value {
    run_script(
        python,
        &repo_root().join("tests/clients/client.py"),
        client,
        op,
        args,
    )
}

/// Produces `values` to `topic`-`partition` with an idempotent librdkafka producer and
/// acks=all (60 s delivery timeout, `extra` producer settings on top), in chunks of about
/// 100 kB because the records travel as one command-line argument. Returns the delivery
/// errors, empty when every record was acknowledged.
pub fn produce_acked(
    python: &Path,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    values: &[String],
    extra: &Value,
) -> Vec<Value> {
    let mut conf = serde_json::json!({"message.timeout.ms": 60000});
    if let (Some(c), Some(e)) = (conf.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    let per_chunk = values
        .iter()
        .map(String::len)
        .max()
        .map_or(1, |l| (100_000 / l.max(1)).max(1));
    let mut errors = Vec::new();
    for chunk in values.chunks(per_chunk) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|v| serde_json::json!({"value": v}))
            .collect();
        let r = run(
            python,
            RDKAFKA,
            "produce",
            &serde_json::json!({"bootstrap": bootstrap, "topic": topic, "records": records,
                                "acks": "all", "idempotent": true, "partition": partition,
                                "timeout": 60, "extra": conf}),
        );
        let results = r["results"].as_array().cloned().unwrap_or_default();
        if results.len() != chunk.len() {
            errors.push(serde_json::json!({"error": format!("{} results for {} records", results.len(), chunk.len())}));
        }
        errors.extend(results.into_iter().filter(|res| !res["error"].is_null()));
    }
    errors
}

/// The values of `count` records of `topic`-`partition` from offset 0, read by `client`
/// (bounded by the client's 60 s timeout).
pub fn consume_values(
    python: &Path,
    client: &str,
    bootstrap: &str,
    topic: &str,
    partition: i32,
    count: usize,
) -> Vec<String> {
    let r = run(
        python,
        client,
        "consume",
        &serde_json::json!({"bootstrap": bootstrap, "topic": topic, "partitions": [partition],
                            "offset": 0, "count": count, "timeout": 60}),
    );
    r["records"]
        .as_array()
        .map(|records| {
            records
                .iter()
                .filter_map(|r| r["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Like [`run`], with another client script taking the same arguments.
pub fn run_script(python: &Path, script: &Path, client: &str, op: &str, args: &Value) -> Value {
    let mut cmd = Command::new(python);
    cmd.arg(script).args([client, op, &args.to_string()]);
    run_command(cmd, client, op, args)
}

/// Runs `op` of `tests/clients/kafkajs_admin.js` with kafkajs (installed next to the Python
/// clients by `scripts/clients.sh`; `python()` must have succeeded first).
pub fn run_kafkajs(op: &str, args: &Value) -> Value {
    let modules = std::env::var("FJORD_CLIENTS_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/fjord-clients/node"))
        .join("node_modules");
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", modules)
        .arg(repo_root().join("tests/clients/kafkajs_admin.js"))
        .args([op, &args.to_string()]);
    run_command(cmd, "kafkajs", op, args)
}

fn run_command(mut cmd: Command, client: &str, op: &str, args: &Value) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.json");
    let err_path = dir.path().join("err.txt");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn the client");
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for client") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{client} {op} timed out; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "{client} {op} {args} failed ({status}):\n{stderr}"
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("null"))
        .unwrap_or_else(|e| panic!("{client} {op}: bad JSON ({e}): {stdout}\n{stderr}"))
}
