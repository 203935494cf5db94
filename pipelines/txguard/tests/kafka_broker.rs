//! The Kafka pipeline against a real Kafka-protocol broker in its own process: tansu 0.6 with
//! in-memory storage, built by scripts/setup.sh into ~/.cache/txguard/tansu (or
//! `$TXGUARD_TANSU`), listening on 127.0.0.1 only. An independent client (kafka-python)
//! produces seed-style messages and reads the alerts back.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::broker::{Broker, free_port};
use common::{read_tables, repo, run_pipeline};

fn client(args: &[&str]) -> serde_json::Value {
    common::python_json("kafka/client.py", args)
}

#[test]
fn hundred_thousand_messages_from_an_independent_client_none_lost_none_doubled() {
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    broker.create_topic("alerts", 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let sets = [
        format!("transactions.bootstrap_servers={}", broker.addr),
        "transactions.source.stop_at_end=true".to_string(),
        format!("alerts.bootstrap_servers={}", broker.addr),
        // tansu 0.6 cannot end a Kafka transaction (no EndTxn): the plain producer.
        "alerts.sink.commit_mode=at_least_once".to_string(),
    ];
    let run = || {
        let (ok, _, err) = run_pipeline(dir.path(), "pipeline_kafka.sql", &sets);
        assert!(ok, "run failed:\n{err}");
    };

    // 60k, a run, 40k more, a second run in the same consumer group: it resumes where the
    // first one committed.
    let first = client(&["produce", &broker.addr, "transactions", "60000", "1"]);
    run();
    let second = client(&[
        "produce",
        &broker.addr,
        "transactions",
        "40000",
        "1",
        "60000",
    ]);
    run();
    let sent = first["sent"].as_i64().expect("sent") + second["sent"].as_i64().expect("sent");
    let bad = first["bad"].as_i64().expect("bad") + second["bad"].as_i64().expect("bad");
    assert_eq!(sent, 100_000);

    let t = read_tables(&dir.path().join("data"));
    let scored = t["transactions_scored"]["rows"].as_i64().expect("rows");
    let ids = t["transactions_scored"]["distinct_ids"]
        .as_i64()
        .expect("ids");
    let dead = t["dead_letters"]["rows"].as_i64().expect("rows");
    assert_eq!(ids, scored, "no transaction scored twice");
    assert_eq!(scored + dead, sent, "every message scored or a dead letter");
    assert_eq!(
        dead, bad,
        "exactly the unusable messages are dead letters (none late)"
    );

    let alerts = client(&["read", &broker.addr, "alerts"]);
    let anomalies = t["anomalies"]["rows"].as_i64().expect("rows");
    assert!(anomalies > 0);
    assert_eq!(
        alerts["messages"].as_i64(),
        Some(anomalies),
        "alerts = anomalies"
    );
    let alert_ids: std::collections::BTreeSet<&str> = alerts["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_str().expect("id"))
        .collect();
    assert_eq!(alert_ids.len() as i64, anomalies, "no alert twice");
    assert_eq!(alerts["keyed"], true, "alerts are keyed by user_id");
}

#[test]
fn an_unreachable_broker_is_reported_and_retried_without_a_crash() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = repo().join("sql/pipeline_kafka.sql");
    let model = repo().join("models/default.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args([
            "run",
            pipeline.to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
            "--no-ui",
            "--quiet",
            "--set",
            &format!("transactions.bootstrap_servers=127.0.0.1:{port}"),
            "--set",
            &format!("alerts.bootstrap_servers=127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the run must keep retrying, not exit"
    );
    // Ctrl-C: a clean stop.
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "Ctrl-C ends the run cleanly:\n{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("retrying"),
        "the log names the unreachable broker and says it retries:\n{err}"
    );
}

/// `txguard run sql/pipeline_postgres.sql` with its source switched to the topic, as the
/// docker compose stack runs it, in the background, checkpointing into `dir/<member>`.
fn spawn_member(dir: &std::path::Path, member: &str, broker: &str, conn: &str) -> Child {
    let pipeline = repo().join("sql/pipeline_postgres.sql");
    let model = repo().join("models/default.json");
    let mut args: Vec<String> = vec![
        "run".into(),
        pipeline.to_str().expect("utf8").into(),
        "--model".into(),
        model.to_str().expect("utf8").into(),
        "--no-ui".into(),
        "--quiet".into(),
        "--checkpoint-dir".into(),
        dir.join(member).to_str().expect("utf8").into(),
    ];
    for s in [
        "transactions.connector=kafka".to_string(),
        "transactions.type=source".to_string(),
        format!("transactions.bootstrap_servers={broker}"),
        "transactions.topic=transactions".to_string(),
        "transactions.source.stop_at_end=true".to_string(),
        "transactions.source.group_id=members".to_string(),
        // The client sends seed-style messages: the event time as `timestamp`.
        "transactions.json.aliases=ts=timestamp|event_time".to_string(),
    ] {
        args.extend(["--set".to_string(), s]);
    }
    Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(&args)
        .env("TXGUARD_POSTGRES", conn)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Events a finished run read, from its summary line.
fn events_in(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("done in "))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"))
}

#[test]
fn two_members_of_one_group_split_the_partitions_and_lose_nothing() {
    use txguard_connectors::postgres::{self, scratch::ScratchDb};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = std::env::var("TXGUARD_TEST_POSTGRES")
        .unwrap_or_else(|_| postgres::DEFAULT_CONNECTION.to_string());
    let db = rt
        .block_on(ScratchDb::create(&server))
        .expect("scratch database");
    let conn = db.connection();
    let broker = Broker::start();
    broker.create_topic("transactions", 4);
    let sent = client(&["produce", &broker.addr, "transactions", "150000", "2"]);
    let bad = sent["bad"].as_i64().expect("bad");
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = common::txguard(dir.path(), &["db", "init", "--connection", &conn]);
    assert!(ok, "{err}");

    // The first member joins and takes all four partitions; the second joins moments later,
    // and the group rebalances them between the two. Each keeps its own checkpoints, under
    // which its sinks record their epochs: the two never take each other's epochs for their
    // own (they once shared one record, and the second's epoch 5 was skipped as the first's).
    let a = spawn_member(dir.path(), "a", &broker.addr, &conn);
    std::thread::sleep(Duration::from_millis(800));
    let b = spawn_member(dir.path(), "b", &broker.addr, &conn);
    let (a, b) = (
        a.wait_with_output().expect("wait"),
        b.wait_with_output().expect("wait"),
    );
    let (ea, eb) = (
        String::from_utf8_lossy(&a.stderr).into_owned(),
        String::from_utf8_lossy(&b.stderr).into_owned(),
    );
    assert!(a.status.success() && b.status.success(), "{ea}\n{eb}");
    let (na, nb) = (events_in(&ea), events_in(&eb));
    // The second member took part in the group: it was assigned partitions (under load it
    // may find them read to their end by the first, and read nothing itself).
    assert!(
        na > 0 && (nb > 0 || eb.contains("partitions assigned")),
        "both members took part ({na}, {nb}):\n{ea}\n{eb}"
    );

    // Together they score every usable message once (what both read around the rebalance
    // was upserted, not doubled), and none turns late: the first member's partitions that
    // the eager rebalance revoked and handed back resume after what it had read, and it held
    // its rows while it had no partition.
    let c = rt
        .block_on(postgres::connect(
            &postgres::config(&conn, None, "txguard test").expect("config"),
        ))
        .expect("connect");
    let rows: i64 = rt
        .block_on(c.query_one("SELECT count(*) FROM transactions_scored", &[]))
        .expect("count")
        .get(0);
    let only_dead: i64 = rt
        .block_on(c.query_one(
            // A late row's raw column is the row as JSON.
            // (Looked up by key: a scan per late row took minutes when one member had
            // thousands of late rows.)
            "WITH late AS MATERIALIZED (
                 SELECT raw FROM dead_letters WHERE reason LIKE 'late%')
             SELECT count(DISTINCT raw) FROM late
             WHERE NOT EXISTS (SELECT 1 FROM transactions_scored t
                               WHERE t.transaction_id = (late.raw::jsonb ->> 'transaction_id'))",
            &[],
        ))
        .expect("count")
        .get(0);
    assert_eq!(
        (rows, only_dead),
        (150_000 - bad, 0),
        "every usable message scored, none only a late dead letter"
    );
    // The summary's events are decoded rows (malformed messages are counted as dead).
    assert!(
        na + nb >= (150_000 - bad) as u64,
        "every usable message read at least once ({na} + {nb}, {bad} malformed)"
    );
    drop(c);
    rt.block_on(db.drop_db()).expect("drop");
}

/// A TLS front for a broker: socat terminating TLS on `port` with `cert`/`key` and
/// forwarding to `to`, killed on drop.
struct TlsFront(Child);

impl TlsFront {
    fn start(port: u16, cert: &std::path::Path, key: &std::path::Path, to: &str) -> TlsFront {
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},verify=0",
                cert.display(),
                key.display()
            ))
            .arg(format!("TCP:{to}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat (installed by scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFront(child)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A self-signed certificate for 127.0.0.1 (it is its own CA): (cert, key).
fn self_signed(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("broker.pem"), dir.join("broker.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// Producer, pipeline source and alerts sink all reach the broker over TLS only (the broker
/// advertises the TLS port), verifying its certificate against a CA file: every transaction
/// is scored and the alerts topic holds the anomalies. A client without the CA is refused.
#[test]
fn the_pipeline_reads_and_writes_kafka_over_tls() {
    let tls_port = free_port();
    let broker = Broker::start_advertising(Some(tls_port));
    broker.create_topic("transactions", 2);
    broker.create_topic("alerts", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = self_signed(dir.path());
    let _front = TlsFront::start(tls_port, &cert, &key, &broker.addr);
    let servers = format!("127.0.0.1:{tls_port}");
    let ca = format!("ssl.ca.location={}", cert.display());

    // `txguard produce` over TLS with one more librdkafka setting.
    let produce_tls = |extra: &str, count: &str| {
        common::txguard(
            dir.path(),
            &[
                "produce",
                "--bootstrap-servers",
                &servers,
                "--client-config",
                "security.protocol=SSL",
                "--client-config",
                extra,
                "--count",
                count,
                "--quiet",
            ],
        )
    };
    let (ok, _, err) = produce_tls(&ca, "5000");
    assert!(ok, "produce over TLS failed:\n{err}");

    let tls = format!("security.protocol=SSL;{ca}");
    let sets = [
        format!("transactions.bootstrap_servers={servers}"),
        format!("transactions.client_configs={tls}"),
        "transactions.source.stop_at_end=true".to_string(),
        format!("alerts.bootstrap_servers={servers}"),
        format!("alerts.client_configs={tls}"),
        // tansu 0.6 cannot end a Kafka transaction (no EndTxn): the plain producer.
        "alerts.sink.commit_mode=at_least_once".to_string(),
    ];
    let (ok, _, err) = run_pipeline(dir.path(), "pipeline_kafka.sql", &sets);
    assert!(ok, "run over TLS failed:\n{err}");
    let t = read_tables(&dir.path().join("data"));
    assert_eq!(t["transactions_scored"]["rows"].as_i64(), Some(5000), "{t}");
    let anomalies = t["anomalies"]["rows"].as_i64().expect("rows");
    assert!(anomalies > 0, "{t}");

    // The alerts, read back over TLS by an independent client checking the certificate:
    // exactly the anomalies.
    let alerts = client(&["read", &servers, "alerts", cert.to_str().expect("utf8")]);
    assert_eq!(
        alerts["messages"].as_i64(),
        Some(anomalies),
        "alerts = anomalies"
    );

    let (ok, out, err) = produce_tls("message.timeout.ms=3000", "10");
    // Without the CA the broker's certificate does not verify: nothing is delivered.
    assert!(
        !ok,
        "a client that cannot verify the broker must fail:\n{out}{err}"
    );
    assert!(
        err.contains("certificate verify failed") || err.contains("SSL handshake failed"),
        "the error says why:\n{err}"
    );
}

/// The test schema registry (tests/kafka/registry.py) on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    url: String,
}

impl Registry {
    fn start() -> Registry {
        use std::io::BufRead;
        let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(py)
            .arg(repo().join("pipelines/txguard/tests/kafka/registry.py"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the registry");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("registry port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .expect("port line")
            .to_string();
        Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The card-payments example reading Avro in Confluent's wire format from a topic, the writer
/// schema looked up in a schema registry: the same scores as from the same payments in JSON;
/// an unreachable registry stops the run with a clear error instead of dead-lettering.
#[test]
fn card_payments_in_avro_through_a_schema_registry() {
    let broker = Broker::start();
    broker.create_topic("card_payments", 2);
    let registry = Registry::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = repo().join("scripts/card_payments.py");
    let payments = |extra: &[&str]| {
        let out = Command::new(&py)
            .arg(&script)
            .args(["--count", "3000", "--seed", "5"])
            .args(extra)
            .current_dir(d)
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    payments(&["-o", "pay.jsonl"]);
    let sent = payments(&[
        "--kafka",
        &broker.addr,
        "--topic",
        "card_payments",
        "--registry",
        &registry.url,
    ]);
    assert!(sent.contains("\"sent\": 3000"), "{sent}");

    let sql = repo().join("sql/examples/card_payments.sql");
    let sql = sql.to_str().expect("utf8");
    let bin = env!("CARGO_BIN_EXE_txguard");
    let txguard = |args: &[String]| {
        let out = Command::new(bin)
            .args(args)
            .current_dir(d)
            .output()
            .expect("txguard");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let s = |v: &str| v.to_string();
    let (ok, err) = txguard(&[
        s("train"),
        s("--pipeline"),
        s(sql),
        s("--set"),
        s("payments.path=pay.jsonl"),
        s("--view"),
        s("card_features"),
        s("-o"),
        s("model.json"),
    ]);
    assert!(ok, "{err}");
    let run = |name: &str, kafka: Option<&str>| {
        let mut args = vec![
            s("run"),
            s(sql),
            s("--model"),
            s("model.json"),
            s("--no-ui"),
            s("--quiet"),
        ];
        let mut sets = vec![
            format!("card_scored.path=./{name}/scored"),
            format!("card_alerts.path=./{name}/alerts"),
            format!("card_dead_letters.path=./{name}/dead"),
        ];
        match kafka {
            None => sets.push(s("payments.path=pay.jsonl")),
            Some(endpoint) => sets.extend([
                s("payments.connector=kafka"),
                s("payments.type=source"),
                format!("payments.bootstrap_servers={}", broker.addr),
                s("payments.topic=card_payments"),
                format!("payments.source.group_id={name}"),
                s("payments.source.stop_at_end=true"),
                s("payments.format=avro"),
                s("payments.avro.confluent_schema_registry=true"),
                format!("payments.schema_registry.endpoint={endpoint}"),
            ]),
        }
        for x in sets {
            args.extend([s("--set"), x]);
        }
        txguard(&args)
    };
    let (ok, err) = run("json", None);
    assert!(ok, "{err}");
    let (ok, err) = run("avro", Some(&registry.url));
    assert!(ok, "{err}");
    assert!(
        err.contains("3000 events in, 3000 on time, 0 late, 0 rejected"),
        "{err}"
    );
    let sum = |name: &str| {
        let p = d.join(name).join("scored");
        common::python_json(
            "delta/query.py",
            &[
                p.to_str().expect("utf8"),
                "SELECT COUNT(*) FROM t",
                "SELECT ROUND(SUM(score), 9) FROM t",
            ],
        )
    };
    let (j, a) = (sum("json"), sum("avro"));
    assert_eq!(j[0], 3000, "{j}");
    assert_eq!(
        j, a,
        "JSON lines and Avro over Kafka give the same rows and scores"
    );

    // The registry unreachable: the run stops and says why; nothing is dead-lettered.
    let (ok, err) = run("down", Some("http://127.0.0.1:9"));
    assert!(!ok, "a run without its registry must not succeed");
    assert!(
        err.contains("schema registry http://127.0.0.1:9 cannot be reached")
            && err.contains("a restart reads it again"),
        "{err}"
    );
}

#[test]
fn a_broker_without_kafka_transactions_is_refused_at_start_naming_commit_mode() {
    use txguard_connectors::kafka::KafkaSink;
    // tansu 0.6 hands out transactional producer ids but cannot end a transaction (no
    // EndTxn): the exactly-once sink must say so when it opens, not lose or stall epochs.
    let broker = Broker::start();
    broker.create_topic("alerts", 1);
    let table = txguard_engine::sql::parse(
        "t.sql",
        &format!(
            "CREATE TABLE alerts (transaction_id TEXT, user_id TEXT)
             WITH (connector = 'kafka', bootstrap_servers = '{}', topic = 'alerts')",
            broker.addr
        ),
    )
    .expect("parse")
    .tables
    .remove(0);
    let schema = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("transaction_id", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("user_id", arrow::datatypes::DataType::Utf8, false),
    ]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let e = match rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(120),
            KafkaSink::open_exactly_once(&table, &schema, "w1"),
        )
        .await
    }) {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(_)) => panic!("tansu 0.6 cannot end a transaction; the sink must refuse it"),
        Err(_) => panic!("opening the sink did not finish within 120 s"),
    };
    assert!(
        e.contains("transaction") && e.contains("'sink.commit_mode' = 'at_least_once'"),
        "{e}"
    );
    // The same through `txguard run`: it stops at start with that advice.
    let dir = tempfile::tempdir().expect("tempdir");
    broker.create_topic("transactions", 1);
    let sets = [
        format!("transactions.bootstrap_servers={}", broker.addr),
        "transactions.source.stop_at_end=true".to_string(),
        format!("alerts.bootstrap_servers={}", broker.addr),
    ];
    let (ok, _, err) = run_pipeline(dir.path(), "pipeline_kafka.sql", &sets);
    assert!(
        !ok && err.contains("alerts") && err.contains("at_least_once"),
        "{err}"
    );
}

/// The broker killed mid-run (tansu keeps topics in memory, so they die with it), and a new
/// one started on the same address and re-fed the same topic (the same producer, seed and
/// keys: the same messages at the same offsets). The source reconnects: the new broker's
/// empty group makes it re-read from the earliest offsets, which it skips up to what it had
/// read. The alerts sink cannot: its idempotent producer's id is unknown to the new broker,
/// so its messages time out (`message.timeout.ms`, 15 s here, librdkafka's default 300 s) and
/// the run stops naming the sink. Either way, a restart from the checkpoint reads to the end
/// and the Delta tables equal an uninterrupted run's: every message scored once.
///
/// **Fails today** (kept as the reproduction, not run by CI): the source does reconnect and
/// the restart resumes, but 480–2278 of the 60000 messages (three runs) never reach the
/// dataflow — the counters say so (`events in` short of 60000, none late or rejected), so they
/// are skipped or jumped over on the new broker, silently. See the 2026-12-02 (e) notes.
#[test]
#[ignore = "known loss of messages when the broker is replaced by one re-fed the same topic; run with --ignored"]
fn a_broker_killed_mid_run_and_replaced_loses_and_doubles_nothing() {
    use common::{bounded, delta_digests, run_command};
    const TABLES: [&str; 4] = [
        "transactions_scored",
        "anomalies",
        "dead_letters",
        "user_window_stats",
    ];
    let fresh = |b: &Broker| {
        b.create_topic("transactions", 3);
        b.create_topic("alerts", 1);
    };
    let command = |dir: &std::path::Path, addr: &str, to_end: bool| {
        let mut c = run_command(dir, "sql/pipeline_kafka.sql");
        c.args([
            "--checkpoint-interval",
            "200ms",
            "--set",
            &format!("transactions.bootstrap_servers={addr}"),
            "--set",
            &format!("alerts.bootstrap_servers={addr}"),
            "--set",
            "alerts.sink.commit_mode=at_least_once",
            "--set",
            "alerts.client_configs=message.timeout.ms=15000",
            "--set",
            &format!("transactions.source.stop_at_end={to_end}"),
        ]);
        c
    };
    let root = tempfile::tempdir().expect("tempdir");

    // The uninterrupted reference.
    let reference = root.path().join("reference");
    std::fs::create_dir_all(&reference).expect("dir");
    {
        let b = Broker::start();
        fresh(&b);
        b.produce("transactions", "60000", &["--users", "300"]);
        let (ok, err) = bounded(command(&reference, &b.addr, true));
        assert!(ok, "{err}");
    }

    // A run whose broker dies under it.
    let dir = root.path().join("replaced");
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let first = Broker::start_on(port, None);
    fresh(&first);
    first.produce("transactions", "20000", &["--users", "300"]);
    let addr = first.addr.clone();
    let mut run = command(&dir, &addr, false).spawn().expect("spawn");
    let mut stderr = run.stderr.take().expect("stderr");
    let drained = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let log = dir.join("data/transactions_scored/_delta_log");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_dir(&log).map_or(0, |d| d.count()) < 2 {
        assert!(Instant::now() < deadline, "no Delta commit within 120 s");
        assert!(
            run.try_wait().expect("wait").is_none(),
            "the run ended early"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        run.try_wait().expect("wait").is_none(),
        "the run survives its broker's death"
    );
    let second = Broker::start_on(port, None);
    fresh(&second);
    second.produce("transactions", "60000", &["--users", "300"]);
    // Past the alerts' message timeout: still running (then Ctrl-C), or stopped on it.
    std::thread::sleep(Duration::from_secs(25));
    if run.try_wait().expect("wait").is_none() {
        Command::new("kill")
            .args(["-INT", &run.id().to_string()])
            .status()
            .expect("kill");
    }
    let status = run.wait().expect("wait");
    let err = drained.join().expect("stderr");
    assert!(
        status.success() || err.contains("could not be delivered to alerts"),
        "the run ends cleanly on Ctrl-C, or stops naming the sink it could not deliver to:\n{err}"
    );
    // The rest of the topic, from the checkpoint.
    let (ok, rest) = bounded(command(&dir, &second.addr, true));
    assert!(ok, "{rest}");
    assert!(rest.contains("continuing from checkpoint"), "{rest}");
    assert_eq!(
        delta_digests(&dir.join("data"), &TABLES),
        delta_digests(&reference.join("data"), &TABLES),
        "a replaced broker, the same rows, each once\nfirst run:\n{err}\nsecond run:\n{rest}"
    );
}
