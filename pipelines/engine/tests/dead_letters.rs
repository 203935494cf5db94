//! Where bad input goes: a JSON-lines replay with malformed lines, contract-breaking events
//! and late events runs through the runtime; each lands in the dead-letter stream (written to
//! a sink by the pipeline's own `INSERT … FROM txguard_dead_letters`) with its reason and
//! position, nothing is lost, and the counts reconcile: in = out + dead + late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::array::AsArray;
use txguard_connectors::file::FileSource;
use txguard_engine::connector::CollectSink;
use txguard_engine::runtime::{Connections, Metrics, RunOptions, run};
use txguard_engine::sql::{Role, parse};

/// Rows received by a sink.
fn rows(c: &CollectSink) -> usize {
    c.batches().iter().map(|b| b.num_rows()).sum()
}

/// (position, reason, raw) of every dead letter a sink received.
fn dead_letters(c: &CollectSink) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for b in &c.batches() {
        let pos = b.column(1).as_string::<i32>();
        let why = b.column(2).as_string::<i32>();
        let raw = b.column(3).as_string::<i32>();
        for r in 0..b.num_rows() {
            out.push((
                pos.value(r).to_string(),
                why.value(r).to_string(),
                raw.value(r).to_string(),
            ));
        }
    }
    out
}

/// Plans `sql` (a source `transactions` replaying `input`, then two sinks, in that order) and
/// runs it to the end; returns the metrics and what the two sinks received.
async fn run_file_pipeline(
    sql: &str,
    input: &std::path::Path,
    sinks: [&str; 2],
    batch_rows: usize,
) -> (Arc<Metrics>, CollectSink, CollectSink) {
    let mut p = parse(input.with_extension("sql"), sql).expect("parse");
    p.tables[0].options.push(txguard_engine::sql::TableOption {
        key: "batch_rows".into(),
        value: txguard_engine::sql::OptionValue::Number(batch_rows.to_string()),
        loc: Default::default(),
    });
    let roles = [
        ("transactions".to_string(), Role::Source),
        (sinks[0].to_string(), Role::Sink),
        (sinks[1].to_string(), Role::Sink),
    ]
    .into_iter()
    .collect();
    let df = txguard_engine::stream::plan(&p, &roles, &Vec::new())
        .await
        .expect("plan");
    let (first, second) = (CollectSink::default(), CollectSink::default());
    let metrics = Arc::new(Metrics::for_dataflow(&df));
    let source = FileSource::from_table(&p.tables[0]).expect("open");
    run(
        df,
        Connections {
            sources: vec![("transactions".into(), Box::new(source))],
            sinks: vec![Box::new(first.clone()), Box::new(second.clone())],
            resume: None,
            probes: None,
        },
        RunOptions::default(),
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("the run goes on past bad rows");
    (metrics, first, second)
}

const PIPELINE: &str = "
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL,
    amount DOUBLE NOT NULL CONSTRAINT amount_not_negative CHECK (amount >= 0),
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (connector = 'file', path = 'PATH', 'json.aliases' = 'ts=timestamp');
CREATE TABLE scored (transaction_id TEXT, n BIGINT) WITH (connector = 'stdout');
CREATE TABLE dead (source TEXT, position TEXT, reason TEXT, raw TEXT, received_at TIMESTAMP)
    WITH (connector = 'stdout');
INSERT INTO scored
SELECT transaction_id, COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
    RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)
FROM transactions;
INSERT INTO dead SELECT * FROM txguard_dead_letters;
";

#[tokio::test]
async fn malformed_contract_breaking_and_late_events_are_dead_letters_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("tx.jsonl");
    let lines = [
        // 1-3: good, in several producer styles (isoformat without zone, epoch ms, string amount)
        r#"{"transaction_id": "t1", "user_id": "u1", "amount": 10.5, "timestamp": "2026-01-01T00:00:10"}"#,
        r#"{"transaction_id": "t2", "user_id": "u1", "amount": "20", "timestamp": 1767225620000}"#,
        r#"{"transaction_id": "t3", "user_id": "u2", "amount": 5, "ts": "2026-01-01T00:01:00Z", "extra": [1]}"#,
        // 4: malformed JSON
        r#"{"transaction_id": "t4", "user_id": "#,
        // 5: breaks the contract: negative amount
        r#"{"transaction_id": "t5", "user_id": "u1", "amount": -3, "timestamp": "2026-01-01T00:01:01"}"#,
        // 6: breaks the contract: no user
        r#"{"transaction_id": "t6", "amount": 3, "timestamp": "2026-01-01T00:01:02"}"#,
        // 7: late: 45 s behind the watermark (newest event time 00:01:00 minus 5 s)
        r#"{"transaction_id": "t7", "user_id": "u1", "amount": 7, "timestamp": "2026-01-01T00:00:10"}"#,
        // 8: on time: within the 5 s bound
        r#"{"transaction_id": "t8", "user_id": "u2", "amount": 8, "timestamp": "2026-01-01T00:00:57"}"#,
    ];
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let sql = PIPELINE.replace("PATH", &input.to_string_lossy());
    let (metrics, scored, dead) = run_file_pipeline(&sql, &input, ["scored", "dead"], 3).await;

    let at = |l: usize| format!("{}:{l}", input.display());
    let dead = dead_letters(&dead);
    let find = |pos: &str| {
        dead.iter()
            .find(|(p, _, _)| p == pos)
            .unwrap_or_else(|| panic!("no dead letter at {pos}: {dead:?}"))
            .clone()
    };
    let (_, why, raw) = find(&at(4));
    assert!(why.contains("not valid JSON"), "{why}");
    assert_eq!(raw, lines[3], "the raw payload is kept");
    // A CHECK is applied to decoded rows: positioned where the source was after the batch
    // that held the row (lines 4-6), with the row as JSON.
    let (pos, why, raw) = dead
        .iter()
        .find(|(_, w, _)| w.starts_with("CHECK"))
        .expect("t5")
        .clone();
    assert_eq!(pos, at(6));
    assert_eq!(
        why,
        "CHECK constraint amount_not_negative failed: amount >= 0"
    );
    assert!(raw.contains("\"transaction_id\":\"t5\""), "{raw}");
    let (_, why, _) = dead
        .iter()
        .find(|(_, w, _)| w.contains("user_id"))
        .expect("t6")
        .clone();
    assert_eq!(why, "column user_id is NOT NULL but missing");
    let (_, why, raw) = dead
        .iter()
        .find(|(_, w, _)| w.starts_with("late"))
        .expect("t7")
        .clone();
    assert!(
        why.starts_with("late by 45000 ms: event time 2026-01-01T00:00:10.000000Z is behind the watermark 2026-01-01T00:00:55.000000Z"),
        "{why}"
    );
    assert!(
        raw.contains("\"transaction_id\":\"t7\""),
        "the late row as JSON: {raw}"
    );
    assert_eq!(dead.len(), 4, "{dead:?}");
    assert_eq!(rows(&scored), 4, "t1, t2, t3 and t8 are scored");

    let m = metrics.source("transactions").expect("metrics");
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(load(&m.messages_in), 8);
    assert_eq!(load(&m.dead), 3);
    assert_eq!(load(&m.late), 1);
    assert_eq!(load(&m.released), 4);
    assert_eq!(
        load(&m.messages_in),
        load(&m.released) + load(&m.dead) + load(&m.late),
        "in = out + dead + late"
    );
}

#[tokio::test]
async fn rows_breaking_a_sinks_not_null_columns_become_dead_letters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("tx.jsonl");
    let lines = [
        r#"{"transaction_id": "a", "user_id": "u1", "amount": 1, "timestamp": "2026-01-01T00:00:01"}"#,
        r#"{"transaction_id": "b", "user_id": "u1", "amount": 2, "timestamp": "2026-01-01T00:00:02"}"#,
        r#"{"transaction_id": "c", "user_id": "u2", "amount": 3, "timestamp": "2026-01-01T00:00:03"}"#,
    ];
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let sql = format!(
        "CREATE TABLE transactions (transaction_id TEXT NOT NULL, user_id TEXT NOT NULL,
             amount DOUBLE NOT NULL, ts TIMESTAMP NOT NULL,
             WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
         WITH (connector = 'file', path = '{}', 'json.aliases' = 'ts=timestamp');
         CREATE TABLE strict (transaction_id TEXT NOT NULL, prev DOUBLE NOT NULL)
             WITH (connector = 'stdout');
         CREATE TABLE dead (source TEXT, position TEXT, reason TEXT, raw TEXT, received_at TIMESTAMP)
             WITH (connector = 'stdout');
         INSERT INTO strict SELECT transaction_id, LAG(amount) OVER (PARTITION BY user_id ORDER BY ts)
             FROM transactions;
         INSERT INTO dead SELECT * FROM txguard_dead_letters;",
        input.display()
    );
    let (metrics, strict, dead) = run_file_pipeline(&sql, &input, ["strict", "dead"], 10).await;
    assert_eq!(rows(&strict), 1, "only b has a previous amount");
    let mut dead = dead_letters(&dead);
    dead.sort();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for ((_, why, raw), id) in dead.iter().zip(["a", "c"]) {
        assert!(
            why.starts_with("sink strict: NULL in NOT NULL column prev;"),
            "{why}"
        );
        assert_eq!(raw, &format!("{{\"transaction_id\":\"{id}\"}}"));
    }
    assert_eq!(metrics.rejected_by_sinks.load(Ordering::Relaxed), 2);
}
