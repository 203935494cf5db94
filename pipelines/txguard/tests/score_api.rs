//! The online scoring API of a running `txguard run` (the default pipeline, paced): `POST
//! /api/v1/score` answers one transaction or an array of them with the `explained` view's row —
//! features from the live per-user windows, score, flag, model version — and every bad
//! request with a status and a reason (not JSON, a broken contract, a late time, an unknown
//! view or source); many clients at once each get their own answers; `/metrics` counts them;
//! the token rules hold (a token required when set, and none accepted from beyond the machine
//! without one). Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{http_get, http_post, start_paced as start};
use serde_json::Value;

/// The source's watermark once it has one and `rows` rows are in the windows (µs since the
/// epoch).
fn watermark(addr: &str, rows: u64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = http_get(addr, "/api/status");
        let status: Value = serde_json::from_str(&body).expect("status json");
        let on_time = status["sources"][0]["on_time"].as_u64().unwrap_or(0);
        if let Some(w) = status["sources"][0]["watermark"].as_str()
            && on_time >= rows
        {
            return chrono::DateTime::parse_from_rfc3339(w)
                .expect("rfc 3339")
                .timestamp_micros();
        }
        assert!(
            Instant::now() < deadline,
            "no watermark within 60 s: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn at(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("time")
        .to_rfc3339()
}

fn tx(id: &str, user: &str, amount: f64, micros: i64) -> String {
    serde_json::json!({
        "transaction_id": id, "user_id": user, "amount": amount, "ts": at(micros),
        "merchant": "m_0042", "category": "electronics", "location": "Berlin",
        "channel": "online", "lat": 52.52, "lon": 13.40,
    })
    .to_string()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

#[test]
fn scoring_api_answers_from_the_live_windows_and_says_why_when_it_cannot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = start(
        dir.path(),
        "127.0.0.1:0",
        &["--no-checkpoints", "--set", "transactions.count=200000"],
        &[],
    );
    let addr = run.addr.clone();
    // 20k rows in: about two per user.
    let w = watermark(&addr, 20_000);
    let soon = w + 60_000_000;
    let path = "/api/v1/score";

    // One transaction: the scored view's row, from the user's live windows.
    let (code, a) = http_post(&addr, path, &[], &tx("api-1", "u000042", 129.5, soon));
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["source"], "transactions");
    assert_eq!(a["view"], "explained");
    assert!(a["watermark"].is_string(), "{a}");
    let row = &a["row"];
    assert_eq!(row["transaction_id"], "api-1");
    assert_eq!(row["amount"], 129.5);
    let score = row["score"].as_f64().expect("score");
    assert!(score > 0.0 && score <= 1.0, "{row}");
    assert!(row["is_anomaly"].is_boolean(), "{row}");
    let (_, status) = http_get(&addr, "/api/status");
    let status: Value = serde_json::from_str(&status).expect("json");
    let loaded = status["model_versions"][0].as_str().expect("model version");
    let version = row["model_version"].as_str().expect("model_version");
    assert!(
        loaded.ends_with(&format!(" {version}")),
        "{loaded} vs {row}"
    );
    assert!(row["risky_category"] == 1.0, "{row}");
    assert_eq!(
        row["explanation"].is_null(),
        row["is_anomaly"] == false,
        "flagged rows, and only they, are explained: {row}"
    );
    // A flagged one: why, feature by feature, adding up to its path length.
    let (code, a) = http_post(&addr, path, &[], &tx("api-big", "u000043", 48_000.0, soon));
    assert_eq!(code, 200, "{a}");
    let row = &a["row"];
    assert_eq!(row["is_anomaly"], true, "{row}");
    let e: Value = serde_json::from_str(row["explanation"].as_str().expect("explanation"))
        .expect("explanation is JSON");
    let contributions = e["contributions"].as_array().expect("contributions");
    assert_eq!(contributions.len(), 14, "{e}");
    let total: f64 = contributions
        .iter()
        .map(|c| c["contribution"].as_f64().expect("contribution"))
        .sum();
    let (h, expected) = (
        e["path_length"].as_f64().expect("path_length"),
        e["expected_path_length"]
            .as_f64()
            .expect("expected_path_length"),
    );
    assert!((expected + total - h).abs() < 1e-9, "{e}");
    assert!(h < expected, "a flagged row has short paths: {e}");
    // The users have history by now: probed rows count with it (and it is not changed: the
    // same row again gives the same features).
    let many: Vec<String> = (0..100)
        .map(|u| tx(&format!("h-{u}"), &format!("u{u:06}"), 20.0, soon))
        .collect();
    let many = format!("[{}]", many.join(","));
    let (code, first) = http_post(&addr, path, &[], &many);
    assert_eq!(code, 200, "{first}");
    let with_history = first["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["row"]["tx_count_24h"].as_i64().unwrap_or(0) >= 2)
        .count();
    assert!(
        with_history >= 30,
        "{with_history} of 100 users had history"
    );
    let (_, again) = http_post(&addr, path, &[], &many);
    let features = |a: &Value| -> Vec<Value> {
        a["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["row"].clone())
            .collect()
    };
    // Rows streamed in meanwhile may have moved some users' windows: those whose counts did
    // not move must have the same answer.
    let (one, two) = (features(&first), features(&again));
    let unchanged = one
        .iter()
        .zip(&two)
        .filter(|(a, b)| a["tx_count_24h"] == b["tx_count_24h"])
        .count();
    assert!(
        unchanged >= 50,
        "only {unchanged} of 100 users' counts stayed"
    );
    for (a, b) in one.iter().zip(&two) {
        if a["tx_count_24h"] == b["tx_count_24h"] && a["tx_count_10m"] == b["tx_count_10m"] {
            assert_eq!(a["score"], b["score"], "probing changed nothing:\n{a}\n{b}");
        }
    }

    // Bad requests: each a status and a reason.
    let cases: Vec<(String, &str, u16, &str)> = vec![
        ("{\"transaction_id\": ".into(), path, 422, "json"),
        ("[{\"a\": 1}".into(), path, 400, "not a JSON array"),
        ("[]".into(), path, 400, "no transaction"),
        (
            serde_json::json!({"transaction_id": "x", "amount": 1.0, "ts": at(soon)}).to_string(),
            path,
            422,
            "user_id is NOT NULL",
        ),
        (tx("neg", "u000001", -5.0, soon), path, 422, "CHECK"),
        (
            tx("old", "u000001", 5.0, w - 60_000_000),
            path,
            422,
            "watermark",
        ),
        (
            tx("x", "u000001", 5.0, soon),
            "/api/v1/score?view=user_window_stats",
            404,
            "scored (from transactions)",
        ),
        (
            tx("x", "u000001", 5.0, soon),
            "/api/v1/score?source=elsewhere",
            404,
            "no source table elsewhere",
        ),
    ];
    for (body, p, want, says) in &cases {
        let (code, a) = http_post(&addr, p, &[], body);
        assert_eq!(code, *want, "{p} {body}: {a}");
        let msg = a["error"].as_str().unwrap_or_default();
        assert!(
            msg.to_lowercase().contains(&says.to_lowercase()),
            "{p} {body}: {msg}"
        );
    }

    // Many rows in one request: each its own answer, in order.
    let batch = format!(
        "[{},{},{}]",
        tx("b-1", "u000007", 10.0, soon),
        tx("b-2", "", 10.0, soon),
        tx("b-3", "u000008", 2500.0, soon)
    );
    let (code, a) = http_post(&addr, path, &[], &batch);
    assert_eq!(code, 200, "{a}");
    let results = a["results"].as_array().expect("results");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["row"]["transaction_id"], "b-1");
    assert_eq!(results[1]["kind"], "rejected", "{}", results[1]);
    assert_eq!(results[2]["row"]["transaction_id"], "b-3");

    // Clients at once: every answer is its own request's.
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let id = format!("c{c}-{i}");
                    let user = format!("u{:06}", (c * 40 + i) % 10000);
                    let (code, a) = http_post(&addr, path, &[], &tx(&id, &user, 42.0, soon));
                    assert_eq!(code, 200, "{a}");
                    assert_eq!(a["row"]["transaction_id"], id.as_str());
                    assert_eq!(a["row"]["user_id"], user.as_str());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }

    // /metrics counts them: 1 + 1 + 2 + 1 + 320 good requests; rows by outcome.
    let (_, m) = http_get(&addr, "/metrics");
    assert_eq!(
        metric(&m, "txguard_score_api_requests_total{code=\"2xx\"}"),
        325.0
    );
    assert_eq!(
        metric(&m, "txguard_score_api_requests_total{code=\"4xx\"}"),
        cases.len() as f64
    );
    assert_eq!(
        metric(&m, "txguard_score_api_rows_total{outcome=\"scored\"}"),
        524.0
    );
    assert_eq!(
        metric(&m, "txguard_score_api_rows_total{outcome=\"late\"}"),
        1.0
    );
    assert_eq!(
        metric(&m, "txguard_score_api_request_duration_seconds_count"),
        325.0 + cases.len() as f64
    );
    // The pipeline's loop says where its time went: batches ran through the dataflow, and
    // the scoring requests were answered in at least one and at most one turn each.
    let step = |s: &str| {
        metric(
            &m,
            &format!("txguard_pipeline_step_seconds_count{{step=\"{s}\"}}"),
        )
    };
    assert!(step("process") > 0.0, "no process step in /metrics");
    let served = step("serve");
    assert!(
        (1.0..=325.0 + cases.len() as f64).contains(&served),
        "serve turns: {served}"
    );
    drop(run);
}

#[test]
fn the_token_rules_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = tx("t-1", "u000001", 10.0, 4_102_444_800_000_000); // 2100-01-01
    let path = "/api/v1/score";
    {
        let run = start(
            dir.path(),
            "127.0.0.1:0",
            &["--no-checkpoints", "--set", "transactions.count=100000"],
            &[("TXGUARD_API_TOKEN", "s3cret-token")],
        );
        watermark(&run.addr, 0);
        for (headers, want) in [
            (vec![], 401),
            (vec![("Authorization", "Bearer wrong")], 401),
            (vec![("Authorization", "s3cret-token")], 401),
            (vec![("Authorization", "Bearer s3cret-token")], 200),
        ] {
            let (code, a) = http_post(&run.addr, path, &headers, &body);
            assert_eq!(code, want, "{headers:?}: {a}");
        }
        // The counters stay open (for Prometheus).
        let (status, _) = http_get(&run.addr, "/metrics");
        assert!(status.contains(" 200 "), "{status}");
    }
    // Beyond the machine without a token: refused, and the log says what to do.
    let run = start(
        dir.path(),
        "0.0.0.0:0",
        &["--no-checkpoints", "--set", "transactions.count=100000"],
        &[],
    );
    let port = run.addr.rsplit(':').next().expect("port").to_string();
    let local = format!("127.0.0.1:{port}");
    watermark(&local, 0);
    let (code, a) = http_post(&local, path, &[], &body);
    assert_eq!(code, 403, "{a}");
    assert!(
        a["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--api-token"),
        "{a}"
    );
    let mut run = run;
    let log = run.stop();
    assert!(log.contains("without an API token"), "{log}");
}
