//! Runs `tests/clients/records_admin.py` (DeleteRecords, DescribeTopicPartitions and
//! earliest-offset consumption with real clients), bounded in time like `fjord_tests::clients`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(python: &Path, client: &str, op: &str, args: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/records_admin.py");
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(python)
        .arg(&script)
        .args([client, op, &args.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{client} {op} timed out:\n{}",
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
