#!/usr/bin/env python3
"""Fixture for tests/sklearn_cli.rs: fit scikit-learn IsolationForests and dump them the way
users do (joblib and pickle), plus a CSV to score and sklearn's own answers for it.

    python fit_and_dump.py OUTDIR
"""
import pickle
import sys
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(3)
X = rng.normal(size=(3000, 3)) * [10, 1, 100]
X[:30] *= 8
y = np.zeros(len(X), dtype=bool)
y[:30] = True

m = IsolationForest(n_estimators=40, contamination=0.02, random_state=1).fit(X)
joblib.dump(m, out / "model.joblib")
with open(out / "model.pkl", "wb") as f:
    pickle.dump(Pipeline([("iforest", m)]), f)
with open(out / "unfitted.pkl", "wb") as f:
    pickle.dump(IsolationForest(), f)
with open(out / "not_a_forest.pkl", "wb") as f:
    pickle.dump({"hello": 1}, f)
(out / "garbage.pkl").write_bytes(b"not a pickle at all")

Xs = rng.normal(size=(2000, 3)) * [10, 1, 100] * rng.choice([1, 6], size=(2000, 1), p=[0.95, 0.05])
with open(out / "input.csv", "w") as f:
    f.write("amount,velocity,distance\n")
    for row in Xs:
        f.write(",".join(repr(float(v)) for v in row) + "\n")
np.savetxt(out / "expected_score.txt", -m.score_samples(Xs), fmt="%.17g")
np.savetxt(out / "expected_predict.txt", m.predict(Xs), fmt="%d")
