//! Drift checks end to end: `txguard train` keeps the training deciles and flagged rate in
//! the card; `txguard run` over data like the training data says nothing, over data whose
//! events come 30× faster (per-user counts and gaps far from training) warns in the log
//! naming the drifted features; a running pipeline exports each feature's PSI on `/metrics`.
//! Every run is bounded (240 s).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bounded, http_get, repo};

fn run(dir: &Path, model: &Path, sets: &[&str]) -> String {
    let pipeline = repo().join("sql/pipeline.sql");
    let mut c = Command::new(env!("CARGO_BIN_EXE_txguard"));
    c.args(["run", pipeline.to_str().expect("utf8"), "--model"])
        .arg(model)
        .args(["--no-ui", "--quiet", "--no-checkpoints"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for s in sets {
        c.args(["--set", s]);
    }
    let (ok, err) = bounded(c);
    assert!(ok, "run failed:\n{err}");
    err
}

#[test]
fn runs_warn_when_live_features_drift_from_training_and_export_the_psi() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("model.json");
    let pipeline = repo().join("sql/pipeline.sql");
    let mut train = Command::new(env!("CARGO_BIN_EXE_txguard"));
    train
        .args(["train", "--pipeline", pipeline.to_str().expect("utf8")])
        .args([
            "--set",
            "transactions.count=30000",
            "--set",
            "transactions.seed=11",
        ])
        .args(["--contamination", "0.01", "-o"])
        .arg(&model)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (ok, err) = bounded(train);
    assert!(ok, "train failed:\n{err}");

    // The card keeps one profile per feature, and the flagged rate the offset gives.
    let card: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&model).expect("model")).expect("json");
    let profile = &card["card"]["training_profile"];
    let features = card["features"].as_array().expect("features");
    assert_eq!(
        profile["features"]
            .as_array()
            .expect("profiled features")
            .len(),
        features.len()
    );
    let trained = profile["flagged_rate"].as_f64().expect("flagged_rate");
    assert!(
        (trained - 0.01).abs() < 0.002,
        "trained flagged rate {trained}"
    );
    for f in profile["features"].as_array().expect("features") {
        let shares: f64 = f["fractions"]
            .as_array()
            .expect("fractions")
            .iter()
            .map(|v| v.as_f64().expect("share"))
            .sum();
        assert!((shares - 1.0).abs() < 1e-9, "{f}");
    }

    // Like the training data (another seed): no warning.
    let err = run(
        dir.path(),
        &model,
        &["transactions.count=30000", "transactions.seed=12"],
    );
    assert!(!err.contains("drift:"), "no drift expected:\n{err}");

    // 30 events a second instead of 1: the same users buy 30× more often.
    let err = run(
        dir.path(),
        &model,
        &[
            "transactions.count=30000",
            "transactions.seed=12",
            "transactions.events_per_second=30",
        ],
    );
    let warning = err
        .lines()
        .find(|l| l.contains("drift:"))
        .unwrap_or_else(|| panic!("a drift warning expected:\n{err}"));
    assert!(
        warning.contains("WARN") && warning.contains("seconds_since_prev"),
        "the warning names the drifted features: {warning}"
    );

    // A running pipeline exports the PSI of every feature and the flagged rates.
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(["run", pipeline.to_str().expect("utf8"), "--model"])
        .arg(&model)
        .args(["--ui", "127.0.0.1:0", "--quiet", "--no-checkpoints"])
        .args(["--drift-window", "2s", "--flagged-rate-window", "1s"])
        .args(["--set", "transactions.count=1000000000"])
        .args(["--set", "transactions.rate=5000"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the run prints its web UI address")
            .expect("read");
        if let Some(rest) = line.strip_prefix("web UI: http://") {
            break rest.split('/').next().expect("addr").to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let (_, m) = http_get(&addr, "/metrics");
        let psi = m
            .lines()
            .filter(|l| l.starts_with("txguard_feature_drift_psi{"))
            .count();
        if psi == features.len() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no PSI for every feature within 120 s:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // /api/status (what the console page shows) has the same per model.
    let (_, status) = http_get(&addr, "/api/status");
    let _ = child.kill();
    let _ = child.wait();
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    let m = &status["models"][0];
    assert_eq!(m["model"], "default", "{status}");
    assert_eq!(
        m["drift"].as_array().expect("drift per feature").len(),
        features.len(),
        "{m}"
    );
    assert_eq!(m["trained_flagged_rate"].as_f64(), Some(trained), "{m}");
    assert!(m["scored"].as_u64().expect("scored") > 0, "{m}");
    for f in features {
        let name = f.as_str().expect("name");
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with("txguard_feature_drift_psi{")
                    && l.contains(&format!("feature=\"{name}\""))
            })
            .unwrap_or_else(|| panic!("no PSI for {name}"));
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a number");
        assert!(v.is_finite() && v >= 0.0, "{line}");
    }
    let trained_line = metrics
        .lines()
        .find(|l| l.starts_with("txguard_trained_flagged_ratio{"))
        .expect("trained flagged ratio");
    assert!(
        trained_line.ends_with(&trained.to_string()),
        "{trained_line}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("txguard_flagged_ratio{")),
        "live flagged ratio:\n{metrics}"
    );
}
