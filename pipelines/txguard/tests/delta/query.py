"""Runs SQL over one Delta table with delta-rs's Python package (an independent reader) and
prints the first value of each query's first row as a JSON list: query.py TABLE SQL..."""

import json
import sys

from deltalake import DeltaTable, QueryBuilder


def main(path, queries):
    qb = QueryBuilder().register("t", DeltaTable(path))
    out = []
    for q in queries:
        table = qb.execute(q).read_all()
        out.append(table.column(0)[0].as_py() if table.num_rows else None)
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
