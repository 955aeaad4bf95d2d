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

step "cargo test (unit, property, crash and decoder tests)"
cargo test --workspace --no-fail-fast

step "benchmarks compile"
cargo bench --workspace --no-run

echo
echo "all checks passed"
