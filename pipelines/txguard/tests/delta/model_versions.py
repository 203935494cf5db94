"""The distinct model_version values of a Delta table (delta-rs's Python package and its
query engine), as JSON.

usage: model_versions.py TABLE_DIR
"""

import json
import sys

from deltalake import DeltaTable, QueryBuilder

qb = QueryBuilder().register("t", DeltaTable(sys.argv[1]))
col = qb.execute("SELECT DISTINCT model_version FROM t").read_all().column(0)
print(json.dumps(sorted(col[i].as_py() for i in range(len(col)))))
