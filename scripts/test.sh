#!/usr/bin/env bash
# Runs Fjord's whole test suite from a clean clone: formatting, lints, and every test.
# Installs what it needs itself; fails loudly on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustc --version
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "benchmarks compile"
cargo bench --workspace --no-run

step "real Kafka clients (kafka-python, confluent-kafka/librdkafka into a private venv; kafkajs into a private node_modules)"
./scripts/clients.sh

step "cargo test (unit, property, crash, quorum, real-client and wire tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite, summed over every test binary.
passed=$(grep -Eo '[0-9]+ passed' "$log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
echo
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ]; then
  echo "cargo test failed (exit $status)"
  echo "tests: $passed passed, $failed failed"
  exit 1
fi
if [ "$passed" -eq 0 ]; then
  echo "no tests ran"
  exit 1
fi
echo "tests: $passed passed, $failed failed"
