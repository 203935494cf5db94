//! The default pipeline into the real PostgreSQL on 127.0.0.1:5432 (or
//! `$TXGUARD_TEST_POSTGRES`), as a user runs it: `txguard db init`, `txguard run
//! sql/pipeline_postgres.sql`, `txguard db stats/reset`. Each test gets its own scratch
//! database. The rows must equal what the Delta variant of the same run writes (read by
//! delta-rs's Python package), a second run of the same transactions must not duplicate
//! them, and sessions killed mid-run must lose nothing.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use common::{read_tables, repo, txguard_with};
use txguard_connectors::postgres::scratch::ScratchDb;
use txguard_connectors::postgres::{self, DEFAULT_CONNECTION, admin};

fn server() -> String {
    std::env::var("TXGUARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNECTION.to_string())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn client(conn: &str) -> tokio_postgres::Client {
    let cfg = postgres::config(conn, None, "txguard e2e test").expect("config");
    postgres::connect(&cfg).await.expect("connect")
}

async fn scalar_i64(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn scalar_f64(c: &tokio_postgres::Client, sql: &str) -> f64 {
    c.query_one(sql, &[]).await.expect(sql).get(0)
}

fn run_args<'a>(pipeline: &'a str, model: &'a str, sets: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "run",
        pipeline,
        "--model",
        model,
        "--no-ui",
        "--quiet",
        "--checkpoint-interval",
        "300ms",
    ];
    for s in sets {
        a.extend(["--set", s]);
    }
    a
}

const SETS: [&str; 3] = [
    "transactions.count=30000",
    "transactions.users=500",
    "transactions.seed=11",
];

#[test]
fn postgres_rows_equal_the_delta_run_and_a_replay_does_not_duplicate() {
    let rt = runtime();
    let db = rt
        .block_on(ScratchDb::create(&server()))
        .expect("scratch database");
    let conn = db.connection();
    let env = [("TXGUARD_POSTGRES", conn.as_str())];
    let dir = tempfile::tempdir().expect("tempdir");
    let pg_pipeline = repo().join("sql/pipeline_postgres.sql");
    let delta_pipeline = repo().join("sql/pipeline.sql");
    let model = repo().join("models/default.json");
    let (pg_pipeline, delta_pipeline, model) = (
        pg_pipeline.to_str().expect("utf8"),
        delta_pipeline.to_str().expect("utf8"),
        model.to_str().expect("utf8"),
    );

    // Without the schema, the run says what to do.
    let (ok, _, err) = txguard_with(dir.path(), &run_args(pg_pipeline, model, &SETS), &env);
    assert!(!ok && err.contains("txguard db init"), "{err}");

    let (ok, out, err) = txguard_with(dir.path(), &["db", "init"], &env);
    assert!(ok && out.contains("are ready"), "{out}{err}");
    let (ok, _, err) = txguard_with(dir.path(), &["db", "init"], &env);
    assert!(ok, "init twice: {err}");

    let (ok, _, err) = txguard_with(dir.path(), &run_args(pg_pipeline, model, &SETS), &env);
    assert!(ok, "postgres run failed:\n{err}");
    let (ok, _, err) = txguard_with(dir.path(), &run_args(delta_pipeline, model, &SETS), &[]);
    assert!(ok, "delta run failed:\n{err}");
    let delta = read_tables(&dir.path().join("data"));

    let c = rt.block_on(client(&conn));
    let counts = |c: &tokio_postgres::Client| {
        rt.block_on(async {
            (
                scalar_i64(c, "SELECT count(*) FROM transactions_scored").await,
                scalar_i64(
                    c,
                    "SELECT count(DISTINCT transaction_id) FROM transactions_scored",
                )
                .await,
                scalar_i64(
                    c,
                    "SELECT count(*) FROM transactions_scored WHERE is_anomaly",
                )
                .await,
                scalar_i64(c, "SELECT count(*) FROM anomalies").await,
                scalar_i64(c, "SELECT count(*) FROM dead_letters").await,
                scalar_i64(
                    c,
                    "SELECT coalesce(sum(tx_count), 0)::bigint FROM user_window_stats",
                )
                .await,
            )
        })
    };
    let first = counts(&c);
    let ts = &delta["transactions_scored"];
    assert_eq!(first.0, ts["rows"].as_i64().expect("rows"));
    assert_eq!(first.1, first.0, "one row per transaction");
    assert_eq!(first.2, ts["flagged"].as_i64().expect("flagged"));
    assert_eq!(first.3, delta["anomalies"]["rows"].as_i64().expect("rows"));
    assert_eq!(
        first.4,
        delta["dead_letters"]["rows"].as_i64().expect("rows")
    );
    assert_eq!(
        first.5,
        delta["user_window_stats"]["tx_total"]
            .as_i64()
            .expect("tx_total")
    );
    assert!(first.0 > 29_000 && first.2 > 0, "{first:?}");
    let (score_sum, amount_sum) = rt.block_on(async {
        (
            scalar_f64(&c, "SELECT sum(score) FROM transactions_scored").await,
            scalar_f64(&c, "SELECT sum(amount) FROM transactions_scored").await,
        )
    });
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(
        score_sum,
        ts["score_sum"].as_f64().expect("score_sum")
    ));
    assert!(close(
        amount_sum,
        ts["amount_sum"].as_f64().expect("amount_sum")
    ));

    // The columns have the schema's types, and the values went through them intact.
    let types: Vec<(String, String)> = rt
        .block_on(c.query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_name = 'transactions_scored' AND column_name IN
                   ('transaction_id', 'ts', 'amount', 'tx_count_1h', 'is_anomaly', 'score')
             ORDER BY column_name",
            &[],
        ))
        .expect("types")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let want = [
        ("amount", "double precision"),
        ("is_anomaly", "boolean"),
        ("score", "double precision"),
        ("transaction_id", "text"),
        ("ts", "timestamp with time zone"),
        ("tx_count_1h", "bigint"),
    ];
    assert_eq!(
        types,
        want.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    );
    let bad = rt.block_on(scalar_i64(
        &c,
        "SELECT count(*) FROM transactions_scored
         WHERE score <= 0 OR score > 1 OR ts < '2000-01-01' OR tx_count_1h < 1
            OR is_anomaly <> (transaction_id IN (SELECT transaction_id FROM anomalies))",
    ));
    assert_eq!(bad, 0);
    // Every anomaly's explanation arrived as jsonb, every feature in it, adding up.
    let unexplained = rt.block_on(scalar_i64(
        &c,
        "SELECT count(*) FROM anomalies
         WHERE jsonb_typeof(explanation) IS DISTINCT FROM 'object'
            OR jsonb_array_length(explanation->'contributions') <> 14
            OR abs((explanation->>'expected_path_length')::float8
                   + (SELECT sum((x->>'contribution')::float8)
                      FROM jsonb_array_elements(explanation->'contributions') x)
                   - (explanation->>'path_length')::float8) > 1e-9",
    ));
    assert_eq!(
        unexplained, 0,
        "anomalies without a valid jsonb explanation"
    );

    // The same transactions again: upserts, no duplicates.
    let (ok, _, err) = txguard_with(dir.path(), &run_args(pg_pipeline, model, &SETS), &env);
    assert!(ok, "second postgres run failed:\n{err}");
    let second = counts(&c);
    assert_eq!(
        (second.0, second.1, second.2, second.3, second.5),
        (first.0, first.1, first.2, first.3, first.5),
        "a replay must not duplicate rows"
    );

    // Every view and every Metabase question answers on the data.
    for v in admin::VIEWS {
        let n = rt
            .block_on(c.query(&format!("SELECT * FROM {v}"), &[]))
            .unwrap_or_else(|e| panic!("view {v}: {}", postgres::db_message(&e)))
            .len();
        // champion_challenger reads the champion / challenger example's table.
        assert!(
            n > 0 || v == "dead_letters_by_reason" || v == "champion_challenger",
            "view {v} is empty"
        );
    }
    let qdir = repo().join("dashboards/metabase/questions");
    for e in std::fs::read_dir(&qdir).expect("questions") {
        let path = e.expect("entry").path();
        let sql: String = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        rt.block_on(c.query(&sql, &[]))
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), postgres::db_message(&e)));
    }

    // stats and reset.
    let (ok, out, err) = txguard_with(dir.path(), &["db", "stats", "--json"], &env);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(stats["tables"][0]["rows"].as_i64(), Some(first.0));
    let rate = stats["anomaly_rate"].as_f64().expect("rate");
    assert!((rate - first.2 as f64 / first.0 as f64).abs() < 1e-12);
    let (ok, out, err) = txguard_with(dir.path(), &["db", "stats"], &env);
    assert!(
        ok && out.contains("transactions_scored") && out.contains("anomaly rate"),
        "{out}{err}"
    );
    let (ok, _, err) = txguard_with(dir.path(), &["db", "reset"], &env);
    assert!(
        !ok && err.contains("--yes"),
        "reset without a terminal must refuse: {err}"
    );
    assert_eq!(counts(&c).0, first.0, "a refused reset changes nothing");
    let (ok, out, err) = txguard_with(dir.path(), &["db", "reset", "--yes"], &env);
    assert!(ok && out.contains("recreated empty"), "{out}{err}");
    assert_eq!(counts(&c), (0, 0, 0, 0, 0, 0));

    drop(c);
    rt.block_on(db.drop_db()).expect("drop");
}

#[test]
fn sessions_terminated_mid_run_lose_nothing() {
    let rt = runtime();
    let db = rt
        .block_on(ScratchDb::create(&server()))
        .expect("scratch database");
    let conn = db.connection();
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = txguard_with(dir.path(), &["db", "init", "--connection", &conn], &[]);
    assert!(ok, "{err}");
    let pipeline = repo().join("sql/pipeline_postgres.sql");
    let model = repo().join("models/default.json");
    let count = 24_000;
    let child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(run_args(
            pipeline.to_str().expect("utf8"),
            model.to_str().expect("utf8"),
            &[
                &format!("transactions.count={count}"),
                "transactions.rate=6000",
                "transactions.seed=5",
            ],
        ))
        .env("TXGUARD_POSTGRES", &conn)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");

    // Kill the pipeline's sessions every 250 ms while it runs (about 4 s).
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicI64::new(0));
    let killer = {
        let (stop, kills, conn) = (stop.clone(), kills.clone(), conn.clone());
        rt.spawn(async move {
            let c = client(&conn).await;
            while !stop.load(Ordering::Relaxed) {
                let n = scalar_i64(
                    &c,
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                     WHERE application_name LIKE 'txguard %' AND application_name <> 'txguard e2e test'
                       AND datname = current_database()",
                )
                .await;
                kills.fetch_add(n, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let out = child.wait_with_output().expect("wait");
    stop.store(true, Ordering::Relaxed);
    rt.block_on(killer).expect("killer");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run failed:\n{err}");
    assert!(
        kills.load(Ordering::Relaxed) >= 4,
        "the test must have terminated the pipeline's sessions (did {})",
        kills.load(Ordering::Relaxed)
    );
    // A session killed mid-write is retried; one killed while idle is replaced before the
    // next write. Either way the log says so.
    assert!(
        err.contains("retrying in") || err.contains("closed while idle; opening a new one"),
        "lost sessions are logged:\n{err}"
    );
    let c = rt.block_on(client(&conn));
    let (rows, flagged, anomalies) = rt.block_on(async {
        (
            scalar_i64(&c, "SELECT count(*) FROM transactions_scored").await,
            scalar_i64(
                &c,
                "SELECT count(*) FROM transactions_scored WHERE is_anomaly",
            )
            .await,
            scalar_i64(&c, "SELECT count(*) FROM anomalies").await,
        )
    });
    assert_eq!(rows, count, "every transaction arrived exactly once");
    assert_eq!(flagged, anomalies);
    drop(c);
    rt.block_on(db.drop_db()).expect("drop");
}

/// The champion / challenger example into Postgres: every row scored by both models (their
/// versions on every row, each flag its own model's threshold), the champion's scores and
/// anomalies equal to the default pipeline's on the same transactions (Delta, read back by
/// delta-rs), and the `champion_challenger` view's numbers equal to the table's.
#[test]
fn champion_challenger_scores_every_row_with_both_models_and_compares_them() {
    let rt = runtime();
    let db = rt
        .block_on(ScratchDb::create(&server()))
        .expect("scratch database");
    let conn = db.connection();
    let env = [("TXGUARD_POSTGRES", conn.as_str())];
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = txguard_with(dir.path(), &["db", "init"], &env);
    assert!(ok, "{err}");
    let example = repo().join("sql/examples/champion_challenger.sql");
    let champion = repo().join("models/default.json");
    let challenger = repo().join("models/challenger.json");
    let challenger_arg = format!("challenger={}", challenger.display());
    let sets = ["transactions.count=20000", "transactions.seed=21"];
    let mut args = run_args(
        example.to_str().expect("utf8"),
        champion.to_str().expect("utf8"),
        &sets,
    );
    args.retain(|a| *a != "--no-ui");
    args.extend([
        "--model",
        &challenger_arg,
        "--ui",
        "127.0.0.1:0",
        "--keep-ui",
    ]);
    // The console stays up once the run has ended (--keep-ui): its comparison is read then.
    let console = run_keeping_console(dir.path(), &args, &env);
    // The default pipeline on the same transactions, into Delta.
    let delta = repo().join("sql/pipeline.sql");
    let (ok, _, err) = txguard_with(
        dir.path(),
        &run_args(
            delta.to_str().expect("utf8"),
            champion.to_str().expect("utf8"),
            &sets,
        ),
        &[],
    );
    assert!(ok, "default run failed:\n{err}");

    let a = txguard_iforest::Forest::load(&champion).expect("champion");
    let b = txguard_iforest::Forest::load(&challenger).expect("challenger");
    let c = rt.block_on(client(&conn));
    let q = |sql: &str| rt.block_on(scalar_i64(&c, sql));
    let rows = q("SELECT count(*) FROM shadow_scores");
    assert!(rows > 19_000, "{rows} rows");
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM shadow_scores WHERE champion_version = '{}' \
             AND challenger_version = '{}'",
            a.version(),
            b.version()
        )),
        rows,
        "every row names both versions"
    );
    assert_eq!(
        q(&format!(
            "SELECT count(*) FROM shadow_scores WHERE champion_flag <> (champion_score > {}) \
             OR challenger_flag <> (challenger_score > {})",
            -a.offset(),
            -b.offset()
        )),
        0,
        "each flag is its own model's threshold"
    );
    assert!(
        q("SELECT count(*) FROM shadow_scores WHERE champion_score <> challenger_score") > rows / 2,
        "two models, two scores"
    );
    assert_eq!(
        q("SELECT count(*) FROM anomalies"),
        q("SELECT count(*) FROM shadow_scores WHERE champion_flag"),
        "the champion decides the anomalies"
    );
    // The champion's scores are the default pipeline's.
    let scored = dir.path().join("data/transactions_scored");
    let delta: Vec<serde_json::Value> = serde_json::from_value(common::python_json(
        "delta/query.py",
        &[
            scored.to_str().expect("utf8"),
            "SELECT COUNT(*) FROM t",
            "SELECT SUM(score) FROM t",
            "SELECT SUM(CASE WHEN is_anomaly THEN 1 ELSE 0 END) FROM t",
        ],
    ))
    .expect("list");
    assert_eq!(delta[0].as_i64(), Some(rows));
    let sum = rt.block_on(scalar_f64(
        &c,
        "SELECT sum(champion_score) FROM shadow_scores",
    ));
    assert!(
        (sum - delta[1].as_f64().expect("sum")).abs() < 1e-6,
        "{sum} vs {}",
        delta[1]
    );
    assert_eq!(
        delta[2].as_i64(),
        Some(q("SELECT count(*) FROM shadow_scores WHERE champion_flag"))
    );
    // The view agrees with the table.
    let v = rt
        .block_on(c.query_one(
            "SELECT transactions, agreement, champion_only, challenger_only, labelled_fraud, \
             champion_recall, challenger_recall FROM champion_challenger",
            &[],
        ))
        .expect("view");
    assert_eq!(v.get::<_, i64>(0), rows);
    let agree = q("SELECT count(*) FROM shadow_scores WHERE champion_flag = challenger_flag");
    assert!((v.get::<_, f64>(1) - agree as f64 / rows as f64).abs() < 1e-12);
    assert_eq!(
        v.get::<_, i64>(2),
        q("SELECT count(*) FROM shadow_scores WHERE champion_flag AND NOT challenger_flag")
    );
    assert_eq!(
        v.get::<_, i64>(3),
        q("SELECT count(*) FROM shadow_scores WHERE challenger_flag AND NOT champion_flag")
    );
    let frauds = q("SELECT count(*) FROM shadow_scores WHERE is_fraud");
    assert_eq!(v.get::<_, i64>(4), frauds);
    assert!(frauds > 0);
    let recall = v.get::<_, Option<f64>>(5).expect("champion recall");
    let tp = q("SELECT count(*) FROM shadow_scores WHERE is_fraud AND champion_flag");
    assert!((recall - tp as f64 / frauds as f64).abs() < 1e-12);
    assert!(v.get::<_, Option<f64>>(6).is_some());

    // The console's live comparison counted the same rows (its tap may still be counting the
    // last batches when the run ends).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let console = loop {
        let (_, body) = common::http_get(&console.addr, "/api/v1/models");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        if v["comparison"]["pairs"][0]["rows"].as_i64() == Some(rows)
            || std::time::Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cmp = &console["comparison"];
    assert_eq!(cmp["table"], "shadow_scores", "{cmp}");
    assert_eq!(cmp["models"], serde_json::json!(["champion", "challenger"]));
    let pairs = cmp["pairs"].as_array().expect("pairs");
    assert_eq!(pairs.len(), 1, "{cmp}");
    let p = &pairs[0];
    assert_eq!(p["versions"], serde_json::json!([a.version(), b.version()]));
    assert_eq!(p["rows"].as_i64(), Some(rows));
    assert_eq!(p["agree"].as_i64(), Some(agree));
    assert_eq!(p["positives"].as_i64(), Some(frauds));
    assert_eq!(p["recall"][0].as_f64(), Some(recall));
    drop(c);
    rt.block_on(db.drop_db()).expect("drop");
}

/// A run whose console outlives it (`--keep-ui`), killed on drop.
struct KeptConsole {
    child: std::process::Child,
    addr: String,
}

impl Drop for KeptConsole {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `txguard args` (with `--ui … --keep-ui`) until it says the run has finished and its
/// console stays up; within 240 s.
fn run_keeping_console(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> KeptConsole {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let (mut addr, mut log) = (None, String::new());
    let finished = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("web UI: http://") {
                    addr = rest.split('/').next().map(str::to_string);
                }
                let done = line.starts_with("the run has finished");
                log.push_str(&line);
                log.push('\n');
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let kept = KeptConsole {
        child,
        addr: addr.unwrap_or_default(),
    };
    assert!(
        finished && !kept.addr.is_empty(),
        "the run did not finish with its console up within 240 s:\n{log}"
    );
    kept
}
