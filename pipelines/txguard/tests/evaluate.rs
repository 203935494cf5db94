//! `txguard model evaluate`: the report's numbers equal scikit-learn's on the same scores
//! (ROC and PR AUC, confusion counts, precision and recall at the threshold and at top-k,
//! recall per group), the figures are SVG with marks in them, and bad arguments fail at
//! start naming what is wrong.

mod common;

use std::process::{Command, Stdio};

use common::{bounded, python_json, repo};

fn evaluate(dir: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_txguard"));
    c.args(["model", "evaluate", "--pipeline"])
        .arg(repo().join("sql/pipeline.sql"))
        .args(extra)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    bounded(c)
}

#[test]
fn the_evaluation_report_agrees_with_scikit_learn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = repo().join("models/default.json");
    let (ok, err) = evaluate(
        tmp.path(),
        &[
            "--model",
            model.to_str().expect("utf8"),
            "--set",
            "transactions.count=30000",
            "--by",
            "category,channel",
            "--top-k",
            "50,500",
            "-o",
            "rep",
            "--write-scores",
        ],
    );
    assert!(ok, "evaluate failed:\n{err}");
    assert!(err.contains("30000 rows ("), "{err}");
    let rep = tmp.path().join("rep");
    let check = python_json(
        "sklearn/check_evaluation.py",
        &[rep.to_str().expect("utf8")],
    );
    assert_eq!(check["problems"], serde_json::json!([]), "{check}");
    assert!(
        check["roc_auc"].as_f64().is_some_and(|a| a > 0.8),
        "{check}"
    );
    for f in ["roc.svg", "pr.svg", "scores.svg"] {
        assert!(
            check["svg_marks"][f].as_u64().is_some_and(|n| n > 1),
            "{check}"
        );
    }
    assert_eq!(check["svgs_in_html"], 3);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(rep.join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(report["rows"], 30000);
    // Recall per fraud pattern, without asking: the view names each fraud's pattern.
    let patterns: Vec<&str> = report["by"]["fraud_pattern"]
        .as_array()
        .expect("by fraud_pattern")
        .iter()
        .filter_map(|g| g["value"].as_str())
        .filter(|v| *v != "(null)")
        .collect();
    assert!(patterns.len() >= 3, "{patterns:?}");
    for p in &patterns {
        assert!(
            [
                "amount_spike",
                "velocity_burst",
                "impossible_travel",
                "odd_hour_category",
                "card_testing"
            ]
            .contains(p),
            "{p}"
        );
    }
    assert!(
        report["positives"].as_u64().is_some_and(|p| p > 50),
        "{report}"
    );
    if let Ok(dir) = std::env::var("TXGUARD_SCREENSHOTS") {
        // Renews docs/evaluation/: the figures of this report.
        let out = std::path::Path::new(&dir).join("../evaluation");
        std::fs::create_dir_all(&out).expect("docs/evaluation");
        for f in ["roc.svg", "pr.svg", "scores.svg", "report.html"] {
            std::fs::copy(rep.join(f), out.join(f)).expect("copy figure");
        }
    }
}

#[test]
fn bad_evaluation_arguments_fail_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = repo().join("models/default.json");
    let model = model.to_str().expect("utf8");
    let (ok, err) = evaluate(
        tmp.path(),
        &["--model", model, "--label", "nope", "-o", "r"],
    );
    assert!(
        !ok && err.contains("no column \"nope\" (the label, --label)"),
        "{err}"
    );
    let (ok, err) = evaluate(tmp.path(), &["--model", model, "--view", "nope", "-o", "r"]);
    assert!(!ok && err.contains("no view nope; its views: "), "{err}");
    let (ok, err) = evaluate(tmp.path(), &["--model", model, "--by", "nope", "-o", "r"]);
    assert!(!ok && err.contains("no column \"nope\" (--by)"), "{err}");
    let (ok, err) = evaluate(tmp.path(), &["--model", "missing.json", "-o", "r"]);
    assert!(!ok && err.contains("missing.json"), "{err}");
    let (ok, err) = evaluate(tmp.path(), &["--model", model, "--top-k", "0", "-o", "r"]);
    assert!(!ok && err.contains("--top-k"), "{err}");
    let (ok, err) = evaluate(
        tmp.path(),
        &[
            "--model",
            "models:/fraud@champion",
            "--into-card",
            "-o",
            "r",
        ],
    );
    assert!(
        !ok && err.contains("--into-card writes the model file's card"),
        "{err}"
    );
    assert!(
        !tmp.path().join("r").exists(),
        "nothing written on a bad argument"
    );
}

/// `--into-card`: the report's numbers and thinned curves go into the model file's card (the
/// version unchanged), `model info` prints them, and the file still loads and scores.
#[test]
fn an_evaluation_kept_in_the_card_matches_the_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("model.json");
    std::fs::copy(repo().join("models/default.json"), &model).expect("copy");
    let before = txguard_iforest::Forest::load(&model).expect("model");
    let (ok, err) = evaluate(
        tmp.path(),
        &[
            "--model",
            model.to_str().expect("utf8"),
            "--set",
            "transactions.count=8000",
            "-o",
            "rep",
            "--into-card",
        ],
    );
    assert!(ok, "evaluate failed:\n{err}");
    assert!(
        err.contains("version") && err.contains("unchanged"),
        "{err}"
    );
    let after = txguard_iforest::Forest::load(&model).expect("the card's model loads");
    assert_eq!(after.version(), before.version());
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("rep/report.json")).expect("report.json"),
    )
    .expect("json");
    let e = after.card().evaluation.clone().expect("card.evaluation");
    for k in ["roc_auc", "pr_auc", "rows", "positives", "threshold"] {
        assert_eq!(e[k], report[k], "{k}");
    }
    assert_eq!(e["recall"], report["at_threshold"]["recall"]);
    assert_eq!(
        e["data"]["sets"],
        serde_json::json!(["transactions.count=8000"])
    );
    for (curve, all) in [("roc", "roc"), ("pr", "pr")] {
        let pts = e[curve].as_array().expect("curve");
        let n = report[all].as_array().expect("report curve").len();
        assert!(
            pts.len() >= 2 && pts.len() <= 101.min(n),
            "{curve}: {} of {n}",
            pts.len()
        );
        let xs: Vec<f64> = pts.iter().map(|p| p[0].as_f64().expect("x")).collect();
        assert!(xs.windows(2).all(|w| w[0] <= w[1]), "{curve} x is monotone");
    }
    // The first and last ROC points are the corners.
    let roc = e["roc"].as_array().expect("roc");
    assert_eq!(roc[0], serde_json::json!([0.0, 0.0]));
    assert_eq!(roc[roc.len() - 1], serde_json::json!([1.0, 1.0]));
    let out = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(["model", "info"])
        .arg(&model)
        .output()
        .expect("model info");
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        info.contains("evaluation   ROC AUC") && info.contains("8000 rows"),
        "{info}"
    );
}
