#!/usr/bin/env python3
"""The reference for txguard's explanations: shap's TreeExplainer on the scikit-learn
IsolationForests of make_cases.py, for tests/shap_parity.rs.

    python make_shap_cases.py OUTDIR [--rows N]

For each case OUTDIR/<case>/ holds model.json (models/export_sklearn.py), X.bin (float64,
row-major) and shap.bin (float64, row-major: one contribution per feature);
OUTDIR/cases.json lists the cases with their shapes, shap's expected_value and the
cover-weighted one. Deep forests get fewer rows (TreeSHAP costs leaves x depth^2 per tree and
row).

Why two expected values: path-dependent TreeSHAP weighs each branch by the training samples
that reached it, and shap reads those covers from `weighted_n_node_samples`, so with
`bootstrap=True` (a sample drawn k times weighs k) its contributions sum to the path length
minus the *cover-weighted* mean leaf value. shap's IsoTree computes the expected_value it
reports from the unweighted `n_node_samples` instead, so for bootstrap forests shap's own
values do not add up (measured: 0.012 path-length units on a 20-tree forest). The explanation
txguard gives is the one that adds up: contributions equal to shap's, expected value equal to
`cover_expected_value` below, which is computed here from the sklearn arrays directly.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import shap
from sklearn.ensemble import IsolationForest

from make_cases import cases, export, score_rows

# Leaf-depth^2 steps per case: bounds the time shap (and the test) spend on deep forests.
BUDGET = 2e9


def cover_expected_value(model):
    """Mean over trees of the cover-weighted mean leaf value (depth + c(n_node_samples))."""
    from sklearn.ensemble._iforest import _average_path_length

    total = 0.0
    for est in model.estimators_:
        t = est.tree_
        depth = np.zeros(t.node_count)
        for i in range(t.node_count):
            for c in (t.children_left[i], t.children_right[i]):
                if c != -1:
                    depth[c] = depth[i] + 1
        leaves = np.flatnonzero(t.children_left == -1)
        value = depth[leaves] + _average_path_length(t.n_node_samples[leaves])
        w = t.weighted_n_node_samples[leaves]
        total += float((w * value).sum() / t.weighted_n_node_samples[0])
    return total / len(model.estimators_)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--rows", type=int, default=2000)
    args = ap.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261202)
    listing = []
    warnings.simplefilter("ignore")
    for i, (name, train, params) in enumerate(cases(rng)):
        model = IsolationForest(random_state=i, **params).fit(train)
        d = out / name
        d.mkdir(exist_ok=True)
        feats = [f"f{j}" for j in range(train.shape[1])]
        export(model, d / "model.json", features=feats, name=name, X=train)
        work = sum(
            (e.tree_.children_left == -1).sum() * max(e.tree_.max_depth, 1) ** 2
            for e in model.estimators_
        )
        rows = int(max(20, min(args.rows, BUDGET / max(work, 1))))
        X = score_rows(rng, train, rows, model)
        try:
            explainer = shap.TreeExplainer(model)
        except IndexError as e:
            # shap 0.51 indexes a one-feature tree's feature list with the leaf marker (-2).
            print(f"{name}: skipped, shap cannot read this forest ({e})")
            continue
        t0 = time.perf_counter()
        values = np.asarray(explainer.shap_values(X), dtype=np.float64)
        print(f"{name}: {rows} rows explained by shap in {time.perf_counter() - t0:.2f} s")
        X.tofile(d / "X.bin")
        values.astype("<f8").tofile(d / "shap.bin")
        listing.append(
            {
                "name": name,
                "rows": int(len(X)),
                "features": int(X.shape[1]),
                "expected_value": float(np.ravel(explainer.expected_value)[0]),
                "cover_expected_value": cover_expected_value(model),
                "bootstrap": bool(model.bootstrap),
            }
        )
    (out / "cases.json").write_text(json.dumps(listing, indent=1))
    print(f"wrote {len(listing)} cases to {out} (shap {shap.__version__})")


if __name__ == "__main__":
    main()
