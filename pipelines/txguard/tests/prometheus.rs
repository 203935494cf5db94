//! The monitoring as code against a real Prometheus (Debian's `prometheus`, installed by
//! scripts/setup.sh): `promtool check metrics` passes on the pipeline's `/metrics`;
//! `promtool test rules` passes on dashboards/prometheus/alerts_test.yml; a Prometheus started
//! with dashboards/prometheus/prometheus.yml (its target swapped for the test pipeline) scrapes
//! a running Kafka pipeline (tansu), and every PromQL expression of the Grafana dashboard and
//! every signal of the alert rules returns data through Prometheus' HTTP API.

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::repo;

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> String {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} is missing: run scripts/setup.sh (Debian package prometheus)"
    );
    name.to_string()
}

/// `GET` on `addr` + `path`, which must answer 200: the body.
fn get(addr: &str, path: &str) -> String {
    let (status, body) = common::http_get(addr, path);
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "GET {path}: {status}\n{body}"
    );
    body
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How many series (or the scalar) `expr` returns now, or Prometheus' error.
fn query(prom: &str, expr: &str) -> Result<usize, String> {
    let body = get(prom, &format!("/api/v1/query?query={}", encode(expr)));
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if v["status"] != "success" {
        return Err(body);
    }
    Ok(match v["data"]["resultType"].as_str() {
        Some("vector") | Some("matrix") => v["data"]["result"].as_array().map_or(0, Vec::len),
        _ => 1,
    })
}

/// The signals of an alert expression: its operands around top-level `and` / `unless`,
/// each without its trailing `> number` comparison.
fn signals(expr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ if depth == 0 => {
                for op in [" and ", " unless "] {
                    if expr[i..].starts_with(op) {
                        parts.push(expr[start..i].to_string());
                        start = i + op.len();
                        i = start - 1;
                        break;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(expr[start..].to_string());
    parts
        .into_iter()
        .map(|p| {
            let p = p.trim();
            match p.rfind(['>', '<']) {
                Some(at)
                    if p[at + 1..]
                        .trim_start_matches('=')
                        .trim()
                        .parse::<f64>()
                        .is_ok() =>
                {
                    p[..at].trim().to_string()
                }
                _ => p.to_string(),
            }
        })
        .collect()
}

#[test]
fn alert_signals_are_split_off_their_thresholds() {
    assert_eq!(
        signals("sum (rate(a[5m])) > 0 unless sum by (x) (rate(b[5m])) > 0"),
        vec!["sum (rate(a[5m]))", "sum by (x) (rate(b[5m]))"]
    );
    assert_eq!(
        signals("deriv(x[15m]) > 0 and x > 100000"),
        vec!["deriv(x[15m])", "x"]
    );
    assert_eq!(signals("a / b >= 0.5"), vec!["a / b"]);
    assert_eq!(signals("time() - a > 120"), vec!["time() - a"]);
}

#[test]
fn dashboards_and_alert_rules_return_data_from_a_real_prometheus() {
    let promtool = tool("promtool");
    let prometheus = tool("prometheus");
    let prom_dir = repo().join("dashboards/prometheus");

    // The rules' own unit tests.
    let out = Command::new(&promtool)
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&prom_dir)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A Kafka pipeline (so that partition lag exists) reading a backlog and then more.
    let broker = Broker::start();
    broker.create_topic("transactions", 3);
    broker.create_topic("alerts", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    broker.produce("transactions", "20000", &[]);
    let model = repo().join("models/default.json");
    let mut pipeline = Killed(
        Command::new(env!("CARGO_BIN_EXE_txguard"))
            .args([
                "run",
                repo()
                    .join("sql/pipeline_kafka.sql")
                    .to_str()
                    .expect("utf8"),
                "--model",
                model.to_str().expect("utf8"),
                "--ui",
                "127.0.0.1:0",
                "--quiet",
                "--set",
                &format!("transactions.bootstrap_servers={}", broker.addr),
                "--set",
                &format!("alerts.bootstrap_servers={}", broker.addr),
                "--set",
                "alerts.sink.commit_mode=at_least_once",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let mut lines = std::io::BufReader::new(pipeline.0.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("a web UI line").expect("read");
        if let Some(rest) = line.strip_prefix("web UI: http://") {
            break rest.split('/').next().expect("addr").to_string();
        }
    };
    let log =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));

    // promtool lints the exposition format.
    let metrics = get(&addr, "/metrics");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Prometheus with the repository's config, scraping the pipeline every second.
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = std::fs::read_to_string(prom_dir.join("prometheus.yml"))
        .expect("prometheus.yml")
        .replace("pipeline:8787", &addr)
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
    assert!(
        conf.contains(&addr),
        "the config names the target pipeline:8787"
    );
    std::fs::write(conf_dir.path().join("prometheus.yml"), conf).expect("write");
    std::fs::copy(
        prom_dir.join("alerts.yml"),
        conf_dir.path().join("alerts.yml"),
    )
    .expect("copy");
    let out = Command::new(&promtool)
        .args(["check", "config", "prometheus.yml"])
        .current_dir(conf_dir.path())
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let prom_port = free_port();
    let prom = format!("127.0.0.1:{prom_port}");
    let _prometheus = Killed(
        Command::new(&prometheus)
            .args([
                "--config.file=prometheus.yml",
                &format!(
                    "--storage.tsdb.path={}",
                    conf_dir.path().join("data").display()
                ),
                &format!("--web.listen-address={prom}"),
            ])
            .current_dir(conf_dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus"),
    );
    // More transactions while Prometheus watches, so that rates are not all zero.
    std::thread::sleep(Duration::from_secs(3));
    broker.produce("transactions", "20000", &[]);

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("dashboards/grafana/dashboards/txguard.json"))
            .expect("dashboard"),
    )
    .expect("dashboard json");
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr").to_string();
            exprs.push((format!("panel {:?}", p["title"]), e));
        }
    }
    assert!(exprs.len() >= 12, "the dashboard's panels: {exprs:?}");
    let rules = std::fs::read_to_string(prom_dir.join("alerts.yml")).expect("alerts.yml");
    let mut alerts = 0;
    let mut current = String::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert: ") {
            current = name.to_string();
            alerts += 1;
        } else if let Some(rest) = t.strip_prefix("expr:") {
            let mut expr = rest.trim().trim_start_matches(">-").trim().to_string();
            while let Some(next) = lines.peek() {
                let n = next.trim();
                if n.is_empty() || n.contains(": ") || n.ends_with(':') {
                    break;
                }
                expr.push(' ');
                expr.push_str(n);
                lines.next();
            }
            for s in signals(&expr) {
                exprs.push((format!("alert {current}"), s));
            }
        }
    }
    assert_eq!(alerts, 7, "the alert rules");

    // Every expression, once Prometheus has a few scrapes: each must return data.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing: Vec<String>;
    loop {
        missing = exprs
            .iter()
            .filter_map(|(what, e)| match query(&prom, e) {
                Ok(n) if n > 0 => None,
                Ok(_) => Some(format!("{what}: {e} returned nothing")),
                Err(err) => Some(format!("{what}: {e} failed: {err}")),
            })
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    if !missing.is_empty() {
        let exited = pipeline.0.try_wait().ok().flatten();
        let _ = pipeline.0.kill();
        let _ = pipeline.0.wait();
        panic!(
            "{}\n(pipeline exit: {exited:?}; its log:\n{})",
            missing.join("\n"),
            log.join().unwrap_or_default()
        );
    }
    // The rules loaded into Prometheus itself.
    let rules_api = get(&prom, "/api/v1/rules");
    assert_eq!(
        rules_api.matches("\"type\":\"alerting\"").count(),
        7,
        "{rules_api}"
    );
}
