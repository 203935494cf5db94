#!/usr/bin/env python3
"""Fit real scikit-learn IsolationForests over many configurations, export them with
models/export_sklearn.py and write what scikit-learn returns, for tests/sklearn_parity.rs.

    python make_cases.py OUTDIR [--rows N]

For each case OUTDIR/<case>/ holds model.json, X.bin (float64, row-major), and
score_samples.bin, decision.bin (float64) and predict.bin (int8). OUTDIR/cases.json lists
the cases with their shapes.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import IsolationForest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "models"))
from export_sklearn import export  # noqa: E402


def blobs(rng, n, d):
    centers = rng.normal(0, 5, size=(3, d))
    x = centers[rng.integers(0, 3, n)] + rng.normal(0, 1, size=(n, d))
    return x


def score_rows(rng, train, n, model):
    """Rows to score: training rows, new inliers, outliers, and values at split thresholds."""
    d = train.shape[1]
    parts = [train[rng.integers(0, len(train), n // 4)]]
    lo, hi = train.min(axis=0), train.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    parts.append(lo + rng.random((n // 4, d)) * span)
    parts.append(lo - span + rng.random((n // 8, d)) * 3 * span)
    # Rows whose values sit exactly on, just below and just above tree thresholds (in f32).
    thr = []
    for est, feats in zip(model.estimators_, model.estimators_features_):
        t = est.tree_
        inner = np.where(t.children_left != -1)[0]
        thr.extend((int(np.asarray(feats)[t.feature[i]]), t.threshold[i]) for i in inner)
    m = n - sum(len(p) for p in parts)
    edge = train[rng.integers(0, len(train), m)].copy()
    if thr:
        picks = rng.integers(0, len(thr), m)
        for r, k in enumerate(picks):
            f, t = thr[k]
            t32 = np.float32(t)
            choice = r % 3
            if choice == 0:
                v = t32
            elif choice == 1:
                v = np.nextafter(t32, np.float32(-np.inf))
            else:
                v = np.nextafter(t32, np.float32(np.inf))
            edge[r, f] = float(v)
    parts.append(edge)
    return np.ascontiguousarray(np.vstack(parts)[:n], dtype=np.float64)


def cases(rng):
    x8 = blobs(rng, 4000, 8)
    yield "default", x8, {}
    yield "max_samples_int", x8, {"max_samples": 100}
    yield "max_samples_float", x8, {"max_samples": 0.3}
    yield "max_samples_large", blobs(rng, 12000, 4), {"max_samples": 3000, "n_estimators": 20}
    yield "deep_trees_pointer_layout", blobs(rng, 30000, 3), {
        "max_samples": 20000,
        "n_estimators": 5,
    }
    yield "bootstrap", x8, {"bootstrap": True}
    yield "max_features_float", x8, {"max_features": 0.5}
    yield "max_features_int", x8, {"max_features": 3}
    yield "contamination", x8, {"contamination": 0.05}
    yield "contamination_bootstrap_features", x8, {
        "contamination": 0.2,
        "bootstrap": True,
        "max_features": 0.6,
    }
    c = x8.copy()
    c[:, 2] = 7.0
    yield "constant_column", c, {}
    yield "all_constant", np.full((500, 3), 1.5), {}
    dup = np.repeat(blobs(rng, 20, 4), 50, axis=0)
    yield "duplicate_rows", dup, {}
    yield "one_feature", blobs(rng, 2000, 1), {}
    # The rank kernel selects among up to 16 features (14: padded pairs; 16: all bits).
    yield "fourteen_features", blobs(rng, 4000, 14), {}
    yield "sixteen_features", blobs(rng, 4000, 16), {}
    yield "integers_with_ties", rng.integers(0, 5, size=(3000, 5)).astype(float), {}
    yield "tiny_1_row", blobs(rng, 1, 3), {}
    yield "tiny_2_rows", blobs(rng, 2, 3), {}
    yield "tiny_5_rows", blobs(rng, 5, 3), {"contamination": 0.2}
    yield "one_tree", x8, {"n_estimators": 1}
    wide = rng.lognormal(3, 2, size=(3000, 6)) * np.array([1e-6, 1e-3, 1, 1e3, 1e6, 1e9])
    yield "wide_magnitudes_not_f32", wide + 1e-9 * rng.random(wide.shape), {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261122)
    listing = []
    warnings.simplefilter("ignore")
    for i, (name, train, params) in enumerate(cases(rng)):
        model = IsolationForest(random_state=i, **params).fit(train)
        d = out / name
        d.mkdir(exist_ok=True)
        feats = [f"f{j}" for j in range(train.shape[1])]
        export(model, d / "model.json", features=feats, name=name, X=train)
        np.asarray(train, dtype="<f8").tofile(d / "train.bin")
        X = score_rows(rng, train, args.rows, model)
        X.tofile(d / "X.bin")
        model.score_samples(X).astype("<f8").tofile(d / "score_samples.bin")
        model.decision_function(X).astype("<f8").tofile(d / "decision.bin")
        model.predict(X).astype("i1").tofile(d / "predict.bin")
        listing.append({"name": name, "rows": int(len(X)), "features": int(X.shape[1])})
    (out / "cases.json").write_text(json.dumps(listing, indent=1))
    print(f"wrote {len(listing)} cases to {out}")


if __name__ == "__main__":
    main()
