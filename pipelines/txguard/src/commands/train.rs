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
    /// Log the training as a run on this MLflow tracking server (params, metrics, the model
    /// file and its card as artifacts, through the server's artifact proxy).
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URL")]
    pub mlflow_uri: Option<String>,
    /// The MLflow experiment the run goes in (created when missing).
    #[arg(long, default_value = "txguard", requires = "mlflow_uri")]
    pub experiment: String,
    /// Register the run's model as a new version of this registered model (created when
    /// missing); `txguard run --model models:/NAME@ALIAS` or `models:/NAME/VERSION` loads it.
    #[arg(long, value_name = "NAME", requires = "mlflow_uri")]
    pub register: Option<String>,
    /// Point this alias (e.g. champion) of the registered model at the new version.
    #[arg(long, requires = "register")]
    pub alias: Option<String>,
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
    if let Some(uri) = &args.mlflow_uri {
        log_to_mlflow(args, &forest, &params, rows, &source, uri)?;
    }
    Ok(())
}

/// Logs the training run on the MLflow server at `uri` and registers its model when asked.
fn log_to_mlflow(
    args: &TrainArgs,
    forest: &txguard_iforest::Forest,
    params: &FitParams,
    rows: usize,
    source: &str,
    uri: &str,
) -> Result<()> {
    let base = crate::mlflow::tracking_uri(Some(uri))?;
    let card = forest.card();
    let model = std::fs::read(&args.output)
        .with_context(|| format!("reading back {}", args.output.display()))?;
    let card_json = serde_json::to_vec_pretty(card).context("serialising the model card")?;
    let p = |k: &str, v: String| (k.to_string(), v);
    let mut metrics = vec![("training_rows".to_string(), rows as f64)];
    if let Some(s) = card.training_seconds {
        metrics.push(("training_seconds".to_string(), s));
    }
    if let Some(m) = &card.metrics {
        metrics.push(("flagged_rate".to_string(), m.flagged_rate));
        for (k, v) in [("roc_auc", m.roc_auc), ("pr_auc", m.pr_auc)] {
            if let Some(v) = v {
                metrics.push((k.to_string(), v));
            }
        }
    }
    let run_name = args
        .name
        .clone()
        .or_else(|| args.register.clone())
        .unwrap_or_else(|| "txguard-train".to_string());
    let logged = crate::mlflow::log_training(
        &base,
        crate::mlflow::TrainingRun {
            experiment: &args.experiment,
            run_name: &run_name,
            params: vec![
                p("n_estimators", params.n_estimators.to_string()),
                p("max_samples", format!("{:?}", params.max_samples)),
                p("contamination", format!("{:?}", params.contamination)),
                p("max_features", format!("{:?}", params.max_features)),
                p("bootstrap", params.bootstrap.to_string()),
                p("random_state", params.random_state.to_string()),
                p("features", forest.features().join(",")),
                p("training_source", source.chars().take(500).collect()),
            ],
            metrics,
            tags: vec![
                p("txguard.model_version", forest.version().to_string()),
                p("txguard.version", env!("CARGO_PKG_VERSION").to_string()),
            ],
            artifacts: vec![
                (format!("model/{}", crate::mlflow::MODEL_FILE), model),
                ("card.json".to_string(), card_json),
            ],
            register: args.register.as_deref().map(|n| (n, args.alias.as_deref())),
        },
    )?;
    tracing::info!(
        "logged MLflow run {} in experiment {:?} ({}) at {base}",
        logged.run_id,
        args.experiment,
        logged.experiment_id
    );
    if let (Some(name), Some(v)) = (&args.register, &logged.version) {
        let how = match &args.alias {
            Some(a) => format!("models:/{name}@{a}"),
            None => format!("models:/{name}/{v}"),
        };
        tracing::info!(
            "registered model {name:?} version {v}{}; run it with --model {how}",
            args.alias
                .as_ref()
                .map(|a| format!(" (alias {a})"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
