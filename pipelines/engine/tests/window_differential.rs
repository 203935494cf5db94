//! Differential tests of TUMBLE / HOP / SESSION windows: generator transactions fed out of
//! order in random batch sizes through the event-time buffer and the windowed aggregation
//! give the same groups as DataFusion's batch SQL over the same data; each window is emitted
//! once, after the watermark passed its end.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use common::{BOUND_MS, arrivals, close};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txguard_connectors::generator::transaction_schema;
use txguard_engine::time::EventTimeBuffer;
use txguard_engine::window::{GroupAgg, GroupFn, WindowAggregate, WindowKind};

const MIN: i64 = 60_000_000;

type Groups = HashMap<(String, i64), Vec<Option<f64>>>;

fn aggs() -> Vec<GroupAgg> {
    let a = |name: &str, func| GroupAgg {
        name: name.into(),
        func,
        input: 2,
    };
    vec![
        a("n", GroupFn::CountRows),
        a("total", GroupFn::Sum),
        a("lo", GroupFn::Min),
        a("hi", GroupFn::Max),
        a("mean", GroupFn::Avg),
    ]
}

/// (user, window_start) -> [window_end, n, total, lo, hi, mean]
fn groups(batch: &RecordBatch) -> Groups {
    let users = batch.column(0).as_string::<i32>();
    let mut out = HashMap::new();
    for r in 0..batch.num_rows() {
        let int = |c: usize| -> i64 {
            let col = batch.column(c);
            col.as_primitive_opt::<TimestampMicrosecondType>()
                .map(|a| a.value(r))
                .or_else(|| col.as_primitive_opt::<Int64Type>().map(|a| a.value(r)))
                .unwrap_or(i64::MIN)
        };
        let mut row = vec![Some(int(2) as f64), Some(int(3) as f64)];
        for c in 4..batch.num_columns() {
            let col = batch.column(c).as_primitive::<Float64Type>();
            row.push((!col.is_null(r)).then(|| col.value(r)));
        }
        let prev = out.insert((users.value(r).to_string(), int(1)), row);
        assert!(
            prev.is_none(),
            "window emitted twice: {} {}",
            users.value(r),
            int(1)
        );
    }
    out
}

async fn batch(input: &RecordBatch, sql: &str) -> Groups {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(input.schema(), vec![vec![input.clone()]]).expect("table");
    ctx.register_table("t", Arc::new(table)).expect("register");
    let out = ctx
        .sql(sql)
        .await
        .expect("plan")
        .collect()
        .await
        .expect("run");
    groups(&concat_batches(&out[0].schema(), &out).expect("concat"))
}

fn stream(input: &RecordBatch, kind: WindowKind, seed: u64) -> Groups {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut buf = EventTimeBuffer::new(transaction_schema(), 3, BOUND_MS as i64 * 1000);
    let mut op = WindowAggregate::new(&transaction_schema(), kind, 1, 3, aggs()).expect("op");
    let mut outs = Vec::new();
    let mut at = 0;
    while at < input.num_rows() {
        let len = rng.random_range(1..=300).min(input.num_rows() - at);
        assert!(
            buf.push(input.slice(at, len)).expect("push").is_none(),
            "no late rows"
        );
        if let Some(ready) = buf.release().expect("release") {
            op.process(&ready).expect("process");
        }
        if let Some(w) = buf.watermark()
            && let Some(done) = op.advance(w).expect("advance")
        {
            // Nothing is emitted before the watermark passes its end.
            let ends = done.column(2).as_primitive::<TimestampMicrosecondType>();
            assert!(ends.values().iter().all(|e| *e <= w));
            outs.push(done);
        }
        at += len;
    }
    if let Some(ready) = buf.flush().expect("flush") {
        op.process(&ready).expect("process");
    }
    if let Some(done) = op.flush().expect("flush") {
        outs.push(done);
    }
    assert_eq!(op.open_windows(), 0);
    groups(&concat_batches(&op.schema(), &outs).expect("concat"))
}

fn assert_same(kind: &str, got: &Groups, want: &Groups) {
    assert_eq!(got.len(), want.len(), "{kind}: number of windows");
    for (k, w) in want {
        let g = got
            .get(k)
            .unwrap_or_else(|| panic!("{kind}: window {k:?} missing"));
        for (c, (a, b)) in g.iter().zip(w).enumerate() {
            let same = close(*a, *b);
            assert!(
                same,
                "{kind}: window {k:?} column {c}: streaming {a:?} vs batch {b:?}"
            );
        }
    }
}

const AGGS: &str = "COUNT(*) AS n, SUM(amount) AS total, MIN(amount) AS lo, MAX(amount) AS hi, AVG(amount) AS mean";

#[tokio::test]
async fn tumble_hop_session_equal_batch_datafusion() {
    let input = arrivals(20_000, 0.5);
    let tumble = format!(
        "SELECT user_id, ws, ws + {MIN} AS we, {AGGS} FROM \
         (SELECT user_id, amount, (CAST(ts AS BIGINT) / {MIN}) * {MIN} AS ws FROM t) \
         GROUP BY user_id, ws"
    );
    let (slide, width) = (5 * MIN, 15 * MIN);
    let hop = format!(
        "SELECT user_id, ws, ws + {width} AS we, {AGGS} FROM \
         (SELECT user_id, amount, (CAST(ts AS BIGINT) / {slide}) * {slide} - k * {slide} AS ws \
          FROM t CROSS JOIN (VALUES (0), (1), (2)) AS h(k)) \
         GROUP BY user_id, ws"
    );
    let gap = 2 * MIN;
    let session = format!(
        "WITH g AS (SELECT user_id, amount, CAST(ts AS BIGINT) AS tu, \
            CASE WHEN CAST(ts AS BIGINT) - LAG(CAST(ts AS BIGINT)) OVER (PARTITION BY user_id ORDER BY ts) <= {gap} \
                 THEN 0 ELSE 1 END AS brk FROM t), \
         s AS (SELECT user_id, amount, tu, SUM(brk) OVER (PARTITION BY user_id ORDER BY tu \
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM g) \
         SELECT user_id, MIN(tu) AS ws, MAX(tu) + {gap} AS we, {AGGS} FROM s GROUP BY user_id, sid"
    );
    for (name, kind, sql) in [
        ("TUMBLE", WindowKind::Tumble { width: MIN }, tumble),
        ("HOP", WindowKind::Hop { slide, width }, hop),
        ("SESSION", WindowKind::Session { gap }, session),
    ] {
        let want = batch(&input, &sql).await;
        assert!(want.len() > 1000, "{name}: {} windows", want.len());
        for seed in [1, 2] {
            assert_same(name, &stream(&input, kind, seed), &want);
        }
    }
}

#[test]
fn hop_width_must_be_a_multiple_of_the_slide() {
    let e = WindowAggregate::new(
        &transaction_schema(),
        WindowKind::Hop {
            slide: 2 * MIN,
            width: 5 * MIN,
        },
        1,
        3,
        aggs(),
    )
    .err()
    .expect("invalid");
    assert!(
        e.to_string().contains("must be a multiple of its slide"),
        "{e}"
    );
}
