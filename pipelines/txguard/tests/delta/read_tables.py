"""Reads the Delta tables a pipeline run wrote, with delta-rs's Python package (an independent
reader: its own log replay and query engine), and prints what the test checks as JSON."""

import json
import math
import sys

from deltalake import DeltaTable, QueryBuilder


def scalar(qb, sql):
    table = qb.execute(sql).read_all()
    return table.column(0)[0].as_py()


def explanations(qb):
    """Checks every anomaly's explanation: JSON, every feature listed once, most anomalous
    first, contributions summing to path_length - expected_path_length, and the path length
    the one its score comes from (score = 2^(-h / c) for one c, the model's)."""
    table = qb.execute("SELECT score, explanation FROM t").read_all()
    rows = [
        {"score": s, "explanation": e}
        for s, e in zip(table.column("score").to_pylist(), table.column("explanation").to_pylist())
    ]
    bad, cs, features = [], [], set()
    for r in rows:
        if r["explanation"] is None:
            bad.append("missing")
            continue
        e = json.loads(r["explanation"])
        contributions = e["contributions"]
        values = [c["contribution"] for c in contributions]
        names = [c["feature"] for c in contributions]
        features.add(tuple(sorted(names)))
        if len(set(names)) != len(names):
            bad.append(f"repeated features {names}")
        if values != sorted(values):
            bad.append(f"not sorted {values}")
        if abs(e["expected_path_length"] + sum(values) - e["path_length"]) > 1e-9:
            bad.append(f"does not add up {e}")
        cs.append(e["path_length"] / -math.log2(r["score"]))
    return {
        "explanation_errors": bad[:5],
        "explained_feature_sets": len(features),
        "explained_features": len(next(iter(features))) if features else 0,
        "explained_c_spread": (max(cs) - min(cs)) if cs else None,
    }


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
        if name == "anomalies":
            info.update(explanations(qb))
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
