#!/usr/bin/env bash
# The whole test suite: setup, format and lint checks, the workspace tests, and the Arroyo
# UDF harness (its own lockfile: arrow 51). This is what CI runs. Ends with one summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

log=$(mktemp)
trap 'rm -f "$log"' EXIT
run_tests() { "$@" 2>&1 | tee -a "$log"; }

echo "== cargo fmt --check" >&2
cargo fmt --all --check
(cd udfs/arroyo/harness && cargo fmt --check)

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --manifest-path udfs/arroyo/harness/Cargo.toml --all-targets --locked -- -D warnings

echo "== cargo deny (licenses, duplicate dependencies; offline)" >&2
# cargo deny reads every platform's dependencies (windows-sys, android_…), which a Linux build
# never downloads: fetch them first (a no-op once they are in cargo's cache).
cargo fetch --locked --quiet
"${TXGUARD_DENY_ROOT:-$HOME/.cache/txguard/cargo-deny}/bin/cargo-deny" --offline --log-level error check licenses bans

echo "== Grafana dashboard type check (@grafana/schema)" >&2
(cd dashboards/grafana/check && npm run --silent check)

echo "== cargo test (workspace)" >&2
run_tests cargo test --workspace --locked

echo "== cargo test (Arroyo UDF harness)" >&2
run_tests cargo test --manifest-path udfs/arroyo/harness/Cargo.toml --locked --tests

awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
