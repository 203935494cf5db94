#!/usr/bin/env bash
# End-to-end benchmark generator -> pipeline -> PostgreSQL (sql/pipeline_postgres.sql) on a
# release build, against the local server (or $TXGUARD_TEST_POSTGRES, libpq keywords). Runs in
# a database `txguard_bench` it (re)creates: a first run into empty tables, then the same
# transactions again (every row an upsert conflict), then the sink alone (cargo bench).
# Usage: scripts/bench_postgres.sh [COUNT]   (default 1000000 transactions)
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000000}"
root="$PWD"
server="${TXGUARD_TEST_POSTGRES:-host=127.0.0.1 port=5432 user=postgres dbname=postgres}"
cargo build --release -q -p txguard
bin="${CARGO_TARGET_DIR:-$root/target}/release/txguard"
psql "$server" -q -c "DROP DATABASE IF EXISTS txguard_bench WITH (FORCE)" -c "CREATE DATABASE txguard_bench"
export TXGUARD_POSTGRES="$server dbname=txguard_bench"
"$bin" db init
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for pass in "into empty tables" "the same transactions again (upserts)"; do
  echo "== $count transactions, $pass" >&2
  (cd "$work" && "$bin" run "$root/sql/pipeline_postgres.sql" --model "$root/models/default.json" \
    --set "transactions.count=$count" --quiet --no-ui 2>&1 |
    grep -E "^(done|first|peak|  sink transactions_scored)")
done
"$bin" db stats
psql "$server" -q -c "DROP DATABASE IF EXISTS txguard_bench WITH (FORCE)"
echo "== the sink alone (encoder; upsert; append)" >&2
cargo bench -q -p txguard-connectors --bench postgres_sink -- --rows "$count"
