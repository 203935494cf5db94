//! Bring your own events: tables whose DDL is not txguard's default schema run end to end,
//! and a DDL a connector cannot serve fails — at validate with `file:line:column`, or at start
//! with the column — and never hangs (every run here has a time limit).
//!
//! The card-payments example (`sql/examples/card_payments.sql`: card ids, amounts in cents, a
//! nested merchant, its own event-time column) is trained and run from JSON lines and from an
//! Avro container file of the same payments (`scripts/card_payments.py`), and both runs score
//! every payment identically.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{python_json, repo};

/// `txguard args…` in `dir` with the live progress display on (as a user's terminal run has
/// it), killed after `limit`: (exit success, stdout, stderr). Panics if it had to be killed.
fn run_limited(dir: &Path, args: &[&str], limit: Duration) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let read = |p: Option<&mut dyn Read>| {
        let mut text = String::new();
        if let Some(p) = p {
            let _ = p.read_to_string(&mut text);
        }
        text
    };
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
            let err = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
            return (status.success(), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let err = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
            panic!("txguard {args:?} still running after {limit:?}:\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const LIMIT: Duration = Duration::from_secs(120);

/// The issue's first try: a table with a column outside the default schema (`mcc`) and
/// another with entirely other names run, and the columns arrive filled.
#[test]
fn tables_of_other_names_and_columns_run_and_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("q.jsonl"),
        "{\"transaction_id\": \"t1\", \"user_id\": \"u1\", \"amount\": 12.5, \"ts\": \"2026-01-01T00:00:00Z\", \"mcc\": \"5411\"}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("q.sql"),
        "CREATE TABLE tx (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL, mcc TEXT,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = 'q.jsonl');
CREATE TABLE out (transaction_id TEXT, mcc TEXT) WITH (connector = 'stdout');
INSERT INTO out SELECT transaction_id, mcc FROM tx;",
    )
    .expect("write");
    let (ok, stdout, err) = run_limited(dir.path(), &["run", "q.sql", "--no-ui"], LIMIT);
    assert!(ok, "{err}");
    assert!(
        stdout.contains(r#""transaction_id":"t1","mcc":"5411""#),
        "the declared column is filled: {stdout}"
    );

    // Other names altogether, amounts in minor units, epoch milliseconds, a nested object.
    std::fs::write(
        dir.path().join("p.jsonl"),
        "{\"payment_id\": \"p1\", \"card_id\": 77, \"amount_cents\": 1250, \"event_time\": 1767225600000, \"merchant\": {\"mcc\": \"5411\"}}\n\
         {\"payment_id\": \"p2\", \"card_id\": 77, \"amount_cents\": \"lots\", \"event_time\": 1767225601000}\n",
    )
    .expect("write");
    std::fs::write(
        dir.path().join("p.sql"),
        "CREATE TABLE pay (
    payment_id TEXT NOT NULL, card_id TEXT NOT NULL, amount_cents BIGINT NOT NULL,
    event_time TIMESTAMP NOT NULL, merchant STRUCT<mcc TEXT>,
    WATERMARK FOR event_time
) WITH (connector = 'file', path = 'p.jsonl');
CREATE TABLE out (payment_id TEXT, mcc TEXT, n BIGINT) WITH (connector = 'stdout');
CREATE TABLE dead (source TEXT, position TEXT, reason TEXT, raw TEXT, received_at TIMESTAMP)
    WITH (connector = 'stdout');
INSERT INTO out SELECT payment_id, merchant['mcc'], COUNT(*) OVER (PARTITION BY card_id
    ORDER BY event_time RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) FROM pay;
INSERT INTO dead SELECT * FROM txguard_dead_letters;",
    )
    .expect("write");
    let (ok, stdout, err) = run_limited(dir.path(), &["run", "p.sql", "--no-ui", "--quiet"], LIMIT);
    assert!(ok, "{err}");
    assert!(
        stdout.contains(r#""payment_id":"p1","mcc":"5411","n":1"#),
        "{stdout}"
    );
    assert!(
        stdout.contains(r#"column amount_cents: expected a whole number, got \"lots\""#)
            && stdout.contains("p.jsonl:2"),
        "the bad value is a dead letter with its column and line: {stdout}"
    );
}

/// Every connector with a DDL it cannot serve: a clear error (validate: file:line:column;
/// at start: the column), and every message of a bounded source failing still ends.
#[test]
fn a_ddl_the_connector_cannot_serve_fails_clearly_and_never_hangs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let sink = "CREATE TABLE out (id TEXT) WITH (connector = 'stdout');\nINSERT INTO out SELECT id FROM tx;";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "generator.sql",
            format!(
                "CREATE TABLE tx (\n    id TEXT,\n    ts TIMESTAMP NOT NULL,\n    WATERMARK FOR ts\n) WITH (connector = 'generator', count = 10);\n{sink}"
            ),
            "generator.sql:2:5: table tx: the generator gives no column id",
        ),
        (
            "raw.sql",
            format!(
                "CREATE TABLE tx (id TEXT, ts TIMESTAMP NOT NULL, WATERMARK FOR ts)\nWITH (connector = 'kafka', type = 'source', bootstrap_servers = '127.0.0.1:1', topic = 't', format = 'raw_string');\n{sink}"
            ),
            "raw.sql:2:93: table tx: format raw_string fills one TEXT column",
        ),
        (
            "avro.sql",
            format!(
                "CREATE TABLE tx (id TEXT, ts TIMESTAMP NOT NULL, WATERMARK FOR ts)\nWITH (connector = 'kafka', type = 'source', bootstrap_servers = '127.0.0.1:1', topic = 't', format = 'avro');\n{sink}"
            ),
            "avro.sql:2:93: table tx: format avro on a topic needs the writer schema",
        ),
        (
            "check.sql",
            format!(
                "CREATE TABLE tx (id TEXT CHECK (idd <> ''), ts TIMESTAMP NOT NULL, WATERMARK FOR ts)\nWITH (connector = 'file', path = 'x.jsonl');\n{sink}"
            ),
            "check.sql:1:18: table tx: CHECK constraint tx_id_check:",
        ),
    ];
    for (file, sql, want) in &cases {
        std::fs::write(d.join(file), sql).expect("write");
        for args in [vec!["validate", *file], vec!["run", *file, "--no-ui"]] {
            let cmd = args[0];
            let (ok, _, err) = run_limited(d, &args, LIMIT);
            assert!(!ok, "{cmd} {file} should fail");
            assert!(err.contains(want), "{cmd} {file}:\nwant {want}\n got {err}");
        }
    }

    // A Parquet file without a declared column: the run fails at start naming it.
    {
        use std::sync::Arc;

        use datafusion::arrow::array::{RecordBatch, TimestampMicrosecondArray};
        use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        use datafusion::parquet::arrow::ArrowWriter;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(TimestampMicrosecondArray::from(vec![1]))],
        )
        .expect("batch");
        let f = std::fs::File::create(d.join("p.parquet")).expect("create");
        let mut w = ArrowWriter::try_new(f, schema, None).expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");
    }
    std::fs::write(
        d.join("pq.sql"),
        format!("CREATE TABLE tx (id TEXT NOT NULL, ts TIMESTAMP NOT NULL, WATERMARK FOR ts)\nWITH (connector = 'file', path = 'p.parquet');\n{sink}"),
    )
    .expect("write");
    let (ok, _, err) = run_limited(d, &["run", "pq.sql"], LIMIT);
    assert!(!ok);
    assert!(
        err.contains(
            "the table declares column id but the Parquet file has none; it has ts Timestamp"
        ),
        "{err}"
    );

    // Every line of a bounded file fails: the run ends, and says so.
    std::fs::write(d.join("bad.jsonl"), "{\"id\": 1}\n".repeat(3000)).expect("write");
    std::fs::write(
        d.join("bad.sql"),
        format!("CREATE TABLE tx (id TEXT, ts TIMESTAMP NOT NULL, WATERMARK FOR ts)\nWITH (connector = 'file', path = 'bad.jsonl');\n{sink}"),
    )
    .expect("write");
    let (ok, _, err) = run_limited(d, &["run", "bad.sql", "--no-ui"], LIMIT);
    assert!(ok, "{err}");
    assert!(
        err.contains("3000 events in, 0 on time, 0 late, 3000 rejected"),
        "{err}"
    );
    assert!(
        err.contains("every one of the last 3000 messages of tx was a dead letter"),
        "a warning says the DDL may not fit: {err}"
    );
}

/// The card-payments example from JSON lines and from an Avro file of the same payments:
/// trained on its own feature view, run into Delta tables an independent reader reads, the
/// two formats giving the same rows and the same scores.
#[test]
fn card_payments_example_from_json_and_avro() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let script = repo().join("scripts/card_payments.py");
    let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    for (format, file) in [("json", "pay.jsonl"), ("avro", "pay.avro")] {
        let st = Command::new(&py)
            .arg(&script)
            .args(["--count", "8000", "--format", format, "-o", file])
            .current_dir(d)
            .status()
            .expect("python");
        assert!(st.success());
    }
    let sql = repo().join("sql/examples/card_payments.sql");
    let sql = sql.to_str().expect("utf8");
    let (ok, _, err) = run_limited(
        d,
        &[
            "train",
            "--pipeline",
            sql,
            "--set",
            "payments.path=pay.jsonl",
            "--view",
            "card_features",
            "--contamination",
            "0.02",
            "-o",
            "model.json",
        ],
        LIMIT,
    );
    assert!(ok, "train failed:\n{err}");
    let mut sums = Vec::new();
    for (format, file) in [("json", "pay.jsonl"), ("avro", "pay.avro")] {
        let out = d.join(format);
        let set = |t: &str| format!("{t}.path={}", out.join(t).display());
        let (ok, _, err) = run_limited(
            d,
            &[
                "run",
                sql,
                "--model",
                "model.json",
                "--no-ui",
                "--set",
                &format!("payments.path={file}"),
                "--set",
                &format!("payments.format={format}"),
                "--set",
                &set("card_scored"),
                "--set",
                &set("card_alerts"),
                "--set",
                &set("card_dead_letters"),
            ],
            LIMIT,
        );
        assert!(ok, "run from {format} failed:\n{err}");
        assert!(
            err.contains("8000 events in, 8000 on time, 0 late, 0 rejected"),
            "{err}"
        );
        let q = |table: &str, queries: &[&str]| {
            let path = out.join(table);
            let mut args = vec![path.to_str().expect("utf8")];
            args.extend(queries);
            python_json("delta/query.py", &args)
        };
        let scored = q(
            "card_scored",
            &[
                "SELECT COUNT(*) FROM t",
                "SELECT COUNT(DISTINCT payment_id) FROM t",
                "SELECT ROUND(SUM(score), 9) FROM t",
                "SELECT COUNT(*) FROM t WHERE mcc IS NULL",
                "SELECT SUM(CASE WHEN is_anomaly AND is_fraud THEN 1 ELSE 0 END) FROM t",
            ],
        );
        assert_eq!(scored[0], 8000, "{format}: {scored}");
        assert_eq!(scored[1], 8000, "{format}: {scored}");
        assert_eq!(
            scored[3], 0,
            "{format}: the nested merchant's mcc is read: {scored}"
        );
        assert!(
            scored[4].as_i64().unwrap_or(0) > 0,
            "{format}: some frauds are flagged: {scored}"
        );
        let alerts = q("card_alerts", &["SELECT COUNT(*) FROM t"]);
        assert!(alerts[0].as_i64().unwrap_or(0) > 0, "{format}: {alerts}");
        sums.push(scored[2].clone());
    }
    assert_eq!(sums[0], sums[1], "JSON and Avro give the same scores");
}
