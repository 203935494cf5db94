"""Which of the given transaction ids the Delta table holds (read with delta-rs's Python
package, an independent reader), as JSON: {"rows": N, "missing": [...]}.

usage: in_sink.py TABLE_PATH IDS_JSON_FILE
"""

import json
import sys

from deltalake import DeltaTable, QueryBuilder

qb = QueryBuilder().register("t", DeltaTable(sys.argv[1]))
ids = qb.execute("SELECT transaction_id FROM t").read_all().column("transaction_id").to_pylist()
held = set(ids)
with open(sys.argv[2]) as f:
    shown = json.load(f)["shown"]
print(json.dumps({"rows": len(ids), "missing": [i for i in shown if i not in held]}))
