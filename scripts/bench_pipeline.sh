#!/usr/bin/env bash
# End-to-end benchmark of the default pipeline (sql/pipeline.sql): built-in generator ->
# per-user OVER features -> isolation forest -> four Delta tables, on a release build.
# Prints txguard's own summary (throughput, first commit, peak RSS) for 10k and 1M users, then
# the same pipeline reading the generator's output back from a JSON-lines file (the decoder
# filling the declared columns, constraints, event-time buffer).
# Usage: scripts/bench_pipeline.sh [COUNT]   (default 1000000 transactions)
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000000}"
root="$PWD"
cargo build --release -q -p txguard
bin="${CARGO_TARGET_DIR:-$root/target}/release/txguard"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for users in 10000 1000000; do
  echo "== $count transactions, $users users" >&2
  rm -rf "$work/data"
  (cd "$work" && "$bin" run "$root/sql/pipeline.sql" --model "$root/models/default.json" \
    --set "transactions.count=$count" --set "transactions.users=$users" --quiet 2>&1 |
    grep -E "^(done|first|peak|  sink transactions_scored)")
  du -sh "$work/data" >&2
done
echo "== $count transactions from a JSON-lines file (10000 users)" >&2
"$bin" generate --count "$count" --users 10000 --fraud-rate 0.002 --out-of-order 0.01 \
  --max-delay-ms 3000 --output "$work/tx.jsonl" 2>/dev/null
rm -rf "$work/data"
(cd "$work" && "$bin" run "$root/sql/pipeline.sql" --model "$root/models/default.json" \
  --set transactions.connector=file --set "transactions.path=$work/tx.jsonl" --quiet 2>&1 |
  grep -E "^(done|first|peak|  sink transactions_scored)")
