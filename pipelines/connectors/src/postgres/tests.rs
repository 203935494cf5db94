//! The postgres sink against the real server on 127.0.0.1:5432 (or `$TXGUARD_TEST_POSTGRES`),
//! each test in its own scratch database: types arrive exactly, upserts do not duplicate, a
//! database that drops the sink's sessions mid-run loses nothing, bad setups fail clearly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int64Array, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::scratch::ScratchDb;
use super::*;

fn server() -> String {
    std::env::var("TXGUARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNECTION.to_string())
}

async fn scratch() -> ScratchDb {
    match ScratchDb::create(&server()).await {
        Ok(db) => db,
        Err(e) => {
            panic!("{e}; set TXGUARD_TEST_POSTGRES to a server the tests may create databases on")
        }
    }
}

async fn client(db: &ScratchDb) -> Client {
    let cfg = config(&db.connection(), None, "txguard test").expect("config");
    connect(&cfg).await.expect("connect")
}

fn opts(db: &ScratchDb, table: &str, mode: Option<WriteMode>) -> PostgresOptions {
    PostgresOptions {
        connection: db.connection(),
        password_env: None,
        table: table.to_string(),
        write_mode: mode,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_arrives_exactly() {
    let db = scratch().await;
    let c = client(&db).await;
    c.batch_execute(
        "CREATE TABLE t (id text, n8 bigint, n4 integer, f8 float8, f4 real, b boolean,
                         ts timestamptz, tsl timestamp, d date, j jsonb, v varchar(20), nf float8)",
    )
    .await
    .expect("create");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("n8", DataType::Int64, true),
        Field::new("n4", DataType::Int64, true),
        Field::new("f8", DataType::Float64, true),
        Field::new("f4", DataType::Float32, true),
        Field::new("b", DataType::Boolean, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
        Field::new(
            "tsl",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("d", DataType::Date32, true),
        Field::new("j", DataType::Utf8, true),
        Field::new("v", DataType::Utf8, true),
        Field::new("nf", DataType::Int64, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["a", "b\"'x", "ü"])),
        Arc::new(Int64Array::from(vec![Some(i64::MIN), None, Some(42)])),
        Arc::new(Int64Array::from(vec![
            Some(-7),
            Some(i32::MAX as i64),
            None,
        ])),
        Arc::new(Float64Array::from(vec![Some(0.1), Some(-1e300), None])),
        Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.25)])),
        Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        // 2024-03-01 12:34:56.789012 UTC, 1969-12-31 23:59:59 UTC (before both epochs)
        Arc::new(
            TimestampMicrosecondArray::from(vec![
                Some(1_709_296_496_789_012),
                Some(-1_000_000),
                None,
            ])
            .with_timezone("UTC"),
        ),
        Arc::new(TimestampMillisecondArray::from(vec![
            None,
            Some(946_684_800_001),
            Some(0),
        ])),
        Arc::new(Date32Array::from(vec![Some(19_783), Some(0), None])),
        Arc::new(StringArray::from(vec![
            Some(r#"{"k": [1, 2]}"#),
            None,
            Some("3"),
        ])),
        Arc::new(StringArray::from(vec![None, Some(""), Some("tab\there")])),
        Arc::new(Int64Array::from(vec![Some(3), None, Some(-1)])),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("batch");
    let mut sink = PostgresSink::open_with(
        "t",
        &opts(&db, "t", None),
        SinkContext::new(schema).with_writer("test"),
    )
    .await
    .expect("open");
    assert_eq!(
        sink.mode,
        WriteMode::Append,
        "a table without a key is appended to"
    );
    sink.write(batch).await.expect("write");
    sink.commit_now(1).await.expect("commit");
    assert_eq!(sink.written(), 3);
    c.batch_execute("SET TIME ZONE 'UTC'").await.expect("tz");
    let rows = c
        .query(
            "SELECT id, n8::text, n4::text, f8::text, f4::text, b::text,
                    ts::text, tsl::text, d::text, j::text, v, nf::text FROM t ORDER BY id",
            &[],
        )
        .await
        .expect("select");
    let got: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|r| (0..12).map(|i| r.get::<_, Option<String>>(i)).collect())
        .collect();
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        got,
        vec![
            vec![
                s("a"),
                s("-9223372036854775808"),
                s("-7"),
                s("0.1"),
                s("1.5"),
                s("true"),
                s("2024-03-01 12:34:56.789012+00"),
                None,
                s("2024-03-01"),
                s(r#"{"k": [1, 2]}"#),
                None,
                s("3"),
            ],
            vec![
                s("b\"'x"),
                None,
                s("2147483647"),
                s("-1e+300"),
                None,
                s("false"),
                s("1969-12-31 23:59:59+00"),
                s("2000-01-01 00:00:00.001"),
                s("1970-01-01"),
                None,
                s(""),
                None,
            ],
            vec![
                s("ü"),
                s("42"),
                None,
                None,
                s("-0.25"),
                None,
                None,
                s("1970-01-01 00:00:00"),
                None,
                s("3"),
                s("tab\there"),
                s("-1"),
            ],
        ]
    );
    drop(c);
    db.drop_db().await.expect("drop");
}

fn tx_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
    ]))
}

fn tx_batch(ids: impl Iterator<Item = u64>, amount: f64) -> RecordBatch {
    let ids: Vec<String> = ids.map(|i| format!("tx-{i:06}")).collect();
    let n = ids.len();
    RecordBatch::try_new(
        tx_schema(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(Float64Array::from(vec![amount; n])),
        ],
    )
    .expect("batch")
}

async fn count_and_sum(c: &Client, table: &str) -> (i64, f64) {
    let r = c
        .query_one(
            &format!("SELECT count(*), coalesce(sum(amount), 0)::float8 FROM {table}"),
            &[],
        )
        .await
        .expect("count");
    (r.get(0), r.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upserts_never_duplicate() {
    let db = scratch().await;
    let c = client(&db).await;
    c.batch_execute("CREATE TABLE tx (transaction_id text PRIMARY KEY, amount float8 NOT NULL)")
        .await
        .expect("create");
    let mut sink = PostgresSink::open_with(
        "tx",
        &opts(&db, "tx", None),
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    .expect("open");
    assert_eq!(
        sink.mode,
        WriteMode::Upsert(vec!["transaction_id".into()]),
        "the table's primary key is the default upsert key"
    );
    sink.write(tx_batch(0..1000, 1.0)).await.expect("write");
    sink.commit_now(1).await.expect("commit");
    assert_eq!(count_and_sum(&c, "tx").await, (1000, 1000.0));
    // The same transactions again, with new amounts; one batch even holds a key twice.
    sink.write(tx_batch(0..600, 2.0)).await.expect("write");
    sink.write(tx_batch((500..1000).chain(999..1000), 2.0))
        .await
        .expect("write");
    sink.commit_now(2).await.expect("commit");
    assert_eq!(count_and_sum(&c, "tx").await, (1000, 2000.0));
    drop(c);
    db.drop_db().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_committed_again_after_a_restart_lands_once() {
    let db = scratch().await;
    let c = client(&db).await;
    // Append mode: nothing but the epoch record stops a duplicate.
    c.batch_execute("CREATE TABLE dl (transaction_id text, amount float8)")
        .await
        .expect("create");
    let mut sink = PostgresSink::open_with(
        "dl",
        &opts(&db, "dl", None),
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    .expect("open");
    assert_eq!(sink.last_epoch(), None);
    sink.write(tx_batch(0..100, 1.0)).await.expect("write");
    let p7 = sink.prepare(7).await.expect("prepare");
    assert!(!p7.data.is_empty());
    sink.commit(7, p7.clone()).await.expect("commit");
    sink.write(tx_batch(100..150, 1.0)).await.expect("write");
    let p8 = sink.prepare(8).await.expect("prepare");
    // The run dies before committing 8. The next run restores the checkpoint of epoch 8
    // and commits both what it holds for 8 and, as a stale retry, 7 again.
    drop(sink);
    let mut again = PostgresSink::open_with(
        "dl",
        &opts(&db, "dl", None),
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    .expect("open");
    assert_eq!(
        again.last_epoch(),
        Some(7),
        "the epoch recorded with the rows"
    );
    again.commit(7, p7).await.expect("commit 7 again: skipped");
    again.commit(8, p8.clone()).await.expect("commit 8");
    again.commit(8, p8).await.expect("commit 8 again: skipped");
    assert_eq!(count_and_sum(&c, "dl").await, (150, 150.0));
    let recorded: i64 = c
        .query_one(
            &format!("SELECT epoch FROM {EPOCHS} WHERE sink = 'dl -> dl @ test'"),
            &[],
        )
        .await
        .expect("epochs")
        .get(0);
    assert_eq!(recorded, 8);
    drop(c);
    db.drop_db().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_table_each_keep_their_own_epochs() {
    // Two members of a consumer group, each with its own checkpoint folder, write one
    // append table with the same epoch numbers: neither's epoch is taken for the other's.
    let db = scratch().await;
    let c = client(&db).await;
    c.batch_execute("CREATE TABLE dl (transaction_id text, amount float8)")
        .await
        .expect("create");
    let open = |writer: Option<&'static str>| {
        let o = opts(&db, "dl", None);
        async move {
            let mut ctx = SinkContext::new(tx_schema());
            ctx.writer = writer.map(str::to_string);
            PostgresSink::open_with("dl", &o, ctx).await.expect("open")
        }
    };
    let (mut a, mut b) = (open(Some("a")).await, open(Some("b")).await);
    for epoch in 1..=3 {
        a.write(tx_batch(0..10, 1.0)).await.expect("write");
        b.write(tx_batch(10..30, 1.0)).await.expect("write");
        a.commit_now(epoch).await.expect("commit a");
        b.commit_now(epoch).await.expect("commit b");
    }
    assert_eq!(count_and_sum(&c, "dl").await, (90, 90.0));
    assert_eq!(
        (a.last_epoch(), b.last_epoch(), a.exactly_once()),
        (Some(3), Some(3), true)
    );
    // Without a writer id (a run without checkpoints) epochs land with no record.
    let mut plain = open(None).await;
    assert_eq!((plain.last_epoch(), plain.exactly_once()), (None, false));
    plain.write(tx_batch(0..5, 1.0)).await.expect("write");
    plain.commit_now(1).await.expect("commit");
    assert_eq!(count_and_sum(&c, "dl").await, (95, 95.0));
    let sinks: Vec<String> = c
        .query(&format!("SELECT sink FROM {EPOCHS} ORDER BY sink"), &[])
        .await
        .expect("epochs")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sinks, ["dl -> dl @ a", "dl -> dl @ b"]);
    drop(c);
    db.drop_db().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_killed_mid_run_lose_nothing() {
    let db = scratch().await;
    let c = client(&db).await;
    c.batch_execute("CREATE TABLE tx (transaction_id text PRIMARY KEY, amount float8 NOT NULL)")
        .await
        .expect("create");
    let name = format!("killed{}", std::process::id());
    let mut sink = PostgresSink::open_with(
        &name,
        &opts(&db, "tx", None),
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    .expect("open");
    // A second session keeps terminating the sink's sessions while it writes.
    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicU64::new(0));
    let killer = {
        let (stop, kills, app) = (stop.clone(), kills.clone(), format!("txguard {name}"));
        let killer_client = client(&db).await;
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = killer_client
                    .query_one(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                         FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                    .expect("terminate");
                kills.fetch_add(r.get::<_, i64>(0) as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        })
    };
    let (batches, per) = (150u64, 300u64);
    for b in 0..batches {
        sink.write(tx_batch(b * per..(b + 1) * per, 1.0))
            .await
            .expect("write survives");
        sink.commit_now(b + 1).await.expect("commit survives");
    }
    sink.commit_now(batches + 1).await.expect("commit");
    stop.store(true, Ordering::Relaxed);
    killer.await.expect("killer");
    assert!(
        kills.load(Ordering::Relaxed) >= 3,
        "the test must have killed the sink's sessions (killed {})",
        kills.load(Ordering::Relaxed)
    );
    let n = (batches * per) as i64;
    assert_eq!(count_and_sum(&c, "tx").await, (n, n as f64));
    assert_eq!(sink.written(), batches * per);
    drop(c);
    db.drop_db().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_setups_fail_at_open_saying_what_to_do() {
    let db = scratch().await;
    let c = client(&db).await;
    c.batch_execute("CREATE TABLE tx (transaction_id text PRIMARY KEY, amount date)")
        .await
        .expect("create");
    let open = |table: &str, mode: Option<WriteMode>| {
        let o = opts(&db, table, mode);
        let table = table.to_string();
        async move {
            match PostgresSink::open_with(
                "sink",
                &o,
                SinkContext::new(tx_schema()).with_writer("test"),
            )
            .await
            {
                Ok(_) => panic!("opening {table} should fail"),
                Err(e) => e.to_string(),
            }
        }
    };
    let e = open("missing", None).await;
    assert!(
        e.contains("table missing does not exist") && e.contains("txguard db init"),
        "{e}"
    );
    let e = open("tx", None).await;
    assert!(e.contains("column amount") && e.contains("date"), "{e}");
    c.batch_execute("ALTER TABLE tx DROP COLUMN amount")
        .await
        .expect("alter");
    let e = open("tx", None).await;
    assert!(e.contains("column \"amount\" does not exist"), "{e}");
    c.batch_execute("ALTER TABLE tx ADD COLUMN amount float8")
        .await
        .expect("alter");
    let e = open("tx", Some(WriteMode::Upsert(vec!["id".into()]))).await;
    assert!(e.contains("upsert key column id"), "{e}");
    let mut o = opts(&db, "tx", None);
    o.connection = "host=127.0.0.1 port=1 user=postgres connect_timeout=2".into();
    let e = match PostgresSink::open_with(
        "sink",
        &o,
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    {
        Ok(_) => panic!("port 1 has no server"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("cannot connect to Postgres at 127.0.0.1:1"),
        "{e}"
    );
    o.connection = "host=127.0.0.1 port=notaport".into();
    let e = match PostgresSink::open_with(
        "sink",
        &o,
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    {
        Ok(_) => panic!("a bad port does not parse"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("is not a postgres:// URL or libpq keywords"),
        "{e}"
    );
    drop(c);
    db.drop_db().await.expect("drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_init_is_idempotent_and_every_view_answers() {
    let db = scratch().await;
    let mut c = client(&db).await;
    admin::init(&mut c).await.expect("init");
    admin::init(&mut c).await.expect("init again");
    c.batch_execute(
        "INSERT INTO transactions_scored (transaction_id, user_id, ts, amount, location, category,
                                          is_fraud, score, is_anomaly, model_version)
         VALUES ('t1', 'u1', now(), 10, 'Oslo', 'food', false, 0.41, false, 'm1'),
                ('t2', 'u1', now(), 900, 'Oslo', 'electronics', true, 0.71, true, 'm1'),
                ('t3', 'u2', now(), 20, NULL, 'food', true, 0.45, false, 'm1');
         INSERT INTO dead_letters (source, position, reason, raw, received_at)
         VALUES ('transactions', 'line 3', 'amount is not a number', '{}', now())",
    )
    .await
    .expect("rows");
    for v in admin::VIEWS {
        c.query(&format!("SELECT * FROM {v}"), &[])
            .await
            .unwrap_or_else(|e| panic!("view {v}: {}", db_message(&e)));
    }
    let q = c
        .query_one(
            "SELECT flagged, labelled_fraud, true_positives, precision, recall FROM model_quality",
            &[],
        )
        .await
        .expect("model_quality");
    assert_eq!(
        (q.get::<_, i64>(0), q.get::<_, i64>(1), q.get::<_, i64>(2)),
        (1, 2, 1)
    );
    assert_eq!((q.get::<_, f64>(3), q.get::<_, f64>(4)), (1.0, 0.5));
    // Champion / challenger: agreement, each alone, precision and recall per model.
    c.batch_execute(
        "INSERT INTO shadow_scores (transaction_id, user_id, ts, amount, is_fraud,
             champion_version, champion_score, champion_flag,
             challenger_version, challenger_score, challenger_flag)
         VALUES ('t1', 'u1', now(), 10, false, 'a', 0.4, false, 'b', 0.5, false),
                ('t2', 'u1', now(), 900, true, 'a', 0.7, true, 'b', 0.8, true),
                ('t3', 'u2', now(), 20, true, 'a', 0.5, false, 'b', 0.7, true),
                ('t4', 'u2', now(), 30, NULL, 'a', 0.7, true, 'b', 0.4, false)",
    )
    .await
    .expect("shadow rows");
    let q = c
        .query_one(
            "SELECT transactions, agreement, both_flagged, champion_only, challenger_only,
                    labelled, labelled_fraud, champion_precision, champion_recall,
                    challenger_precision, challenger_recall
             FROM champion_challenger WHERE champion_version = 'a' AND challenger_version = 'b'",
            &[],
        )
        .await
        .expect("champion_challenger");
    let n = |i: usize| q.get::<_, i64>(i);
    let x = |i: usize| q.get::<_, Option<f64>>(i);
    assert_eq!((n(0), n(2), n(3), n(4), n(5), n(6)), (4, 1, 1, 1, 3, 2));
    assert_eq!(q.get::<_, f64>(1), 0.5);
    // The champion flagged t2 (fraud) and t4 (unlabelled): precision over labelled flags 1/1;
    // recall 1 of 2 frauds. The challenger flagged t2 and t3, both fraud.
    assert_eq!(
        (x(7), x(8), x(9), x(10)),
        (Some(1.0), Some(0.5), Some(1.0), Some(1.0))
    );
    let s = admin::stats(&c).await.expect("stats");
    assert_eq!(s.database, db.name);
    let rows: Vec<_> = s
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.rows))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("transactions_scored", Some(3)),
            ("anomalies", Some(0)),
            ("dead_letters", Some(1)),
            ("user_window_stats", Some(0)),
            ("shadow_scores", Some(4)),
        ]
    );
    assert_eq!(s.anomaly_rate, Some(1.0 / 3.0));
    assert_eq!(s.rows_last_minute, Some(3));
    admin::reset(&mut c).await.expect("reset");
    let s = admin::stats(&c).await.expect("stats");
    assert!(s.tables.iter().all(|t| t.rows == Some(0)), "{s:?}");
    drop(c);
    db.drop_db().await.expect("drop");
}

/// A self-signed certificate no server here was issued by.
fn unrelated_ca_pem() -> Vec<u8> {
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};
    let key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa")).expect("key");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "localhost").expect("cn");
    let name = name.build();
    let mut b = X509Builder::new().expect("builder");
    b.set_version(2).expect("version");
    b.set_subject_name(&name).expect("subject");
    b.set_issuer_name(&name).expect("issuer");
    b.set_pubkey(&key).expect("pubkey");
    b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
        .expect("not before");
    b.set_not_after(&Asn1Time::days_from_now(1).expect("t"))
        .expect("not after");
    let serial = BigNum::from_u32(7)
        .and_then(|n| n.to_asn1_integer())
        .expect("serial");
    b.set_serial_number(&serial).expect("serial");
    b.sign(&key, MessageDigest::sha256()).expect("sign");
    b.build().to_pem().expect("pem")
}

/// Connects with `conn` and asks the server whether the session is encrypted.
async fn encrypted(conn: &str) -> Result<bool, ConnectError> {
    let c = connect(&config(conn, None, "txguard tls test")?).await?;
    let row = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    Ok(row.get(0))
}

/// Every `sslmode` against the local server, whose certificate (self-signed, for `localhost`)
/// is read from the server's own `ssl_cert_file` at test time; then the sink itself over
/// `verify-full`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_against_the_local_server() {
    let db = scratch().await;
    let c = client(&db).await;
    let ssl: String = c.query_one("SHOW ssl", &[]).await.expect("ssl").get(0);
    assert_eq!(
        ssl, "on",
        "these tests need the server's TLS on (ssl = on in postgresql.conf)"
    );
    let cert_file: String = c
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("ssl_cert_file")
        .get(0);
    let pem = std::fs::read(&cert_file)
        .unwrap_or_else(|e| panic!("reading the server's certificate {cert_file}: {e}"));
    let dir = tempfile::tempdir().expect("tmp");
    let server_ca = dir.path().join("server ca.pem");
    let other_ca = dir.path().join("other.pem");
    std::fs::write(&server_ca, &pem).expect("write");
    std::fs::write(&other_ca, unrelated_ca_pem()).expect("write");

    let admin = config(&db.connection(), None, "t").expect("config");
    let port = admin.pg.get_ports().first().copied().unwrap_or(5432);
    let user = admin.pg.get_user().unwrap_or("postgres").to_string();
    let base = |host: &str| format!("host={host} port={port} user={user} dbname={}", db.name);
    let with = |host: &str, extra: &str| format!("{} {extra}", base(host));
    let root = |p: &std::path::Path| format!("sslmode=verify-full sslrootcert='{}'", p.display());

    assert!(
        !encrypted(&with("127.0.0.1", "sslmode=disable"))
            .await
            .expect("disable")
    );
    assert!(
        encrypted(&base("127.0.0.1"))
            .await
            .expect("prefer, libpq's default")
    );
    assert!(
        encrypted(&with("127.0.0.1", "sslmode=require"))
            .await
            .expect("require")
    );
    let verify_ca = format!("sslmode=verify-ca sslrootcert='{}'", server_ca.display());
    assert!(
        encrypted(&with("127.0.0.1", &verify_ca))
            .await
            .expect("verify-ca checks no name")
    );
    assert!(
        encrypted(&with("localhost", &root(&server_ca)))
            .await
            .expect("verify-full")
    );
    let url = format!(
        "postgres://{user}@localhost:{port}/{}?sslmode=verify-full&sslrootcert={}",
        db.name,
        percent_encoding::utf8_percent_encode(
            &server_ca.display().to_string(),
            percent_encoding::NON_ALPHANUMERIC
        )
    );
    assert!(encrypted(&url).await.expect("verify-full as a URL"));

    // The certificate names localhost, not 127.0.0.1.
    let e = encrypted(&with("127.0.0.1", &root(&server_ca)))
        .await
        .expect_err("wrong name");
    let m = e.to_string();
    assert!(
        m.contains("sslmode=verify-full") && m.contains("does not name the host"),
        "{m}"
    );
    // Signed by someone else: refused at verify-ca, and at require once a root is given
    // (libpq's rule).
    for extra in [
        format!("sslmode=verify-ca sslrootcert='{}'", other_ca.display()),
        format!("sslmode=require sslrootcert='{}'", other_ca.display()),
    ] {
        let m = encrypted(&with("localhost", &extra))
            .await
            .expect_err("other CA")
            .to_string();
        assert!(m.contains("not signed by a trusted root"), "{extra}: {m}");
    }
    let m = config(
        &with(
            "localhost",
            "sslmode=verify-full sslrootcert=/no/such/ca.pem",
        ),
        None,
        "t",
    )
    .expect_err("missing root")
    .to_string();
    assert!(
        m.contains("/no/such/ca.pem") && m.contains("No such file"),
        "{m}"
    );

    // The sink, over verify-full.
    c.batch_execute("CREATE TABLE tx (transaction_id text PRIMARY KEY, amount float8 NOT NULL)")
        .await
        .expect("create");
    let tls_opts = PostgresOptions {
        connection: with("localhost", &root(&server_ca)),
        ..opts(&db, "tx", None)
    };
    let mut sink = PostgresSink::open_with(
        "tx",
        &tls_opts,
        SinkContext::new(tx_schema()).with_writer("test"),
    )
    .await
    .expect("open over verify-full");
    sink.write(tx_batch(0..500, 1.0)).await.expect("write");
    sink.commit_now(1).await.expect("commit");
    assert_eq!(count_and_sum(&c, "tx").await, (500, 500.0));
    let sessions: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = 'txguard tx' AND s.ssl",
            &[],
        )
        .await
        .expect("sessions")
        .get(0);
    assert!(sessions >= 1, "the sink's session is encrypted");
    drop(sink);
    drop(c);
    db.drop_db().await.expect("drop");
}
