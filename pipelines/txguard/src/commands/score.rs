//! `txguard score`: offline scoring of a CSV or Parquet file through DataFusion and the
//! forest UDFs, streaming batch by batch.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use txguard_iforest_datafusion::register_forest;

use crate::commands::model::load;
use crate::tabular::{BatchWriter, quote_ident, register_input, row_progress};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Model file (JSON).
    #[arg(long)]
    pub model: PathBuf,
    /// Input .csv (with a header row) or .parquet; columns are matched to the model's features by name.
    #[arg(long)]
    pub input: PathBuf,
    /// Output .csv or .parquet: the input columns plus `score` and `is_anomaly`.
    #[arg(long)]
    pub output: PathBuf,
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(score(args))
}

async fn score(args: ScoreArgs) -> Result<()> {
    let forest = Arc::new(load(&args.model)?);
    let mut ctx = SessionContext::new();
    register_forest(&mut ctx, "default", forest.clone())?;
    let total = register_input(&ctx, "input", &args.input).await?;
    let schema = ctx.table("input").await?.schema().clone();
    let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let missing: Vec<&str> = forest
        .features()
        .iter()
        .map(String::as_str)
        .filter(|f| !have.contains(f))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: missing column(s) {} needed by model {} (features: {}); the file has: {}",
            args.input.display(),
            missing.join(", "),
            args.model.display(),
            forest.features().join(", "),
            have.join(", ")
        );
    }
    for out_col in ["score", "is_anomaly"] {
        if have.contains(&out_col) {
            bail!(
                "{}: already has a column named {out_col:?}; rename it before scoring",
                args.input.display()
            );
        }
    }
    let feats: Vec<String> = forest.features().iter().map(|f| quote_ident(f)).collect();
    let feats = feats.join(", ");
    let sql = format!(
        "SELECT *, iforest_score({feats}) AS score, iforest_is_anomaly({feats}) AS is_anomaly FROM input"
    );
    let df = ctx.sql(&sql).await.context("planning the scoring query")?;
    let out_schema = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    let mut writer = BatchWriter::create(&args.output, out_schema)?;
    let pb = row_progress(total, "scoring");
    let started = std::time::Instant::now();
    let (mut rows, mut anomalies, mut unscored) = (0u64, 0u64, 0u64);
    while let Some(batch) = stream.next().await {
        let batch = batch.with_context(|| format!("reading {}", args.input.display()))?;
        let flags = batch
            .column(batch.num_columns() - 1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BooleanArray>()
            .context("is_anomaly column")?;
        anomalies += flags.true_count() as u64;
        unscored += datafusion::arrow::array::Array::null_count(flags) as u64;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
        pb.set_position(rows);
    }
    writer.finish()?;
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        "scored {rows} rows in {secs:.2} s ({:.0} rows/s) with model {}: {anomalies} anomalies, {unscored} rows without a score (NULL/NaN/inf feature); wrote {}",
        rows as f64 / secs.max(1e-9),
        forest.version(),
        args.output.display()
    );
    Ok(())
}
