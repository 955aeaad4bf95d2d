//! Storage engine benchmarks: append, sequential read and offset lookup, each next to a plain
//! `write()`/`read()` of the same bytes on the same disk in the same run, so the overhead reads
//! as a ratio. Run with `cargo bench -p fjord-benches --bench storage`; the last lines print a
//! table of MB/s, records/s and the Fjord/plain ratio from criterion's estimates.
//!
//! Records are 100-byte values in uncompressed batches: 1 KiB batches hold 8 records, 64 KiB
//! batches 512. Files live under the cargo target directory (a real disk, not tmpfs).

use std::cell::OnceCell;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use fjord_storage::batch::Compression;
use fjord_storage::records::{self, BatchSpec, Record};
use fjord_storage::{LoadParams, Log, LogConfig, TopicPartition};

const VALUE: usize = 100;
/// 64 MiB of 1 KiB batches for the read benchmark.
const READ_BATCHES: usize = (64 << 20) / 1024;

fn batch(records_per_batch: usize) -> Bytes {
    let recs: Vec<Record> = (0..records_per_batch)
        .map(|i| Record {
            offset: i as i64,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(vec![b'x'; VALUE])),
            headers: vec![],
        })
        .collect();
    records::encode_batch(&BatchSpec::new(0, Compression::None), &recs).unwrap()
}

fn bench_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("storage-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open_log(dir: &Path) -> Log {
    let config = LogConfig::default()
        .with_overrides([("segment.bytes", "268435456")])
        .unwrap();
    Log::open(
        dir,
        TopicPartition::new("bench", 0),
        Arc::new(config),
        LoadParams::new_log(fjord_storage::now_ms()),
    )
    .unwrap()
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    for (label, per_batch) in [("1KiB", 8usize), ("64KiB", 512)] {
        let b = batch(per_batch);
        group.throughput(Throughput::ElementsAndBytes {
            elements: per_batch as u64,
            bytes: b.len() as u64,
        });
        let dir = bench_dir(&format!("append-{label}"));
        let log = open_log(&dir.join("log"));
        let now = fjord_storage::now_ms();
        group.bench_function(BenchmarkId::new("fjord", label), |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(log.append_as_leader(&b, 0, now).unwrap());
                }
                let took = start.elapsed();
                // Keep the disk bounded between samples (not timed).
                log.truncate_fully_and_start_at(0, now).unwrap();
                took
            })
        });
        let plain_path = dir.join("plain.log");
        let mut plain = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&plain_path)
            .unwrap();
        group.bench_function(BenchmarkId::new("plain_write", label), |bench| {
            bench.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    plain.write_all(&b).unwrap();
                }
                let took = start.elapsed();
                plain.set_len(0).unwrap();
                took
            })
        });
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);
    // 64 MiB of 1 KiB batches, read in 1 MiB fetches; page cache warm for both. Built on first
    // use so a filtered run skips it.
    let data: OnceCell<(Log, PathBuf)> = OnceCell::new();
    let setup = || {
        data.get_or_init(|| {
            let dir = bench_dir("read");
            let log = open_log(&dir.join("log"));
            let b = batch(8);
            for _ in 0..READ_BATCHES {
                log.append_as_leader(&b, 0, 0).unwrap();
            }
            log.flush(0).unwrap();
            (log, dir.join("log").join("00000000000000000000.log"))
        })
    };
    group.throughput(Throughput::ElementsAndBytes {
        elements: READ_BATCHES as u64 * 8,
        bytes: READ_BATCHES as u64 * batch(8).len() as u64,
    });
    group.bench_function(BenchmarkId::new("fjord", "1MiB-fetches"), |bench| {
        let (log, _) = setup();
        bench.iter(|| {
            let (mut next, mut touched) = (0i64, 0u64);
            while next < log.log_end_offset() {
                let r = log.read(next, 1 << 20, i64::MAX).unwrap();
                // Touch each page, as sending it would.
                touched += r
                    .records
                    .iter()
                    .step_by(4096)
                    .map(|b| *b as u64)
                    .sum::<u64>();
                let last = fjord_storage::log::batch_headers(&r.records)
                    .last()
                    .unwrap();
                next = last.next_offset();
            }
            black_box(touched)
        })
    });
    let mut buf = vec![0u8; 1 << 20];
    group.bench_function(BenchmarkId::new("plain_read", "1MiB-fetches"), |bench| {
        let (_, segment) = setup();
        bench.iter(|| {
            let mut f = File::open(segment).unwrap();
            f.seek(SeekFrom::Start(0)).unwrap();
            let mut touched = 0u64;
            loop {
                let n = f.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                touched += buf[..n]
                    .iter()
                    .step_by(4096)
                    .map(|b| *b as u64)
                    .sum::<u64>();
            }
            black_box(touched)
        })
    });
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    group
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    // 32 MiB in 1 KiB batches: a sparse index entry every 4 KiB; pseudo-random offsets.
    let b = batch(8);
    let data: OnceCell<(Log, File, Vec<i64>)> = OnceCell::new();
    let setup = || {
        data.get_or_init(|| {
            let dir = bench_dir("lookup");
            let log = open_log(&dir.join("log"));
            for _ in 0..(32 << 20) / b.len() {
                log.append_as_leader(&b, 0, 0).unwrap();
            }
            let leo = log.log_end_offset() as u64;
            let segment = File::open(dir.join("log").join("00000000000000000000.log")).unwrap();
            let offsets = (0..4096u64)
                .map(|i| (i.wrapping_mul(2654435761) % leo) as i64)
                .collect();
            (log, segment, offsets)
        })
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("fjord", "offset-to-batch"), |bench| {
        let (log, _, offsets) = setup();
        let mut i = 0;
        bench.iter(|| {
            i = (i + 1) % offsets.len();
            let r = log.read(offsets[i], 1, i64::MAX).unwrap();
            black_box(r.records.len())
        })
    });
    // Baseline: pread of the batch header at its known position (no search at all).
    let mut header = [0u8; 61];
    group.bench_function(BenchmarkId::new("plain_read", "offset-to-batch"), |bench| {
        let (_, segment, offsets) = setup();
        let mut i = 0;
        bench.iter(|| {
            i = (i + 1) % offsets.len();
            let position = (offsets[i] as u64 / 8) * b.len() as u64;
            segment.read_exact_at(&mut header, position).unwrap();
            black_box(header[0])
        })
    });
    group.finish();
}

/// Where append time goes: CRC32C alone, and header validation with and without the
/// record-framing walk.
fn bench_validate(c: &mut Criterion) {
    use fjord_storage::batch::{self, BatchList, Validation};
    let mut group = c.benchmark_group("validate");
    group
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    for (label, per_batch) in [("1KiB", 8usize), ("64KiB", 512)] {
        let b = batch(per_batch);
        group.throughput(Throughput::ElementsAndBytes {
            elements: per_batch as u64,
            bytes: b.len() as u64,
        });
        group.bench_function(BenchmarkId::new("crc32c", label), |bench| {
            bench.iter(|| black_box(batch::compute_crc(black_box(&b))))
        });
        for (name, v) in [
            ("producer", Validation::Producer),
            ("stored", Validation::Stored),
        ] {
            group.bench_function(BenchmarkId::new(name, label), |bench| {
                bench.iter(|| {
                    let mut out = BatchList::new();
                    batch::split_batches(black_box(&b), v, usize::MAX, &mut out).unwrap();
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

/// Time per iteration (ns) that criterion recorded for `group/function/param`: the slope
/// estimate it prints as `time:`, or the median where there is no slope. Both resist the odd
/// slow sample (page-cache writeback) that skews a mean on a shared machine.
fn time_ns(group: &str, function: &str, param: &str) -> Option<f64> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()?
        .join("criterion");
    let path = target
        .join(group)
        .join(function)
        .join(param)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    json["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| json["median"]["point_estimate"].as_f64())
}

fn summary() {
    println!(
        "\nfjord-storage summary (criterion slope estimates; ratio = fjord time / plain time)"
    );
    println!(
        "{:<26} {:>12} {:>14} {:>12} {:>14} {:>8}",
        "benchmark", "fjord MB/s", "fjord rec/s", "plain MB/s", "plain rec/s", "ratio"
    );
    let rows: [(&str, &str, &str, &str, f64, f64); 4] = [
        (
            "append 1 KiB batches",
            "append",
            "plain_write",
            "1KiB",
            batch(8).len() as f64,
            8.0,
        ),
        (
            "append 64 KiB batches",
            "append",
            "plain_write",
            "64KiB",
            batch(512).len() as f64,
            512.0,
        ),
        (
            "sequential read 64 MiB",
            "read",
            "plain_read",
            "1MiB-fetches",
            f64::NAN,
            f64::NAN,
        ),
        (
            "lookup offset -> batch",
            "lookup",
            "plain_read",
            "offset-to-batch",
            f64::NAN,
            1.0,
        ),
    ];
    for (label, group, baseline, param, bytes, recs) in rows {
        let (Some(f), Some(p)) = (
            time_ns(group, "fjord", param),
            time_ns(group, baseline, param),
        ) else {
            println!("{label:<26} (not measured in this run)");
            continue;
        };
        let (bytes, recs) = if group == "read" {
            let n = READ_BATCHES as f64;
            (n * batch(8).len() as f64, n * 8.0)
        } else {
            (bytes, recs)
        };
        let mbps = |ns: f64| {
            if bytes.is_nan() {
                f64::NAN
            } else {
                bytes / ns * 1e9 / 1e6
            }
        };
        let rps = |ns: f64| recs / ns * 1e9;
        println!(
            "{label:<26} {:>12.0} {:>14.0} {:>12.0} {:>14.0} {:>7.2}x",
            mbps(f),
            rps(f),
            mbps(p),
            rps(p),
            f / p
        );
        if group == "lookup" {
            println!(
                "{:<26} fjord {:.0} ns/lookup, plain pread {:.0} ns",
                "", f, p
            );
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_append(&mut c);
    bench_read(&mut c);
    bench_lookup(&mut c);
    bench_validate(&mut c);
    c.final_summary();
    summary();
}
