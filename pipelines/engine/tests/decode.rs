//! Messages as producers in the wild send them, decoded into the columns a table declares:
//! every accepted shape decodes to the right values, every bad one becomes a dead letter with
//! its column, reason and position, and the counts reconcile (in = rows + dead letters). The
//! transaction contract's value rules (amounts >= 0, coordinates in range) are CHECKs in the
//! default pipelines' DDL, tested in dead_letters.rs; here only what decoding decides.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use txguard_engine::decode::{Decoder, parse_time_text};
use txguard_engine::event::dead_letter_schema;
use txguard_engine::sql::parse;

/// The default pipelines' transaction table, as sql/pipeline_kafka.sql declares it.
const TRANSACTIONS: &str = "CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL, amount DOUBLE NOT NULL,
    ts TIMESTAMP NOT NULL, currency TEXT, merchant TEXT, device_id TEXT, channel TEXT,
    lat DOUBLE, lon DOUBLE, is_fraud BOOLEAN,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'kafka', bootstrap_servers = 'x', topic = 't',
    'json.aliases' = 'ts=timestamp|event_time', max_message_bytes = 400)";

/// The decoder of the first table of `ddl`.
fn decoder(ddl: &str) -> Decoder {
    let p = parse("t.sql", ddl).expect("parse");
    Decoder::for_table(&p.tables[0]).expect("decoder")
}

fn micros(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .expect("test time")
        .timestamp_micros()
}

fn decode(msgs: &[&str]) -> (RecordBatch, RecordBatch) {
    decode_with(decoder(TRANSACTIONS), msgs)
}

fn decode_with(mut d: Decoder, msgs: &[&str]) -> (RecordBatch, RecordBatch) {
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
        ("   ", "empty message"),
        (
            r#"{"user_id": "u", "amount": 1, "timestamp": 1}"#,
            "column transaction_id is NOT NULL but missing",
        ),
        (
            r#"{"transaction_id": "t", "user_id": null, "amount": 1, "timestamp": 1}"#,
            "column user_id is NOT NULL but null",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1}"#,
            "column ts is NOT NULL but missing",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": "NaN", "timestamp": 1}"#,
            "column amount: \"NaN\" is not a finite number",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": "12,50", "timestamp": 1}"#,
            "column amount: expected a number, got \"12,50\"",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": true, "timestamp": 1}"#,
            "column amount: expected a number, got true",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": "yesterday"}"#,
            "column ts: timestamp \"yesterday\" is not ISO 8601",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "is_fraud": 7}"#,
            "column is_fraud: expected true/false or 0/1, got 7",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "ts": 2}"#,
            "column ts: the field is given twice",
        ),
        (
            r#"{"transaction_id": "t", "user_id": "u", "amount": 1, "timestamp": 1, "lat": 1e400}"#,
            "not valid JSON",
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
        reason
            .value(last)
            .contains("exceeds the 400-byte limit (max_message_bytes)"),
        "{}",
        reason.value(last)
    );
}

#[test]
fn mixed_stream_reconciles() {
    let mut d = decoder(TRANSACTIONS);
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

#[test]
fn any_schema_by_field_name_with_coercions() {
    // Another team's payments: other names, amounts in minor units, unsigned ids, a nested
    // merchant, a free-form JSON column.
    let ddl = "CREATE TABLE payments (
        payment_id TEXT NOT NULL, card_id BIGINT UNSIGNED NOT NULL, amount_cents BIGINT NOT NULL,
        event_time TIMESTAMP NOT NULL, approved BOOLEAN, ratio REAL,
        merchant STRUCT<id TEXT, mcc INT>, device TEXT,
        WATERMARK FOR event_time
    ) WITH (connector = 'kafka', bootstrap_servers = 'x', topic = 't')";
    let (rows, dead) = decode_with(
        decoder(ddl),
        &[
            r#"{"payment_id": "p1", "card_id": 18446744073709551615, "amount_cents": 1250, "event_time": "2026-11-22T10:15:30Z", "approved": 1, "ratio": 0.5, "merchant": {"id": "m1", "mcc": "5411", "extra": true}, "device": {"os": "ios", "v": [1, 2]}}"#,
            r#"{"payment_id": 2, "card_id": "7", "amount_cents": "99", "event_time": 1763806530, "approved": "false", "merchant": null, "device": "web", "unknown": {"x": 1}}"#,
            r#"{"payment_id": "p3", "card_id": 3, "amount_cents": 1e3, "event_time": 1763806530000}"#,
            // bad ones: a fraction into BIGINT, a negative into BIGINT UNSIGNED, a nested
            // value of the wrong type, an object where a number goes
            r#"{"payment_id": "p4", "card_id": 3, "amount_cents": 12.5, "event_time": 1}"#,
            r#"{"payment_id": "p5", "card_id": -1, "amount_cents": 1, "event_time": 1}"#,
            r#"{"payment_id": "p6", "card_id": 1, "amount_cents": 1, "event_time": 1, "merchant": {"mcc": "grocery"}}"#,
            r#"{"payment_id": "p7", "card_id": 1, "amount_cents": {"v": 1}, "event_time": 1}"#,
        ],
    );
    let reasons: Vec<&str> = (0..dead.num_rows())
        .map(|i| dead.column(2).as_string::<i32>().value(i))
        .collect();
    assert_eq!(
        reasons,
        [
            "column amount_cents: expected a whole number, got 12.5",
            "column card_id: expected a whole number >= 0, got -1",
            "column merchant.mcc: expected a whole number, got \"grocery\"",
            "column amount_cents: expected a whole number, got an object",
        ]
    );
    assert_eq!(rows.num_rows(), 3);
    let col = |n: &str| {
        rows.column(rows.schema().index_of(n).expect("column"))
            .clone()
    };
    let ids = col("payment_id");
    assert_eq!(
        ids.as_string::<i32>().value(1),
        "2",
        "an integer id as text"
    );
    let cards = col("card_id");
    let cards = cards.as_primitive::<UInt64Type>();
    assert_eq!([cards.value(0), cards.value(1)], [u64::MAX, 7]);
    let cents = col("amount_cents");
    let cents = cents.as_primitive::<Int64Type>();
    assert_eq!(
        [cents.value(0), cents.value(1), cents.value(2)],
        [1250, 99, 1000]
    );
    let t = col("event_time");
    let t = t.as_primitive::<TimestampMicrosecondType>();
    assert_eq!(t.value(1), 1_763_806_530_000_000, "epoch seconds");
    assert_eq!(t.value(2), 1_763_806_530_000_000, "epoch milliseconds");
    let ok = col("approved");
    let ok = ok.as_boolean();
    assert!(ok.value(0) && !ok.value(1) && ok.is_null(2));
    let m = col("merchant");
    let m = m.as_struct();
    assert!(m.is_valid(0) && m.is_null(1) && m.is_null(2));
    assert_eq!(m.column(0).as_string::<i32>().value(0), "m1");
    assert_eq!(m.column(1).as_primitive::<Int64Type>().value(0), 5411);
    let dev = col("device");
    let dev = dev.as_string::<i32>();
    assert_eq!(
        dev.value(0),
        r#"{"os":"ios","v":[1,2]}"#,
        "nested JSON kept as text"
    );
    assert_eq!(dev.value(1), "web");
}

#[test]
fn raw_string_is_the_whole_payload() {
    let ddl = "CREATE TABLE lines (value TEXT NOT NULL, WATERMARK FOR value)
        WITH (connector = 'kafka', bootstrap_servers = 'x', topic = 't', format = 'raw_string')";
    // (The watermark column is not a TIMESTAMP: parse refuses it.)
    assert!(parse("t.sql", ddl).is_err());
    let ddl = "CREATE TABLE lines (value TEXT NOT NULL)
        WITH (connector = 'kafka', bootstrap_servers = 'x', topic = 't', format = 'raw_string')";
    let (rows, dead) = decode_with(decoder(ddl), &["a,b,c", "{not json}", ""]);
    assert_eq!(rows.num_rows(), 3);
    assert_eq!(rows.column(0).as_string::<i32>().value(1), "{not json}");
    let mut d = decoder(ddl);
    assert!(!d.push(&[0xff, 0xfe], "lines", &0));
    let (_, dead2) = d.flush().expect("flush");
    assert!(dead.num_rows() == 0 && dead2.num_rows() == 1);
    assert!(
        dead2
            .column(2)
            .as_string::<i32>()
            .value(0)
            .starts_with("not UTF-8 text"),
        "{dead2:?}"
    );
}

#[test]
fn ddl_a_decoder_cannot_fill_is_refused() {
    let bad = |ddl: &str, want: &str| {
        let p = parse("t.sql", ddl).expect("parse");
        let e = Decoder::for_table(&p.tables[0]).err().expect("refused");
        assert!(e.to_string().contains(want), "{e}");
    };
    bad(
        "CREATE TABLE t (a TEXT, b TEXT) WITH (connector = 'kafka', format = 'raw_string')",
        "format raw_string fills one TEXT column",
    );
    bad(
        "CREATE TABLE t (a TEXT) WITH (connector = 'kafka', 'json.aliases' = 'b=x')",
        "json.aliases: the table has no column b",
    );
    bad(
        "CREATE TABLE t (a TEXT, b TEXT) WITH (connector = 'kafka', 'json.aliases' = 'a=b')",
        "json.aliases: b is already the field of column b",
    );
}

/// A schema registry in memory, and one that cannot be reached.
struct Lookup(Option<String>);

impl txguard_engine::decode::SchemaLookup for Lookup {
    fn schema(&mut self, id: u32) -> Result<String, txguard_engine::decode::LookupError> {
        use txguard_engine::decode::LookupError::{NotFound, Unavailable};
        match (&self.0, id) {
            (None, _) => Err(Unavailable("registry down".into())),
            (Some(s), 7) => Ok(s.clone()),
            (Some(_), _) => Err(NotFound(format!(
                "schema id {id} is not in the schema registry"
            ))),
        }
    }
}

#[test]
fn avro_datums_plain_and_in_confluent_wire_format() {
    use apache_avro::types::Value;
    let schema_json = r#"{"type": "record", "name": "P", "fields": [
        {"name": "id", "type": "string"}, {"name": "cents", "type": "long"},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "m", "type": ["null", {"type": "record", "name": "M", "fields": [{"name": "mcc", "type": "string"}]}]}]}"#;
    let schema = apache_avro::Schema::parse_str(schema_json).expect("schema");
    let datum = |id: &str, cents: i64| {
        apache_avro::to_avro_datum(
            &schema,
            Value::Record(vec![
                ("id".into(), Value::String(id.into())),
                ("cents".into(), Value::Long(cents)),
                ("at".into(), Value::TimestampMillis(1_767_225_600_000)),
                ("tags".into(), Value::Array(vec![Value::String("a".into())])),
                (
                    "m".into(),
                    Value::Union(
                        1,
                        Box::new(Value::Record(vec![(
                            "mcc".into(),
                            Value::String("5411".into()),
                        )])),
                    ),
                ),
            ]),
        )
        .expect("datum")
    };
    let ddl = |with: &str| {
        format!(
            "CREATE TABLE t (id TEXT NOT NULL, cents BIGINT UNSIGNED, at TIMESTAMP NOT NULL,
                 tags TEXT, m STRUCT<mcc TEXT>, WATERMARK FOR at)
             WITH (connector = 'kafka', bootstrap_servers = 'x', topic = 't', format = 'avro', {with})"
        )
    };
    // Plain datums, the writer schema in the table.
    let plain = decoder(&ddl(&format!(
        "'avro.schema' = '{}'",
        schema_json.replace('\'', "''")
    )));
    let (rows, dead) = decode_bytes(
        plain,
        &[datum("p1", 1250), datum("p2", -1), b"\x02".to_vec()],
    );
    assert_eq!(rows.num_rows(), 1);
    assert_eq!(rows.column(1).as_primitive::<UInt64Type>().value(0), 1250);
    assert_eq!(
        rows.column(2)
            .as_primitive::<TimestampMicrosecondType>()
            .value(0),
        1_767_225_600_000_000
    );
    assert_eq!(rows.column(3).as_string::<i32>().value(0), r#"["a"]"#);
    assert_eq!(
        rows.column(4)
            .as_struct()
            .column(0)
            .as_string::<i32>()
            .value(0),
        "5411"
    );
    let why: Vec<&str> = (0..dead.num_rows())
        .map(|i| dead.column(2).as_string::<i32>().value(i))
        .collect();
    assert!(
        why[0].contains("column cents: expected a whole number >= 0, got -1"),
        "{why:?}"
    );
    assert!(
        why[1].starts_with("not an Avro datum of its schema"),
        "{why:?}"
    );

    // Confluent's wire format: a zero byte, the schema id, the datum.
    let framed = |id: u32, d: Vec<u8>| {
        let mut m = vec![0u8];
        m.extend(id.to_be_bytes());
        m.extend(d);
        m
    };
    let confluent = ddl("'avro.confluent_schema_registry' = true");
    let mut d = decoder(&confluent);
    assert!(d.needs_schema_registry());
    d.set_schema_lookup(Box::new(Lookup(Some(schema_json.into()))));
    let (rows, dead) = decode_bytes(
        d,
        &[
            framed(7, datum("c1", 5)),
            framed(8, datum("c2", 5)),
            datum("c3", 5),
        ],
    );
    assert_eq!(rows.num_rows(), 1);
    let why: Vec<&str> = (0..dead.num_rows())
        .map(|i| dead.column(2).as_string::<i32>().value(i))
        .collect();
    assert_eq!(why[0], "schema id 8 is not in the schema registry");
    assert!(
        why[1].starts_with("not in Confluent's wire format"),
        "{why:?}"
    );

    // A registry that cannot be asked: neither a row nor a dead letter, but a failure.
    let mut d = decoder(&confluent);
    d.set_schema_lookup(Box::new(Lookup(None)));
    assert!(!d.push(&framed(7, datum("c1", 5)), "t", &0));
    assert_eq!(d.take_failure().as_deref(), Some("registry down"));
    assert_eq!(d.pending_rows() + d.pending_dead(), 0);
}

fn decode_bytes(mut d: Decoder, msgs: &[Vec<u8>]) -> (RecordBatch, RecordBatch) {
    for (i, m) in msgs.iter().enumerate() {
        d.push(m, "t", &i);
    }
    d.flush().expect("flush")
}

/// The fast path for ISO 8601 agrees with chrono on every shape it takes, and leaves the rest
/// to the general parsers.
#[test]
fn iso_times_parse_the_same_on_every_path() {
    use chrono::{DateTime, NaiveDateTime};
    for s in [
        "2026-11-22T10:15:30Z",
        "2026-11-22T10:15:30.5Z",
        "2026-11-22T10:15:30.123456789Z",
        "2026-11-22T10:15:30.000001+05:30",
        "2026-11-22T10:15:30-08:00",
        "2024-02-29T23:59:59Z",
        "1969-12-31T23:59:59.999999Z",
        "2000-01-01 00:00:00",
        "1999-12-31T23:59:59.25",
    ] {
        let want = DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_micros())
            .or_else(|_| {
                NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map(|n| n.and_utc().timestamp_micros())
            })
            .expect("chrono reads it");
        assert_eq!(parse_time_text(s), Ok(want), "{s}");
    }
    for bad in [
        "2026-02-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-22T25:00:00Z",
        "2026-11-22T10:15:30+5",
    ] {
        assert!(parse_time_text(bad).is_err(), "{bad}");
    }
}
