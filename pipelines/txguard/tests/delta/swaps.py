"""What a hot-swap test checks in a Delta sink, read with delta-rs's Python package: for each
commit (table version) the rows it added per model_version, in commit order, and every
row's model_version, score and the features named on the command line, as JSON.

usage: swaps.py TABLE_DIR FEATURE...
"""

import json
import sys

from deltalake import DeltaTable, QueryBuilder


def counts(dt):
    qb = QueryBuilder().register("t", dt)
    table = qb.execute(
        "SELECT model_version, COUNT(*) AS n FROM t GROUP BY model_version"
    ).read_all()
    return {
        table.column(0)[i].as_py(): table.column(1)[i].as_py()
        for i in range(table.num_rows)
    }


def main(path, features):
    dt = DeltaTable(path)
    latest = dt.version()
    commits, before = [], {}
    for v in range(latest + 1):
        now = counts(DeltaTable(path, version=v))
        added = {k: n - before.get(k, 0) for k, n in now.items() if n != before.get(k, 0)}
        if added:
            commits.append({"version": v, "added": added})
        before = now
    cols = ", ".join(["model_version", "score"] + features)
    table = QueryBuilder().register("t", dt).execute(f"SELECT {cols} FROM t").read_all()
    rows = [
        [table.column(j)[i].as_py() for j in range(table.num_columns)]
        for i in range(table.num_rows)
    ]
    print(json.dumps({"commits": commits, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
