//! Hostile input, generated (proptest): tens of thousands of messages per run — deeply nested
//! JSON, huge strings and numbers, invalid UTF-8, NUL bytes, duplicate keys, `NaN` and
//! `Infinity`, timestamps far in the past or future, integer overflow, empty and whitespace
//! payloads, valid messages cut and bit-flipped — through the decoder: never a panic, never a
//! hang, every message a row or a dead letter with a reason (in = rows + dead), and every row
//! within its column's rules. And mutated pipeline files through the SQL front end: never a
//! panic, every error at `file:line:column`.
//!
//! Each property runs on a watchdog thread: a case that does not finish within minutes is a
//! hang, reported as such (a bound on liveness, not a timing measurement).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use txguard_engine::decode::Decoder;
use txguard_engine::sql::{check, parse};

/// Runs `f` on its own thread (with a big stack: a stack overflow would abort the process, not
/// fail a case) and fails the test if it has not finished after `limit`.
fn with_watchdog(what: &str, limit: Duration, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name(what.into())
        .stack_size(8 << 20)
        .spawn(move || {
            f();
            let _ = tx.send(());
        })
        .expect("spawn");
    match rx.recv_timeout(limit) {
        Ok(()) => handle.join().expect("join"),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The property failed: re-raise its panic with its message.
            if let Err(p) = handle.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result after {limit:?}: a hang"),
    }
}

/// A table with a column of every kind the decoder fills, NOT NULL ones among them.
const TABLE: &str = "CREATE TABLE t (
    id TEXT NOT NULL,
    amount DOUBLE NOT NULL,
    ratio REAL,
    n BIGINT,
    u BIGINT UNSIGNED,
    flag BOOLEAN,
    ts TIMESTAMP NOT NULL,
    note TEXT,
    place STRUCT<city TEXT, lat DOUBLE>,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = 'x', 'json.aliases' = 'ts=timestamp|event_time',
    max_message_bytes = 65536)";

fn decoder() -> Decoder {
    let p = parse("t.sql", TABLE).expect("parse");
    Decoder::for_table(&p.tables[0]).expect("decoder")
}

const KEYS: &[&str] = &[
    "id",
    "amount",
    "ratio",
    "n",
    "u",
    "flag",
    "ts",
    "timestamp",
    "event_time",
    "note",
    "place",
    "city",
    "",
    "AMOUNT",
    "id\u{0}",
];

/// A JSON value text, often not valid JSON, aimed at the coercions.
fn value() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("1e999999"),
        Just("-1e400"),
        Just("18446744073709551616"),
        Just("-9223372036854775809"),
        Just("9223372036854775808"),
        Just("123456789012345678901234567890123456789"),
        Just("0.000000000000000000000000000000000001e-400"),
        Just("NaN"),
        Just("Infinity"),
        Just("-Infinity"),
        Just("\"NaN\""),
        Just("\"inf\""),
        Just("\"-Infinity\""),
        Just("\"0001-01-01T00:00:00\""),
        Just("\"9999-12-31T23:59:59.999999Z\""),
        Just("\"+275760-09-13T00:00:00Z\""),
        Just("\"-0001-01-01T00:00:00Z\""),
        Just("\"2026-13-45T25:61:61\""),
        Just("\"2026-02-30 10:00:00+25:00\""),
        Just("1e20"),
        Just("-1e20"),
        Just("99999999999999999999"),
        Just("-62135596801"),
        Just("253402300800000000"),
        Just("true"),
        Just("false"),
        Just("null"),
        Just("{}"),
        Just("[]"),
        Just("\"a\\u0000b\""),
        Just("\"\\ud800\""),
        Just("\"\\udc00\\ud800\""),
        Just("\"\u{0}\""),
        Just("\"\\"),
        Just("{\"city\": \"x\", \"city\": \"y\"}"),
        Just("{\"lat\": NaN}"),
        Just("\"1\""),
        Just("\"1.5\""),
        Just("-0"),
        Just("0x10"),
        Just("01"),
    ]
    .prop_map(String::from);
    prop_oneof![
        4 => fixed,
        2 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        2 => any::<f64>().prop_map(|f| f.to_string()),
        2 => any::<f64>().prop_map(|f| format!("{f:e}")),
        2 => "\\PC{0,24}".prop_map(|s| serde_json::to_string(&s).expect("string")),
        1 => (1usize..60_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        1 => (1usize..3000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        1 => (1usize..3000).prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n))),
        1 => (1usize..400).prop_map(|n| "9".repeat(n)),
    ]
}

/// One message's bytes.
fn message() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        6 => proptest::sample::select(KEYS).prop_map(String::from),
        1 => "\\PC{0,8}",
    ];
    let object = proptest::collection::vec((key, value()), 0..12).prop_map(|kv| {
        let body: Vec<String> = kv
            .into_iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::to_string(&k).expect("key")))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    });
    let good = (any::<u32>(), 0.0f64..1e6).prop_map(|(n, a)| {
        format!(
            "{{\"id\":\"t{n}\",\"amount\":{a},\"ts\":\"2026-12-01T10:00:{:02}Z\",\"n\":{n},\
             \"place\":{{\"city\":\"x\",\"lat\":1.5}}}}",
            n % 60
        )
        .into_bytes()
    });
    let mutated = (
        good.clone(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..4), 1..6),
    )
        .prop_map(|(mut m, edits)| {
            for (at, byte, op) in edits {
                if m.is_empty() {
                    break;
                }
                let i = at % m.len();
                match op {
                    0 => m[i] ^= 1 << (byte % 8),
                    1 => m.truncate(i),
                    2 => m.insert(i, byte),
                    _ => m.splice(i..i, [0xff, 0xfe, 0x00]).for_each(drop),
                }
            }
            m
        });
    prop_oneof![
        4 => object,
        2 => good,
        3 => mutated,
        1 => "[ \t\r\n]{0,8}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => (1usize..200_000).prop_map(|n| "[".repeat(n).into_bytes()),
        1 => (1usize..80_000).prop_map(|n| format!("{{\"id\":\"{}\"}}", "y".repeat(n)).into_bytes()),
    ]
}

fn reasons(dead: &RecordBatch) -> Vec<String> {
    let r = dead
        .column_by_name("reason")
        .expect("reason")
        .as_string::<i32>();
    (0..r.len()).map(|i| r.value(i).to_string()).collect()
}

/// Every row keeps its column's rules: NOT NULL columns filled, floats finite.
fn rows_are_within_their_columns(rows: &RecordBatch) -> Result<(), TestCaseError> {
    for (f, c) in rows.schema().fields().iter().zip(rows.columns()) {
        if !f.is_nullable() {
            prop_assert_eq!(c.null_count(), 0, "NOT NULL column {} holds NULL", f.name());
        }
        if f.data_type() == &DataType::Float64 {
            let v = c.as_primitive::<Float64Type>();
            for i in 0..v.len() {
                prop_assert!(
                    v.is_null(i) || v.value(i).is_finite(),
                    "{} holds {}",
                    f.name(),
                    v.value(i)
                );
            }
        }
    }
    Ok(())
}

#[test]
fn hostile_messages_are_each_a_row_or_a_dead_letter_with_a_reason() {
    with_watchdog("decoder property", Duration::from_secs(600), || {
        // 64 runs of up to 320 messages: ~10k messages, more with the shrinking of a failure.
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let total = std::sync::atomic::AtomicUsize::new(0);
        let strategy = proptest::collection::vec(message(), 150..320);
        let outcome = runner.run(&strategy, |msgs| {
            let mut d = decoder();
            let mut became_rows = 0;
            for (i, m) in msgs.iter().enumerate() {
                if d.push(m, "hostile", &format!("message {i}")) {
                    became_rows += 1;
                }
                prop_assert!(
                    d.take_failure().is_none(),
                    "a message is not a source failure"
                );
            }
            let (rows, dead) = d.flush().expect("flush");
            prop_assert_eq!(rows.num_rows(), became_rows);
            prop_assert_eq!(
                rows.num_rows() + dead.num_rows(),
                msgs.len(),
                "in = rows + dead"
            );
            for r in reasons(&dead) {
                prop_assert!(!r.trim().is_empty(), "a dead letter without a reason");
            }
            rows_are_within_their_columns(&rows)?;
            total.fetch_add(msgs.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
        let total = total.into_inner();
        assert!(total >= 10_000, "only {total} messages were generated");
    });
}

/// The specific shapes the operations issue names, once each, with what must happen.
#[test]
fn each_named_hostile_shape_is_refused_with_its_reason() {
    let deep = format!(
        "{{\"id\":\"a\",\"note\":{}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty message"),
        (b" \t\r\n ".to_vec(), "empty message"),
        ("[".repeat(60_000).into_bytes(), "not valid JSON"),
        (deep.into_bytes(), "recursion limit"),
        (
            br#"{"id":"a","amount":NaN,"ts":"2026-12-01T00:00:00Z"}"#.to_vec(),
            "not valid JSON",
        ),
        (
            br#"{"id":"a","amount":"Infinity","ts":"2026-12-01T00:00:00Z"}"#.to_vec(),
            "amount",
        ),
        (
            br#"{"id":"a","amount":1e999,"ts":"2026-12-01T00:00:00Z"}"#.to_vec(),
            "number out of range",
        ),
        (
            br#"{"id":"a","amount":1,"n":9223372036854775808,"ts":"2026-12-01T00:00:00Z"}"#
                .to_vec(),
            "n",
        ),
        (
            br#"{"id":"a","amount":1,"u":-1,"ts":"2026-12-01T00:00:00Z"}"#.to_vec(),
            "u",
        ),
        (
            br#"{"id":"a","amount":1,"ts":"+275760-09-13T00:00:00Z"}"#.to_vec(),
            "ts",
        ),
        (br#"{"id":"a","amount":1,"ts":1e20}"#.to_vec(), "ts"),
        (
            br#"{"id":"a","id":"b","amount":1,"ts":"2026-12-01T00:00:00Z"}"#.to_vec(),
            "twice",
        ),
        (
            b"{\"id\":\"\xff\xfe\",\"amount\":1,\"ts\":\"2026-12-01T00:00:00Z\"}".to_vec(),
            "not valid JSON",
        ),
        (
            format!("{{\"id\":\"{}\"}}", "z".repeat(70_000)).into_bytes(),
            "exceeds the 65536-byte limit",
        ),
    ];
    for (msg, want) in cases {
        let mut d = decoder();
        let shown = String::from_utf8_lossy(&msg[..msg.len().min(60)]).into_owned();
        assert!(!d.push(&msg, "hostile", &0), "{shown} became a row");
        let (_, dead) = d.flush().expect("flush");
        let r = reasons(&dead);
        assert_eq!(r.len(), 1, "{shown}");
        assert!(
            r[0].contains(want),
            "{shown}: reason {:?}, want {want:?}",
            r[0]
        );
    }
    // A NUL inside a string is data, not an attack: it arrives as written.
    let mut d = decoder();
    assert!(d.push(
        br#"{"id":"a\u0000b","amount":1,"ts":"2026-12-01T00:00:00Z"}"#,
        "hostile",
        &0
    ));
    let (rows, _) = d.flush().expect("flush");
    assert_eq!(rows.column(0).as_string::<i32>().value(0), "a\u{0}b");
}

/// A pipeline file, cut and spliced at random: the front end (parse and plan) never panics,
/// and every error it gives starts with `file:line:column:` inside the file.
#[test]
fn mutated_pipeline_files_fail_at_a_line_and_column_never_panic() {
    with_watchdog("SQL front end property", Duration::from_secs(600), || {
        let originals: Vec<&'static str> = vec![
            include_str!("../../../sql/pipeline.sql"),
            include_str!("../../../sql/pipeline_kafka.sql"),
            include_str!("../../../sql/pipeline_postgres.sql"),
        ];
        let forest = Arc::new(
            txguard_iforest::Forest::load(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/default.json"
            ))
            .expect("the default model"),
        );
        let functions: Vec<_> = txguard_iforest_datafusion::forest_udfs("default", forest)
            .expect("udfs")
            .into_iter()
            .map(Arc::new)
            .collect();
        let connectors = txguard_connectors::specs();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // The originals are valid: the property below is about the mutations.
        for (i, sql) in originals.iter().enumerate() {
            let p = parse("pipeline.sql", sql).unwrap_or_else(|e| panic!("original {i}: {e}"));
            rt.block_on(check(&p, &connectors, &functions))
                .unwrap_or_else(|e| panic!("original {i}: {e}"));
        }
        let tokens = proptest::sample::select(vec![
            "'",
            "\"",
            "(",
            ")",
            ",",
            ";",
            "--",
            "/*",
            "*/",
            "=",
            "INTERVAL",
            "'5' SECOND",
            "WATERMARK FOR",
            "CREATE TABLE",
            "CREATE VIEW x AS",
            "INSERT INTO",
            "SELECT",
            "OVER (",
            "PARTITION BY",
            "TUMBLE(",
            "NOT NULL",
            "PRIMARY KEY",
            "STRUCT<",
            ">",
            "connector",
            "WITH (",
            "\u{0}",
            "é",
            "🙂",
            "\n",
            "\t",
            "99999999999999999999",
            "-1",
            "''",
            "$1",
            "`",
            "[",
            "]",
        ]);
        let edit = (any::<usize>(), 0usize..40, 0u8..4, tokens);
        let strategy = (0..originals.len(), proptest::collection::vec(edit, 1..5));
        let mut runner = TestRunner::new(Config {
            cases: 400,
            failure_persistence: None,
            ..Config::default()
        });
        let errors = std::sync::atomic::AtomicUsize::new(0);
        let outcome = runner.run(&strategy, |(which, edits)| {
            let mut text: Vec<char> = originals[which].chars().collect();
            for (at, len, op, token) in edits {
                let i = at % (text.len() + 1);
                let j = (i + len).min(text.len());
                match op {
                    0 => drop(text.drain(i..j)),
                    1 => drop(text.splice(i..i, token.chars())),
                    2 => drop(text.splice(i..j, token.chars())),
                    _ => {
                        let copy: Vec<char> = text[i..j].to_vec();
                        text.splice(i..i, copy);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            let lines = text.lines().count() as u64 + 1;
            let err = match parse("pipeline.sql", &text) {
                Err(e) => Some(e),
                Ok(p) => rt.block_on(check(&p, &connectors, &functions)).err(),
            };
            if let Some(e) = err {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let shown = e.to_string();
                prop_assert!(shown.starts_with("pipeline.sql:"), "{shown}");
                prop_assert!(
                    e.line >= 1 && e.line <= lines,
                    "line {} of {lines}: {shown}",
                    e.line
                );
                prop_assert!(e.column >= 1, "column {}: {shown}", e.column);
            }
            Ok(())
        });
        if let Err(e) = outcome {
            panic!("{e}");
        }
        let errors = errors.into_inner();
        assert!(
            errors >= 100,
            "only {errors} of 400 mutated files failed: the mutations are too mild"
        );
    });
}
