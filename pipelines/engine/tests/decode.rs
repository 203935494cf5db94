//! Messages as producers in the wild send them: every accepted shape decodes to the right
//! values, every bad one becomes a dead letter with its reason and position, and the counts
//! reconcile (in = events + dead letters).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use txguard_engine::decode::{Decoder, parse_time_text};
use txguard_engine::event::{dead_letter_schema, transaction_schema};

fn micros(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .timestamp_micros()
}

fn decode(msgs: &[&str]) -> (RecordBatch, RecordBatch) {
    let mut d = Decoder::new(400);
    for (i, m) in msgs.iter().enumerate() {
        d.push(
            m.as_bytes(),
            "transactions",
            &format!("partition 0 offset {i}"),
        );
    }
    d.flush().expect("flush")
}

#[test]
fn accepts_what_python_producers_send() {
    let msgs = [
        // json.dumps of a dict with datetime.isoformat(): no zone, microseconds
        r#"{"transaction_id": "t1", "user_id": "u1", "amount": 12.5, "timestamp": "2026-11-22T10:15:30.123456", "merchant": "m1"}"#,
        // amount as string, epoch milliseconds, extra fields, different key order
        r#"{"amount": "99.90", "extra": {"nested": [1,2]}, "timestamp": 1763806530123, "user_id": "u2", "transaction_id": "t2", "currency": "EUR"}"#,
        // alias ts, epoch seconds with fraction, integer ids
        r#"{"transaction_id": 3, "user_id": 42, "amount": 7, "ts": 1763806530.5}"#,
        // alias event_time, RFC 3339 with offset, space separator, optional fields present
        r#"{"transaction_id": "t4", "user_id": "u4", "amount": 0, "event_time": "2026-11-22 12:15:30+02:00", "lat": 48.85, "lon": "2.35", "is_fraud": 1, "device_id": 77}"#,
        // isoformat with space separator, no fraction; is_fraud as bool
        r#"{"transaction_id": "t5", "user_id": "u5", "amount": 1e3, "timestamp": "2026-11-22 10:15:30", "is_fraud": false, "channel": null}"#,
    ];
    let (rows, dead) = decode(&msgs);
    assert_eq!(dead.num_rows(), 0, "{dead:?}");
    assert_eq!(rows.schema(), transaction_schema());
    assert_eq!(rows.num_rows(), 5);
    let ids = rows.column(0).as_string::<i32>();
    let users = rows.column(1).as_string::<i32>();
    let amount = rows.column(2).as_primitive::<Float64Type>();
    let ts = rows.column(3).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(
        (0..5).map(|i| ids.value(i)).collect::<Vec<_>>(),
        ["t1", "t2", "3", "t4", "t5"]
    );
    assert_eq!(users.value(2), "42");
    assert_eq!(
        (0..5).map(|i| amount.value(i)).collect::<Vec<_>>(),
        [12.5, 99.9, 7.0, 0.0, 1000.0]
    );
    assert_eq!(ts.value(0), micros("2026-11-22T10:15:30.123456Z"));
    assert_eq!(ts.value(1), 1_763_806_530_123_000);
    assert_eq!(ts.value(2), 1_763_806_530_500_000);
    assert_eq!(ts.value(3), micros("2026-11-22T10:15:30Z"));
    assert_eq!(ts.value(4), micros("2026-11-22T10:15:30Z"));
    let col = |name: &str| {
        rows.column(rows.schema().index_of(name).expect("column"))
            .clone()
    };
    assert_eq!(col("currency").as_string::<i32>().value(1), "EUR");
    assert!(col("currency").is_null(0));
    assert_eq!(col("device_id").as_string::<i32>().value(3), "77");
    assert_eq!(col("lon").as_primitive::<Float64Type>().value(3), 2.35);
    let fraud = col("is_fraud");
    let fraud = fraud.as_boolean();
    assert!(fraud.value(3) && !fraud.value(4) && fraud.is_null(0));
}

#[test]
fn rejects_with_reasons_and_positions() {
    let cases = [
        ("not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        (r#""just a string""#, "not a JSON object"),
        (
            r#"{"user_id": "u", "amount": 1, "timestamp": 1}"#,
            "required field transaction_id is missing or null",
        ),
        (
            r#"{"transaction_id": "t", "amount": 1, "timestamp": 1}"#,
            "required field user_id is missing or null",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": null, "timestamp": 1}"#,
            "required field amount is missing or null",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1}"#,
            "required field timestamp (or ts, event_time) is missing or null",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": -5, "timestamp": 1}"#,
            "amount must be a finite number >= 0, got -5",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": "NaN", "timestamp": 1}"#,
            "amount must be a finite number >= 0, got NaN",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": "12,50", "timestamp": 1}"#,
            "\"12,50\" is not a number",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": true, "timestamp": 1}"#,
            "expected a number or a numeric string",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": "yesterday"}"#,
            "timestamp \"yesterday\" is not ISO 8601",
        ),
        (
            r#"{"transaction_id": "", "user_id": "u", "amount": 1, "timestamp": 1}"#,
            "transaction_id is empty",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "lat": 123}"#,
            "lat 123 is out of range",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "currency": 5}"#,
            "invalid type: integer `5`, expected a string",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "is_fraud": 7}"#,
            "is_fraud 7 is not 0 or 1",
        ),
        (
            r#"{"transaction_id": {"a": 1}, "user_id": "u", "amount": 1, "timestamp": 1}"#,
            "expected a string or an integer",
        ),
    ];
    let mut msgs: Vec<String> = cases.iter().map(|(m, _)| m.to_string()).collect();
    let big = format!(
        r#"{{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "pad": "{}"}}"#,
        "x".repeat(500)
    );
    msgs.push(big);
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    let (rows, dead) = decode(&refs);
    assert_eq!(rows.num_rows(), 0);
    assert_eq!(dead.schema(), dead_letter_schema());
    assert_eq!(dead.num_rows(), refs.len(), "in = out + dead");
    let position = dead.column(1).as_string::<i32>();
    let reason = dead.column(2).as_string::<i32>();
    let raw = dead.column(3).as_string::<i32>();
    for (i, (m, want)) in cases.iter().enumerate() {
        assert!(
            reason.value(i).contains(want),
            "case {i} {m}: reason {:?} lacks {want:?}",
            reason.value(i)
        );
        assert_eq!(raw.value(i), *m, "raw payload kept");
        assert_eq!(position.value(i), format!("partition 0 offset {i}"));
        assert_eq!(dead.column(0).as_string::<i32>().value(i), "transactions");
    }
    let last = dead.num_rows() - 1;
    assert!(
        reason.value(last).contains("exceeds the 400-byte limit"),
        "{}",
        reason.value(last)
    );
}

#[test]
fn mixed_stream_reconciles() {
    let mut d = Decoder::default();
    let mut pushed = 0;
    let mut accepted = 0;
    for i in 0..1000 {
        let m = if i % 7 == 0 {
            format!(r#"{{"transaction_id": "t{i}", "amount": 1, "timestamp": 1}}"#)
        } else {
            format!(
                r#"{{"transaction_id": "t{i}", "user_id": "u", "amount": {i}, "timestamp": "2026-01-01T00:00:00"}}"#
            )
        };
        accepted += usize::from(d.push(m.as_bytes(), "file", &i));
        pushed += 1;
    }
    assert_eq!(d.pending_rows() + d.pending_dead(), pushed);
    let (rows, dead) = d.flush().expect("flush");
    assert_eq!(rows.num_rows(), accepted);
    assert_eq!(rows.num_rows() + dead.num_rows(), pushed);
    assert_eq!(dead.num_rows(), 143);
    assert_eq!(d.pending_rows(), 0);
}

#[test]
fn time_formats() {
    let base = micros("2026-11-22T10:15:30Z");
    for s in [
        "2026-11-22T10:15:30Z",
        "2026-11-22T10:15:30+00:00",
        "2026-11-22T11:15:30+01:00",
        "2026-11-22T10:15:30",
        "2026-11-22 10:15:30",
        "2026-11-22T10:15:30.000000",
        "1795342530",
        "1795342530000",
    ] {
        assert_eq!(parse_time_text(s), Ok(base), "{s}");
    }
    assert_eq!(parse_time_text("2026-11-22T10:15"), Ok(base - 30_000_000));
    assert!(parse_time_text("22/11/2026").is_err());
}
