#!/usr/bin/env bash
# End-to-end benchmark Kafka -> pipeline -> Delta (sql/pipeline_kafka.sql) against a local
# tansu broker (in-memory storage, loopback, built by scripts/setup.sh) on a release build:
# `txguard produce` fills a 4-partition topic, then the pipeline reads it to its end
# ('source.stop_at_end') and prints its summary.
# Usage: scripts/bench_kafka.sh [COUNT]   (default 1000000 transactions)
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000000}"
root="$PWD"
tansu="${TXGUARD_TANSU:-$HOME/.cache/txguard/tansu/bin/tansu}"
[ -x "$tansu" ] || { echo "no tansu at $tansu: run scripts/setup.sh" >&2; exit 1; }
cargo build --release -q -p txguard
bin="${CARGO_TARGET_DIR:-$root/target}/release/txguard"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work="$(mktemp -d)"
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
  --storage-engine memory://tansu/ > "$work/tansu.log" 2>&1 &
broker=$!
trap 'kill $broker 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
"$tansu" topic create transactions --partitions 4 --broker "tcp://127.0.0.1:$port" > /dev/null
"$tansu" topic create alerts --partitions 2 --broker "tcp://127.0.0.1:$port" > /dev/null
echo "== txguard produce: $count transactions" >&2
start=$(date +%s.%N)
"$bin" produce --bootstrap-servers "127.0.0.1:$port" --count "$count" --quiet
end=$(date +%s.%N)
python3 -c "print(f'produced $count in {$end - $start:.2f} s ({$count / ($end - $start) / 1000:.0f}k/s)')"
echo "== txguard run sql/pipeline_kafka.sql" >&2
(cd "$work" && "$bin" run "$root/sql/pipeline_kafka.sql" --model "$root/models/default.json" \
  --set "transactions.bootstrap_servers=127.0.0.1:$port" --set transactions.source.stop_at_end=true \
  --set "alerts.bootstrap_servers=127.0.0.1:$port" --quiet --no-ui 2>&1 |
  grep -E "^(done|first|peak|  source|  sink transactions_scored|  sink alerts)")
