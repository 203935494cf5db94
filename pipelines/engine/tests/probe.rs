//! The online scoring path ([`txguard_engine::probe`]) against a running runtime: generator
//! transactions stream through a pipeline with OVER windows, a WHERE and the forest UDFs; once
//! they are all in the windows, rows probed through the [`Prober`] must equal DataFusion's
//! batch answer over the same history plus that one row (a differential test), leave the
//! state as it was (probing twice gives the same answer; the sink's rows equal the batch
//! answer over the history alone; the scores `/metrics` counts are the pipeline's only), and
//! every bad row must come back with its reason, in order.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, SchemaRef, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use common::{arrivals, close};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txguard_connectors::generator::transaction_schema;
use txguard_engine::connector::{CollectSink, ConnectorError, Poll, Sink, Source};
use txguard_engine::decode::Decoder;
use txguard_engine::probe::{Outcome, ProbeError, Prober};
use txguard_engine::runtime::{Connections, Metrics, RunOptions, run};
use txguard_engine::sql::{PlanningFunctions, check, parse, role_of};
use txguard_iforest::{FitParams, Forest, TrainingSet, fit};
use txguard_iforest_datafusion::{ModelSlot, model_udfs, unobserved};

const PIPELINE: &str = "
CREATE TABLE transactions (
    transaction_id TEXT NOT NULL, user_id TEXT NOT NULL,
    amount DOUBLE NOT NULL CHECK (amount >= 0),
    ts TIMESTAMP NOT NULL,
    WATERMARK FOR ts AS ts - INTERVAL '3' SECOND
) WITH (connector = 'generator');
CREATE TABLE out (
    transaction_id TEXT, n_10m BIGINT, sum_1h DOUBLE, std_1h DOUBLE, score DOUBLE,
    flagged BOOLEAN
) WITH (connector = 'stdout');
CREATE TABLE per_user (user_id TEXT, n BIGINT) WITH (connector = 'stdout');
CREATE VIEW history AS
SELECT transaction_id, user_id, ts, amount,
    COUNT(*) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '10' MINUTE PRECEDING AND CURRENT ROW) AS n_10m,
    SUM(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS sum_1h,
    AVG(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS avg_1h,
    MIN(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS min_1h,
    MAX(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS max_1h,
    STDDEV(amount) OVER (PARTITION BY user_id ORDER BY ts
        RANGE BETWEEN INTERVAL '1' HOUR PRECEDING AND CURRENT ROW) AS std_1h,
    LAG(amount) OVER (PARTITION BY user_id ORDER BY ts) AS prev_amount
FROM transactions;
CREATE VIEW big AS SELECT * FROM history WHERE amount > 100;
CREATE VIEW windowed AS
SELECT user_id, TUMBLE(INTERVAL '1' HOUR) AS window, COUNT(*) AS n
FROM transactions GROUP BY user_id, window;
CREATE VIEW scored AS
SELECT *, iforest_score(ln(1 + amount), CAST(n_10m AS DOUBLE)) AS score,
    iforest_is_anomaly(ln(1 + amount), CAST(n_10m AS DOUBLE)) AS flagged
FROM history;
INSERT INTO out SELECT transaction_id, n_10m, sum_1h, std_1h, score, flagged FROM scored;
INSERT INTO per_user SELECT user_id, n FROM windowed;
";

fn forest() -> Arc<Forest> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Array2::from_shape_fn((2000, 2), |(_, j)| {
        if j == 0 {
            rng.random_range(0.0..6.0)
        } else {
            rng.random_range(1.0..8.0)
        }
    });
    let features = ["a".to_string(), "b".to_string()];
    Arc::new(
        fit(
            TrainingSet {
                x: x.view(),
                features: &features,
                labels: None,
                source: None,
            },
            &FitParams::default(),
        )
        .expect("fit"),
    )
}

/// Replays its rows in slices, then has nothing more (idle) until the run stops.
struct Replay {
    rows: RecordBatch,
    at: usize,
}

impl Source for Replay {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }
    fn poll(&mut self, _max: usize) -> Result<Poll, ConnectorError> {
        if self.at >= self.rows.num_rows() {
            return Ok(Poll::Idle);
        }
        let len = 250.min(self.rows.num_rows() - self.at);
        let rows = self.rows.slice(self.at, len);
        self.at += len;
        Ok(Poll::Data { rows, dead: None })
    }
    fn position(&self) -> String {
        format!("row {}", self.at)
    }
}

/// Column name → cells (numbers as f64, the rest as text; times as UTC instants).
fn cells(b: &RecordBatch, row: usize) -> Vec<(String, Option<f64>, Option<String>)> {
    let opts = FormatOptions::default();
    b.schema()
        .fields()
        .iter()
        .zip(b.columns())
        .map(|(f, c)| {
            let name = f.name().clone();
            if c.is_null(row) {
                return (name, None, None);
            }
            if c.data_type().is_numeric() {
                let v = cast(c, &DataType::Float64).expect("cast");
                return (name, Some(v.as_primitive::<Float64Type>().value(row)), None);
            }
            let c = match c.data_type() {
                DataType::Timestamp(_, _) => {
                    cast(c, &DataType::Timestamp(TimeUnit::Microsecond, None)).expect("cast")
                }
                _ => c.clone(),
            };
            let fmt = ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter");
            (name, None, Some(fmt.value(row).to_string()))
        })
        .collect()
}

fn assert_same_row(what: &str, got: &RecordBatch, g: usize, want: &RecordBatch, w: usize) {
    let (got, want) = (cells(got, g), cells(want, w));
    for (name, num, text) in &want {
        let (_, gnum, gtext) = got
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("{what}: the probe has no column {name}"));
        assert!(
            close(*gnum, *num) && gtext == text,
            "{what}: column {name}: probe {gnum:?} {gtext:?}, batch {num:?} {text:?}"
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: columns differ");
}

/// DataFusion's batch answer: `query` over the pipeline's views on `rows`.
async fn batch(rows: &RecordBatch, forest: &Arc<Forest>, query: &str) -> RecordBatch {
    let ctx = SessionContext::new();
    for f in txguard_iforest_datafusion::forest_udfs("default", forest.clone()).expect("udfs") {
        ctx.register_udf(f);
    }
    let t = MemTable::try_new(rows.schema(), vec![vec![rows.clone()]]).expect("table");
    ctx.register_table("transactions", Arc::new(t))
        .expect("register");
    let p = parse(std::path::Path::new("probe.sql"), PIPELINE).expect("parse");
    for v in &p.views {
        if v.name != "windowed" {
            ctx.sql(&v.sql).await.expect("view");
        }
    }
    let out = ctx
        .sql(query)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let schema = out.first().map_or_else(|| rows.schema(), |b| b.schema());
    concat_batches(&schema, &out).expect("concat")
}

/// One JSON transaction as the generator's schema decodes it.
fn as_rows(json: &[String]) -> RecordBatch {
    let mut d = Decoder::new(transaction_schema(), &Default::default()).expect("decoder");
    for j in json {
        assert!(d.push(j.as_bytes(), "test", &0), "{j}");
    }
    d.flush().expect("flush").0
}

fn tx(id: &str, user: &str, amount: f64, ts: i64) -> String {
    format!(
        r#"{{"transaction_id":"{id}","user_id":"{user}","amount":{amount},"ts":"{}"}}"#,
        txguard_engine::event::format_micros(ts)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probed_rows_equal_the_batch_answer_and_change_nothing() {
    tokio::time::timeout(Duration::from_secs(120), scenario())
        .await
        .expect("the scenario took over 120 s");
}

async fn scenario() {
    let input = arrivals(3000, 0.05);
    let n = input.num_rows() as u64;
    let forest = forest();
    let slot = ModelSlot::new("default", forest.clone());
    let stats = slot.stats();
    let functions: PlanningFunctions = model_udfs(&slot)
        .expect("udfs")
        .into_iter()
        .map(Arc::new)
        .collect();
    let p = parse(std::path::Path::new("probe.sql"), PIPELINE).expect("parse");
    let specs = txguard_connectors::specs();
    check(&p, &specs, &functions).await.expect("check");
    let roles: std::collections::HashMap<_, _> = p
        .tables
        .iter()
        .map(|t| {
            let spec = specs.iter().find(|s| s.name == t.connector).expect("spec");
            (t.name.clone(), role_of(&p, t, spec).expect("role"))
        })
        .collect();
    let df = txguard_engine::stream::plan(&p, &roles, &functions)
        .await
        .expect("plan");
    let (prober, queue) = Prober::new(&df, &[]).expect("prober");
    let views: Vec<&str> = prober.targets().iter().map(|t| t.view.as_str()).collect();
    assert_eq!(
        views,
        ["history", "big", "scored"],
        "windowed is not per row"
    );
    let out = CollectSink::default();
    let sinks: Vec<Box<dyn Sink>> = df
        .sinks()
        .iter()
        .map(|s| -> Box<dyn Sink> {
            if s.table == "out" {
                Box::new(out.clone())
            } else {
                Box::new(CollectSink::default())
            }
        })
        .collect();
    let out_schema = df
        .sinks()
        .iter()
        .find(|s| s.table == "out")
        .expect("out")
        .schema
        .clone();
    let metrics = Arc::new(Metrics::for_dataflow(&df));
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(run(
        df,
        Connections {
            sources: vec![(
                "transactions".into(),
                Box::new(Replay {
                    rows: input.clone(),
                    at: 0,
                }),
            )],
            sinks,
            resume: None,
            probes: Some(queue.with_scope(unobserved)),
        },
        RunOptions {
            idle_timeout: Duration::from_millis(200),
            ..RunOptions::default()
        },
        metrics.clone(),
        stop.clone(),
    ));
    // Every row in the windows but those at the newest event time (held: a row of the same
    // time may still come), the source idle and its watermark at the newest event.
    let ts = input
        .column(3)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let newest = (0..ts.len()).map(|i| ts.value(i)).max().expect("rows");
    let held: Vec<u32> = (0..ts.len() as u32)
        .filter(|&i| ts.value(i as usize) == newest)
        .collect();
    let history = arrow::compute::filter_record_batch(
        &input,
        &arrow::array::BooleanArray::from_iter((0..ts.len()).map(|i| Some(ts.value(i) < newest))),
    )
    .expect("filter");
    let m = metrics.source("transactions").expect("metrics");
    let waited = std::time::Instant::now();
    while m.released.load(Ordering::Relaxed) < n - held.len() as u64
        || m.watermark.load(Ordering::Relaxed) < newest
    {
        assert!(!running.is_finished(), "the run ended early");
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "after 60 s: {} of {n} rows released ({} held), watermark {} (newest {newest})",
            m.released.load(Ordering::Relaxed),
            held.len(),
            m.watermark.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let watermark = m.watermark.load(Ordering::Relaxed);
    assert_eq!(
        watermark, newest,
        "an idle source's watermark is its newest event"
    );

    let scored = prober.target(None, None).expect("the default view").clone();
    assert_eq!(
        scored.view, "scored",
        "the last per-row view of the only source"
    );
    let timeout = Duration::from_secs(10);

    // Every user (and one never seen) probed at times after the newest event: each answer
    // equals the batch query over the history plus that row alone.
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut users: Vec<String> = (0..40).map(|u| format!("u{u:06}")).collect();
    users.push("nobody-yet".into());
    let mut asked = 0u64;
    for (k, user) in users.iter().enumerate() {
        let id = format!("probe-{k}");
        let at = newest + rng.random_range(0..=120_000_000);
        let amount = (rng.random_range(1.0..5000.0f64) * 100.0).round() / 100.0;
        let json = tx(&id, user, amount, at);
        let a = prober
            .score(&scored, &[json.as_bytes()], timeout)
            .await
            .expect("score");
        asked += 1;
        assert_eq!(a.outcomes, [Outcome::Row(0)], "{json}");
        assert_eq!(a.watermark, Some(watermark));
        // The state is as of the watermark: the rows held back are not in it.
        let all = concat_batches(
            &input.schema(),
            &[history.clone(), as_rows(std::slice::from_ref(&json))],
        )
        .expect("concat");
        let want = batch(
            &all,
            &forest,
            &format!("SELECT * FROM scored WHERE transaction_id = '{id}'"),
        )
        .await;
        assert_eq!(want.num_rows(), 1);
        assert_same_row(&json, &a.rows, 0, &want, 0);
        // Nothing was kept: the same row again gives the same answer.
        let again = prober
            .score(&scored, &[json.as_bytes()], timeout)
            .await
            .expect("score again");
        asked += 1;
        assert_same_row("again", &again.rows, 0, &a.rows, 0);
    }

    // One request of many rows: each answered on its own, in order, bad ones with reasons.
    let u = "u000003";
    let rows = [
        tx("ok-1", u, 12.5, newest + 1),
        r#"{"transaction_id":"no-user","amount":3.0,"ts":"2030-01-01T00:00:00Z"}"#.to_string(),
        tx("negative", u, -4.0, newest + 1),
        "{not json".to_string(),
        tx("late", u, 10.0, watermark - 1),
        tx("ok-2", u, 99.0, newest + 2),
    ];
    let refs: Vec<&[u8]> = rows.iter().map(|r| r.as_bytes()).collect();
    let a = prober.score(&scored, &refs, timeout).await.expect("score");
    asked += 2;
    let kinds: Vec<String> = a
        .outcomes
        .iter()
        .map(|o| match o {
            Outcome::Row(i) => format!("row {i}"),
            Outcome::Rejected(why) => format!("rejected: {why}"),
            Outcome::Late(why) => format!("late: {why}"),
            Outcome::Filtered => "filtered".into(),
        })
        .collect();
    assert_eq!(kinds[0], "row 0", "{kinds:?}");
    assert!(
        kinds[1].contains("user_id") && kinds[1].contains("NOT NULL"),
        "{kinds:?}"
    );
    assert!(
        kinds[2].contains("CHECK") && kinds[2].contains("amount >= 0"),
        "{kinds:?}"
    );
    assert!(kinds[3].starts_with("rejected: "), "{kinds:?}");
    assert!(
        kinds[4].starts_with("late: ") && kinds[4].contains("watermark"),
        "{kinds:?}"
    );
    assert_eq!(kinds[5], "row 1", "{kinds:?}");
    // The two good rows of one request do not see each other: each is its key's next.
    let alone = prober
        .score(&scored, &[rows[5].as_bytes()], timeout)
        .await
        .expect("score");
    asked += 1;
    assert_same_row("ok-2 alone", &alone.rows, 0, &a.rows, 1);

    // A view with a WHERE: rows it drops say so.
    let big = prober.target(None, Some("big")).expect("big").clone();
    let small = tx("small", u, 5.0, newest + 3);
    let large = tx("large", u, 500.0, newest + 3);
    let a = prober
        .score(&big, &[small.as_bytes(), large.as_bytes()], timeout)
        .await
        .expect("score");
    assert_eq!(a.outcomes, [Outcome::Filtered, Outcome::Row(0)]);
    assert_eq!(a.rows.num_rows(), 1);

    // Views that cannot be probed, or do not exist, are named with those that can.
    for (view, says) in [("windowed", "no view windowed"), ("nope", "no view nope")] {
        match prober.target(None, Some(view)) {
            Err(ProbeError::Target(msg)) => {
                assert!(
                    msg.contains(says) && msg.contains("scored (from transactions)"),
                    "{msg}"
                )
            }
            other => panic!("{view}: {other:?}"),
        }
    }
    assert!(matches!(
        prober.target(Some("elsewhere"), None),
        Err(ProbeError::Target(m)) if m.contains("no source table elsewhere")
    ));

    // The run goes on to its end: what the sink got is the batch answer over the history
    // alone, and the scores counted are the pipeline's own.
    stop.store(true, Ordering::Relaxed);
    running.await.expect("join").expect("run");
    let got = concat_batches(&out_schema, &out.batches()).expect("concat");
    assert_eq!(got.num_rows() as u64, n, "every row reached the sink once");
    let want = batch(
        &input,
        &forest,
        "SELECT transaction_id, n_10m, sum_1h, std_1h, score, flagged FROM scored",
    )
    .await;
    let ids = |b: &RecordBatch| -> std::collections::HashMap<String, usize> {
        let c = b.column(0).as_string::<i32>();
        (0..b.num_rows())
            .map(|i| (c.value(i).to_string(), i))
            .collect()
    };
    let want_at = ids(&want);
    for (id, g) in ids(&got) {
        assert_same_row(&id, &got, g, &want, want_at[&id]);
    }
    let counted = stats.cumulative().last().map_or(0, |&(_, c)| c);
    assert_eq!(
        counted, n,
        "{asked} requests were scored too, but only the pipeline's rows are counted"
    );

    // After the run, there is nothing to score against.
    match prober.score(&scored, &[rows[0].as_bytes()], timeout).await {
        Err(ProbeError::NotRunning) => {}
        other => panic!("after the run: {other:?}"),
    }
}
