//! Hot swaps end to end: a running pipeline (the default one, paced) swaps its model on
//! `POST /api/v1/models/default/reload` and by polling its file; every Delta commit holds
//! rows of one model version only, the versions follow the swaps in order, and every row's
//! score is its own model's score of its features (recomputed here with the forest crate). A
//! corrupt model and one with other features are refused (422, a metric, the card's last
//! refusal) while the old one keeps scoring. The checkpoint names the model in use and keeps
//! a copy: a restart whose model file is gone continues with it. Every run is bounded.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    Run, bounded, http_get, http_post, newest_manifest, python_json, repo, start_paced_model,
    wait_recorded,
};
use serde_json::Value;
use txguard_iforest::Forest;

/// The default model's features, in order.
const FEATURES: [&str; 14] = [
    "log_amount",
    "tx_count_10m",
    "tx_count_1h",
    "tx_count_24h",
    "amount_mean_24h",
    "amount_std_24h",
    "amount_zscore",
    "amount_to_mean",
    "seconds_since_prev",
    "km_from_prev",
    "speed_kmh",
    "hour_of_day",
    "risky_category",
    "small_amounts_1h",
];

/// Trains a second model on the default pipeline's features (other data, other trees).
fn train(dir: &Path, out: &Path) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_txguard"));
    c.args(["train", "--pipeline"])
        .arg(repo().join("sql/pipeline.sql"))
        .args([
            "--set",
            "transactions.count=6000",
            "--set",
            "transactions.seed=77",
        ])
        .args([
            "--n-estimators",
            "40",
            "--seed",
            "9",
            "--contamination",
            "0.02",
            "-o",
        ])
        .arg(out)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (ok, err) = bounded(c);
    assert!(ok, "train failed:\n{err}");
}

/// Puts `text` at `path` whole (a rename), as a deploy should.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Rows the `transactions_scored` sink has committed.
fn committed(run: &Run) -> u64 {
    common::committed_rows(run, "transactions_scored")
}

/// Waits (≤ 90 s) until the scored sink has committed more than `rows`.
fn wait_committed(run: &Run, rows: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = committed(run);
        if n > rows {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "no rows committed beyond {rows} in 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn card(run: &Run) -> Value {
    let (_, body) = http_get(&run.addr, "/api/v1/models");
    let v: Value = serde_json::from_str(&body).expect("models json");
    v["models"][0]["model"].clone()
}

/// Waits (≤ 60 s) until the model in use is `version`.
fn wait_version(run: &Run, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while card(run)["version"] != version {
        assert!(
            Instant::now() < deadline,
            "the model did not become {version} within 60 s: {}",
            card(run)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn metric(run: &Run, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(&run.addr, "/metrics");
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The scored sink: per commit, rows added by model version; every row's version, score
/// and features.
fn sink(dir: &Path) -> Value {
    let table = dir.join("data/transactions_scored");
    let mut args = vec![table.to_str().expect("utf8").to_string()];
    args.extend(FEATURES.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    python_json("delta/swaps.py", &args)
}

/// Every commit holds one model version; the versions, commit after commit, are `order`
/// (each at least once, none out of turn); every row's score is its version's model's.
fn check_sink(dir: &Path, order: &[&Forest]) {
    let out = sink(dir);
    let mut seen: Vec<String> = Vec::new();
    for c in out["commits"].as_array().expect("commits") {
        let added = c["added"].as_object().expect("added");
        assert_eq!(
            added.len(),
            1,
            "commit {} holds rows of several models: {added:?}",
            c["version"]
        );
        let v = added.keys().next().expect("one").clone();
        if seen.last() != Some(&v) {
            seen.push(v);
        }
    }
    let want: Vec<String> = order.iter().map(|f| f.version().to_string()).collect();
    assert_eq!(
        seen, want,
        "the model versions, commit after commit: {}",
        out["commits"]
    );
    let rows = out["rows"].as_array().expect("rows");
    assert!(rows.len() > 1000, "{} rows", rows.len());
    for r in rows {
        let r = r.as_array().expect("row");
        let version = r[0].as_str().expect("model_version");
        let forest = order
            .iter()
            .find(|f| f.version() == version)
            .unwrap_or_else(|| panic!("a row scored by unknown model {version}"));
        let x: Vec<f64> = r[2..]
            .iter()
            .map(|v| v.as_f64().expect("feature"))
            .collect();
        let mut s = [0.0];
        forest.score_samples_rows(&x, &mut s).expect("score");
        let got = r[1].as_f64().expect("score");
        assert!(
            (got + s[0]).abs() < 1e-12,
            "a row of model {version} has score {got}, its model gives {}",
            -s[0]
        );
    }
}

#[test]
fn a_running_pipeline_swaps_models_between_epochs_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let a_text = std::fs::read_to_string(repo().join("models/default.json")).expect("model");
    let a = Forest::from_json(&a_text).expect("model A");
    let b_path = d.join("b.json");
    train(d, &b_path);
    let b_text = std::fs::read_to_string(&b_path).expect("model B");
    let b = Forest::from_json(&b_text).expect("model B");
    assert_ne!(a.version(), b.version());
    // B with its first feature renamed: a model for other SQL.
    let mut other: Value = serde_json::from_str(&b_text).expect("json");
    other["features"][0] = Value::from("log_amount_eur");
    let other = other.to_string();

    let model = d.join("model.json");
    replace(&model, &a_text);
    let mut run = start_paced_model(
        d,
        "127.0.0.1:0",
        &model,
        &["--model-poll", "0s", "--checkpoint-interval", "300ms"],
        &[],
    );
    let rows_a = wait_committed(&run, 0);
    assert_eq!(card(&run)["version"], a.version());

    // A reload of an unchanged file changes nothing.
    let (code, out) = http_post(&run.addr, "/api/v1/models/default/reload", &[], "");
    assert_eq!(
        (code, out["outcome"].as_str()),
        (200, Some("unchanged")),
        "{out}"
    );

    // The file now holds B: the reload answers once B scores, naming the epoch.
    replace(&model, &b_text);
    let (code, out) = http_post(&run.addr, "/api/v1/models/default/reload", &[], "");
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["outcome"], "swapped", "{out}");
    assert_eq!(out["version"], b.version());
    assert_eq!(out["previous"], a.version());
    assert!(out["epoch"].as_u64().is_some_and(|e| e > 1), "{out}");
    let rows_b = wait_committed(&run, rows_a + 2000);

    // A torn file and a model with other features are refused; B keeps scoring.
    replace(&model, &b_text[..b_text.len() / 2]);
    let (code, out) = http_post(&run.addr, "/api/v1/models/default/reload", &[], "");
    assert_eq!(
        (code, out["outcome"].as_str()),
        (422, Some("refused")),
        "{out}"
    );
    assert!(
        out["reason"]
            .as_str()
            .is_some_and(|r| r.contains("model.json")),
        "the reason names the file: {out}"
    );
    replace(&model, &other);
    let (code, out) = http_post(&run.addr, "/api/v1/models/default/reload", &[], "");
    assert_eq!(
        (code, out["outcome"].as_str()),
        (422, Some("refused")),
        "{out}"
    );
    assert!(
        out["reason"]
            .as_str()
            .is_some_and(|r| r.contains("log_amount_eur") && r.contains("features")),
        "{out}"
    );
    let (code, out) = http_post(&run.addr, "/api/v1/models/nope/reload", &[], "");
    assert_eq!(code, 404, "{out}");
    wait_committed(&run, rows_b + 1000);
    wait_recorded(d, b.version());
    let c = card(&run);
    assert_eq!(c["version"], b.version(), "{c}");
    assert_eq!(c["swaps"], 1, "{c}");
    assert_eq!(c["refused"], 2, "{c}");
    assert!(
        c["last_refusal"]
            .as_str()
            .is_some_and(|r| r.contains("log_amount_eur")),
        "{c}"
    );
    assert_eq!(
        metric(
            &run,
            "txguard_model_reloads_total{model=\"default\",outcome=\"swapped\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &run,
            "txguard_model_reloads_total{model=\"default\",outcome=\"refused\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &run,
            &format!(
                "txguard_model_info{{model=\"default\",version=\"{}\"}}",
                b.version()
            )
        ),
        Some(1.0)
    );
    // Each version's scores stay their own series.
    for f in [&a, &b] {
        let n = metric(
            &run,
            &format!(
                "txguard_score_count{{model=\"default\",version=\"{}\"}}",
                f.version()
            ),
        );
        assert!(n.is_some_and(|n| n > 0.0), "{} scored {n:?}", f.version());
    }
    let log = run.stop();
    assert!(
        log.contains(&format!(
            "model swapped: version {} scores from epoch",
            b.version()
        )),
        "{log}"
    );
    assert!(log.contains("refused a new model"), "{log}");
    check_sink(d, &[&a, &b]);

    // The checkpoint names B and keeps a copy of it.
    let m = newest_manifest(d).expect("a checkpoint");
    let models = &m["record"]["extra"]["models"];
    assert_eq!(models[0]["name"], "default", "{m}");
    assert_eq!(models[0]["version"], b.version(), "{m}");
    let copy = d
        .join("data/_checkpoints/pipeline")
        .join(models[0]["file"].as_str().expect("the copy's file"));
    assert_eq!(
        Forest::load(&copy).expect("the kept copy").version(),
        b.version()
    );

    let (ok, shown, err) = common::txguard(
        d,
        &[
            "checkpoints",
            "inspect",
            "--checkpoint-dir",
            "data/_checkpoints/pipeline",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        shown.contains(&format!("default: version {} from ", b.version())),
        "{shown}"
    );

    // A restart whose model file is gone continues with B (the checkpoint's), and polling
    // the file swaps back to A once it is there again.
    std::fs::remove_file(&model).expect("rm");
    let mut run = start_paced_model(
        d,
        "127.0.0.1:0",
        &model,
        &["--model-poll", "200ms", "--checkpoint-interval", "300ms"],
        &[],
    );
    let before = wait_committed(&run, 0);
    assert_eq!(card(&run)["version"], b.version());
    wait_committed(&run, before + 1000);
    replace(&model, &a_text);
    wait_version(&run, a.version());
    // Rows of the epochs before the swap may still be committing: a few epochs more.
    let rows = committed(&run);
    wait_committed(&run, rows + 5000);
    wait_recorded(d, a.version());
    let log = run.stop();
    assert!(
        log.contains("continuing with version")
            && log.contains("the last checkpoint was scored with"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "model swapped: version {} scores from epoch",
            a.version()
        )),
        "{log}"
    );
    check_sink(d, &[&a, &b, &a]);
}
