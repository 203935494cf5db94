//! `txguard train`: fit an isolation forest on feature columns of a CSV or Parquet file and
//! write the model file with its card.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use datafusion::arrow::array::{Array, BooleanArray, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use ndarray::Array2;
use txguard_iforest::{Contamination, FitParams, MaxFeatures, MaxSamples, TrainingSet, fit};

use crate::commands::model::fmt_metric;
use crate::tabular::{quote_ident, register_input, row_progress};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Training data: .csv (with a header row) or .parquet.
    #[arg(
        long,
        required_unless_present = "pipeline",
        conflicts_with = "pipeline"
    )]
    pub input: Option<PathBuf>,
    /// Train on a pipeline's feature view instead: its source (with --set overrides, e.g.
    /// transactions.count=200000) runs through the views, exactly as `txguard run` computes
    /// them, so serving and training never disagree.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// With --pipeline: the view whose rows are the training set.
    #[arg(long, default_value = "features", requires = "pipeline")]
    pub view: String,
    /// With --pipeline: override a table option (`table.option=value`); repeatable.
    #[arg(long = "set", value_name = "TABLE.OPTION=VALUE", requires = "pipeline")]
    pub sets: Vec<String>,
    /// Feature columns, comma-separated, in the order the model will take them. With
    /// --pipeline the default is every numeric column of the view after the label column.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,
    /// Optional boolean label column (e.g. is_fraud) for the model card's ROC/PR AUC; never a
    /// feature. With --pipeline it defaults to is_fraud when the view has it.
    #[arg(long)]
    pub label: Option<String>,
    /// Where to write the model file (JSON).
    #[arg(long, short)]
    pub output: PathBuf,
    /// Model name for the card.
    #[arg(long)]
    pub name: Option<String>,
    /// Number of trees.
    #[arg(long, default_value_t = 100)]
    pub n_estimators: usize,
    /// Rows per tree: auto (min(256, rows)), a count, or a fraction.
    #[arg(long, default_value = "auto")]
    pub max_samples: MaxSamples,
    /// Expected anomaly share: auto (offset -0.5) or a fraction in (0, 0.5].
    #[arg(long, default_value = "auto")]
    pub contamination: Contamination,
    /// Features per tree: a count or a fraction (1.0 = all).
    #[arg(long, default_value = "1.0")]
    pub max_features: MaxFeatures,
    /// Draw rows with replacement.
    #[arg(long)]
    pub bootstrap: bool,
    /// Random seed; the same seed and data give the same model.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads to fit on (0 = all cores); does not change the model.
    #[arg(long, default_value_t = 0)]
    pub jobs: usize,
}

pub fn run(args: TrainArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    if args.pipeline.is_some() {
        rt.block_on(crate::commands::train_pipeline::train(args))
    } else {
        rt.block_on(train(args))
    }
}

/// The rows to fit on: row-major feature values and, if a label was given, the labels.
pub struct Training {
    pub features: Vec<String>,
    pub values: Vec<f64>,
    pub labels: Option<Vec<bool>>,
    pub rows: usize,
    pub source: String,
}

async fn train(args: TrainArgs) -> Result<()> {
    let Some(input) = args.input.clone() else {
        bail!("give --input FILE or --pipeline FILE");
    };
    if args.features.is_empty() {
        bail!("--features is required with --input: the columns to train on, in order");
    }
    let ctx = SessionContext::new();
    let total = register_input(&ctx, "input", &input).await?;
    let schema = ctx.table("input").await?.schema().clone();
    for f in args.features.iter().chain(args.label.as_ref()) {
        if schema.field_with_unqualified_name(f).is_err() {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            bail!(
                "{}: no column {f:?}; the file has: {}",
                input.display(),
                have.join(", ")
            );
        }
    }
    let mut cols: Vec<String> = args.features.iter().map(|f| quote_ident(f)).collect();
    if let Some(l) = &args.label {
        cols.push(quote_ident(l));
    }
    let df = ctx
        .sql(&format!("SELECT {} FROM input", cols.join(", ")))
        .await?;
    let mut stream = df.execute_stream().await?;
    let nf = args.features.len();
    let mut values: Vec<f64> = Vec::new();
    let mut labels: Vec<bool> = Vec::new();
    let pb = row_progress(total, "reading");
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch.with_context(|| format!("reading {}", input.display()))?;
        let feats: Vec<Float64Array> = (0..nf)
            .map(|j| {
                let c = cast(batch.column(j), &DataType::Float64)
                    .with_context(|| format!("feature {:?} is not numeric", args.features[j]))?;
                Ok(c.as_any()
                    .downcast_ref::<Float64Array>()
                    .context("cast to Float64")?
                    .clone())
            })
            .collect::<Result<_>>()?;
        for r in 0..batch.num_rows() {
            for (j, c) in feats.iter().enumerate() {
                if c.is_null(r) {
                    bail!(
                        "row {}: feature {:?} is NULL; fill or drop such rows before training",
                        rows + r,
                        args.features[j]
                    );
                }
                values.push(c.value(r));
            }
        }
        if args.label.is_some() {
            let c = cast(batch.column(nf), &DataType::Boolean)
                .context("the label column must be boolean or 0/1")?;
            let c = c
                .as_any()
                .downcast_ref::<BooleanArray>()
                .context("cast to Boolean")?;
            labels.extend((0..c.len()).map(|r| c.is_valid(r) && c.value(r)));
        }
        rows += batch.num_rows();
        pb.set_position(rows as u64);
    }
    pb.finish_and_clear();
    let source = format!("{}", input.display());
    let labels = args.label.is_some().then_some(labels);
    let features = args.features.clone();
    fit_and_save(
        &args,
        Training {
            features,
            values,
            labels,
            rows,
            source,
        },
    )
}

/// Fits the forest on `t` with the arguments' parameters and writes the model file.
pub fn fit_and_save(args: &TrainArgs, t: Training) -> Result<()> {
    let Training {
        features,
        values,
        labels,
        rows,
        source,
    } = t;
    let nf = features.len();
    if rows == 0 {
        bail!("{source}: no rows to train on");
    }
    let x = Array2::from_shape_vec((rows, nf), values).context("shaping the training matrix")?;
    let params = FitParams {
        n_estimators: args.n_estimators,
        max_samples: args.max_samples,
        contamination: args.contamination,
        max_features: args.max_features,
        bootstrap: args.bootstrap,
        random_state: args.seed,
        n_jobs: if args.jobs == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            args.jobs
        },
    };
    let mut forest = fit(
        TrainingSet {
            x: x.view(),
            features: &features,
            labels: labels.as_deref(),
            source: Some(&source),
        },
        &params,
    )?;
    if let Some(n) = &args.name {
        forest.card_mut().name = Some(n.clone());
    }
    forest.save(&args.output)?;
    let card = forest.card();
    tracing::info!(
        "trained {} trees on {rows} rows × {nf} features in {:.2} s; model {} written to {}",
        forest.n_estimators(),
        card.training_seconds.unwrap_or_default(),
        forest.version(),
        args.output.display()
    );
    if let Some(m) = &card.metrics {
        tracing::info!(
            "on the labelled training rows: ROC AUC {}, PR AUC {}, {:.2}% flagged",
            fmt_metric(m.roc_auc),
            fmt_metric(m.pr_auc),
            m.flagged_rate * 100.0
        );
    }
    Ok(())
}
