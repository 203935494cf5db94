//! The web console of a running `txguard run` (the default pipeline, paced), through its REST
//! API (`/api/v1/…`) and in a real browser: the dataflow with live counts, anomalies as a table
//! and a server-sent-event stream (filters, bad filters), dead letters, the charts' samples,
//! models, checkpoints, the OpenAPI document, the SQL workbench's checks (errors at their line)
//! and previews over the live stream (bounded; hostile SQL and oversized requests refused), and
//! the token rules. The browser test (Debian's chromium, Playwright for Python, both installed
//! by scripts/setup.sh) checks each page against the API, writes the README's screenshots
//! (into `TXGUARD_SCREENSHOTS` when set), and that the anomalies it showed are in the Delta
//! sink. Every wait is bounded.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Run, http_post, python_json, repo, start_paced, try_http};
use serde_json::{Value, json};

/// `GET path` as JSON: the status code and the body.
fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    let (status, body) = try_http(addr, "GET", path, &headers, "")
        .unwrap_or_else(|| panic!("nothing answers GET {path} on {addr}"));
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {status}: not JSON ({e}): {body}"));
    (code, json)
}

/// Polls `GET path` until `done` holds (at most 60 s); the last answer.
fn until(addr: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = get(addr, path, None);
        if code == 200 && done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60 s: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start(dir: &std::path::Path, ui: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    // The generator's own density of event time (as the model was trained on; paced at the
    // wall clock's, the data is ~4000× denser and a third of it is flagged), and late events
    // (up to 8 s behind, 5 s allowed) for dead letters to look at.
    let mut args = vec![
        "--set",
        "transactions.events_per_second=1",
        "--set",
        "transactions.max_delay_ms=8000",
    ];
    args.extend_from_slice(extra);
    start_paced(dir, ui, &args, env)
}

/// A run only looked at: no scoring API, no checkpoints.
const LOOKING: &[&str] = &["--no-score-api", "--no-checkpoints"];

#[test]
fn the_console_api_shows_the_dataflow_anomalies_and_dead_letters_of_a_live_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = start(dir.path(), "127.0.0.1:0", LOOKING, &[]);
    let addr = run.addr.clone();

    // The dataflow: every node of the plan, rows moving, state keyed by user.
    let flow = until(&addr, "/api/v1/dataflow", "rows in the dataflow", |v| {
        v["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["kind"] == "sink" && n["rows"].as_u64() > Some(0))
        })
    });
    let nodes = flow["nodes"].as_array().expect("nodes");
    let relation = |name: &str| {
        nodes
            .iter()
            .find(|n| n["relation"] == name)
            .unwrap_or_else(|| panic!("no node {name}: {flow}"))
    };
    assert_eq!(relation("transactions")["kind"], "source");
    assert_eq!(relation("anomalies")["kind"], "sink");
    assert!(relation("features")["input"].is_u64());
    let over = nodes
        .iter()
        .find(|n| n["kind"] == "over")
        .expect("an OVER operator");
    assert_eq!(over["stateful"], true);
    for n in nodes {
        if let Some(input) = n["input"].as_u64() {
            assert!(input < n["id"].as_u64().expect("id"), "{n}");
        }
    }
    assert!(
        flow["sinks"]
            .as_array()
            .expect("sinks")
            .iter()
            .all(|k| k["queue_fill"]
                .as_f64()
                .is_some_and(|f| (0.0..=1.0).contains(&f))),
        "{flow}"
    );
    let keyed = until(&addr, "/api/v1/dataflow", "keys in the OVER state", |v| {
        v["nodes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n["kind"] == "over" && n["keys"].as_u64() > Some(10))
        })
    });
    assert!(keyed["steps"].as_array().is_some_and(|s| !s.is_empty()));

    let (code, st) = get(&addr, "/api/v1/status", None);
    assert_eq!((code, st["running"].as_bool()), (200, Some(true)), "{st}");
    let (_, metrics) = common::http_get(&addr, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("txguard_operator_keys{")
                && l.contains("kind=\"over\"")
                && !l.ends_with(" 0")),
        "operator keys in /metrics"
    );

    // The pipeline's SQL and relations.
    let (code, p) = get(&addr, "/api/v1/pipeline", None);
    assert_eq!(code, 200);
    assert!(
        p["sql"]
            .as_str()
            .is_some_and(|s| s.contains("CREATE TABLE transactions"))
    );
    assert_eq!(p["anomalies_table"], "anomalies");

    // Anomalies: rows of the sink, filters, bad filters.
    let a = until(&addr, "/api/v1/anomalies", "anomalies", |v| {
        v["rows"].as_array().is_some_and(|r| r.len() >= 5)
    });
    let rows = a["rows"].as_array().expect("rows");
    assert!(rows[0]["row"]["transaction_id"].is_string(), "{a}");
    assert!(
        rows.windows(2)
            .all(|w| w[0]["seq"].as_u64() > w[1]["seq"].as_u64()),
        "newest first"
    );
    let user = rows[0]["row"]["user_id"]
        .as_str()
        .expect("user")
        .to_string();
    let (code, by_user) = get(&addr, &format!("/api/v1/anomalies?user_id={user}"), None);
    assert_eq!(code, 200);
    assert!(
        by_user["rows"].as_array().is_some_and(
            |r| !r.is_empty() && r.iter().all(|r| r["row"]["user_id"] == user.as_str())
        ),
        "{by_user}"
    );
    let (_, high) = get(&addr, "/api/v1/anomalies?min_score=0.7&limit=1000", None);
    assert!(
        high["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["row"]["score"].as_f64() >= Some(0.7)),
        "{high}"
    );
    for (path, says) in [
        ("/api/v1/anomalies?colour=red", "no column colour"),
        ("/api/v1/anomalies?min_score=high", "not a number"),
        ("/api/v1/anomalies?limit=-1", "not a whole number"),
        ("/api/v1/dead-letters?nope=1", "no column nope"),
    ] {
        let (code, e) = get(&addr, path, None);
        assert_eq!(code, 400, "{path}: {e}");
        assert!(
            e["error"].as_str().is_some_and(|m| m.contains(says)),
            "{path}: {e}"
        );
    }
    let (code, e) = get(&addr, "/api/v1/nothing-here", None);
    assert_eq!(code, 404, "{e}");

    // The stream: an anomaly arrives as a server-sent event.
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET /api/v1/anomalies/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(got.contains("event: anomaly") && got.contains("transaction_id")) {
        assert!(Instant::now() < deadline, "no anomaly event in 30 s: {got}");
        let n = s.read(&mut buf).expect("read the stream");
        assert!(n > 0, "the stream closed: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("text/event-stream"), "{got}");
    drop(s);

    // Dead letters: the late events, with their reason and payload.
    let d = until(&addr, "/api/v1/dead-letters", "late dead letters", |v| {
        v["rows"].as_array().is_some_and(|r| !r.is_empty())
    });
    let first = &d["rows"][0]["row"];
    assert!(
        first["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("late by")),
        "{d}"
    );
    assert!(
        first["raw"]
            .as_str()
            .is_some_and(|r| r.contains("transaction_id")),
        "{d}"
    );
    assert!(d["by_reason"]["late by N ms"].as_u64() > Some(0), "{d}");

    // Charts, models, checkpoints, the OpenAPI document.
    let h = until(&addr, "/api/v1/history", "samples", |v| {
        v["samples"].as_array().is_some_and(|s| s.len() >= 3)
    });
    assert!(
        h["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .any(|s| s["rows_per_second"].as_f64() > Some(0.0)),
        "{h}"
    );
    let (_, m) = get(&addr, "/api/v1/models", None);
    let model = &m["models"][0];
    assert_eq!(model["model"]["name"], "default");
    assert!(
        model["model"]["features"]
            .as_array()
            .is_some_and(|f| f.len() == 14),
        "{m}"
    );
    assert!(model["live"]["scored"].as_u64() > Some(0), "{m}");
    assert!(
        model["score_histogram"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "{m}"
    );
    let (_, c) = get(&addr, "/api/v1/checkpoints", None);
    assert_eq!(c["enabled"], false, "{c}");
    let (code, doc) = get(&addr, "/api/v1/openapi.json", None);
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/anomalies/stream",
        "/api/v1/preview",
        "/api/v1/score",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} in the OpenAPI document"
        );
    }
    drop(run);
}

#[test]
fn the_sql_workbench_checks_with_the_planner_and_previews_the_live_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = start(dir.path(), "127.0.0.1:0", LOOKING, &[]);
    let addr = run.addr.clone();
    until(&addr, "/api/status", "rows", |v| {
        v["sources"][0]["on_time"].as_u64() > Some(1000)
    });
    let check = |sql: &str| {
        let (code, c) = http_post(
            &addr,
            "/api/v1/sql/check",
            &[],
            &json!({ "sql": sql }).to_string(),
        );
        assert_eq!(code, 200, "{c}");
        c
    };

    // The pipeline file itself is valid; a typo is an error at its line and column.
    let text = std::fs::read_to_string(repo().join("sql/pipeline.sql")).expect("read");
    let c = check(&text);
    assert_eq!(
        (c["kind"].as_str(), c["ok"].as_bool()),
        (Some("pipeline"), Some(true)),
        "{c}"
    );
    // The planner names the view that fails (as `txguard validate` does).
    let line = text
        .lines()
        .position(|l| l.starts_with("CREATE VIEW history"))
        .expect("the history view")
        + 1;
    let c = check(&text.replace("FROM transactions;", "FROM transactionz;"));
    assert_eq!(c["ok"], false, "{c}");
    assert_eq!(c["errors"][0]["line"].as_u64(), Some(line as u64), "{c}");
    assert!(c["errors"][0]["column"].as_u64() > Some(0), "{c}");
    assert!(
        c["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("transactionz")),
        "{c}"
    );

    // Queries against the running pipeline's relations.
    let c = check("SELECT user_id, score FROM scored WHERE is_anomaly");
    assert_eq!(
        (c["kind"].as_str(), c["ok"].as_bool()),
        (Some("select"), Some(true)),
        "{c}"
    );
    assert_eq!(c["columns"][1][0], "score");
    let c = check("SELECT nope FROM transactions");
    assert!(
        c["ok"] == false
            && c["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nope")),
        "{c}"
    );
    let c = check("SELECT amount FROM\n  transactions WHERE");
    assert_eq!(c["errors"][0]["line"].as_u64(), Some(2), "{c}");

    // A preview: rows of the live stream that pass the WHERE, stopped at the row count.
    let preview = |body: Value| http_post(&addr, "/api/v1/preview", &[], &body.to_string());
    let (code, p) = preview(json!({
        "sql": "SELECT user_id, amount, tx_count_24h FROM features WHERE amount > 20",
        "max_rows": 25, "max_seconds": 20,
    }));
    assert_eq!(code, 200, "{p}");
    let rows = p["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 25, "{p}");
    assert_eq!(p["stopped"], "rows", "{p}");
    assert!(
        rows.iter().all(|r| r["amount"].as_f64() > Some(20.0)),
        "{p}"
    );
    assert!(
        rows.iter().all(|r| r["tx_count_24h"].as_u64() >= Some(1)),
        "{p}"
    );
    // An aggregate over what went by in the time given.
    let (code, p) = preview(json!({
        "sql": "SELECT count(*) AS n, max(score) AS top FROM scored", "max_seconds": 1.5,
    }));
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["stopped"], "time", "{p}");
    assert!(p["rows"][0]["n"].as_u64() > Some(100), "{p}");

    // Hostile or bad input: refused with the planner's message, nothing run.
    for (sql, says) in [
        ("DROP TABLE transactions", "a query only"),
        (
            "INSERT INTO anomalies SELECT * FROM anomalies",
            "a query only",
        ),
        ("SELECT * FROM no_such_table", "no_such_table"),
        ("SELECT 1; DROP TABLE features", ""),
        ("WITH x AS (SELECT 1) DELETE FROM transactions", ""),
    ] {
        let (code, e) = preview(json!({ "sql": sql }));
        assert_eq!(code, 400, "{sql}: {e}");
        assert!(
            e["error"].as_str().is_some_and(|m| m.contains(says)),
            "{sql}: {e}"
        );
    }
    // A query that would never end is cut at its row bound.
    let (code, p) = preview(json!({
        "sql": "SELECT * FROM generate_series(1, 100000000000) AS t(v)", "max_rows": 10,
    }));
    assert_eq!(code, 200, "{p}");
    assert_eq!(p["rows"].as_array().map(Vec::len), Some(10), "{p}");
    let (code, e) = preview(json!({ "sql": "SELECT 1", "limit": 3 }));
    assert_eq!(code, 400, "an unknown field: {e}");
    let (code, e) = http_post(&addr, "/api/v1/preview", &[], "{not json");
    assert_eq!(code, 400, "{e}");
    let huge = json!({ "sql": format!("SELECT 1 -- {}", "x".repeat(2 << 20)) }).to_string();
    let (status, _) = try_http(&addr, "POST", "/api/v1/preview", &[], &huge).expect("an answer");
    assert!(status.contains(" 413 "), "{status}");

    // One preview at a time per client.
    let slow =
        json!({ "sql": "SELECT count(*) AS n FROM transactions", "max_seconds": 4 }).to_string();
    let a2 = addr.clone();
    let first = std::thread::spawn(move || http_post(&a2, "/api/v1/preview", &[], &slow));
    std::thread::sleep(Duration::from_millis(800));
    let (code, e) = preview(json!({ "sql": "SELECT 1 AS one" }));
    assert_eq!(code, 429, "{e}");
    assert_eq!(first.join().expect("first preview").0, 200);
    let (code, p) = preview(json!({ "sql": "SELECT 1 AS one" }));
    assert_eq!((code, p["rows"][0]["one"].as_u64()), (200, Some(1)), "{p}");

    // The run went on the whole time.
    let (_, s) = get(&addr, "/api/status", None);
    assert_eq!(s["running"], true, "{s}");
    drop(run);
}

#[test]
fn the_console_works_in_a_browser_and_its_anomalies_are_in_the_sink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shots = std::env::var("TXGUARD_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).expect("screenshot folder");
    const TOKEN: &str = "console-test-token";
    // Beyond loopback, so a token is required (given by TXGUARD_UI_TOKEN).
    let mut run = start(
        dir.path(),
        "0.0.0.0:0",
        &["--checkpoint-interval", "500ms"],
        &[("TXGUARD_UI_TOKEN", TOKEN)],
    );
    let port = run.addr.rsplit(':').next().expect("port").to_string();
    let url = format!("http://127.0.0.1:{port}");
    let script = repo().join("pipelines/txguard/tests/console/browser.py");
    let python = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let result = dir.path().join("browser.json");
    let mut cmd = std::process::Command::new(python);
    cmd.arg(&script)
        .args([url.as_str(), TOKEN, shots.to_str().expect("utf8")])
        .arg(&result)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (ok, out) = common::bounded(cmd);
    assert!(ok, "the browser test failed:\n{out}");
    let shown: Value = std::fs::read_to_string(&result)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| panic!("no result in {}:\n{out}", result.display()));
    let shown: Vec<String> = shown["shown"]
        .as_array()
        .expect("shown ids")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    assert!(shown.len() >= 5, "{out}");
    for page in [
        "dataflow",
        "anomalies",
        "dashboard",
        "sql",
        "models",
        "dead-letters",
        "checkpoints",
    ] {
        let f = shots.join(format!("console-{page}.png"));
        assert!(
            f.metadata().is_ok_and(|m| m.len() > 10_000),
            "{} written",
            f.display()
        );
    }

    // Ctrl-C: the run takes a last checkpoint and commits; what the page showed is there.
    let pid = run.child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    let deadline = Instant::now() + Duration::from_secs(60);
    while run.child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the run did not stop within 60 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = run.stop();
    let table = dir.path().join("data/anomalies");
    let held = python_json(
        "console/in_sink.py",
        &[
            table.to_str().expect("utf8"),
            result.to_str().expect("utf8"),
        ],
    );
    assert!(
        held["rows"].as_u64() >= Some(shown.len() as u64),
        "{held}\n{log}"
    );
    assert_eq!(
        held["missing"],
        json!([]),
        "anomalies the page showed are not in the sink:\n{log}"
    );
}
