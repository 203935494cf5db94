//! `txguard model info` and `txguard model export-arroyo`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use txguard_iforest::Forest;
use txguard_iforest::arroyo::{UdfKind, udf_source, valid_function_name};

/// Which function the Arroyo UDF computes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Function {
    /// iforest_score: anomaly score in (0, 1], higher = more anomalous.
    Score,
    /// iforest_decision: scikit-learn's decision_function; `< 0` is exactly iforest_is_anomaly.
    Decision,
}

#[derive(Debug, Args)]
pub struct ExportArroyoArgs {
    /// Model file (JSON).
    pub model: PathBuf,
    /// Which function to generate.
    #[arg(long, value_enum, default_value = "score")]
    pub function: Function,
    /// SQL name of the UDF [default: iforest_score or iforest_decision].
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the .rs file; standard output when absent.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

pub fn load(path: &Path) -> Result<Forest> {
    let f = Forest::load(path)?;
    tracing::info!(
        "model {}: {} trees over {} features, scored with the {}",
        path.display(),
        f.n_estimators(),
        f.n_features(),
        scoring(&f)
    );
    Ok(f)
}

/// Which kernel scores the forest's batches on this CPU, and why when it is not the one
/// chosen.
pub fn scoring(f: &Forest) -> String {
    let (chosen, used) = (f.kernel(), f.kernel_in_use());
    if chosen == used {
        format!("{} kernel", used.name())
    } else {
        format!(
            "{} kernel ({} does not fit this forest: it takes trees of at most 8 levels, 16 features and 64 distinct leaf path lengths)",
            used.name(),
            chosen.name()
        )
    }
}

/// A card metric for people: four decimals, or `n/a` when it could not be computed.
pub fn fmt_metric(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |x| format!("{x:.4}"))
}

pub fn info(spec: &str, json: bool) -> Result<()> {
    let (f, registry) = crate::commands::validate::load_model(spec)?;
    let card = f.card();
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(card).context("serialising the card")?
        );
        return Ok(());
    }
    let depth = f
        .model_file()
        .trees
        .iter()
        .map(|t| t.max_depth())
        .max()
        .unwrap_or(0);
    let nodes: usize = f.model_file().trees.iter().map(|t| t.n_nodes()).sum();
    outln!("model        {spec}");
    if let Some(r) = &registry {
        outln!(
            "registry     version {} of {} (run {})",
            r["registered_version"].as_str().unwrap_or("?"),
            r["server"].as_str().unwrap_or("?"),
            r["run_id"].as_str().unwrap_or("?")
        );
    }
    if let Some(n) = &card.name {
        outln!("name         {n}");
    }
    outln!("version      {}", f.version());
    outln!(
        "features     {} ({})",
        f.n_features(),
        f.features().join(", ")
    );
    outln!(
        "trees        {} (max_samples {}, max depth {depth}, {nodes} nodes)",
        f.n_estimators(),
        f.max_samples()
    );
    outln!("offset       {}", f.offset());
    outln!(
        "scoring      {} on this CPU ({} overrides)",
        scoring(&f),
        txguard_iforest::KERNEL_ENV
    );
    outln!("created      {} by {}", card.created_at, card.trainer);
    let rows = card
        .training_rows
        .map(|r| r.to_string())
        .unwrap_or_else(|| "unknown".into());
    match card.training_seconds {
        Some(s) => outln!("training     {rows} rows in {s:.2} s"),
        None => outln!("training     {rows} rows"),
    }
    if let Some(src) = &card.data_source {
        outln!("data source  {src}");
    }
    if let Some(fp) = &card.data_fingerprint {
        outln!("fingerprint  {fp}");
    }
    if !card.params.is_empty() {
        let p: Vec<String> = card
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!("params       {}", p.join(" "));
    }
    match &card.metrics {
        Some(m) => {
            outln!(
                "metrics      ROC AUC {}, PR AUC {} on {} labelled rows ({} anomalous); flags {:.2}% of training rows",
                fmt_metric(m.roc_auc),
                fmt_metric(m.pr_auc),
                m.labelled_rows,
                m.positives,
                m.flagged_rate * 100.0
            );
        }
        None => outln!("metrics      none (trained without labels)"),
    }
    match &card.training_profile {
        Some(p) => outln!(
            "drift        training deciles of {} features kept{} (txguard run checks live data against them)",
            p.features.len(),
            p.flagged_rate
                .map(|r| format!(", {:.2}% flagged", 100.0 * r))
                .unwrap_or_default()
        ),
        None => {
            outln!("drift        no training profile: no drift checks (retrain with txguard train)")
        }
    }
    if let Some(e) = &card.evaluation {
        let num = |k: &str| fmt_metric(e[k].as_f64());
        outln!(
            "evaluation   ROC AUC {}, PR AUC {} on {} rows ({} fraud) of {} view {}; at the threshold: precision {}, recall {} ({})",
            num("roc_auc"),
            num("pr_auc"),
            e["rows"],
            e["positives"],
            e["data"]["pipeline"].as_str().unwrap_or("?"),
            e["data"]["view"].as_str().unwrap_or("?"),
            num("precision"),
            num("recall"),
            e["evaluated_at"].as_str().unwrap_or("?")
        );
    }
    if let Some(n) = &card.notes {
        outln!("notes        {n}");
    }
    Ok(())
}

pub fn export_arroyo(args: ExportArroyoArgs) -> Result<()> {
    let f = load(&args.model)?;
    let kind = match args.function {
        Function::Score => UdfKind::Score,
        Function::Decision => UdfKind::Decision,
    };
    let name = args.name.unwrap_or_else(|| kind.default_name().to_string());
    if !valid_function_name(&name) {
        bail!(
            "--name {name:?}: use lowercase letters, digits and underscores, starting with a letter"
        );
    }
    let src = udf_source(&f, kind, &name);
    match &args.output {
        Some(p) => {
            std::fs::write(p, &src).with_context(|| format!("writing {}", p.display()))?;
            tracing::info!(
                "wrote Arroyo UDF {name}({}) for model {} to {} ({} KiB)",
                f.features().join(", "),
                f.version(),
                p.display(),
                src.len() / 1024
            );
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            match out.write_all(src.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(e).context("writing to standard output");
                }
                _ => {}
            }
        }
    }
    Ok(())
}
