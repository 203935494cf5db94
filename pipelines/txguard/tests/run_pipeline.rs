//! The default pipeline end to end, as a user runs it: `txguard train --pipeline` fits a model
//! on the pipeline's own feature view, `txguard run` runs `sql/pipeline.sql` in a fresh
//! directory, and the Delta tables it writes under `./data` are read back by an independent
//! reader (delta-rs's Python package, installed by scripts/setup.sh) with the expected row
//! counts and columns.

mod common;

use std::path::Path;
use std::process::Command;

use common::{http_get, read_tables, repo, txguard};

/// `txguard run` of the default pipeline with an endless source paced at 2000 tx/s and
/// 200 ms checkpoints, in `dir`, with stderr piped; `extra` are further arguments.
fn spawn_endless(dir: &Path, extra: &[&str]) -> std::process::Child {
    let pipeline = repo().join("sql/pipeline.sql");
    let model = repo().join("models/default.json");
    Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args([
            "run",
            pipeline.to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
            "--set",
            "transactions.count=1000000000",
            "--set",
            "transactions.rate=2000",
            "--checkpoint-interval",
            "200ms",
            "--quiet",
        ])
        .args(extra)
        .current_dir(dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn")
}

fn columns(v: &serde_json::Value) -> Vec<String> {
    v["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c[0].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn default_pipeline_writes_delta_tables_an_independent_reader_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = repo().join("sql/pipeline.sql");
    let pipeline = pipeline.to_str().expect("utf8");
    let model = dir.path().join("model.json");
    let model = model.to_str().expect("utf8");

    // Train on the pipeline's own features (another seed than the run's).
    let (ok, _, err) = txguard(
        dir.path(),
        &[
            "train",
            "--pipeline",
            pipeline,
            "--set",
            "transactions.count=30000",
            "--set",
            "transactions.seed=11",
            "--contamination",
            "0.01",
            "-o",
            model,
        ],
    );
    assert!(ok, "train failed:\n{err}");
    assert!(err.contains("label is_fraud"), "{err}");

    let n = 20_000;
    let (ok, _, err) = txguard(
        dir.path(),
        &[
            "run",
            pipeline,
            "--model",
            model,
            "--set",
            &format!("transactions.count={n}"),
            "--checkpoint-interval",
            "100ms",
            "--quiet",
            "--no-ui",
        ],
    );
    assert!(ok, "run failed:\n{err}");
    assert!(
        err.contains("sink transactions_scored: 20000 rows")
            && err.contains("-> ./data/transactions_scored"),
        "the run says what it wrote where:\n{err}"
    );

    let t = read_tables(&dir.path().join("data"));
    let scored = &t["transactions_scored"];
    assert_eq!(scored["rows"], n, "{t}");
    assert_eq!(scored["distinct_ids"], n, "every transaction exactly once");
    assert_eq!(scored["null_scores"], 0);
    assert_eq!(scored["bad_scores"], 0, "scores in (0, 1]");
    assert_eq!(scored["versions"], 1);
    assert!(
        scored["version"].as_i64().expect("version") >= 2,
        "several epochs: {t}"
    );
    let flagged = scored["flagged"].as_i64().expect("flagged");
    assert!(
        flagged > 0 && flagged < n / 10,
        "about 1% flagged: {flagged}"
    );
    assert!(
        scored["fraud"].as_i64().expect("fraud") > 0,
        "labelled fraud is generated"
    );
    assert_eq!(
        columns(scored),
        [
            "transaction_id",
            "user_id",
            "ts",
            "amount",
            "merchant",
            "category",
            "location",
            "channel",
            "fraud_pattern",
            "is_fraud",
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
            "score",
            "is_anomaly",
            "model_version"
        ]
    );
    let anomalies = &t["anomalies"];
    assert_eq!(anomalies["rows"], flagged, "anomalies = the flagged rows");
    assert_eq!(anomalies["distinct_ids"], flagged);
    assert_eq!(
        anomalies["explanation_errors"],
        serde_json::json!([]),
        "every anomaly explained, its contributions adding up to its path length"
    );
    assert_eq!(anomalies["explained_feature_sets"], 1);
    assert_eq!(
        anomalies["explained_features"], 14,
        "the model's 14 features"
    );
    let spread = anomalies["explained_c_spread"]
        .as_f64()
        .expect("anomalies explained");
    assert!(
        spread < 1e-9,
        "each explanation's path length is the one its score comes from (spread {spread})"
    );
    let stats = &t["user_window_stats"];
    assert_eq!(
        stats["tx_total"], n,
        "every transaction in one 1-minute window"
    );
    assert_eq!(stats["anomalies_total"], flagged);
    assert_eq!(stats["bad_windows"], 0);
    assert_eq!(
        columns(stats),
        [
            "user_id",
            "window_start",
            "window_end",
            "tx_count",
            "amount_sum",
            "amount_max",
            "anomalies"
        ]
    );
    assert_eq!(t["dead_letters"]["rows"], 0);

    // The scored table is a history to train on: replay it through the same features.
    let (ok, _, err) = txguard(
        dir.path(),
        &[
            "train",
            "--pipeline",
            pipeline,
            "--set",
            "transactions.connector=delta",
            "--set",
            "transactions.type=source",
            "--set",
            "transactions.path=./data/transactions_scored",
            "-o",
            "from_delta.json",
        ],
    );
    assert!(ok, "train from Delta failed:\n{err}");
    assert!(
        err.contains(&format!("trained 100 trees on {n} rows")),
        "{err}"
    );
    assert_eq!(
        columns(&t["dead_letters"]),
        ["source", "position", "reason", "raw", "received_at"]
    );
}

#[test]
fn validate_prints_the_dataflow_and_bad_overrides_name_the_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = repo().join("sql/pipeline.sql");
    let pipeline = pipeline.to_str().expect("utf8");
    let model = repo().join("models/default.json");
    let model = model.to_str().expect("utf8");
    let (ok, out, err) = txguard(dir.path(), &["validate", pipeline, "--model", model]);
    assert!(ok, "{err}");
    assert!(out.contains("source transactions (generator)"), "{out}");
    assert!(
        out.contains("OVER (PARTITION BY user_id ORDER BY ts): count(*) 10m, count(*) 1h, sum("),
        "{out}"
    );
    assert!(
        out.contains("TUMBLE(1m) GROUP BY user_id: count(*)"),
        "{out}"
    );
    assert!(out.contains("sink user_window_stats (delta)"), "{out}");

    let (ok, _, err) = txguard(
        dir.path(),
        &[
            "run",
            pipeline,
            "--model",
            model,
            "--set",
            "transactions.user=5",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("connector generator has no option user (did you mean users?)"),
        "{err}"
    );
    assert!(
        err.contains("pipeline.sql:"),
        "names the file and line: {err}"
    );
    let (ok, _, err) = txguard(
        dir.path(),
        &["run", pipeline, "--model", model, "--set", "nope"],
    );
    assert!(!ok);
    assert!(
        err.contains("--set nope: expected table.option=value"),
        "{err}"
    );
}

#[test]
fn ctrl_c_checkpoints_or_drains_an_endless_paced_source() {
    for checkpoints in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: &[&str] = if checkpoints {
            &["--no-ui"]
        } else {
            &["--no-ui", "--no-checkpoints"]
        };
        let child = spawn_endless(dir.path(), extra);
        // Wait until the first commit landed, then interrupt.
        let log = dir.path().join("data/transactions_scored/_delta_log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::fs::read_dir(&log).map_or(0, |d| d.count()) < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no commit within 60 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a clean stop exits 0:\n{err}");
        let t = read_tables(&dir.path().join("data"));
        let rows = t["transactions_scored"]["rows"].as_i64().expect("rows");
        assert!(rows > 0, "{t}");
        assert!(
            err.contains(&format!("sink transactions_scored: {rows} rows")),
            "everything processed was committed ({rows} rows in the table):\n{err}"
        );
        let windowed = t["user_window_stats"]["tx_total"].as_i64().expect("total");
        if checkpoints {
            // The last checkpoint keeps the open windows (and held rows) for the next run.
            assert!(err.contains("taking a last checkpoint"), "{err}");
            assert!(windowed <= rows, "{windowed} > {rows}");
        } else {
            // Without checkpoints there is no next run to continue: drain and close them.
            assert!(err.contains("stopping: draining"), "{err}");
            assert_eq!(windowed, rows, "open windows were closed");
        }
    }
}

#[test]
fn web_ui_serves_the_page_status_and_prometheus_metrics_while_running() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = spawn_endless(dir.path(), &["--ui", "127.0.0.1:0"]);
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("a web UI line").expect("read");
        if let Some(rest) = line.strip_prefix("web UI: http://") {
            break rest.split('/').next().expect("addr").to_string();
        }
    };
    // Let some events flow.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        let (code, body) = http_get(&addr, "/api/status");
        assert!(code.contains("200"), "{code}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if v["sinks"][0]["committed_rows"].as_u64().unwrap_or(0) > 0 {
            break v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no commit within 60 s: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status["running"], true);
    assert_eq!(status["sources"][0]["name"], "transactions");
    assert_eq!(status["sinks"][0]["table"], "transactions_scored");
    assert_eq!(status["sinks"][0]["location"], "./data/transactions_scored");
    assert!(
        status["model_versions"][0]
            .as_str()
            .expect("model")
            .starts_with("default ")
    );

    let (code, page) = http_get(&addr, "/");
    assert!(code.contains("200"));
    assert!(page.contains("<title>txguard console</title>") && page.contains("/api/v1/dataflow"));

    let (code, metrics) = http_get(&addr, "/metrics");
    assert!(code.contains("200"));
    assert!(
        metrics.contains("# TYPE txguard_messages_recv_total counter"),
        "{metrics}"
    );
    let recv: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("txguard_messages_recv_total{source=\"transactions\"} "))
        .expect("transactions counter")
        .parse()
        .expect("number");
    assert!(recv > 0.0, "{metrics}");
    assert!(metrics.contains("txguard_sink_committed_rows_total{sink=\"anomalies\"}"));
    assert!(metrics.contains("txguard_watermark_seconds{source=\"transactions\"} 17"));

    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    for _ in lines.by_ref() {}
    assert!(child.wait().expect("wait").success());
}
