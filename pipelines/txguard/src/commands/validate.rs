//! `txguard validate`: parse and plan a pipeline file without running it, and print its
//! dataflow graph.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use txguard_engine::sql::{Pipeline, PlanningFunctions, role_of};
use txguard_iforest_datafusion::ModelSlot;

use crate::commands::model::load;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Pipeline file (Arroyo SQL dialect), e.g. sql/pipeline.sql.
    pub pipeline: PathBuf,
    /// A model for the iforest_* functions: `path` (model `default`) or `name=path`;
    /// repeatable. Default: models/default.json, when the pipeline calls an iforest_* function.
    #[arg(long = "model", value_name = "[NAME=]PATH")]
    pub models: Vec<String>,
    /// Override a table option (`table.option=value`), as `txguard run` would; repeatable.
    #[arg(long = "set", value_name = "TABLE.OPTION=VALUE")]
    pub sets: Vec<String>,
}

/// A pipeline's models as SQL functions.
pub struct Models {
    pub functions: PlanningFunctions,
    /// Each model's slot: the forest its functions score with (swappable while running) and
    /// what each version scored (for `/metrics`).
    pub slots: Vec<Arc<ModelSlot>>,
    /// Each model's source as given (`name=` removed): a file or a `models:/` URI.
    pub specs: Vec<String>,
    /// Each model as the console shows it: name, version, features, size, kernel and card.
    pub cards: Vec<serde_json::Value>,
}

/// A model as the console and `/api/v1/models` show it.
pub fn card_json(
    name: &str,
    forest: &txguard_iforest::Forest,
    file: &str,
    registry: Option<&serde_json::Value>,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "version": forest.version(),
        "file": file,
        "features": forest.features(),
        "trees": forest.n_estimators(),
        "max_samples": forest.max_samples(),
        "offset": forest.offset(),
        "kernel": format!("{:?}", forest.kernel_in_use()),
        "card": forest.card(),
        "registry": registry,
    })
}

/// Loads `[name=]path` model arguments as SQL functions, `fallback(name, error)` giving a
/// model to use when a source cannot be read (a restart's copy of the model its checkpoint
/// was scored with).
pub fn model_functions_with(
    specs: &[String],
    fallback: &dyn Fn(&str, &anyhow::Error) -> Option<txguard_iforest::Forest>,
) -> Result<Models> {
    let mut m = Models {
        functions: Vec::new(),
        slots: Vec::new(),
        specs: Vec::new(),
        cards: Vec::new(),
    };
    for s in specs {
        let (name, path) = s.split_once('=').unwrap_or(("default", s.as_str()));
        let (forest, registry) = match load_model(path) {
            Ok(got) => got,
            Err(e) => match fallback(name, &e) {
                Some(forest) => (forest, None),
                None => return Err(e),
            },
        };
        let forest = Arc::new(forest);
        m.cards
            .push(card_json(name, &forest, path, registry.as_ref()));
        let slot = ModelSlot::new(name, forest);
        let udfs = txguard_iforest_datafusion::model_udfs(&slot)
            .with_context(|| format!("--model {s}"))?;
        m.functions.extend(udfs.into_iter().map(Arc::new));
        m.slots.push(slot);
        m.specs.push(path.to_string());
    }
    Ok(m)
}

/// A model file, or a `models:/` URI resolved on the registry (with what to show of where it
/// came from). A file's errors name the file; a URI's start with `--model URI`.
pub fn load_model(path: &str) -> Result<(txguard_iforest::Forest, Option<serde_json::Value>)> {
    match crate::mlflow::ModelUri::parse(path) {
        Some(uri) => {
            let (forest, registry) = uri
                .and_then(|uri| from_registry(&uri))
                .with_context(|| format!("--model {path}"))?;
            Ok((forest, Some(registry)))
        }
        None => Ok((load(std::path::Path::new(path))?, None)),
    }
}

/// Resolves a `models:/` URI on the MLflow server of `MLFLOW_TRACKING_URI` and loads the
/// version's model; also what to show of where it came from.
pub fn from_registry(
    uri: &crate::mlflow::ModelUri,
) -> Result<(txguard_iforest::Forest, serde_json::Value)> {
    let base = crate::mlflow::tracking_uri(None)?;
    let got = crate::mlflow::fetch_model(&base, uri)?;
    let forest = txguard_iforest::Forest::from_json(&got.text).with_context(|| {
        format!(
            "version {} ({}) is not a txguard model file",
            got.version, got.source
        )
    })?;
    tracing::info!(
        "model {uri}: registered version {} (run {}), {} trees over {} features, scored with the {}",
        got.version,
        got.run_id,
        forest.n_estimators(),
        forest.n_features(),
        crate::commands::model::scoring(&forest)
    );
    Ok((
        forest,
        serde_json::json!({
            "uri": uri.to_string(),
            "server": base,
            "registered_version": got.version,
            "run_id": got.run_id,
            "source": got.source,
        }),
    ))
}

/// The model a pipeline gets when no `--model` is given.
pub const DEFAULT_MODEL: &str = "models/default.json";

/// Whether any view or insert of `p` calls a forest function.
fn uses_forest(p: &Pipeline) -> bool {
    p.views
        .iter()
        .map(|v| &v.sql)
        .chain(p.inserts.iter().map(|i| &i.query))
        .any(|q| q.to_ascii_lowercase().contains("iforest_"))
}

/// The forest functions for `p`: the `--model`s given, else the default model when the
/// pipeline calls a forest function, else none (a pipeline without one needs no model).
pub fn pipeline_models(p: &Pipeline, specs: &[String]) -> Result<Models> {
    pipeline_models_with(p, specs, &|_, _| None)
}

/// [`pipeline_models`] with a fallback for sources that cannot be read
/// ([`model_functions_with`]).
pub fn pipeline_models_with(
    p: &Pipeline,
    specs: &[String],
    fallback: &dyn Fn(&str, &anyhow::Error) -> Option<txguard_iforest::Forest>,
) -> Result<Models> {
    if !specs.is_empty() {
        return model_functions_with(specs, fallback);
    }
    if uses_forest(p) {
        return model_functions_with(&[DEFAULT_MODEL.to_string()], fallback);
    }
    model_functions_with(&[], fallback)
}

/// Relations a query mentions, among the pipeline's tables and views.
fn inputs(p: &Pipeline, sql: &str) -> Vec<String> {
    let words: BTreeSet<String> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .map(str::to_ascii_lowercase)
        .collect();
    p.tables
        .iter()
        .map(|t| t.name.clone())
        .chain(p.views.iter().map(|v| v.name.clone()))
        .filter(|n| words.contains(n))
        .collect()
}

pub fn run(args: ValidateArgs) -> Result<()> {
    let mut p = crate::commands::pipeline::load(&args.pipeline, &args.sets)?;
    let functions = pipeline_models(&p, &args.models)?.functions;
    let connectors = txguard_connectors::specs();
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    // Checks the connectors and options, then plans.
    let df = rt.block_on(crate::commands::pipeline::plan(&mut p, &functions))?;

    outln!("{}: valid", args.pipeline.display());
    for t in &p.tables {
        let spec = connectors.iter().find(|c| c.name == t.connector);
        let role = spec
            .map(|s| role_of(&p, t, s))
            .transpose()?
            .map_or("?".to_string(), |r| r.to_string());
        let wm = t
            .watermark
            .as_ref()
            .map(|w| {
                format!(
                    ", event time {} (allowed lateness {} ms)",
                    w.column,
                    w.delay_micros / 1000
                )
            })
            .unwrap_or_default();
        outln!("  {role:<6} {} [{}{wm}]", t.name, t.connector);
    }
    for v in &p.views {
        let from: Vec<String> = inputs(&p, &v.sql)
            .into_iter()
            .filter(|n| *n != v.name)
            .collect();
        outln!("  view   {} <- {}", v.name, from.join(", "));
    }
    for i in &p.inserts {
        outln!(
            "  insert {} <- {} (line {})",
            i.table,
            inputs(&p, &i.query).join(", "),
            i.loc.line
        );
    }
    outln!("dataflow (each operator under its input):");
    for line in df.describe().lines() {
        outln!("  {line}");
    }
    Ok(())
}
