//! Pipeline files: a valid one parses and plans; each kind of mistake fails before anything
//! runs, naming the file, line and column and saying what to do.

use std::sync::Arc;

use ndarray::Array2;
use txguard_engine::sql::{ConnectorSpec, OptionKind, OptionSpec, Role, check, parse};

/// A sink used only by these tests: a spec is plain data.
const COLLECT: ConnectorSpec = ConnectorSpec {
    name: "collect",
    roles: &[Role::Sink],
    options: &[OptionSpec {
        key: "limit",
        kind: OptionKind::Integer,
        required: false,
        help: "rows to keep",
    }],
    metadata: &[],
    decodes: false,
    check_table: None,
};

fn connectors() -> Vec<ConnectorSpec> {
    let mut v = txguard_connectors::specs();
    v.push(COLLECT);
    v
}

fn functions() -> Vec<Arc<datafusion::logical_expr::ScalarUDF>> {
    let x = Array2::from_shape_fn((300, 2), |(i, j)| ((i * 13 + j * 7) % 50) as f64);
    let names = vec!["log_amount".to_string(), "count_1h".into()];
    let forest = txguard_iforest::fit(
        txguard_iforest::TrainingSet {
            x: x.view(),
            features: &names,
            labels: None,
            source: None,
        },
        &txguard_iforest::FitParams {
            n_estimators: 3,
            ..Default::default()
        },
    )
    .expect("fit");
    txguard_iforest_datafusion::forest_udfs("default", Arc::new(forest))
        .expect("udfs")
        .into_iter()
        .map(Arc::new)
        .collect()
}

const GOOD: &str = include_str!("sql/good.sql");

async fn error_of(sql: &str) -> String {
    let p = match parse("pipeline.sql", sql) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    check(&p, &connectors(), &functions())
        .await
        .expect_err("must fail")
        .to_string()
}

#[tokio::test]
async fn the_example_pipeline_parses_and_plans() {
    let p = parse("tests/sql/good.sql", GOOD).expect("parse");
    assert_eq!(p.tables.len(), 3);
    let t = &p.tables[0];
    assert_eq!(t.name, "transactions");
    assert_eq!(t.connector, "generator");
    let w = t.watermark.as_ref().expect("watermark");
    assert_eq!((w.column.as_str(), w.delay_micros), ("ts", 5_000_000));
    assert_eq!(
        t.option("fraud_rate").map(|o| o.value.as_text()),
        Some("0.01".into())
    );
    assert_eq!(t.option("users").map(|o| o.loc.line), Some(11));
    assert_eq!(p.views.len(), 1);
    assert_eq!(
        p.inserts
            .iter()
            .map(|i| i.table.as_str())
            .collect::<Vec<_>>(),
        ["scored", "per_minute"]
    );
    assert_eq!(p.inserts[0].loc.line, 37);
    check(&p, &connectors(), &functions())
        .await
        .expect("valid pipeline");
    let cfg = txguard_connectors::generator::config_from(t).expect("generator config");
    assert_eq!((cfg.users, cfg.fraud_rate), (1000, 0.01));
}

#[tokio::test]
async fn mistakes_name_file_line_and_column() {
    let cases: Vec<(String, &str)> = vec![
        (
            GOOD.replace("connector = 'generator'", "connector = 'generatr'"),
            "pipeline.sql:10:5: unknown connector 'generatr' (did you mean generator?); available: generator, file, delta, postgres, kafka, stdout, collect",
        ),
        (
            GOOD.replace("users = 1000", "user = 1000"),
            "pipeline.sql:11:5: connector generator has no option user (did you mean users?)",
        ),
        (
            GOOD.replace("users = 1000", "users = 'many'"),
            "pipeline.sql:11:5: option users = 'many': expected a whole number",
        ),
        (
            GOOD.replace("    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND\n", "")
                .replace("merchant TEXT,", "merchant TEXT"),
            "pipeline.sql:2:1: source transactions needs event time: add WATERMARK FOR <a TIMESTAMP column> AS <that column> - INTERVAL '5' SECOND",
        ),
        (
            GOOD.replace("INTERVAL '5' SECOND\n", "INTERVAL '5' FORTNIGHT\n"),
            "pipeline.sql:8:30: unknown interval unit 'fortnight'",
        ),
        (
            GOOD.replace("WATERMARK FOR ts AS ts", "WATERMARK FOR tx AS tx"),
            "pipeline.sql:8:5: WATERMARK FOR tx: transactions has no such column",
        ),
        (
            GOOD.replace(
                "iforest_score(log_amount, count_1h)",
                "iforest_score(log_amount)",
            ),
            "pipeline.sql:37:1: INSERT INTO scored: iforest_score() takes 2 arguments, the features of model 'default' in order: log_amount, count_1h; got 1",
        ),
        (
            GOOD.replace(
                "ln(1 + amount) AS log_amount",
                "ln(1 + amont) AS log_amount",
            ),
            "pipeline.sql:30:1: view features:",
        ),
        (
            GOOD.replace("count_1h, iforest_score", "iforest_score"),
            "pipeline.sql:37:1: INSERT INTO scored: the query gives 4 columns, the table has 5",
        ),
        (
            GOOD.replace(
                "SELECT user_id, window.start, n, total",
                "SELECT user_id, n, window.start, total",
            ),
            "pipeline.sql:40:1: INSERT INTO per_minute: column 2 (window_start) is Timestamp(µs, \"UTC\") but the query gives Int64 (n)",
        ),
        (
            GOOD.replace("WITH (connector = 'collect');", ";"),
            "pipeline.sql:15:1: table scored has no connector: add WITH (connector = '…', …)",
        ),
        (
            format!(
                "{GOOD}\nINSERT INTO transactions SELECT transaction_id, user_id, amount, ts, merchant FROM transactions;"
            ),
            "pipeline.sql:46:1: INSERT INTO transactions: it is a source, not a sink",
        ),
        (
            GOOD.replace("INSERT INTO per_minute", "INSERT INTO scored"),
            "pipeline.sql:23:1: sink per_minute is never written by an INSERT INTO",
        ),
        (
            format!("{GOOD}\nDROP TABLE scored;"),
            "pipeline.sql:46:1: a pipeline holds CREATE TABLE, CREATE VIEW and INSERT INTO statements; found `DROP TABLE scored`",
        ),
        (
            GOOD.replace("type = 'sink'", "type = 'source'"),
            "pipeline.sql:28:32: connector collect cannot be a source",
        ),
        // The connectors' own options structs, parsed at validate, at the option.
        (
            GOOD.replace("'fraud_rate' = 0.01", "'fraud_rate' = 1.5"),
            "pipeline.sql:12:5: table transactions: option fraud_rate: 1.5 is not between 0 and 1",
        ),
        (
            GOOD.replace(
                "WITH (connector = 'collect');",
                "WITH (connector = 'postgres', write_mode = 'append',\n    primary_key = 'transaction_id');",
            ),
            "pipeline.sql:22:5: table scored: option primary_key: is for write_mode = 'upsert'; drop one of them",
        ),
        (
            GOOD.replace(
                "WITH (connector = 'collect');",
                "WITH (connector = 'delta', path = 'x', batch_rows = 0);",
            ),
            "pipeline.sql:21:42: table scored: option batch_rows: \"0\" is not a positive whole number",
        ),
        (
            GOOD.replace(
                "WITH (connector = 'collect');",
                "WITH (connector = 'kafka', bootstrap_servers = 'b:9092', topic = 't',\n    client_configs = 'linger.ms=5;oops');",
            ),
            "pipeline.sql:22:5: table scored: option client_configs: \"oops\" is not key=value",
        ),
    ];
    for (sql, want) in cases {
        let got = error_of(&sql).await;
        assert!(got.contains(want), "\nwant: {want}\n got: {got}");
    }
}

/// DataFusion picks among equally close function names in hash-map order; the hint must be
/// the same on every run (each planning context hashes with its own seed).
#[tokio::test]
async fn the_hint_for_an_unknown_function_is_the_same_every_time() {
    let sql = GOOD.replace(
        "iforest_score(log_amount, count_1h)",
        "iforest_scor(log_amount, count_1h)",
    );
    let first = error_of(&sql).await;
    assert!(
        first.contains("pipeline.sql:37:1: INSERT INTO scored: unknown function iforest_scor (did you mean iforest_score?)"),
        "{first}"
    );
    // Equally far (2 edits) from several built-ins: the nearest by name wins, every time.
    let sql = GOOD.replace("ln(1 + amount)", "lx2(1 + amount)");
    let first = error_of(&sql).await;
    assert!(
        first.contains("unknown function lx2 (did you mean "),
        "{first}"
    );
    for _ in 0..20 {
        assert_eq!(error_of(&sql).await, first);
    }
}

#[test]
fn intervals() {
    use txguard_engine::sql::parse_interval_micros as iv;
    assert_eq!(iv("5", Some("SECOND")), Ok(5_000_000));
    assert_eq!(iv("5 seconds", None), Ok(5_000_000));
    assert_eq!(iv("1", Some("HOUR")), Ok(3_600_000_000));
    assert_eq!(iv("250 milliseconds", None), Ok(250_000));
    assert!(iv("x", Some("SECOND")).is_err());
}

/// A Kafka source with `metadata('…')` columns: the good form plans, and each mistake names
/// the column's line and what to write instead.
#[tokio::test]
async fn metadata_columns_are_checked_against_the_connector() {
    let kafka = |cols: &str, connector: &str| {
        format!(
            "CREATE TABLE tx (
    transaction_id TEXT NOT NULL,
    user_id TEXT,
    amount DOUBLE,
    ts TIMESTAMP NOT NULL,
{cols},
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ({connector});
CREATE TABLE out (transaction_id TEXT, p BIGINT) WITH (connector = 'collect');
INSERT INTO out SELECT transaction_id, p FROM tx;"
        )
    };
    let on_kafka =
        "connector = 'kafka', type = 'source', bootstrap_servers = 'b:9092', topic = 't'";
    let good = kafka(
        "    p INT GENERATED ALWAYS AS (metadata('partition')) STORED,
    o BIGINT GENERATED ALWAYS AS (metadata('offset_id')) STORED,
    kts TIMESTAMP GENERATED ALWAYS AS (metadata('timestamp')) STORED,
    k TEXT GENERATED ALWAYS AS (metadata('key')) STORED",
        on_kafka,
    );
    let p = parse("pipeline.sql", &good).expect("parse");
    let meta: Vec<(String, Option<String>)> = p.tables[0]
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.metadata.clone()))
        .collect();
    assert_eq!(meta[4], ("p".into(), Some("partition".into())));
    assert_eq!(meta[7], ("k".into(), Some("key".into())));
    assert_eq!(meta[0].1, None);
    assert_eq!(p.tables[0].columns[5].loc.line, 7);
    check(&p, &connectors(), &functions())
        .await
        .expect("metadata columns plan");

    let cases = [
        (
            kafka(
                "    p INT GENERATED ALWAYS AS (metadata('partiton')) STORED",
                on_kafka,
            ),
            "pipeline.sql:6:5: column tx.p: no metadata field 'partiton' (did you mean partition?); connector kafka offers partition, offset_id, timestamp, key, topic",
        ),
        (
            kafka(
                "    p TEXT GENERATED ALWAYS AS (metadata('partition')) STORED",
                on_kafka,
            ),
            "pipeline.sql:6:5: column tx.p: metadata('partition') (the message's partition) needs a BIGINT or INT column, not Utf8",
        ),
        (
            kafka(
                "    p BIGINT GENERATED ALWAYS AS (metadata('timestamp')) STORED",
                on_kafka,
            ),
            "needs a TIMESTAMP column, not Int64",
        ),
        (
            kafka(
                "    p BIGINT GENERATED ALWAYS AS (amount * 2) STORED",
                on_kafka,
            ),
            "pipeline.sql:6:5: column tx.p: GENERATED ALWAYS AS (amount * 2) is not supported; only metadata('key') columns are",
        ),
        (
            kafka(
                "    p BIGINT GENERATED ALWAYS AS (metadata('partition')) STORED",
                "connector = 'generator'",
            ),
            "pipeline.sql:6:5: column tx.p: no metadata field 'partition'; connector generator offers no metadata fields",
        ),
        (
            good.replace(
                "CREATE TABLE out (transaction_id TEXT, p BIGINT)",
                "CREATE TABLE out (transaction_id TEXT,\n p BIGINT GENERATED ALWAYS AS (metadata('partition')) STORED)",
            ),
            "pipeline.sql:13:2: column out.p: metadata('partition') columns are filled by a source; out is a sink",
        ),
    ];
    for (sql, want) in cases {
        let got = error_of(&sql).await;
        assert!(got.contains(want), "\nwant: {want}\n got: {got}");
    }
}

/// Arroyo's current table syntax parses, and a DDL its connector cannot serve fails at
/// validate with file:line:column.
#[tokio::test]
async fn arroyo_table_syntax_and_ddl_the_connector_cannot_serve() {
    let tx = |columns: &str, with: &str| {
        format!(
            "CREATE TABLE tx (
    payment_id TEXT NOT NULL,
    card_id BIGINT UNSIGNED,
    amount_cents BIGINT CHECK (amount_cents >= 0),
    event_time TIMESTAMP NOT NULL,{columns}
    WATERMARK FOR event_time
) WITH ({with});
CREATE TABLE out (payment_id TEXT) WITH (connector = 'collect');
INSERT INTO out SELECT payment_id FROM tx;"
        )
    };
    let kafka = "connector = 'kafka', type = 'source', bootstrap_servers = 'b:9092', topic = 't'";
    let good = tx(
        "\n    part INT METADATA FROM 'partition',\n    off BIGINT METADATA FROM 'offset_id' VIRTUAL,",
        kafka,
    );
    let p = parse("pipeline.sql", &good).expect("parse");
    let t = &p.tables[0];
    assert_eq!(
        t.watermark.as_ref().map(|w| w.delay_micros),
        Some(1_000_000)
    );
    assert_eq!(t.columns[1].data_type, arrow::datatypes::DataType::UInt64);
    assert_eq!(t.columns[4].metadata.as_deref(), Some("partition"));
    assert_eq!(t.columns[5].metadata.as_deref(), Some("offset_id"));
    assert_eq!(t.checks.len(), 1);
    assert_eq!(t.checks[0].name, "tx_amount_cents_check");
    check(&p, &connectors(), &functions())
        .await
        .expect("Arroyo's syntax plans");
    // Arroyo's parenthesised watermark expression with a one-string interval.
    for (form, micros) in [
        ("AS (event_time - INTERVAL '1 minute')", 60_000_000),
        ("AS (event_time - interval '10 minute')", 600_000_000),
        ("AS (event_time)", 0),
        ("AS event_time - INTERVAL '2' SECOND", 2_000_000),
    ] {
        let sql = good.replace(
            "WATERMARK FOR event_time\n",
            &format!("WATERMARK FOR event_time {form}\n"),
        );
        let p = parse("pipeline.sql", &sql).expect(form);
        assert_eq!(
            p.tables[0].watermark.as_ref().map(|w| w.delay_micros),
            Some(micros),
            "{form}"
        );
    }

    let cases = [
        (
            tx("\n    CONSTRAINT sane CHECK (amount_centz < 10),", kafka),
            "pipeline.sql:6:5: table tx: CHECK constraint sane:",
        ),
        (
            tx("\n    CHECK (payment_id),", kafka),
            "gives Utf8, not a boolean",
        ),
        (
            tx("", &format!("{kafka}, format = 'raw_string'")),
            "pipeline.sql:7:90: table tx: format raw_string fills one TEXT column",
        ),
        (
            tx("", &format!("{kafka}, 'json.aliases' = 'ts=timestamp'")),
            "table tx: json.aliases: the table has no column ts",
        ),
        (
            tx("", "connector = 'generator'"),
            "pipeline.sql:2:5: table tx: the generator gives no column payment_id; it gives transaction_id Utf8",
        ),
        (
            good.replace(
                "CREATE TABLE out (payment_id TEXT)",
                "CREATE TABLE out (payment_id TEXT CHECK (payment_id <> ''))",
            ),
            "constraints apply to source tables",
        ),
        (
            tx("\n    x TEXT METADATA FROM,", kafka),
            "write METADATA FROM 'key'",
        ),
    ];
    for (sql, want) in cases {
        let got = error_of(&sql).await;
        assert!(got.contains(want), "\nwant: {want}\n got: {got}");
    }
}

/// A sink declared without columns (Arroyo's `CREATE TABLE out WITH (…)`) takes its INSERT's
/// columns; a query column no sink can store is reported at the sink, asking for columns.
#[tokio::test]
async fn sinks_without_columns_take_their_inserts_columns() {
    let sql = GOOD.replace(
        "CREATE TABLE scored (
    transaction_id TEXT NOT NULL,
    user_id TEXT,
    amount DOUBLE,
    count_1h BIGINT,
    score DOUBLE
) WITH (connector = 'collect');",
        "CREATE TABLE scored WITH (connector = 'collect');",
    );
    assert_ne!(sql, GOOD, "the sink's columns were replaced");
    let mut p = parse("pipeline.sql", &sql).expect("parse");
    assert!(p.table("scored").expect("scored").columns.is_empty());
    let functions = functions();
    txguard_engine::sql::infer_sink_columns(&mut p, &functions).await;
    let cols: Vec<(String, String)> = p
        .table("scored")
        .expect("scored")
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.data_type.to_string()))
        .collect();
    assert_eq!(cols.len(), 5, "{cols:?}");
    assert_eq!(cols[0], ("transaction_id".into(), "Utf8".into()));
    assert_eq!(cols[3].1, "Int64");
    assert_eq!(cols[4].1, "Float64");
    check(&p, &connectors(), &functions)
        .await
        .expect("plans with the inferred columns");

    // Without inference (or with a type no sink stores) check asks for the columns.
    let p = parse("pipeline.sql", &sql).expect("parse");
    let e = check(&p, &connectors(), &functions)
        .await
        .expect_err("no columns")
        .to_string();
    assert!(
        e.contains("pipeline.sql:15:1: sink scored declares no columns"),
        "{e}"
    );
}
