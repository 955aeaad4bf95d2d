//! Runs `tests/clients/records_admin.py` (DeleteRecords, DescribeTopicPartitions and
//! earliest-offset consumption with real clients), bounded in time like `fjord_tests::clients`.

use std::path::Path;

use serde_json::Value;

pub fn run(python: &Path, client: &str, op: &str, args: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/records_admin.py");
    fjord_tests::clients::run_script(python, &script, client, op, args)
}
