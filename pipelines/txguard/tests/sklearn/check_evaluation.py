"""Recomputes `txguard model evaluate`'s numbers from its scores.csv with scikit-learn (an
independent implementation) and checks the figures are well-formed SVG. Prints JSON: each
number as scikit-learn has it, and the problems found (an empty list when all agree).

usage: check_evaluation.py REPORT_DIR
"""

import csv
import json
import math
import sys
import xml.etree.ElementTree as ET

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, precision_score, recall_score, roc_auc_score

d = sys.argv[1]
r = json.load(open(f"{d}/report.json"))
rows = list(csv.DictReader(open(f"{d}/scores.csv")))
y = np.array([row["label"] == "true" for row in rows])
s = np.array([float(row["score"]) for row in rows])
flag = np.array([row["flagged"] == "true" for row in rows])
problems = []


def close(name, ours, theirs, tol=1e-9):
    if ours is None or not math.isclose(ours, theirs, rel_tol=0, abs_tol=tol):
        problems.append(f"{name}: report {ours}, scikit-learn {theirs}")


if len(rows) != r["rows"]:
    problems.append(f"rows: report {r['rows']}, scores.csv {len(rows)}")
if int(y.sum()) != r["positives"]:
    problems.append(f"positives: report {r['positives']}, scores.csv {int(y.sum())}")
if not np.array_equal(flag, s > r["threshold"]):
    problems.append("flagged is not score > threshold")
close("roc_auc", r["roc_auc"], roc_auc_score(y, s))
close("pr_auc", r["pr_auc"], average_precision_score(y, s))
tn, fp, fn, tp = confusion_matrix(y, flag).ravel()
at = r["at_threshold"]
for k, v in {"tp": tp, "fp": fp, "tn": tn, "fn": fn}.items():
    if at["confusion"][k] != int(v):
        problems.append(f"confusion {k}: report {at['confusion'][k]}, scikit-learn {int(v)}")
close("precision", at["precision"], precision_score(y, flag))
close("recall", at["recall"], recall_score(y, flag))
order = np.argsort(-s, kind="stable")
for t in r["top_k"]:
    hits = int(y[order[: t["k"]]].sum())
    close(f"top {t['k']} precision", t["precision"], hits / t["k"])
    close(f"top {t['k']} recall", t["recall"], hits / y.sum())
for name, groups in r["by"].items():
    # scores.csv leaves a NULL group value empty; the report calls it "(null)".
    col = [row[name] or "(null)" for row in rows]
    for g in groups:
        m = np.array([c == g["value"] for c in col])
        if int(m.sum()) != g["rows"]:
            problems.append(f"by {name}={g['value']}: rows {g['rows']}, scores.csv {int(m.sum())}")
        if g["fraud"] and g["recall"] is not None:
            close(f"by {name}={g['value']} recall", g["recall"], recall_score(y[m], flag[m]))
hist = r["histogram"]
if sum(b["legit"] + b["fraud"] for b in hist) != len(rows):
    problems.append("the histogram does not hold every row")
svgs = {}
for f in ["roc.svg", "pr.svg", "scores.svg"]:
    root = ET.parse(f"{d}/{f}").getroot()
    svgs[f] = len(list(root.iter("{http://www.w3.org/2000/svg}polyline"))) + len(
        list(root.iter("{http://www.w3.org/2000/svg}rect")))
html = open(f"{d}/report.html").read()
print(json.dumps({
    "roc_auc": roc_auc_score(y, s),
    "problems": problems,
    "svg_marks": svgs,
    "svgs_in_html": html.count("<svg "),
}))
