//! SIGKILL a process while it appends, then reopen and check what survived.
//!
//! The test binary re-runs itself as the writer (`crash_writer_child`, active only when
//! `FJORD_CRASH_DIR` is set). The writer prints `ACK <seq> <first> <last>` after each append
//! returns; the parent kills it with SIGKILL at a random point, reopens the log as after an
//! unclean stop, and checks that every acknowledged batch is present with its exact content,
//! that nothing after the recovered end is half-written, and that the writer can continue.
//! SIGKILL leaves the page cache intact, so acknowledged data must survive without fsync.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_storage::batch::{Compression, StoredBatches};
use fjord_storage::records::{self, BatchSpec, Record};
use fjord_storage::{LoadParams, Log, LogConfig, TopicPartition};

const ROUNDS: usize = 3;

fn config() -> Arc<LogConfig> {
    Arc::new(
        LogConfig::default()
            .with_overrides([("segment.bytes", "65536"), ("index.interval.bytes", "1024")])
            .unwrap(),
    )
}

fn value(seq: u64, j: usize) -> Vec<u8> {
    format!("seq-{seq}-rec-{j}-")
        .repeat(1 + (seq as usize * 7 + j) % 20)
        .into_bytes()
}

fn batch_for(seq: u64) -> Bytes {
    let n = 1 + (seq % 9) as usize;
    let records: Vec<Record> = (0..n)
        .map(|j| Record {
            offset: j as i64,
            timestamp: 1_700_000_000_000 + seq as i64,
            key: Some(Bytes::from(format!("k{seq}"))),
            value: Some(Bytes::from(value(seq, j))),
            headers: vec![],
        })
        .collect();
    let codec = [Compression::None, Compression::Lz4, Compression::Zstd][(seq % 3) as usize];
    records::encode_batch(&BatchSpec::new(0, codec), &records).unwrap()
}

fn open(dir: &std::path::Path) -> Log {
    let params = LoadParams {
        recovery_point: 0,
        log_start_offset: 0,
        high_watermark: None,
        clean_shutdown: false,
        now_ms: fjord_storage::now_ms(),
    };
    Log::open(dir, TopicPartition::new("crash", 0), config(), params).unwrap()
}

/// The writer. A no-op unless run by the parent test.
#[test]
fn crash_writer_child() {
    let Ok(dir) = std::env::var("FJORD_CRASH_DIR") else {
        return;
    };
    let first_seq: u64 = std::env::var("FJORD_CRASH_SEQ").unwrap().parse().unwrap();
    let log = open(std::path::Path::new(&dir));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "OPEN {}", log.log_end_offset()).unwrap();
    out.flush().unwrap();
    for seq in first_seq..first_seq + 1_000_000 {
        let info = log
            .append_as_leader(&batch_for(seq), 0, fjord_storage::now_ms())
            .unwrap();
        writeln!(out, "ACK {seq} {} {}", info.first_offset, info.last_offset).unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_while_appending_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, i64, i64)> = Vec::new();
    let mut next_seq = 0u64;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "crash_writer_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("FJORD_CRASH_DIR", dir.path())
            .env("FJORD_CRASH_SEQ", next_seq.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Kill after a varying number of acknowledgements (or 30 s, whichever first).
        let kill_after = 300 + round * 450 + (std::process::id() as usize % 200);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut round_acks = 0;
        let mut lines = Vec::new();
        while round_acks < kill_after && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    round_acks += line.starts_with("ACK ") as usize;
                    lines.push(line);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        for line in lines {
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() == 4 && parts[0] == "ACK" {
                // A line cut off by the kill cannot parse all four fields as numbers.
                if let (Ok(s), Ok(f), Ok(l)) =
                    (parts[1].parse(), parts[2].parse(), parts[3].parse())
                {
                    acked.push((s, f, l));
                    next_seq = next_seq.max(s + 1);
                }
            }
        }
        assert!(
            round_acks > 0,
            "round {round}: the writer acknowledged nothing"
        );

        // Reopen as after a crash and check every acknowledged batch.
        let log = open(dir.path());
        let last_acked = acked.iter().map(|a| a.2).max().unwrap();
        assert!(
            log.log_end_offset() > last_acked,
            "round {round}: log end {} <= last ack {last_acked}",
            log.log_end_offset()
        );
        let mut found = std::collections::HashMap::new();
        let mut next = 0;
        for _ in 0..1_000_000 {
            let r = log.read(next, 1 << 20, i64::MAX).unwrap();
            if r.records.is_empty() {
                break;
            }
            for b in StoredBatches::new(&r.records, 0) {
                let (_, recs) =
                    records::decode_batch(&r.records[b.position..b.position + b.header.size()])
                        .unwrap();
                for rec in recs {
                    found.insert(rec.offset, (rec.key.unwrap(), rec.value.unwrap()));
                }
                next = b.header.next_offset();
            }
        }
        assert_eq!(
            next,
            log.log_end_offset(),
            "round {round}: every batch up to the log end reads back"
        );
        for (seq, first, last) in &acked {
            for (j, offset) in (*first..=*last).enumerate() {
                let (k, v) = found
                    .get(&offset)
                    .unwrap_or_else(|| panic!("round {round}: acknowledged offset {offset} lost"));
                assert_eq!(k.as_ref(), format!("k{seq}").as_bytes());
                assert_eq!(
                    v.as_ref(),
                    value(*seq, j).as_slice(),
                    "round {round}: offset {offset} corrupted"
                );
            }
        }
        eprintln!(
            "round {round}: {} batches acknowledged in total, log end {}, {} segments",
            acked.len(),
            log.log_end_offset(),
            log.num_segments()
        );
        // A batch written but not acknowledged before the kill stays in the log; the next
        // writer appends after it (its sequence number is reused at new offsets).
        drop(log);
    }
}
