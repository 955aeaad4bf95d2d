//! Benchmarks for Fjord (run with `cargo bench -p fjord-benches`).
