"""Digests of the Delta tables a pipeline run wrote, read with delta-rs's Python package (an
independent reader, its own query engine): per table its row count, distinct keys and a
SHA-256 over every row as text (sorted; processing-time columns left out), so two runs'
outputs compare exactly: digest.py ROOT TABLE..."""

import json
import sys

from deltalake import DeltaTable, QueryBuilder

# Columns that say when a row was processed, not what it is.
PROCESSING_TIME = {"received_at"}
KEYS = ("transaction_id", "position")


def first(qb, sql):
    table = qb.execute(sql).read_all()
    return [table.column(i)[0].as_py() for i in range(table.num_columns)]


def digest(path):
    dt = DeltaTable(path)
    cols = [f.name for f in dt.schema().fields if f.name not in PROCESSING_TIME]
    qb = QueryBuilder().register("t", dt)
    text = ", ".join(f"coalesce(CAST(\"{c}\" AS VARCHAR), '<null>')" for c in cols)
    key = next((c for c in KEYS if c in cols), None)
    distinct = f"count(DISTINCT \"{key}\")" if key else "NULL"
    rows, keys, sha = first(
        qb,
        f"SELECT count(*), {distinct}, "
        f"encode(sha256(string_agg(r, chr(10) ORDER BY r)), 'hex') "
        f"FROM (SELECT *, concat_ws('|', {text}) AS r FROM t)",
    )
    return {"rows": rows, "distinct_keys": keys, "sha256": sha}


def main(root, tables):
    print(json.dumps({t: digest(f"{root}/{t}") for t in tables}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
