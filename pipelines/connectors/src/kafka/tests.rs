//! The kafka sink against librdkafka's in-process mock cluster (real Kafka protocol over
//! localhost sockets): every row arrives once as a JSON message with its key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use txguard_engine::connector::Sink;
use txguard_engine::sql::parse;

use super::KafkaSink;

fn table(sql: &str) -> txguard_engine::sql::TableDef {
    parse("test.sql", sql)
        .expect("parse")
        .tables
        .into_iter()
        .next()
        .expect("a table")
}

/// Every message of `topic` (all `partitions`) from the start: (key, payload).
fn read_all(servers: &str, topic: &str, partitions: i32, want: usize) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "txguard-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_arrives_once_as_json_keyed_by_the_key_field() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("alerts", 3, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    let t = table(&format!(
        "CREATE TABLE alerts (transaction_id TEXT, user_id TEXT, score DOUBLE) WITH (
             connector = 'kafka', bootstrap_servers = '{servers}', topic = 'alerts',
             format = 'json', 'sink.key_field' = 'user_id')"
    ));
    let schema = Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let mut sink = KafkaSink::open(&t, &schema).expect("sink");
    let n = 3000;
    for b in 0..3 {
        let ids: Vec<String> = (b * n / 3..(b + 1) * n / 3)
            .map(|i| format!("tx-{i}"))
            .collect();
        let users: Vec<Option<String>> = (b * n / 3..(b + 1) * n / 3)
            .map(|i| (i % 100 != 0).then(|| format!("u{}", i % 7)))
            .collect();
        let scores: Vec<Option<f64>> = (b * n / 3..(b + 1) * n / 3)
            .map(|i| (i % 50 != 0).then_some(i as f64 / 1e4))
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(users)),
                Arc::new(Float64Array::from(scores)),
            ],
        )
        .expect("batch");
        sink.write(batch).await.expect("write");
    }
    sink.commit_now(1).await.expect("commit waits for acks");
    assert_eq!(sink.sent(), n as u64);

    let got = tokio::task::spawn_blocking(move || read_all(&servers, "alerts", 3, n))
        .await
        .expect("reader");
    assert_eq!(got.len(), n, "every row once");
    let mut by_id = BTreeMap::new();
    for (key, payload) in &got {
        let v: serde_json::Value = serde_json::from_str(payload).expect("json");
        let id = v["transaction_id"].as_str().expect("id").to_string();
        let i: usize = id[3..].parse().expect("number");
        let user = (!i.is_multiple_of(100)).then(|| format!("u{}", i % 7));
        assert_eq!(v["user_id"].as_str().map(String::from), user, "{payload}");
        assert_eq!(key, &user.unwrap_or_default(), "keyed by user_id");
        if i.is_multiple_of(50) {
            assert!(v.get("score").is_none(), "NULLs are left out: {payload}");
        } else {
            assert_eq!(v["score"].as_f64(), Some(i as f64 / 1e4));
        }
        assert!(by_id.insert(id, ()).is_none(), "no duplicates");
    }
}

#[test]
fn bad_client_configs_name_the_pair() {
    let t = table(
        "CREATE TABLE a (x TEXT) WITH (connector = 'kafka', bootstrap_servers = 'localhost:1',
             topic = 't', client_configs = 'linger.ms=1;oops')",
    );
    let schema = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
    match KafkaSink::open(&t, &schema) {
        Ok(_) => panic!("client_configs without = must fail"),
        Err(e) => assert!(e.to_string().contains("\"oops\" is not key=value"), "{e}"),
    }
    let t = table(
        "CREATE TABLE a (x TEXT) WITH (connector = 'kafka', bootstrap_servers = 'localhost:1',
             topic = 't', 'sink.key_field' = 'user_id')",
    );
    match KafkaSink::open(&t, &schema) {
        Ok(_) => panic!("a key field that is not a column must fail at open"),
        Err(e) => assert!(
            e.to_string()
                .contains("sink.key_field user_id is not one of"),
            "{e}"
        ),
    }
}

/// Produces `payloads` (key, JSON) to `topic` and waits for the acknowledgements.
fn produce(servers: &str, topic: &str, payloads: &[(String, Vec<u8>)]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .create()
        .expect("producer");
    for (k, v) in payloads {
        let mut rec = BaseRecord::to(topic).key(k.as_str()).payload(v.as_slice());
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn source_table(servers: &str, topic: &str, group: &str) -> txguard_engine::sql::TableDef {
    table(&format!(
        "CREATE TABLE transactions (transaction_id TEXT NOT NULL, user_id TEXT NOT NULL,
             amount DOUBLE NOT NULL, ts TIMESTAMP NOT NULL, WATERMARK FOR ts AS ts)
         WITH (connector = 'kafka', type = 'source', bootstrap_servers = '{servers}',
               topic = '{topic}', format = 'json', 'source.group_id' = '{group}',
               'json.aliases' = 'ts=timestamp',
               'source.stop_at_end' = true,
               -- librdkafka's mock cluster drops a closed member only when its session times
               -- out (45 s by default), so the tests' restarts use short sessions.
               client_configs = 'session.timeout.ms=6000;heartbeat.interval.ms=500')"
    ))
}

/// Polls until the source ends: (rows, dead letters, dead positions).
fn drain(src: &mut super::KafkaSource) -> (usize, usize, Vec<String>) {
    use txguard_engine::connector::{Poll, Source};
    let (mut rows, mut dead, mut positions) = (0, 0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the source did not end");
        match src.poll(1000).expect("poll") {
            Poll::Data { rows: r, dead: d } => {
                rows += r.num_rows();
                if let Some(d) = d {
                    dead += d.num_rows();
                    let pos = d.column_by_name("position").expect("position");
                    let pos = arrow::array::AsArray::as_string::<i32>(pos.as_ref());
                    positions.extend(pos.iter().flatten().map(String::from));
                }
            }
            Poll::Idle => std::thread::sleep(Duration::from_millis(10)),
            Poll::End => return (rows, dead, positions),
        }
    }
}

/// Messages a `read_committed` consumer sees on `topic` (one partition) within `wait`.
fn visible(servers: &str, topic: &str, wait: Duration) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "txguard-test-visible")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.expect("message");
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("json");
            out.push(v["transaction_id"].as_str().unwrap_or_default().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exactly_once_sink_holds_each_epoch_until_its_commit() {
    // librdkafka's mock cluster runs the transactions (init, begin, produce, commit) but
    // does not store a transaction's offset commits, where the sink records its epochs: a
    // restart's "already committed" is not visible here (no broker with that runs on these
    // machines), only the flow within one run and the commit of a checkpoint's held epoch.
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("alerts", 1, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    let t = table(&format!(
        "CREATE TABLE alerts (transaction_id TEXT, user_id TEXT) WITH (
             connector = 'kafka', bootstrap_servers = '{servers}', topic = 'alerts',
             'sink.key_field' = 'user_id')"
    ));
    let schema = Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
    ]));
    let rows = |from: usize, n: usize| {
        let ids: Vec<String> = (from..from + n).map(|i| format!("t{i}")).collect();
        let users: Vec<String> = (from..from + n).map(|i| format!("u{}", i % 7)).collect();
        RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(users)),
            ],
        )
        .expect("batch")
    };
    let look = |wait: u64| {
        let servers = servers.clone();
        tokio::task::spawn_blocking(move || visible(&servers, "alerts", Duration::from_secs(wait)))
    };
    let mut sink = KafkaSink::open_exactly_once(&t, &schema, "w1")
        .await
        .expect("open");
    assert!(sink.exactly_once());
    sink.write(rows(0, 100)).await.expect("write");
    let p1 = sink.prepare(1).await.expect("prepare");
    assert_eq!(p1.meta["messages"], 100);
    assert!(
        look(2).await.expect("reader").is_empty(),
        "nothing is sent before the checkpoint is durable"
    );
    sink.commit(1, p1.clone()).await.expect("commit 1");
    assert_eq!(sink.last_epoch(), Some(1));
    sink.commit(1, p1).await.expect("epoch 1 again: skipped");
    sink.write(rows(100, 50)).await.expect("write");
    let p2 = sink.prepare(2).await.expect("prepare");
    // Killed before committing 2; the next run commits it from the checkpoint.
    drop(sink);
    let mut again = KafkaSink::open_exactly_once(&t, &schema, "w1")
        .await
        .expect("reopen");
    again.commit(2, p2).await.expect("commit 2");
    let mut got = look(4).await.expect("reader");
    got.sort();
    let mut want: Vec<String> = (0..150).map(|i| format!("t{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every message once");
    // `at_least_once` opts out: messages go as they come.
    let plain = table(&format!(
        "CREATE TABLE alerts (transaction_id TEXT, user_id TEXT) WITH (
             connector = 'kafka', bootstrap_servers = '{servers}', topic = 'alerts',
             'sink.commit_mode' = 'at_least_once')"
    ));
    let s = KafkaSink::open_exactly_once(&plain, &schema, "w1")
        .await
        .expect("open");
    assert!(!s.exactly_once());
}

fn seed_messages(from: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + n)
        .map(|i| {
            let user = format!("u{}", i % 13);
            // What the Python producers send: naive isoformat with microseconds, amounts as
            // floats or strings, extra fields, keys in any order.
            let v = match i % 3 {
                0 => serde_json::json!({"transaction_id": format!("t{i}"), "user_id": user,
                     "amount": 10.5 + i as f64, "timestamp": format!("2026-01-01T00:{:02}:{:02}.123456", (i / 60) % 60, i % 60)}),
                1 => serde_json::json!({"timestamp": format!("2026-01-01T00:{:02}:{:02}", (i / 60) % 60, i % 60),
                     "amount": format!("{}.25", i), "user_id": user, "transaction_id": format!("t{i}"),
                     "device": "ios", "merchant": "m1"}),
                _ => serde_json::json!({"transaction_id": format!("t{i}"), "user_id": user,
                     "amount": i, "timestamp": format!("2026-01-01T00:{:02}:{:02}+00:00", (i / 60) % 60, i % 60)}),
            };
            (user, serde_json::to_vec(&v).expect("json"))
        })
        .collect()
}

#[test]
fn source_reads_every_message_and_resumes_at_committed_offsets() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    cluster.create_topic("tx", 3, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    let mut msgs = seed_messages(0, 2000);
    msgs.push(("u1".into(), b"not json at all".to_vec()));
    msgs.push((
        "u2".into(),
        br#"{"transaction_id": "x", "user_id": "u2"}"#.to_vec(),
    ));
    produce(&servers, "tx", &msgs);

    let t = source_table(&servers, "tx", "g1");
    let mut src = super::KafkaSource::open(&t, None).expect("source");
    let (rows, dead, positions) = drain(&mut src);
    assert_eq!(
        (rows, dead),
        (2000, 2),
        "every message is a row or a dead letter"
    );
    assert!(
        positions
            .iter()
            .all(|p| p.starts_with("partition ") && p.contains(" offset ")),
        "{positions:?}"
    );
    // Nothing released yet at this barrier: committing it must not skip any row.
    use txguard_engine::connector::Source;
    src.barrier(1, Some(i64::MIN));
    src.committed(1).expect("commit");
    drop(src);
    let mut again = super::KafkaSource::open(&t, None).expect("source");
    let (rows, dead, _) = drain(&mut again);
    assert_eq!((rows, dead), (2000, 2), "unreleased rows are read again");
    // Everything released and durable: a restart reads only what comes after.
    again.barrier(2, None);
    again.committed(2).expect("commit");
    let checkpointed: super::source::KafkaPosition =
        serde_json::from_value(again.checkpoint()).expect("position");
    drop(again);
    produce(&servers, "tx", &seed_messages(2000, 300));
    let mut resumed = super::KafkaSource::open(&t, None).expect("source");
    let (rows, dead, _) = drain(&mut resumed);
    assert_eq!((rows, dead), (300, 0), "resumes at the committed offsets");
    resumed.barrier(3, None);
    resumed.committed(3).expect("commit");
    drop(resumed);
    // A checkpoint's offsets win over the group's, behind or ahead of them.
    let mut restored = super::KafkaSource::open(&t, Some(checkpointed)).expect("source");
    let (rows, dead, _) = drain(&mut restored);
    assert_eq!(
        (rows, dead),
        (300, 0),
        "resumes at the checkpoint's offsets"
    );
}

#[test]
fn a_caught_up_partition_does_not_hold_time_back() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use txguard_engine::connector::{Poll, Source};
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("quiet", 2, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    // Everything goes to partition 0; partition 1 stays empty, as a quiet partition does.
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()
        .expect("producer");
    for (k, v) in seed_messages(0, 500) {
        p.send(BaseRecord::to("quiet").partition(0).key(&k).payload(&v))
            .expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    // A live source (no stop_at_end): rows must flow although partition 1 has shown nothing.
    let t = table(&format!(
        "CREATE TABLE transactions (transaction_id TEXT, user_id TEXT, amount DOUBLE, ts TIMESTAMP)
         WITH (connector = 'kafka', type = 'source', bootstrap_servers = '{servers}',
               topic = 'quiet', 'source.group_id' = 'g-quiet',
               client_configs = 'session.timeout.ms=6000;heartbeat.interval.ms=500')"
    ));
    let mut src = super::KafkaSource::open(&t, None).expect("source");
    let (mut rows, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while rows < 500 && Instant::now() < deadline {
        match src.poll(1000).expect("poll") {
            Poll::Data { rows: r, .. } => rows += r.num_rows(),
            Poll::Idle => std::thread::sleep(Duration::from_millis(10)),
            Poll::End => panic!("a live source does not end"),
        }
    }
    assert_eq!(
        rows, 500,
        "rows of partition 0 are released while partition 1 is quiet"
    );
}

#[test]
fn metadata_columns_carry_partition_offset_timestamp_key_and_topic() {
    use arrow::array::{Array, AsArray, Int64Array, TimestampMicrosecondArray};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use txguard_engine::connector::{Poll, Source};
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("meta", 2, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &servers)
        .create()
        .expect("producer");
    let n = 400usize;
    let base_ms = 1_780_000_000_000i64;
    for (i, (_, payload)) in seed_messages(0, n).into_iter().enumerate() {
        let part = (i % 2) as i32;
        let key = format!("key-{i}");
        let rec = BaseRecord::to("meta")
            .partition(part)
            .payload(&payload)
            .timestamp(base_ms + i as i64);
        // Every 50th message has no key, every 77th a key that is not UTF-8.
        let res = if i % 50 == 0 {
            p.send::<[u8], _>(rec)
        } else if i % 77 == 0 {
            p.send(rec.key(&[0xff, 0xfe][..]))
        } else {
            p.send(rec.key(key.as_bytes()))
        };
        res.map_err(|(e, _)| e).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");

    let t = table(&format!(
        "CREATE TABLE transactions (
             transaction_id TEXT, user_id TEXT, amount DOUBLE, ts TIMESTAMP,
             kafka_partition INT GENERATED ALWAYS AS (metadata('partition')) STORED,
             kafka_offset BIGINT GENERATED ALWAYS AS (metadata('offset_id')) STORED,
             kafka_ts TIMESTAMP GENERATED ALWAYS AS (metadata('timestamp')) STORED,
             kafka_key TEXT GENERATED ALWAYS AS (metadata('key')) STORED,
             kafka_topic TEXT GENERATED ALWAYS AS (metadata('topic')) STORED,
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
         WITH (connector = 'kafka', type = 'source', bootstrap_servers = '{servers}',
               topic = 'meta', 'source.group_id' = 'g-meta', 'source.stop_at_end' = true,
               client_configs = 'session.timeout.ms=6000;heartbeat.interval.ms=500')"
    ));
    let mut src = super::KafkaSource::open(&t, None).expect("source");
    let schema = src.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for c in [
        "kafka_partition",
        "kafka_offset",
        "kafka_ts",
        "kafka_key",
        "kafka_topic",
    ] {
        assert!(names.contains(&c), "{c} in {names:?}");
    }
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the source did not end");
        match src.poll(1000).expect("poll") {
            Poll::Data { rows, dead } => {
                assert!(dead.is_none(), "every message decodes");
                let col = |n: &str| rows.column_by_name(n).expect(n).clone();
                let ids = col("transaction_id");
                let ids = ids.as_string::<i32>();
                let parts = col("kafka_partition");
                let parts = parts.as_any().downcast_ref::<Int64Array>().expect("int");
                let offs = col("kafka_offset");
                let offs = offs.as_any().downcast_ref::<Int64Array>().expect("int");
                let kts = col("kafka_ts");
                let kts = kts
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .expect("ts");
                assert_eq!(
                    kts.data_type(),
                    &DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Microsecond,
                        Some("UTC".into())
                    )
                );
                let keys = col("kafka_key");
                let keys = keys.as_string::<i32>();
                let topics = col("kafka_topic");
                let topics = topics.as_string::<i32>();
                for r in 0..rows.num_rows() {
                    let id = ids.value(r).to_string();
                    let i: usize = id[1..].parse().expect("t<i>");
                    let key = keys.is_valid(r).then(|| keys.value(r).to_string());
                    let got = (
                        parts.value(r),
                        offs.value(r),
                        kts.value(r),
                        key,
                        topics.value(r).to_string(),
                    );
                    assert!(seen.insert(i, got).is_none(), "{id} twice");
                }
            }
            Poll::Idle => std::thread::sleep(Duration::from_millis(10)),
            Poll::End => break,
        }
    }
    assert_eq!(seen.len(), n, "every message once");
    for (i, (part, off, kts, key, topic)) in seen {
        assert_eq!(part, (i % 2) as i64, "partition of t{i}");
        assert_eq!(off, (i / 2) as i64, "offset of t{i} in its partition");
        assert_eq!(kts, (base_ms + i as i64) * 1000, "Kafka timestamp of t{i}");
        let want_key = (i % 50 != 0 && i % 77 != 0).then(|| format!("key-{i}"));
        assert_eq!(key, want_key, "key of t{i} (NULL when absent or not UTF-8)");
        assert_eq!(topic, "meta");
    }
}

/// TLS and SASL are compiled in: librdkafka accepts SASL_SSL with SCRAM and PLAIN (a build
/// without OpenSSL refuses these settings at client creation). Kerberos is not, and the
/// error says what to use instead.
#[test]
fn sasl_over_tls_is_built_in_and_kerberos_is_explained() {
    let schema = Schema::new(vec![Field::new("x", DataType::Utf8, true)]);
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] {
        let t = table(&format!(
            "CREATE TABLE a (x TEXT) WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1',
                 topic = 't', client_configs = 'security.protocol=SASL_SSL;sasl.mechanism={mechanism};sasl.username=u;sasl.password=p')"
        ));
        if let Err(e) = KafkaSink::open(&t, &schema) {
            panic!("{mechanism} over TLS: {e}");
        }
    }
    let t = table(
        "CREATE TABLE a (x TEXT) WITH (connector = 'kafka', bootstrap_servers = '127.0.0.1:1',
             topic = 't', client_configs = 'security.protocol=SASL_SSL;sasl.mechanism=GSSAPI')",
    );
    match KafkaSink::open(&t, &schema) {
        Ok(_) => panic!("GSSAPI is not built in"),
        Err(e) => assert!(e.to_string().contains("not Kerberos (GSSAPI)"), "{e}"),
    }
}

/// `bad_data = 'fail'`: the first unusable message stops the source with its position and
/// reason; `'drop'` (Arroyo's spelling) still sends it to the dead letters.
#[test]
fn bad_data_fail_stops_at_the_message_and_drop_keeps_it_as_a_dead_letter() {
    use txguard_engine::connector::{Poll, Source};
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("strict", 1, 1).expect("topic");
    let servers = cluster.bootstrap_servers();
    let mut msgs = seed_messages(0, 20);
    msgs.push((
        "u1".into(),
        br#"{"transaction_id": "x", "user_id": "u1"}"#.to_vec(),
    ));
    produce(&servers, "strict", &msgs);
    let with = |bad_data: &str, group: &str| {
        table(&format!(
            "CREATE TABLE transactions (transaction_id TEXT NOT NULL, user_id TEXT NOT NULL,
                 amount DOUBLE NOT NULL, ts TIMESTAMP NOT NULL, WATERMARK FOR ts AS ts)
             WITH (connector = 'kafka', type = 'source', bootstrap_servers = '{servers}',
                   topic = 'strict', 'source.group_id' = '{group}', 'source.stop_at_end' = true,
                   'json.aliases' = 'ts=timestamp',
                   bad_data = '{bad_data}',
                   client_configs = 'session.timeout.ms=6000;heartbeat.interval.ms=500')"
        ))
    };
    let mut src = super::KafkaSource::open(&with("fail", "g-fail"), None).expect("source");
    let deadline = Instant::now() + Duration::from_secs(30);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "the bad message never stopped the source"
        );
        match src.poll(1000) {
            Err(e) => break e.to_string(),
            Ok(Poll::End) => panic!("ended without failing"),
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(
        err.contains("bad_data = 'fail': message at partition 0 offset 20 of strict")
            && err.contains("amount"),
        "{err}"
    );
    drop(src);
    let mut src = super::KafkaSource::open(&with("drop", "g-drop"), None).expect("source");
    let (rows, dead, _) = drain(&mut src);
    assert_eq!(
        (rows, dead),
        (20, 1),
        "drop still keeps it as a dead letter"
    );
}
