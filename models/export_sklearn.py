#!/usr/bin/env python3
"""Export a fitted scikit-learn IsolationForest to a txguard model file.

Command line:
    python models/export_sklearn.py SRC.pkl DST.json [--features a,b,...] [--name NAME]

SRC is a pickle or joblib file holding a fitted ``sklearn.ensemble.IsolationForest`` (or a
``Pipeline`` whose last step is one: its earlier steps are NOT exported; apply them in SQL).
Feature names come from the model (``feature_names_in_``, set when it was fitted on a
DataFrame); otherwise pass ``--features``.

From Python:
    from export_sklearn import export
    export(model, "models/my_model.json", X=X_train, y=y_train)   # X/y optional: card metrics

txguard scores exported models exactly as ``score_samples`` / ``decision_function`` /
``predict`` do (to 1e-12), except that a row with NaN/inf gets no score (NULL) in txguard.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import pickle
import sys
from pathlib import Path

FORMAT = "txguard-iforest"
FORMAT_VERSION = 1


class ExportError(Exception):
    """Raised with a message that says what to do."""


def _json_safe(value):
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return _json_safe(value.item())
    except ImportError:  # pragma: no cover
        pass
    return repr(value)


def _unwrap(model):
    from sklearn.ensemble import IsolationForest

    if hasattr(model, "steps") and model.steps:
        model = model.steps[-1][1]
    if not isinstance(model, IsolationForest):
        raise ExportError(
            f"expected a fitted sklearn.ensemble.IsolationForest, got {type(model).__name__}"
        )
    if not hasattr(model, "estimators_"):
        raise ExportError("the IsolationForest is not fitted: call fit() before exporting")
    return model


def _fingerprint(X):
    import numpy as np

    a = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    h = hashlib.sha256()
    h.update(np.array(a.shape, dtype="<u8").tobytes())
    h.update(a.astype("<f4").tobytes())
    return "sha256:" + h.hexdigest()


def to_model_dict(model, features=None, name=None, X=None, y=None, notes=None) -> dict:
    """The txguard model file content for a fitted IsolationForest."""
    import numpy as np
    import sklearn

    model = _unwrap(model)
    n_features = int(model.n_features_in_)
    if features is None:
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            raise ExportError(
                "the model has no feature names (it was fitted on an array, not a DataFrame): "
                "pass --features a,b,... in the model's column order"
            )
        features = [str(f) for f in names]
    features = list(features)
    if len(features) != n_features:
        raise ExportError(
            f"{len(features)} feature names given but the model has {n_features} features"
        )
    if len(set(features)) != len(features):
        raise ExportError("feature names must be unique")

    trees = []
    for est, feats in zip(model.estimators_, model.estimators_features_):
        t = est.tree_
        feats = np.asarray(feats)
        left = t.children_left.astype(np.int64)
        right = t.children_right.astype(np.int64)
        is_leaf = left == -1
        feature = np.where(is_leaf, -2, feats[np.where(is_leaf, 0, t.feature)]).astype(np.int64)
        threshold = np.where(is_leaf, -2.0, t.threshold).astype(np.float64)
        tree = {
            "children_left": left.tolist(),
            "children_right": right.tolist(),
            "feature": feature.tolist(),
            "threshold": [float(v) for v in threshold],
            "n_node_samples": t.n_node_samples.astype(np.int64).tolist(),
        }
        # Bootstrap draws counted with repetition: only explanations read them (as shap does).
        weighted = t.weighted_n_node_samples.astype(np.float64)
        if not np.array_equal(weighted, t.n_node_samples):
            tree["weighted_n_node_samples"] = [float(v) for v in weighted]
        trees.append(tree)

    params = {k: _json_safe(v) for k, v in sorted(model.get_params().items())}
    params["max_samples_"] = int(model.max_samples_)
    card = {
        "name": name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "trainer": f"scikit-learn {sklearn.__version__} (models/export_sklearn.py)",
        "training_rows": None,
        "training_seconds": None,
        "data_fingerprint": None,
        "data_source": None,
        "params": params,
        "metrics": None,
        "notes": notes,
    }
    if X is not None:
        card["training_rows"] = int(len(X))
        card["data_fingerprint"] = _fingerprint(X)
        card["training_profile"] = {
            "features": [_deciles(c) for c in np.asarray(X, dtype=np.float32).astype(np.float64).T],
            "flagged_rate": float((model.predict(X) == -1).mean()),
        }
        if y is not None:
            from sklearn.metrics import average_precision_score, roc_auc_score

            yb = np.asarray(y).astype(bool)
            s = -model.score_samples(X)
            both = 0 < yb.sum() < len(yb)
            card["metrics"] = {
                "labelled_rows": int(len(yb)),
                "positives": int(yb.sum()),
                "roc_auc": float(roc_auc_score(yb, s)) if both else None,
                "pr_auc": float(average_precision_score(yb, s)) if yb.any() else None,
                "flagged_rate": float((model.predict(X) == -1).mean()),
            }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "features": features,
        "max_samples": int(model.max_samples_),
        "offset": float(model.offset_),
        "trees": trees,
        "card": card,
    }


def _deciles(values) -> dict:
    """One feature's training bins for drift checks, as txguard train makes them
    (udfs/iforest/src/drift.rs): deciles without repeats, shares of the values per bin."""
    import numpy as np

    v = np.sort(values[np.isfinite(values)])
    n = len(v)
    if n == 0:
        return {"edges": [], "fractions": [1.0]}
    edges = []
    for k in range(1, 10):
        e = float(v[min(k * n // 10, n - 1)])
        if not edges or edges[-1] != e:
            edges.append(e)
    if edges and edges[-1] == float(v[-1]):
        edges.pop()
    # Bin i holds (edges[i-1], edges[i]]: the number of edges below the value.
    bins = np.searchsorted(np.asarray(edges, dtype=np.float64), v, side="left")
    counts = np.bincount(bins, minlength=len(edges) + 1)
    return {"edges": edges, "fractions": [float(c) / n for c in counts]}


def export(model, path, features=None, name=None, X=None, y=None, notes=None) -> dict:
    """Write the txguard model file for a fitted IsolationForest to ``path``."""
    d = to_model_dict(model, features=features, name=name, X=X, y=y, notes=notes)
    Path(path).write_text(json.dumps(d, allow_nan=False))
    return d


def load_pickle(path):
    """Load a fitted model from a joblib or pickle file."""
    p = Path(path)
    if not p.exists():
        raise ExportError(f"{path}: no such file")
    try:
        import joblib

        return joblib.load(p)
    except ImportError:
        pass
    except Exception as e:  # joblib failed: maybe a plain pickle
        try:
            with p.open("rb") as f:
                return pickle.load(f)
        except Exception:
            raise ExportError(f"{path}: not a joblib or pickle file ({e})") from e
    with p.open("rb") as f:
        return pickle.load(f)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Export a fitted scikit-learn IsolationForest (pickle/joblib) to a txguard model file."
    )
    ap.add_argument("src", help="pickle or joblib file of a fitted IsolationForest")
    ap.add_argument("dst", help="txguard model file to write (JSON)")
    ap.add_argument("--features", help="comma-separated feature names, in the model's column order")
    ap.add_argument("--name", help="model name for the model card")
    args = ap.parse_args(argv)
    try:
        model = load_pickle(args.src)
        feats = args.features.split(",") if args.features else None
        d = export(model, args.dst, features=feats, name=args.name)
    except ExportError as e:
        print(f"export_sklearn: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.dst}: {len(d['trees'])} trees, features {', '.join(d['features'])}, "
        f"max_samples {d['max_samples']}, offset {d['offset']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
