#!/usr/bin/env bash
# A first look at txguard: synthetic transactions -> txguard train -> txguard score -> model card.
# Writes everything under data/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
out=data/demo
mkdir -p "$out"

echo "== building txguard (first build of the DataFusion stack takes a few minutes)" >&2
cargo build -q -p txguard
txguard=target/debug/txguard
[ -n "${CARGO_TARGET_DIR:-}" ] && txguard="$CARGO_TARGET_DIR/debug/txguard"

echo "== writing 200,000 synthetic transactions to $out/transactions.csv" >&2
python3 - "$out/transactions.csv" <<'PY'
import math, random, sys
random.seed(7)
users = [(random.lognormvariate(3.5, 0.8), random.uniform(8, 20)) for _ in range(2000)]
with open(sys.argv[1], "w") as f:
    f.write("transaction_id,user_id,amount,log_amount,hour,count_1h,amount_ratio,is_fraud\n")
    for i in range(200_000):
        u = random.randrange(len(users))
        mean, home_hour = users[u]
        fraud = random.random() < 0.005
        amount = random.lognormvariate(math.log(mean), 0.5) * (random.uniform(8, 40) if fraud else 1)
        hour = int(random.uniform(0, 5)) if fraud else int(random.gauss(home_hour, 2)) % 24
        count = random.randint(6, 30) if fraud else random.choice([0, 0, 1, 1, 2, 3])
        f.write(f"t{i},u{u},{amount:.2f},{math.log1p(amount):.6f},{hour},{count},{amount / mean:.6f},{int(fraud)}\n")
PY

echo "== txguard train" >&2
"$txguard" train --input "$out/transactions.csv" \
  --features log_amount,hour,count_1h,amount_ratio --label is_fraud \
  --contamination 0.005 --name demo -o "$out/model.json"

echo "== txguard score" >&2
"$txguard" score --model "$out/model.json" --input "$out/transactions.csv" --output "$out/scored.parquet"

echo "== txguard model info" >&2
"$txguard" model info "$out/model.json"
echo >&2
echo "Scored rows (input + score + is_anomaly): $out/scored.parquet" >&2
