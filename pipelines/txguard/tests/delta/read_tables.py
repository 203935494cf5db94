"""Reads the Delta tables a pipeline run wrote, with delta-rs's Python package (an independent
reader: its own log replay and query engine), and prints what the test checks as JSON."""

import json
import sys

from deltalake import DeltaTable, QueryBuilder


def scalar(qb, sql):
    table = qb.execute(sql).read_all()
    return table.column(0)[0].as_py()


def main(root):
    out = {}
    for name in ["transactions_scored", "anomalies", "dead_letters", "user_window_stats"]:
        dt = DeltaTable(f"{root}/{name}")
        qb = QueryBuilder().register("t", dt)
        info = {
            "version": dt.version(),
            "columns": [[f.name, str(f.type)] for f in dt.schema().fields],
            "rows": scalar(qb, "SELECT COUNT(*) FROM t"),
        }
        if name in ("transactions_scored", "anomalies"):
            info["distinct_ids"] = scalar(qb, "SELECT COUNT(DISTINCT transaction_id) FROM t")
            info["null_scores"] = scalar(qb, "SELECT COUNT(*) FROM t WHERE score IS NULL")
            info["bad_scores"] = scalar(qb, "SELECT COUNT(*) FROM t WHERE score <= 0 OR score > 1")
        if name == "transactions_scored":
            info["flagged"] = scalar(
                qb, "SELECT COUNT(*) FROM t WHERE is_anomaly")
            info["fraud"] = scalar(qb, "SELECT COUNT(*) FROM t WHERE is_fraud")
            info["versions"] = scalar(qb, "SELECT COUNT(DISTINCT model_version) FROM t")
            info["score_sum"] = scalar(qb, "SELECT SUM(score) FROM t")
            info["amount_sum"] = scalar(qb, "SELECT SUM(amount) FROM t")
        if name == "user_window_stats":
            info["tx_total"] = scalar(qb, "SELECT SUM(tx_count) FROM t")
            info["anomalies_total"] = scalar(qb, "SELECT SUM(anomalies) FROM t")
            info["bad_windows"] = scalar(
                qb,
                "SELECT COUNT(*) FROM t WHERE window_end - window_start <> INTERVAL '1 minute'",
            )
        out[name] = info
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
