#!/usr/bin/env bash
# What checkpoints cost on the default pipeline (generator -> OVER features -> forest -> Delta)
# with many users, on a release build: the same run with checkpoints every second and with
# --no-checkpoints (alternated, twice each), each checkpoint's size and the time the dataflow
# waited for it (from the runtime's debug log), then recovery: a run SIGKILLed after a few
# seconds and restarted — time from start to the restored state and to the first commit.
# Usage: scripts/bench_checkpoints.sh [COUNT] [USERS]   (default 3000000 transactions, 1000000 users)
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-3000000}"
users="${2:-1000000}"
root="$PWD"
cargo build --release -q -p txguard
bin="${CARGO_TARGET_DIR:-$root/target}/release/txguard"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export NO_COLOR=1
run() {
  (cd "$work" && "$bin" --log "warn,txguard=info,txguard_engine=debug" run "$root/sql/pipeline.sql" \
    --model "$root/models/default.json" --set "transactions.count=$count" \
    --set "transactions.users=$users" --quiet --no-ui "$@" 2>&1)
}
for round in 1 2; do
  for mode in checkpoints none; do
    rm -rf "$work/data"
    if [ "$mode" = none ]; then out=$(run --no-checkpoints); else out=$(run); fi
    echo "== round $round, $mode: $(grep -E '^done' <<<"$out" | cut -d'|' -f1)"
    grep -E "^(peak|checkpoints:)" <<<"$out" || true
    if [ "$mode" = checkpoints ]; then
      grep "checkpoint written" <<<"$out" | sed -E 's/.* bytes=([0-9]+) state_bytes=([0-9]+).*paused_ms=([0-9.]+).*total_ms=([0-9.]+).*/\1 \2 \3 \4/' |
        awk '{ n++; w+=$1; b=$2; s+=$3; t+=$4; if ($3>m) m=$3 } END { if (n) printf "  %d checkpoints: state %.1f MB at the last, %.1f MB written per checkpoint avg; dataflow paused %.1f ms avg, %.1f ms max; barrier to durable %.1f ms avg\n", n, b/1e6, w/n/1e6, s/n, m, t/n }'
      grep "checkpoint written" <<<"$out" | sed -E 's/.*epoch=([0-9]+) bytes=([0-9]+) state_bytes=([0-9]+).*paused_ms=([0-9.]+).*/    epoch \1: wrote \2 B of \3 B, paused \4 ms/' || true
    fi
  done
done
echo "== recovery: SIGKILL after 6 s, then a restart"
rm -rf "$work/data"
(cd "$work" && exec "$bin" run "$root/sql/pipeline.sql" --model "$root/models/default.json" \
  --set "transactions.count=$count" --set "transactions.users=$users" --quiet --no-ui \
  >/dev/null 2>&1) &
pid=$!
sleep 6
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
"$bin" checkpoints list --checkpoint-dir "$work/data/_checkpoints/pipeline" | head -3
start=$(date +%s.%N)
out=$(cd "$work" && "$bin" run "$root/sql/pipeline.sql" --model "$root/models/default.json" \
  --set "transactions.count=$count" --set "transactions.users=$users" --quiet --no-ui 2>&1)
grep -E "^(continuing|done|first)" <<<"$out"
grep -E "restored checkpoint" <<<"$out" | sed -E 's/^([0-9T:.-]+)Z.*/\1/' | while read -r t; do
  echo "  state restored $(python3 -c "import datetime,sys; s=float(sys.argv[1]); t=datetime.datetime.fromisoformat(sys.argv[2]).replace(tzinfo=datetime.timezone.utc).timestamp(); print(f'{t-s:.2f}')" "$start" "$t") s after start"
done
