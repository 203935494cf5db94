//! Golden and differential tests of streaming SQL. Each `tests/golden/NAME.sql` is a pipeline
//! with a source `transactions` and a sink `out`. Generator transactions are fed through the
//! real runtime (event-time buffer, dataflow, sink task) out of order within the watermark
//! bound, in random batch sizes; what `out` receives must equal DataFusion's batch result on
//! the same rows (`NAME.batch.sql` where the streaming SQL has no batch meaning, such as
//! TUMBLE, else the insert's own query with the views as batch views), and its first rows must
//! equal `NAME.out` (rewrite with `UPDATE_GOLDEN=1`).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use common::{arrivals, close};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txguard_connectors::generator::transaction_schema;
use txguard_engine::connector::{CollectSink, ConnectorError, Poll, Sink, Source};
use txguard_engine::runtime::{Connections, Metrics, RunOptions, run};
use txguard_engine::sql::{PlanningFunctions, Role, check, parse, role_of};
use txguard_iforest::{FitParams, TrainingSet, fit};

/// Replays a batch in random slices, as a source would deliver it.
struct Replay {
    rows: RecordBatch,
    at: usize,
    rng: ChaCha8Rng,
}

impl Source for Replay {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }
    fn poll(&mut self, _max: usize) -> Result<Poll, ConnectorError> {
        if self.at >= self.rows.num_rows() {
            return Ok(Poll::End);
        }
        let len = self
            .rng
            .random_range(1..=300)
            .min(self.rows.num_rows() - self.at);
        let rows = self.rows.slice(self.at, len);
        self.at += len;
        Ok(Poll::Data { rows, dead: None })
    }
    fn position(&self) -> String {
        format!("row {}", self.at)
    }
}

fn model_functions() -> PlanningFunctions {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Array2::from_shape_fn((2000, 2), |(_, j)| {
        if j == 0 {
            rng.random_range(0.0..6.0)
        } else {
            rng.random_range(1.0..8.0)
        }
    });
    let features = ["a".to_string(), "b".to_string()];
    let forest = fit(
        TrainingSet {
            x: x.view(),
            features: &features,
            labels: None,
            source: None,
        },
        &FitParams::default(),
    )
    .expect("fit");
    txguard_iforest_datafusion::forest_udfs("default", Arc::new(forest))
        .expect("udfs")
        .into_iter()
        .map(Arc::new)
        .collect()
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs pipeline `file` over `input` through the runtime; returns what sink `out` got.
/// Each table's role.
fn roles_of(
    p: &txguard_engine::sql::Pipeline,
    specs: &[txguard_engine::sql::ConnectorSpec],
) -> std::collections::HashMap<String, Role> {
    p.tables
        .iter()
        .map(|t| {
            let spec = specs.iter().find(|s| s.name == t.connector).expect("spec");
            (t.name.clone(), role_of(p, t, spec).expect("role"))
        })
        .collect()
}

async fn stream(file: &Path, input: &RecordBatch, seed: u64) -> RecordBatch {
    let text = std::fs::read_to_string(file).expect("read");
    let p = parse(file, &text).expect("parse");
    let functions = model_functions();
    let specs = txguard_connectors::specs();
    check(&p, &specs, &functions).await.expect("check");
    let roles = roles_of(&p, &specs);
    let df = txguard_engine::stream::plan(&p, &roles, &functions)
        .await
        .expect("plan");
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
    let schema = df
        .sinks()
        .iter()
        .find(|s| s.table == "out")
        .expect("out")
        .schema
        .clone();
    let metrics = Arc::new(Metrics::for_dataflow(&df));
    let replay = Replay {
        rows: input.clone(),
        at: 0,
        rng: ChaCha8Rng::seed_from_u64(seed),
    };
    run(
        df,
        Connections {
            sources: vec![("transactions".into(), Box::new(replay))],
            sinks,
            resume: None,
            probes: None,
        },
        RunOptions::default(),
        metrics.clone(),
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("run");
    let m = metrics.source("transactions").expect("metrics");
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&m.rows), input.num_rows() as u64);
    assert_eq!(
        load(&m.released) + load(&m.late),
        input.num_rows() as u64,
        "in = on time + late"
    );
    assert_eq!(load(&m.late), 0, "the input is late only within the bound");
    concat_batches(&schema, &out.batches()).expect("concat")
}

/// DataFusion's batch answer over the same rows.
async fn batch(file: &Path, input: &RecordBatch) -> RecordBatch {
    let text = std::fs::read_to_string(file).expect("read");
    let p = parse(file, &text).expect("parse");
    let ctx = SessionContext::new();
    for f in model_functions() {
        ctx.register_udf(f.as_ref().clone());
    }
    let t = MemTable::try_new(input.schema(), vec![vec![input.clone()]]).expect("table");
    ctx.register_table("transactions", Arc::new(t))
        .expect("register");
    let batch_file = file.with_extension("batch.sql");
    let query = if batch_file.exists() {
        std::fs::read_to_string(&batch_file).expect("read batch query")
    } else {
        for v in &p.views {
            ctx.sql(&v.sql).await.expect("view");
        }
        p.inserts
            .iter()
            .find(|i| i.table == "out")
            .expect("insert into out")
            .query
            .clone()
    };
    let out = ctx
        .sql(&query)
        .await
        .expect("plan batch")
        .collect()
        .await
        .expect("run batch");
    if out.is_empty() {
        return RecordBatch::new_empty(input.schema());
    }
    concat_batches(&out[0].schema(), &out).expect("concat")
}

#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Num(f64),
    Text(String),
}

/// Rows as cells, sorted (floats rounded for the sort key only).
fn rows(b: &RecordBatch) -> Vec<Vec<Cell>> {
    let opts = FormatOptions::default();
    let cols: Vec<Vec<Cell>> = b
        .columns()
        .iter()
        .map(|c| {
            if c.data_type().is_floating() || c.data_type().is_integer() {
                let f = cast(c, &DataType::Float64).expect("cast");
                let f = f.as_primitive::<Float64Type>();
                (0..f.len())
                    .map(|r| {
                        if f.is_null(r) {
                            Cell::Null
                        } else {
                            Cell::Num(f.value(r))
                        }
                    })
                    .collect()
            } else {
                // Times compare as UTC instants, whatever zone label the query gave them.
                let c = match c.data_type() {
                    DataType::Timestamp(_, _) => cast(
                        c,
                        &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                    )
                    .expect("cast"),
                    _ => c.clone(),
                };
                let fmt = ArrayFormatter::try_new(c.as_ref(), &opts).expect("formatter");
                (0..c.len())
                    .map(|r| {
                        if c.is_null(r) {
                            Cell::Null
                        } else {
                            Cell::Text(fmt.value(r).to_string())
                        }
                    })
                    .collect()
            }
        })
        .collect();
    let mut out: Vec<Vec<Cell>> = (0..b.num_rows())
        .map(|r| cols.iter().map(|c| c[r].clone()).collect())
        .collect();
    out.sort_by_key(|row| line(row, 4));
    out
}

fn line(row: &[Cell], decimals: usize) -> String {
    row.iter()
        .map(|c| match c {
            Cell::Null => "NULL".to_string(),
            Cell::Num(x) => format!("{x:.decimals$}"),
            Cell::Text(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn assert_same(name: &str, streamed: &[Vec<Cell>], batch: &[Vec<Cell>]) {
    assert_eq!(streamed.len(), batch.len(), "{name}: row counts differ");
    for (i, (s, b)) in streamed.iter().zip(batch).enumerate() {
        let same = s.len() == b.len()
            && s.iter().zip(b).all(|(x, y)| match (x, y) {
                (Cell::Num(x), Cell::Num(y)) => close(Some(*x), Some(*y)),
                _ => x == y,
            });
        assert!(
            same,
            "{name}: row {i} differs\nstream: {}\nbatch:  {}",
            line(s, 9),
            line(b, 9)
        );
    }
}

async fn case(name: &str) {
    let file = golden_dir().join(format!("{name}.sql"));
    // Dense input (several rows per frame and window) for the comparison with batch.
    let input = arrivals(6000, 0.05);
    let batch_rows = rows(&batch(&file, &input).await);
    assert!(!batch_rows.is_empty(), "{name}: the case produces no rows");
    for seed in [1, 2] {
        let streamed = rows(&stream(&file, &input, seed).await);
        assert_same(name, &streamed, &batch_rows);
    }
    // The golden file: the first rows of a small input, and the row count.
    let small = arrivals(400, 0.05);
    let got = rows(&stream(&file, &small, 3).await);
    let mut text = format!("-- {} rows; the first 25, sorted\n", got.len());
    for r in got.iter().take(25) {
        text.push_str(&line(r, 6));
        text.push('\n');
    }
    let golden = golden_dir().join(format!("{name}.out"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "{} missing: run with UPDATE_GOLDEN=1 and review it",
            golden.display()
        )
    });
    assert_eq!(
        text,
        want,
        "{name}: output differs from {}",
        golden.display()
    );
}

#[tokio::test]
async fn over_windows() {
    case("over_windows").await;
}

#[tokio::test]
async fn lag() {
    case("lag").await;
}

#[tokio::test]
async fn tumble() {
    case("tumble").await;
}

#[tokio::test]
async fn hop() {
    case("hop").await;
}

#[tokio::test]
async fn session() {
    case("session").await;
}

#[tokio::test]
async fn null_keys() {
    case("null_keys").await;
}

#[tokio::test]
async fn null_keys_tumble() {
    case("null_keys_tumble").await;
}

#[tokio::test]
async fn user_baseline() {
    case("user_baseline").await;
}

#[tokio::test]
async fn udf() {
    case("udf").await;
}

/// The default pipeline's feature view, streamed, equals the same view run as batch SQL.
#[tokio::test]
async fn default_pipeline_features() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sql/pipeline.sql");
    let text = std::fs::read_to_string(&file).expect("read");
    let mut p = parse(&file, &text).expect("parse");
    let pos = p
        .views
        .iter()
        .position(|v| v.name == "features")
        .expect("features view");
    p.views.truncate(pos + 1);
    p.inserts.clear();
    let roles = [("transactions".to_string(), Role::Source)]
        .into_iter()
        .collect();
    let mut df = txguard_engine::stream::plan(&p, &roles, &Vec::new())
        .await
        .expect("plan");
    let tap = df.tap("features").expect("tap");
    let schema = df.sinks()[tap].schema.clone();
    let out = CollectSink::default();
    let input = arrivals(6000, 0.05);
    let metrics = Arc::new(Metrics::for_dataflow(&df));
    run(
        df,
        Connections {
            sources: vec![(
                "transactions".into(),
                Box::new(Replay {
                    rows: input.clone(),
                    at: 0,
                    rng: ChaCha8Rng::seed_from_u64(9),
                }),
            )],
            sinks: vec![Box::new(out.clone())],
            resume: None,
            probes: None,
        },
        RunOptions::default(),
        metrics,
        Arc::new(AtomicBool::new(false)),
    )
    .await
    .expect("run");
    let streamed = rows(&concat_batches(&schema, &out.batches()).expect("concat"));

    let ctx = SessionContext::new();
    let t = MemTable::try_new(input.schema(), vec![vec![input.clone()]]).expect("table");
    ctx.register_table("transactions", Arc::new(t))
        .expect("register");
    for v in &p.views {
        ctx.sql(&v.sql).await.expect("view");
    }
    let out = ctx
        .sql("SELECT * FROM features")
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    let batch_rows = rows(&concat_batches(&out[0].schema(), &out).expect("concat"));
    assert_eq!(streamed.len(), input.num_rows());
    assert_same("pipeline.sql features", &streamed, &batch_rows);
}

/// Every golden pipeline's dataflow, stopped after any batch, snapshotted and restored into a
/// freshly planned dataflow, gives the sinks exactly what an uninterrupted dataflow gives.
#[tokio::test]
async fn state_restores_exactly() {
    use arrow::compute::{sort_to_indices, take_record_batch};
    let input = arrivals(3000, 0.05);
    let ts = input.schema().index_of("ts").expect("ts column");
    let order = sort_to_indices(input.column(ts), None, None).expect("sort");
    let sorted = take_record_batch(&input, &order).expect("take");
    let batches: Vec<RecordBatch> = (0..sorted.num_rows())
        .step_by(250)
        .map(|i| sorted.slice(i, 250.min(sorted.num_rows() - i)))
        .collect();
    for name in [
        "over_windows",
        "lag",
        "tumble",
        "hop",
        "session",
        "null_keys",
        "udf",
    ] {
        let file = golden_dir().join(format!("{name}.sql"));
        let text = std::fs::read_to_string(&file).expect("read");
        let p = parse(&file, &text).expect("parse");
        let functions = model_functions();
        let specs = txguard_connectors::specs();
        let roles = roles_of(&p, &specs);
        let plan = || txguard_engine::stream::plan(&p, &roles, &functions);
        let feed = |df: &mut txguard_engine::stream::Dataflow,
                    b: &RecordBatch,
                    out: &mut Vec<(usize, RecordBatch)>| {
            let t = b
                .column(ts)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            let wm = t.value(b.num_rows() - 1) - 1;
            // The plan's source columns: the table declares a subset of the generator's.
            let src = &df.sources()[0];
            let cols: Vec<_> = src
                .schema
                .fields()
                .iter()
                .map(|f| b.column_by_name(f.name()).expect("column").clone())
                .collect();
            let rows = RecordBatch::try_new(src.schema.clone(), cols).expect("rows");
            out.extend(df.push(0, Some(rows), Some(wm)).expect("push"));
        };
        let mut whole = plan().await.expect("plan");
        let mut want = Vec::new();
        for b in &batches {
            feed(&mut whole, b, &mut want);
        }
        want.extend(whole.finish(0).expect("finish"));
        for stop in [1, 6, 11] {
            let mut first = plan().await.expect("plan");
            let mut got = Vec::new();
            // A checkpoint after every batch, of changes once there is a whole state to chain
            // onto; the state restored is each chain merged, as a checkpoint read gives it.
            let mut chains: Vec<(String, RecordBatch, Vec<RecordBatch>)> = Vec::new();
            for b in &batches[..stop] {
                feed(&mut first, b, &mut got);
                let snaps = first.snapshot(!chains.is_empty()).expect("snapshot");
                for (id, snap) in snaps {
                    match chains.iter_mut().find(|c| c.0 == id) {
                        Some(c) if snap.changes => c.2.push(snap.batch),
                        Some(c) => *c = (id, snap.batch, Vec::new()),
                        None => chains.push((id, snap.batch, Vec::new())),
                    }
                }
            }
            let state: Vec<(String, RecordBatch)> = chains
                .into_iter()
                .map(|(id, whole, changes)| {
                    let merged = txguard_engine::state::merge(&whole, &changes).expect("merge");
                    (id, merged)
                })
                .collect();
            drop(first);
            let mut second = plan().await.expect("plan");
            second.restore(&state).expect("restore");
            for b in &batches[stop..] {
                feed(&mut second, b, &mut got);
            }
            got.extend(second.finish(0).expect("finish"));
            assert_eq!(got.len(), want.len(), "{name} stopped after batch {stop}");
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "{name} stopped after batch {stop}");
            }
        }
    }
}
