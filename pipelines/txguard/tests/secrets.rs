//! Secrets never leave the process: passwords planted in a Postgres connection string, in
//! `PGPASSWORD`, in `$TXGUARD_POSTGRES` and in a Kafka table's `client_configs`, and the API
//! token in `$TXGUARD_API_TOKEN`, appear in nothing the process prints (stdout, stderr at
//! debug level) or serves (the console page, `/api/status`, `/metrics`, the scoring API's
//! answers with the right token and with a wrong one), on the happy path and on the failing
//! ones (a connection that does not parse, a server that does not answer, a broker that is
//! not there).

mod common;

use std::io::{BufRead, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo, txguard_with};
use txguard_connectors::postgres::scratch::ScratchDb;
use txguard_connectors::postgres::{self, DEFAULT_CONNECTION, admin};

fn server() -> String {
    std::env::var("TXGUARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNECTION.to_string())
}

/// `conn` with `password` added (keyword form or URL).
fn with_password(conn: &str, password: &str) -> String {
    if conn.starts_with("postgres") {
        let sep = if conn.contains('?') { '&' } else { '?' };
        format!("{conn}{sep}password={password}")
    } else {
        format!("{conn} password={password}")
    }
}

fn assert_clean(what: &str, text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !text.contains(s),
            "{what} shows the secret {s}:\n{}",
            &text[text.find(s).map_or(0, |i| i.saturating_sub(300))..]
        );
    }
}

#[test]
fn planted_passwords_appear_nowhere_the_process_prints_or_serves() {
    const IN_STRING: &str = "Planted-In-Connection-7f3a";
    const IN_ENV: &str = "Planted-In-PGPASSWORD-91c2";
    const IN_KAFKA: &str = "Planted-In-Client-Configs-44de";
    const IN_URL: &str = "Planted-In-Url-0b55";
    const API_TOKEN: &str = "Planted-Api-Token-d81e";
    let all = [IN_STRING, IN_ENV, IN_KAFKA, IN_URL, API_TOKEN];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt
        .block_on(ScratchDb::create(&server()))
        .expect("scratch database");
    // The local server trusts loopback, so a password is accepted and never checked: what
    // matters is where else it goes.
    let conn = with_password(&db.connection(), IN_STRING);
    rt.block_on(async {
        let cfg = postgres::config(&db.connection(), None, "txguard secrets test").expect("config");
        let mut c = postgres::connect(&cfg).await.expect("connect");
        admin::init(&mut c).await.expect("db init");
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("TXGUARD_POSTGRES", conn.as_str()),
        ("PGPASSWORD", IN_ENV),
        ("TXGUARD_API_TOKEN", API_TOKEN),
        ("NO_COLOR", "1"),
    ];

    // 1. A paced run with the console on, at debug level; every page fetched meanwhile.
    let pipeline = repo().join("sql/pipeline_postgres.sql");
    let model = repo().join("models/default.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args([
            "run",
            pipeline.to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
            "--ui",
            "127.0.0.1:0",
            "--log",
            "debug",
            "--quiet",
            "--checkpoint-interval",
            "300ms",
            "--set",
            "transactions.count=6000",
            "--set",
            "transactions.rate=2000",
            "--set",
            "anomalies.password_env=PGPASSWORD",
        ])
        .current_dir(dir.path())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let mut lines = std::io::BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut stderr = String::new();
    let addr = loop {
        let line = lines.next().expect("a web UI line").expect("read");
        stderr.push_str(&line);
        stderr.push('\n');
        if let Some(rest) = line.strip_prefix("web UI: http://") {
            break rest.split('/').next().expect("addr").to_string();
        }
    };
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        for l in lines.map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let mut served = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fetched = 0;
    let mut scored = Vec::new();
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "the run did not end within 120 s"
        );
        for path in ["/", "/api/status", "/metrics"] {
            if let Some((_, body)) = common::try_http_get(&addr, path) {
                fetched += 1;
                served.push_str(&body);
            }
        }
        let right = format!("Bearer {API_TOKEN}");
        for path in [
            "/api/v1/pipeline",
            "/api/v1/dataflow",
            "/api/v1/models",
            "/api/v1/anomalies",
            "/api/v1/dead-letters",
            "/api/v1/checkpoints",
        ] {
            if let Some((_, body)) =
                common::try_http(&addr, "GET", path, &[("Authorization", &right)], "")
            {
                fetched += 1;
                served.push_str(&body);
            }
        }
        for auth in [right.as_str(), "Bearer wrong-token"] {
            let row = r#"{"transaction_id":"s1","user_id":"u000001","amount":1.0,"ts":"2100-01-01T00:00:00Z"}"#;
            let answer = common::try_http(
                &addr,
                "POST",
                "/api/v1/score",
                &[("Authorization", auth)],
                row,
            );
            if let Some((status, body)) = answer {
                scored.push(status);
                served.push_str(&body);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().expect("wait");
    stderr.push_str(&err.join().expect("stderr"));
    let stdout = out.join().expect("stdout");
    assert!(status.success(), "{stderr}");
    assert!(fetched >= 9, "the pages were served ({fetched} answers)");
    assert!(
        scored.iter().any(|s| s.contains(" 200 ")) && scored.iter().any(|s| s.contains(" 401 ")),
        "the scoring API answered with the right token and refused the wrong one: {scored:?}"
    );
    assert!(
        stderr.contains("DEBUG") && served.contains("txguard_"),
        "debug logs and metrics were there to look at"
    );
    for (what, text) in [
        ("stderr", &stderr),
        ("stdout", &stdout),
        ("the console", &served),
    ] {
        assert_clean(what, text, &all);
    }

    // 2. Failing paths: a string that does not parse, a server that does not answer.
    let bad = format!("host=127.0.0.1 password={IN_STRING} port=notaport");
    let unreachable = format!("postgres://postgres:{IN_URL}@127.0.0.1:1/postgres");
    for c in [bad.as_str(), unreachable.as_str()] {
        let (ok, out, err) = txguard_with(dir.path(), &["db", "stats", "--connection", c], &env);
        assert!(!ok, "{c}: {out}{err}");
        assert!(err.contains("error:"), "{err}");
        assert_clean("txguard db's error", &format!("{out}{err}"), &all);
    }
    std::fs::write(
        dir.path().join("k.sql"),
        format!(
            "CREATE TABLE tx (id TEXT NOT NULL, ts TIMESTAMP NOT NULL, WATERMARK FOR ts)
WITH (connector = 'file', path = 'k.jsonl');
CREATE TABLE alerts (id TEXT) WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1',
    topic = 'alerts', 'sink.commit_mode' = 'at_least_once',
    client_configs = 'security.protocol=SASL_PLAINTEXT;sasl.mechanism=PLAIN;sasl.username=u;sasl.password={IN_KAFKA};socket.timeout.ms=2000;message.timeout.ms=3000');
CREATE TABLE pg (id TEXT) WITH (connector = 'postgres', connection = '{unreachable}');
INSERT INTO alerts SELECT id FROM tx;
INSERT INTO pg SELECT id FROM tx;"
        ),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("k.jsonl"),
        "{\"id\":\"a\",\"ts\":\"2026-12-01T00:00:00Z\"}\n",
    )
    .expect("write");
    for args in [
        vec!["validate", "k.sql"],
        vec!["run", "k.sql", "--no-ui", "--quiet", "--log", "debug"],
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_txguard"));
        cmd.args(&args)
            .current_dir(dir.path())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(90);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("txguard {args:?} did not end within 90 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = child.wait_with_output().expect("output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_clean(&format!("txguard {args:?}"), &text, &all);
        if args[0] == "run" {
            assert!(!o.status.success(), "nothing to connect to: {text}");
        }
    }
    rt.block_on(db.drop_db()).expect("drop");
}
