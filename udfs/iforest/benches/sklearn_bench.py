#!/usr/bin/env python3
"""scikit-learn side of benches/vs_sklearn.rs: makes the data, fits and times sklearn.

    python sklearn_bench.py OUTDIR [--rows N]

Writes OUTDIR/X.bin (float64 row-major, N x 8), OUTDIR/model.json (the fitted forest,
exported), OUTDIR/score_samples.bin, OUTDIR/shap.bin (the shap package's TreeExplainer
contributions for the first EXPLAIN_ROWS rows, when shap is installed), and prints a JSON line
of timings (seconds, best of 3, one thread).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "models"))
from export_sklearn import export  # noqa: E402


EXPLAIN_ROWS = 2000


def best_of(n, f):
    best = float("inf")
    out = None
    for _ in range(n):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    n, d = args.rows, 8
    X = rng.normal(size=(n, d)) * rng.uniform(0.5, 50, size=d) + rng.uniform(-10, 10, size=d)
    X[: n // 100] *= 6  # 1% outliers
    X = np.ascontiguousarray(X)
    X.tofile(out / "X.bin")
    fit_s, model = best_of(
        3,
        lambda: IsolationForest(n_estimators=100, max_samples=256, random_state=0, n_jobs=1).fit(X),
    )
    export(model, out / "model.json", features=[f"f{j}" for j in range(d)])
    score_s, scores = best_of(3, lambda: model.score_samples(X))
    scores.astype("<f8").tofile(out / "score_samples.bin")
    one = X[:1]
    k = 2000
    t = time.perf_counter()
    for i in range(k):
        model.score_samples(X[i : i + 1])
    one_row_s = (time.perf_counter() - t) / k
    import sklearn

    explain_s, shap_version = None, None
    try:
        import shap
    except ImportError:
        shap = None
    if shap is not None:
        explainer = shap.TreeExplainer(model)
        rows = X[:EXPLAIN_ROWS]
        explain_s, values = best_of(1, lambda: explainer.shap_values(rows))
        np.asarray(values, dtype="<f8").tofile(out / "shap.bin")
        shap_version = shap.__version__
    print(
        json.dumps(
            {
                "sklearn": sklearn.__version__,
                "rows": n,
                "features": d,
                "fit_s": fit_s,
                "score_s": score_s,
                "one_row_s": one_row_s,
                "explain_rows": EXPLAIN_ROWS,
                "explain_s": explain_s,
                "shap": shap_version,
            }
        )
    )
    del one


if __name__ == "__main__":
    main()
