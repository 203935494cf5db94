//! The forest functions inside real DataFusion SQL: values, NULL/NaN policy, Float32 input,
//! several models, and planning errors a user sees.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Float64Array, RecordBatch};
use datafusion::prelude::SessionContext;
use ndarray::Array2;
use txguard_iforest::{Contamination, FitParams, Forest, TrainingSet, fit};
use txguard_iforest_datafusion::register_forest;

fn forest(seed: u64) -> Arc<Forest> {
    let x = Array2::from_shape_fn((2000, 3), |(i, j)| {
        ((i * 7919 + j * 104_729 + seed as usize) % 1000) as f64 / 10.0
    });
    let names = vec!["amount".to_string(), "count_1h".into(), "speed".into()];
    Arc::new(
        fit(
            TrainingSet {
                x: x.view(),
                features: &names,
                labels: None,
                source: None,
            },
            &FitParams {
                n_estimators: 25,
                random_state: seed,
                contamination: Contamination::Fraction(0.1),
                ..Default::default()
            },
        )
        .expect("fit"),
    )
}

async fn ctx() -> (SessionContext, Arc<Forest>, Arc<Forest>) {
    let mut ctx = SessionContext::new();
    let a = forest(1);
    let b = forest(2);
    register_forest(&mut ctx, "default", a.clone()).expect("register default");
    register_forest(&mut ctx, "v2", b.clone()).expect("register v2");
    ctx.sql(
        "CREATE TABLE t AS SELECT * FROM (VALUES \
         (1, 10.0, 2, 3.5), (2, 500.0, 40, 900.0), (3, NULL, 1, 1.0), \
         (4, 'NaN'::double, 1, 1.0), (5, 12.5, 3, 'Infinity'::double), (6, 0.0, 0, 0.0)) \
         AS v(id, amount, count_1h, speed)",
    )
    .await
    .expect("create")
    .collect()
    .await
    .expect("collect");
    (ctx, a, b)
}

async fn query(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test]
async fn scores_match_the_forest_and_follow_the_null_policy() {
    let (ctx, a, b) = ctx().await;
    let batches = query(
        &ctx,
        "SELECT id, amount, count_1h, speed, iforest_score(amount, count_1h, speed) AS s, \
         iforest_is_anomaly(amount, count_1h, speed) AS flag, \
         iforest_score_v2(amount, count_1h, speed) AS s2, \
         iforest_decision(amount, count_1h, speed) AS d, \
         iforest_score(amount, count_1h, speed) > iforest_threshold() AS cheap_flag \
         FROM t ORDER BY id",
    )
    .await;
    let batch = &batches[0];
    let col = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f64")
    };
    let (amount, count, speed, s, s2, d) = (
        col(1),
        batch.column(2).clone(),
        col(3),
        col(4),
        col(6),
        col(7),
    );
    let count =
        datafusion::arrow::compute::cast(&count, &datafusion::arrow::datatypes::DataType::Float64)
            .expect("cast");
    let count = count.as_any().downcast_ref::<Float64Array>().expect("f64");
    let flag = batch
        .column(5)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool");
    let cheap_flag = batch
        .column(8)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool");
    for r in 0..batch.num_rows() {
        let row = [amount.value(r), count.value(r), speed.value(r)];
        assert_eq!(
            cheap_flag.is_null(r),
            flag.is_null(r),
            "score > iforest_threshold() is NULL exactly where the flag is"
        );
        let valid = !amount.is_null(r) && row.iter().all(|v| v.is_finite());
        match (a.score_row(&row), valid) {
            (Some(want), true) => {
                assert_eq!(s.value(r), want.anomaly_score(), "row {r}");
                assert_eq!(flag.value(r), want.is_anomaly(), "row {r}");
                assert_eq!(d.value(r), want.decision, "row {r}");
                assert_eq!(d.value(r) < 0.0, flag.value(r), "row {r}");
                assert_eq!(cheap_flag.value(r), flag.value(r), "row {r}");
                assert_eq!(s2.value(r), b.score_row(&row).expect("v2").anomaly_score());
                assert!(s.value(r) > 0.0 && s.value(r) <= 1.0);
            }
            _ => {
                assert!(s.is_null(r), "row {r} must have no score");
                assert!(flag.is_null(r), "row {r} must have no flag");
                assert!(s2.is_null(r));
                assert!(d.is_null(r));
            }
        }
    }
    // rows 3 (NULL), 4 (NaN), 5 (inf) have no score; the others do
    assert_eq!(s.null_count(), 3);
    // the obvious outlier is more anomalous than an ordinary row
    assert!(s.value(1) > s.value(0));
}

#[tokio::test]
async fn float32_columns_and_constants_work() {
    let (ctx, a, _) = ctx().await;
    let batches = query(
        &ctx,
        "SELECT iforest_score(CAST(amount AS FLOAT), 2, CAST(speed AS REAL)) AS s, \
         iforest_model_version() AS v FROM t WHERE id = 1",
    )
    .await;
    let s = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    let want = a
        .score_row(&[10.0, 2.0, 3.5])
        .expect("score")
        .anomaly_score();
    assert_eq!(s.value(0), want);
    let v = datafusion::arrow::util::display::array_value_to_string(batches[0].column(1), 0)
        .expect("display");
    assert_eq!(v, a.version());
}

#[tokio::test]
async fn wrong_arity_and_types_fail_at_planning_naming_features() {
    let (ctx, _, _) = ctx().await;
    let err = ctx
        .sql("SELECT iforest_score(amount, speed) FROM t")
        .await
        .expect_err("arity must fail at planning")
        .to_string();
    assert!(
        err.contains("iforest_score() takes 3 arguments, the features of model 'default' in order: amount, count_1h, speed; got 2"),
        "{err}"
    );
    let err = ctx
        .sql("SELECT iforest_is_anomaly_v2(amount, 'x', speed) FROM t")
        .await
        .expect_err("types must fail at planning")
        .to_string();
    assert!(
        err.contains("argument 2 is feature 'count_1h' of model 'v2' and must be numeric"),
        "{err}"
    );
}

#[test]
fn model_names_must_be_sql_identifiers() {
    let mut ctx = SessionContext::new();
    let e = register_forest(&mut ctx, "Bad-Name", forest(3)).expect_err("bad name");
    assert!(e.to_string().contains("not usable in SQL"), "{e}");
}

/// `model_udfs`: what `iforest_score` records equals what it returned — every
/// scored row in one bucket of 0.05 (rows without a score are not counted), the sum of the
/// scores, and the rows above the threshold equal to `iforest_is_anomaly`'s trues.
#[tokio::test]
async fn observed_scores_are_counted_as_returned() {
    use txguard_iforest_datafusion::{ModelSlot, model_udfs};
    let f = forest(3);
    let slot = ModelSlot::new("default", f.clone());
    let stats = slot.stats();
    let ctx = SessionContext::new();
    for udf in model_udfs(&slot).expect("udfs") {
        ctx.register_udf(udf);
    }
    ctx.sql(
        "CREATE TABLE t AS SELECT (v * 37 % 1000) / 10.0 AS amount, v % 50 AS count_1h, \
         CASE WHEN v % 97 = 0 THEN NULL ELSE (v * 13 % 1000) / 10.0 END AS speed \
         FROM generate_series(1, 5000) AS g(v)",
    )
    .await
    .expect("create")
    .collect()
    .await
    .expect("collect");
    let out = query(
        &ctx,
        "SELECT iforest_score(amount, count_1h, speed) AS s, \
         iforest_is_anomaly(amount, count_1h, speed) AS a FROM t",
    )
    .await;
    let (mut scored, mut sum, mut flagged) = (0u64, 0.0f64, 0u64);
    let mut below = [0u64; 20];
    for b in &out {
        let s = b
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("f64");
        let a = b
            .column(1)
            .as_any()
            .downcast_ref::<BooleanArray>()
            .expect("bool");
        for i in 0..b.num_rows() {
            if s.is_null(i) {
                continue;
            }
            scored += 1;
            sum += s.value(i);
            flagged += u64::from(a.value(i));
            for (k, n) in below.iter_mut().enumerate() {
                *n += u64::from(s.value(i) <= (k + 1) as f64 / 20.0 + 1e-12);
            }
        }
    }
    assert!(
        scored > 4900 && scored < 5000,
        "NULL speeds give no score: {scored}"
    );
    let cumulative = stats.cumulative();
    assert_eq!(cumulative.len(), 20);
    assert_eq!(
        cumulative[19],
        (1.0, scored),
        "every scored row is in a bucket"
    );
    for (k, (le, n)) in cumulative.iter().enumerate() {
        assert!((le - (k + 1) as f64 / 20.0).abs() < 1e-12);
        assert_eq!(*n, below[k], "rows at or below {le}");
    }
    assert!(
        (stats.sum() - sum).abs() < 1e-6 * scored as f64,
        "{} vs {sum}",
        stats.sum()
    );
    assert!(flagged > 0, "the model flags some rows");
    assert_eq!(
        stats.flagged(),
        flagged,
        "above the threshold = iforest_is_anomaly"
    );
    assert_eq!(stats.version, f.version().to_string());
}

#[tokio::test]
async fn explanations_add_up_to_the_score_and_run_only_where_asked() {
    let (ctx, a, _) = ctx().await;
    let batches = query(
        &ctx,
        "SELECT id, iforest_score(amount, count_1h, speed) AS s, \
         iforest_explain(amount, count_1h, speed) AS e, \
         CASE WHEN iforest_score(amount, count_1h, speed) > iforest_threshold() \
              THEN iforest_explain(amount, count_1h, speed) END AS flagged_e, \
         iforest_is_anomaly(amount, count_1h, speed) AS flag \
         FROM t ORDER BY id",
    )
    .await;
    let batch = &batches[0];
    let s = batch
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("f64");
    let text = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .expect("utf8")
            .clone()
    };
    let (e, flagged_e) = (text(2), text(3));
    let flag = batch
        .column(4)
        .as_any()
        .downcast_ref::<BooleanArray>()
        .expect("bool");
    let c = txguard_iforest::tree::average_path_length(a.max_samples() as f64);
    let mut flagged = 0;
    for r in 0..batch.num_rows() {
        if s.is_null(r) {
            assert!(e.is_null(r), "row {r}: no score, so no explanation");
            assert!(flagged_e.is_null(r));
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(e.value(r)).expect("explanation is JSON");
        let h = v["path_length"].as_f64().expect("path_length");
        let expected = v["expected_path_length"].as_f64().expect("expected");
        let contributions = v["contributions"].as_array().expect("contributions");
        assert_eq!(contributions.len(), 3, "every feature is listed");
        let values: Vec<f64> = contributions
            .iter()
            .map(|c| c["contribution"].as_f64().expect("contribution"))
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] <= w[1]),
            "most anomalous first: {values:?}"
        );
        let mut names: Vec<&str> = contributions
            .iter()
            .map(|c| c["feature"].as_str().expect("feature"))
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["amount", "count_1h", "speed"]);
        assert!((expected + values.iter().sum::<f64>() - h).abs() < 1e-9);
        assert!(
            (s.value(r) - 2f64.powf(-h / c)).abs() < 1e-12,
            "row {r}: the explained path length is the scored one"
        );
        if flag.value(r) {
            flagged += 1;
            assert_eq!(flagged_e.value(r), e.value(r), "row {r}");
        } else {
            assert!(flagged_e.is_null(r), "row {r}: not flagged, not explained");
        }
    }
    assert!(flagged >= 1, "the outlier row is flagged and explained");
    // The outlier's amount is what isolates it: its largest push towards an anomaly.
    let outlier: serde_json::Value = serde_json::from_str(e.value(1)).expect("json");
    assert!(
        outlier["contributions"][0]["contribution"]
            .as_f64()
            .expect("c")
            < 0.0
    );
}

/// A hot swap: one physical plan, made before the swap, scores with the new model after it —
/// `iforest_model_version()` and `iforest_threshold()` are not folded into the plan — and
/// every row of a batch names the model that scored it. A model with other features is
/// refused and counted, and the old one keeps scoring.
#[tokio::test]
async fn a_swapped_model_scores_the_next_batch_of_the_same_plan() {
    use datafusion::physical_plan::collect;
    use txguard_iforest_datafusion::{ModelSlot, Staged, model_udfs};
    let (a, b) = (forest(1), forest(2));
    assert_ne!(a.version(), b.version());
    let slot = ModelSlot::new("default", a.clone());
    let ctx = SessionContext::new();
    for udf in model_udfs(&slot).expect("udfs") {
        ctx.register_udf(udf);
    }
    ctx.sql(
        "CREATE TABLE t AS SELECT (v * 37 % 1000) / 10.0 AS amount, \
         CAST(v % 50 AS DOUBLE) AS count_1h, (v * 13 % 1000) / 10.0 AS speed \
         FROM generate_series(1, 300) AS g(v)",
    )
    .await
    .expect("create")
    .collect()
    .await
    .expect("collect");
    let plan = ctx
        .sql(
            "SELECT iforest_model_version() AS v, iforest_threshold() AS t, \
             iforest_score(amount, count_1h, speed) AS s, amount, count_1h, speed FROM t",
        )
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    let run = || async {
        let out = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
        let mut rows = Vec::new();
        for b in &out {
            let col = |i: usize| b.column(i).clone();
            let v = datafusion::arrow::compute::cast(
                &col(0),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .expect("v");
            let v = v
                .as_any()
                .downcast_ref::<datafusion::arrow::array::StringArray>()
                .expect("utf8")
                .clone();
            let f = |i: usize| {
                col(i)
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .expect("f64")
                    .clone()
            };
            let (t, s, x, y, z) = (f(1), f(2), f(3), f(4), f(5));
            for i in 0..b.num_rows() {
                rows.push((
                    v.value(i).to_string(),
                    t.value(i),
                    s.value(i),
                    [x.value(i), y.value(i), z.value(i)],
                ));
            }
        }
        rows
    };
    let check = |rows: &[(String, f64, f64, [f64; 3])], f: &Forest| {
        assert_eq!(rows.len(), 300);
        for (v, t, s, x) in rows {
            assert_eq!(v, f.version(), "every row names the model that scored it");
            assert_eq!(*t, -f.offset());
            let mut out = [0.0];
            f.score_samples_rows(x, &mut out).expect("score");
            let want = -out[0];
            assert!((s - want).abs() < 1e-12, "score {s} vs {want}");
        }
    };
    check(&run().await, &a);
    assert_eq!(
        slot.stage(b.clone()).expect("same features"),
        Staged::Pending {
            version: b.version().to_string()
        }
    );
    // Staged, not applied: still the old model.
    check(&run().await, &a);
    assert_eq!(
        slot.apply_pending(),
        Some((a.version().to_string(), b.version().to_string()))
    );
    check(&run().await, &b);
    assert_eq!(slot.swaps(), 1);
    assert_eq!(slot.stage(b.clone()).expect("same"), Staged::Unchanged);
    // Both versions' statistics stay (each counted what it scored).
    let all = slot.all_stats();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].cumulative()[19].1, 600);
    assert_eq!(all[1].cumulative()[19].1, 300);

    // Other features: refused, counted, nothing staged.
    let names = vec!["amount".to_string(), "speed".into(), "count_1h".into()];
    let x = Array2::from_shape_fn((500, 3), |(i, j)| ((i * 31 + j * 7) % 100) as f64);
    let other = fit(
        TrainingSet {
            x: x.view(),
            features: &names,
            labels: None,
            source: None,
        },
        &FitParams {
            n_estimators: 5,
            ..Default::default()
        },
    )
    .expect("fit");
    let e = slot.stage(Arc::new(other)).expect_err("other features");
    assert!(e.to_string().contains("amount, speed, count_1h"), "{e}");
    let (refused, reason) = slot.refused();
    assert_eq!(refused, 1);
    assert!(reason.expect("reason").contains("not the running model's"));
    assert_eq!(slot.pending_version(), None);
    assert_eq!(slot.apply_pending(), None);
    check(&run().await, &b);
}
