#!/usr/bin/env bash
# One unpaced run of a pipeline file on a release build, in a fresh folder, without
# checkpoints or console; prints its rate (transactions/s) from `txguard run`'s summary.
# Alternate configurations when comparing (the machines are shared and noisy).
# Usage: scripts/bench_throughput.sh TXGUARD_BIN PIPELINE.sql MODEL.json [COUNT=3000000]
set -euo pipefail
bin="$(realpath "$1")"; sql="$(realpath "$2")"; model="$(realpath "$3")"; count="${4:-3000000}"
d="$(mktemp -d)"
trap 'rm -rf "$d"' EXIT
cd "$d"
"$bin" run "$sql" --model "$model" --no-checkpoints --no-ui --quiet \
  --set "transactions.count=$count" 2>&1 | grep -E "^done in" |
  sed -E 's/^done in ([0-9.]+) s: ([0-9]+) events.*/\1 \2/' | awk '{printf "%.0f\n", $2/$1}'
