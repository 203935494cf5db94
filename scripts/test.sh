#!/usr/bin/env bash
# The whole test suite: setup, format and lint checks, the workspace tests, and the Arroyo
# UDF harness (its own lockfile: arrow 51). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

echo "== cargo fmt --check" >&2
cargo fmt --all --check
(cd udfs/arroyo/harness && cargo fmt --check)

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test (workspace)" >&2
cargo test --workspace --locked

echo "== scikit-learn parity with the portable (non-AVX-512) kernel" >&2
TXGUARD_FOREST_KERNEL=portable cargo test -p txguard-iforest --locked --test sklearn_parity

echo "== cargo test (Arroyo UDF harness)" >&2
cargo clippy --manifest-path udfs/arroyo/harness/Cargo.toml --all-targets --locked -- -D warnings
cargo test --manifest-path udfs/arroyo/harness/Cargo.toml --locked
