//! `txguard train --pipeline`: runs a pipeline's source through its views up to the feature
//! view (the same dataflow `txguard run` executes, minus the sinks and the scoring views that
//! need a model) and fits the forest on that view's rows.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use txguard_engine::connector::CollectSink;
use txguard_engine::runtime::{Metrics, RunOptions, run};

use crate::commands::pipeline::{connect, load, progress, roles};
use crate::commands::train::{TrainArgs, Training, fit_and_save};

/// A pipeline planned up to one view (its views up to it, no inserts, no scoring views that
/// need a model), ready to run for that view's rows.
pub struct ViewRun {
    p: txguard_engine::sql::Pipeline,
    df: txguard_engine::stream::Dataflow,
    pub schema: datafusion::arrow::datatypes::SchemaRef,
}

impl ViewRun {
    /// Plans `path` (with `sets`) up to `view`; fails naming the views it has.
    pub async fn plan(path: &std::path::Path, sets: &[String], view: &str) -> Result<Self> {
        let mut p = load(path, sets)?;
        let Some(pos) = p.views.iter().position(|v| v.name == view) else {
            bail!(
                "{}: no view {view}; its views: {}",
                path.display(),
                p.views
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        p.views.truncate(pos + 1);
        p.inserts.clear();
        let roles = roles(&p)?;
        let mut df = txguard_engine::stream::plan(&p, &roles, &Vec::new()).await?;
        let tap = df
            .tap(view)
            .with_context(|| format!("view {view} was not planned"))?;
        let schema = df.sinks()[tap].schema.clone();
        Ok(Self { p, df, schema })
    }

    /// Runs the source through the views (with a progress bar on a terminal): the view's rows.
    pub async fn collect(self) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        let Self { p, df, .. } = self;
        let rows = CollectSink::default();
        let conns = connect(&p, &df, vec![Box::new(rows.clone())], None, None).await?;
        let metrics = Arc::new(Metrics::for_dataflow(&df));
        let (pb, handle) = progress(metrics.clone());
        let result = run(
            df,
            conns,
            RunOptions::default(),
            metrics.clone(),
            Arc::new(AtomicBool::new(false)),
        )
        .await;
        let _ = handle.await;
        pb.finish_and_clear();
        result?;
        for s in &metrics.sources {
            let (dead, late) = (
                s.dead.load(std::sync::atomic::Ordering::Relaxed),
                s.late.load(std::sync::atomic::Ordering::Relaxed),
            );
            if dead + late > 0 {
                tracing::warn!(
                    "source {}: {dead} rejected and {late} late events are not in the view's rows",
                    s.name
                );
            }
        }
        Ok(rows.take())
    }
}

/// A schema's column names, comma-separated (for "it has …" in errors).
pub fn column_list(schema: &datafusion::arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends the rows of `b` whose columns `idx` are all present and finite to `x` (row-major,
/// as f64): the indices of the rows kept.
pub fn finite_rows(
    b: &datafusion::arrow::array::RecordBatch,
    idx: &[usize],
    x: &mut Vec<f64>,
) -> Result<Vec<usize>> {
    let cols = idx
        .iter()
        .map(|&i| cast(b.column(i), &DataType::Float64))
        .collect::<Result<Vec<_>, _>>()?;
    let cols: Vec<_> = cols
        .iter()
        .map(|c| c.as_primitive::<Float64Type>())
        .collect();
    let mut kept = Vec::with_capacity(b.num_rows());
    for r in 0..b.num_rows() {
        if cols.iter().all(|c| c.is_valid(r) && c.value(r).is_finite()) {
            x.extend(cols.iter().map(|c| c.value(r)));
            kept.push(r);
        }
    }
    Ok(kept)
}

pub async fn train(args: TrainArgs) -> Result<()> {
    let Some(path) = args.pipeline.clone() else {
        bail!("--pipeline is required");
    };
    let view_run = ViewRun::plan(&path, &args.sets, &args.view).await?;
    let schema = view_run.schema.clone();
    let label = args.label.clone().or_else(|| {
        schema
            .index_of("is_fraud")
            .is_ok()
            .then(|| "is_fraud".to_string())
    });
    let features: Vec<String> = if args.features.is_empty() {
        let after = label
            .as_ref()
            .and_then(|l| schema.index_of(l).ok())
            .map_or(0, |i| i + 1);
        schema
            .fields()
            .iter()
            .skip(after)
            .filter(|f| f.data_type().is_numeric())
            .map(|f| f.name().clone())
            .collect()
    } else {
        args.features.clone()
    };
    if features.is_empty() {
        bail!("view {} has no numeric feature columns", args.view);
    }
    let mut idx = Vec::new();
    for f in features.iter().chain(label.as_ref()) {
        idx.push(schema.index_of(f).map_err(|_| {
            anyhow::anyhow!(
                "view {} has no column {f}; it has {}",
                args.view,
                column_list(&schema)
            )
        })?);
    }
    tracing::info!(
        "training on view {} of {}: features {}{}",
        args.view,
        path.display(),
        features.join(", "),
        label
            .as_ref()
            .map(|l| format!("; label {l}"))
            .unwrap_or_default()
    );

    let batches = view_run.collect().await?;
    let nf = features.len();
    let mut values = Vec::new();
    let mut labels = label.as_ref().map(|_| Vec::new());
    let mut n = 0usize;
    let mut skipped = 0usize;
    for b in &batches {
        let kept = finite_rows(b, &idx[..nf], &mut values)?;
        skipped += b.num_rows() - kept.len();
        n += kept.len();
        if let Some(l) = labels.as_mut() {
            let lab = cast(b.column(idx[nf]), &DataType::Boolean)?;
            let lab = lab.as_boolean();
            l.extend(kept.iter().map(|&r| lab.is_valid(r) && lab.value(r)));
        }
    }
    if skipped > 0 {
        tracing::warn!("{skipped} rows with a NULL or non-finite feature were left out");
    }
    fit_and_save(
        &args,
        Training {
            features,
            values,
            labels,
            rows: n,
            source: format!("{} view {}", path.display(), args.view),
        },
    )
}
