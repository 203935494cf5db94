//! `txguard model evaluate`: runs a pipeline's feature view over labelled history, scores it
//! with a model, and writes an evaluation report: `report.json` (every number), `report.html`
//! (the figures inline, for a browser or an MLflow artifact) and the figures as SVG files
//! (ROC curve, precision–recall curve, score distributions by label).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde_json::{Value, json};
use txguard_iforest::metrics::{average_precision, roc_auc};

use crate::commands::model::fmt_metric;
use crate::commands::train_pipeline::{ViewRun, column_list, finite_rows};

#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model: a file, or models:/NAME@ALIAS / models:/NAME/VERSION (MLflow registry).
    #[arg(long)]
    pub model: String,
    /// The pipeline whose feature view computes the model's features.
    #[arg(long)]
    pub pipeline: PathBuf,
    /// The view whose rows are evaluated.
    #[arg(long, default_value = "features")]
    pub view: String,
    /// Override a table option (`table.option=value`), e.g. transactions.count=200000.
    #[arg(long = "set", value_name = "TABLE.OPTION=VALUE")]
    pub sets: Vec<String>,
    /// The boolean label column (true = fraud).
    #[arg(long, default_value = "is_fraud")]
    pub label: String,
    /// Also report recall and flagged rate per value of these columns (e.g. category,channel).
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<String>,
    /// Precision and recall among the k highest scores, for each k.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub top_k: Vec<usize>,
    /// Where the report goes (created): report.json, report.html, roc.svg, pr.svg, scores.svg.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Also write every evaluated row's label, score and flag (and --by values) as scores.csv.
    #[arg(long)]
    pub write_scores: bool,
    /// File the report with an MLflow run (artifacts under evaluation/, metrics eval_*): a run
    /// id, or `model` for the run that trained a `models:/` --model. The server is
    /// MLFLOW_TRACKING_URI.
    #[arg(long, value_name = "RUN_ID|model")]
    pub mlflow_run: Option<String>,
    /// Also keep the report's headline numbers and curves in the model file's card
    /// (`card.evaluation`), where the console and `model info` show them. The model's version
    /// (a hash of its trees) does not change. Model files only.
    #[arg(long)]
    pub into_card: bool,
}

/// The column that names a labelled fraud's pattern (the generator's): the report always
/// breaks recall down by it when the view has it.
const PATTERN: &str = "fraud_pattern";

/// Points a curve keeps in the card (the report keeps all of them, up to ~500).
const CARD_CURVE_POINTS: usize = 100;

pub fn run(args: EvaluateArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(evaluate(args))
}

/// The evaluated rows: anomaly score (higher = more anomalous), label, flag, group values.
struct Scored {
    score: Vec<f64>,
    label: Vec<bool>,
    groups: Vec<Vec<Option<String>>>,
}

async fn evaluate(args: EvaluateArgs) -> Result<()> {
    if args.into_card && crate::mlflow::ModelUri::parse(&args.model).is_some() {
        bail!(
            "--into-card writes the model file's card, and {} is a registry model: evaluate \
             its file, or file the report with its run (--mlflow-run model)",
            args.model
        );
    }
    let (forest, registry) = crate::commands::validate::load_model(&args.model)?;
    // Where the report is filed, checked before the (possibly long) evaluation.
    let mlflow = match args.mlflow_run.as_deref() {
        None => None,
        Some(run) => {
            let base = crate::mlflow::tracking_uri(None).context("--mlflow-run")?;
            let run_id = if run == "model" {
                registry
                    .as_ref()
                    .and_then(|r| r["run_id"].as_str())
                    .filter(|r| !r.is_empty())
                    .map(str::to_string)
                    .context("--mlflow-run model: the --model is not a models:/ URI of a version with a run; give the run id")?
            } else {
                run.to_string()
            };
            Some((base, run_id))
        }
    };
    let view_run = ViewRun::plan(&args.pipeline, &args.sets, &args.view).await?;
    let schema = view_run.schema.clone();
    // Recall per fraud pattern, whenever the view says which pattern a fraud is.
    let mut args = args;
    if schema.index_of(PATTERN).is_ok() && !args.by.iter().any(|b| b == PATTERN) {
        args.by.push(PATTERN.to_string());
    }
    let col = |name: &str, what: &str| {
        schema.index_of(name).map_err(|_| {
            anyhow::anyhow!(
                "view {} of {} has no column {name:?} ({what}); it has {}",
                args.view,
                args.pipeline.display(),
                column_list(&schema)
            )
        })
    };
    let feat_idx = forest
        .features()
        .iter()
        .map(|f| col(f, "a feature of the model"))
        .collect::<Result<Vec<_>>>()?;
    let label_idx = col(&args.label, "the label, --label")?;
    let by_idx = args
        .by
        .iter()
        .map(|b| col(b, "--by"))
        .collect::<Result<Vec<_>>>()?;
    if args.top_k.contains(&0) {
        bail!("--top-k: every k must be at least 1");
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    tracing::info!(
        "evaluating model {} on view {} of {}",
        forest.version(),
        args.view,
        args.pipeline.display()
    );
    let batches = view_run.collect().await?;

    let mut x = Vec::new();
    let mut s = Scored {
        score: Vec::new(),
        label: Vec::new(),
        groups: vec![Vec::new(); by_idx.len()],
    };
    let mut skipped = 0usize;
    for b in &batches {
        let kept = finite_rows(b, &feat_idx, &mut x)?;
        skipped += b.num_rows() - kept.len();
        let lab = cast(b.column(label_idx), &DataType::Boolean)
            .with_context(|| format!("the label {} must be boolean or 0/1", args.label))?;
        let lab = lab.as_boolean();
        s.label
            .extend(kept.iter().map(|&r| lab.is_valid(r) && lab.value(r)));
        for (&i, out) in by_idx.iter().zip(s.groups.iter_mut()) {
            let g = cast(b.column(i), &DataType::Utf8)?;
            let g = g.as_string::<i32>();
            out.extend(
                kept.iter()
                    .map(|&r| g.is_valid(r).then(|| g.value(r).to_string())),
            );
        }
    }
    let n = s.label.len();
    if n == 0 {
        bail!("view {}: no rows to evaluate", args.view);
    }
    if skipped > 0 {
        tracing::warn!("{skipped} rows with a NULL or non-finite feature were left out");
    }
    let mut samples = vec![0.0; n];
    forest.score_samples_rows(&x, &mut samples)?;
    // score_samples is minus the anomaly score; flagged iff score_samples < offset.
    s.score = samples.iter().map(|v| -v).collect();
    let threshold = -forest.offset();

    let report = report(&args, &forest, registry, &s, threshold, skipped);
    let dir = &args.output;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    let roc = line_svg(
        "ROC curve",
        "false positive rate",
        "true positive rate",
        &curve_points(&report["roc"], "fpr", "tpr"),
        true,
    );
    let pr = line_svg(
        "Precision–recall curve",
        "recall",
        "precision",
        &curve_points(&report["pr"], "recall", "precision"),
        false,
    );
    let hist = histogram_svg(&report["histogram"], threshold);
    let page = html(&report, &[&roc, &pr, &hist]);
    let outputs = [
        (
            "report.json",
            serde_json::to_string_pretty(&report).context("serialising the report")?,
        ),
        ("report.html", page),
        ("roc.svg", roc),
        ("pr.svg", pr),
        ("scores.svg", hist),
    ];
    for (name, text) in &outputs {
        write(name, text)?;
    }
    if args.write_scores {
        let mut csv = String::from("label,score,flagged");
        for b in &args.by {
            let _ = write!(csv, ",{b}");
        }
        csv.push('\n');
        for i in 0..n {
            let _ = write!(
                csv,
                "{},{:.17},{}",
                s.label[i],
                s.score[i],
                s.score[i] > threshold
            );
            for g in &s.groups {
                let v = g[i].as_deref().unwrap_or("").replace([',', '\n', '"'], " ");
                let _ = write!(csv, ",{v}");
            }
            csv.push('\n');
        }
        write("scores.csv", &csv)?;
    }
    if args.into_card {
        into_card(&args.model, &forest, &report)?;
    }
    if let Some((base, run_id)) = &mlflow {
        let files = outputs
            .into_iter()
            .map(|(name, text)| (format!("evaluation/{name}"), text.into_bytes()))
            .collect();
        let at = &report["at_threshold"];
        let metrics = [
            ("eval_roc_auc", &report["roc_auc"]),
            ("eval_pr_auc", &report["pr_auc"]),
            ("eval_precision", &at["precision"]),
            ("eval_recall", &at["recall"]),
            ("eval_flagged_rate", &at["flagged_rate"]),
            ("eval_rows", &report["rows"]),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.as_f64()?)))
        .collect();
        crate::mlflow::log_to_run(base, run_id, files, metrics)
            .context("--mlflow-run: filing the report")?;
        tracing::info!(
            "report filed with MLflow run {run_id} (artifacts evaluation/, metrics eval_*)"
        );
    }
    let at = &report["at_threshold"];
    tracing::info!(
        "{n} rows ({} fraud): ROC AUC {}, PR AUC {}; at the model's threshold {threshold:.4}: precision {}, recall {}, {} flagged; report in {}",
        report["positives"],
        fmt(&report["roc_auc"]),
        fmt(&report["pr_auc"]),
        fmt(&at["precision"]),
        fmt(&at["recall"]),
        at["flagged"],
        dir.join("report.html").display()
    );
    Ok(())
}

/// Keeps `report`'s headline numbers and thinned curves in the card of the model file at
/// `path` (written whole, by rename), which must still be the evaluated model.
fn into_card(path: &str, evaluated: &txguard_iforest::Forest, report: &Value) -> Result<()> {
    let path = std::path::Path::new(path);
    let mut forest = txguard_iforest::Forest::load(path)?;
    if forest.version() != evaluated.version() {
        bail!(
            "--into-card: {} changed during the evaluation (version {}, evaluated {}); nothing written",
            path.display(),
            forest.version(),
            evaluated.version()
        );
    }
    let thin = |v: &Value, x: &str, y: &str| -> Vec<[f64; 2]> {
        let pts = curve_points(v, x, y);
        let step = pts.len().div_ceil(CARD_CURVE_POINTS).max(1);
        let mut out: Vec<[f64; 2]> = pts.iter().step_by(step).map(|&(a, b)| [a, b]).collect();
        if let Some(&(a, b)) = pts.last()
            && out.last() != Some(&[a, b])
        {
            out.push([a, b]);
        }
        out
    };
    let at = &report["at_threshold"];
    forest.card_mut().evaluation = Some(json!({
        "evaluated_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "data": report["data"],
        "rows": report["rows"],
        "positives": report["positives"],
        "roc_auc": report["roc_auc"],
        "pr_auc": report["pr_auc"],
        "threshold": report["threshold"],
        "flagged_rate": at["flagged_rate"],
        "precision": at["precision"],
        "recall": at["recall"],
        "roc": thin(&report["roc"], "fpr", "tpr"),
        "pr": thin(&report["pr"], "recall", "precision"),
    }));
    // Written whole (a temporary file renamed into place), so a pipeline watching the file
    // never reads half of it.
    forest.save(path)?;
    tracing::info!(
        "evaluation kept in the card of {} (version {} unchanged)",
        path.display(),
        forest.version()
    );
    Ok(())
}

fn fmt(v: &Value) -> String {
    fmt_metric(v.as_f64())
}

fn ratio(a: usize, b: usize) -> Value {
    if b == 0 {
        Value::Null
    } else {
        json!(a as f64 / b as f64)
    }
}

/// Every number of the report.
fn report(
    args: &EvaluateArgs,
    forest: &txguard_iforest::Forest,
    registry: Option<Value>,
    s: &Scored,
    threshold: f64,
    skipped: usize,
) -> Value {
    let n = s.score.len();
    let pos = s.label.iter().filter(|&&l| l).count();
    let flagged: Vec<bool> = s.score.iter().map(|&v| v > threshold).collect();
    let (mut tp, mut fp) = (0usize, 0usize);
    for (&f, &l) in flagged.iter().zip(&s.label) {
        match (f, l) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            _ => {}
        }
    }
    let fnn = pos - tp;
    let tn = n - pos - fp;
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, pos);
    let f1 = match (precision.as_f64(), recall.as_f64()) {
        (Some(p), Some(r)) if p + r > 0.0 => json!(2.0 * p * r / (p + r)),
        _ => Value::Null,
    };
    // Rows by score, highest first (ties: input order), for top-k and the curves.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| s.score[b].total_cmp(&s.score[a]));
    let top_k: Vec<Value> = args
        .top_k
        .iter()
        .map(|&k| {
            let k = k.min(n);
            let hits = order[..k].iter().filter(|&&i| s.label[i]).count();
            json!({ "k": k, "precision": ratio(hits, k), "recall": ratio(hits, pos) })
        })
        .collect();
    let (roc, pr) = curves(&order, s, pos);
    let bins = 50;
    let mut hist = vec![[0usize; 2]; bins];
    for (&v, &l) in s.score.iter().zip(&s.label) {
        let b = ((v * bins as f64) as usize).min(bins - 1);
        hist[b][usize::from(l)] += 1;
    }
    let histogram: Vec<Value> = hist
        .iter()
        .enumerate()
        .map(|(i, [legit, fraud])| {
            json!({ "from": i as f64 / bins as f64, "to": (i + 1) as f64 / bins as f64,
                    "legit": legit, "fraud": fraud })
        })
        .collect();
    let mut by = serde_json::Map::new();
    for (name, values) in args.by.iter().zip(&s.groups) {
        let mut g: BTreeMap<String, [usize; 4]> = BTreeMap::new();
        for i in 0..n {
            let e = g
                .entry(values[i].clone().unwrap_or_else(|| "(null)".into()))
                .or_default();
            e[0] += 1;
            e[1] += usize::from(s.label[i]);
            e[2] += usize::from(flagged[i]);
            e[3] += usize::from(flagged[i] && s.label[i]);
        }
        by.insert(
            name.clone(),
            Value::Array(
                g.into_iter()
                    .map(|(v, [rows, fraud, fl, hit])| {
                        json!({ "value": v, "rows": rows, "fraud": fraud, "flagged": fl,
                                "flagged_rate": ratio(fl, rows), "recall": ratio(hit, fraud),
                                "precision": ratio(hit, fl) })
                    })
                    .collect(),
            ),
        );
    }
    json!({
        "model": { "spec": args.model, "version": forest.version(), "name": forest.card().name,
                   "features": forest.features(), "registry": registry },
        "data": { "pipeline": args.pipeline.display().to_string(), "view": args.view,
                  "sets": args.sets, "label": args.label },
        "rows": n,
        "skipped_rows": skipped,
        "positives": pos,
        "roc_auc": roc_auc(&s.score, &s.label),
        "pr_auc": average_precision(&s.score, &s.label),
        "threshold": threshold,
        "at_threshold": { "flagged": tp + fp, "flagged_rate": ratio(tp + fp, n),
                          "precision": precision, "recall": recall, "f1": f1,
                          "confusion": { "tp": tp, "fp": fp, "tn": tn, "fn": fnn },
                          "trained_flagged_rate": forest.card().metrics.as_ref().map(|m| m.flagged_rate) },
        "top_k": top_k,
        "by": by,
        "roc": roc,
        "pr": pr,
        "histogram": histogram,
    })
}

/// ROC and PR curve points at each distinct score (thinned to at most ~500 points).
fn curves(order: &[usize], s: &Scored, pos: usize) -> (Vec<Value>, Vec<Value>) {
    let n = order.len();
    let neg = n - pos;
    let mut roc = vec![json!({ "fpr": 0.0, "tpr": 0.0, "threshold": Value::Null })];
    let mut pr = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let step = (n / 500).max(1);
    let mut i = 0;
    let mut last_emit = 0;
    while i < n {
        let v = s.score[order[i]];
        while i < n && s.score[order[i]] == v {
            if s.label[order[i]] {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        if i - last_emit >= step || i == n {
            last_emit = i;
            roc.push(json!({ "fpr": ratio(fp, neg), "tpr": ratio(tp, pos), "threshold": v }));
            pr.push(json!({ "recall": ratio(tp, pos), "precision": ratio(tp, tp + fp), "threshold": v }));
        }
    }
    (roc, pr)
}

fn curve_points(v: &Value, x: &str, y: &str) -> Vec<(f64, f64)> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[x].as_f64()?, p[y].as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
}

const W: f64 = 420.0;
const H: f64 = 320.0;
const L: f64 = 50.0;
const B: f64 = 40.0;
const T: f64 = 28.0;
const R: f64 = 14.0;

fn px(x: f64) -> f64 {
    L + x * (W - L - R)
}
fn py(y: f64) -> f64 {
    H - B - y * (H - B - T)
}

fn frame(title: &str, xl: &str, yl: &str) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="11"><rect width="{W}" height="{H}" fill="white"/><text x="{}" y="17" font-size="13" font-weight="bold">{}</text>"#,
        L,
        esc(title)
    );
    for t in 0..=5 {
        let v = t as f64 / 5.0;
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{y1}" stroke="#ddd"/><text x="{x}" y="{ty}" text-anchor="middle">{v:.1}</text><line x1="{x0}" y1="{y}" x2="{x1}" y2="{y}" stroke="#ddd"/><text x="{tx}" y="{y4}" text-anchor="end">{v:.1}</text>"##,
            x = px(v),
            y0 = py(0.0),
            y1 = py(1.0),
            ty = py(0.0) + 14.0,
            x0 = px(0.0),
            x1 = px(1.0),
            y = py(v),
            tx = L - 5.0,
            y4 = py(v) + 4.0,
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(13 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        px(0.5),
        H - 6.0,
        esc(xl),
        py(0.5),
        esc(yl)
    );
    s
}

/// A curve in the unit square (`diagonal`: the chance line, for ROC).
fn line_svg(title: &str, xl: &str, yl: &str, pts: &[(f64, f64)], diagonal: bool) -> String {
    let mut s = frame(title, xl, yl);
    if diagonal {
        let _ = write!(
            s,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999" stroke-dasharray="4 3"/>"##,
            px(0.0),
            py(0.0),
            px(1.0),
            py(1.0)
        );
    }
    let path: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
        .collect();
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#0969da" stroke-width="2" points="{}"/></svg>"##,
        path.join(" ")
    );
    s
}

/// Score distributions by label (each label's share of its rows per bin), the threshold
/// marked.
fn histogram_svg(hist: &Value, threshold: f64) -> String {
    let bins = hist.as_array().cloned().unwrap_or_default();
    let total = |k: &str| -> f64 {
        bins.iter()
            .map(|b| b[k].as_f64().unwrap_or(0.0))
            .sum::<f64>()
            .max(1.0)
    };
    let (tl, tf) = (total("legit"), total("fraud"));
    let share = |b: &Value, k: &str, t: f64| b[k].as_f64().unwrap_or(0.0) / t;
    let top = bins
        .iter()
        .flat_map(|b| [share(b, "legit", tl), share(b, "fraud", tf)])
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let mut s = frame(
        "Score distribution by label",
        "anomaly score",
        &format!("share of rows (top {:.0}%)", top * 100.0),
    );
    for b in &bins {
        let (from, to) = (
            b["from"].as_f64().unwrap_or(0.0),
            b["to"].as_f64().unwrap_or(0.0),
        );
        for (k, t, color) in [("legit", tl, "#8c959f"), ("fraud", tf, "#cf222e")] {
            let h = share(b, k, t) / top;
            if h > 0.0 {
                let _ = write!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" fill-opacity="0.55"/>"#,
                    px(from),
                    py(h),
                    px(to) - px(from),
                    py(0.0) - py(h)
                );
            }
        }
    }
    let _ = write!(
        s,
        r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="black" stroke-dasharray="3 2"/><text x="{}" y="{}">threshold {threshold:.3}</text><rect x="{}" y="34" width="10" height="10" fill="#8c959f"/><text x="{}" y="43">legit</text><rect x="{}" y="50" width="10" height="10" fill="#cf222e"/><text x="{}" y="59">fraud</text></svg>"##,
        py(0.0),
        py(1.0),
        px(threshold.clamp(0.0, 1.0)) + 4.0,
        py(1.0) + 10.0,
        L + 10.0,
        L + 24.0,
        L + 10.0,
        L + 24.0,
        x = px(threshold.clamp(0.0, 1.0)),
    );
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report as one self-contained HTML page.
fn html(r: &Value, figures: &[&str]) -> String {
    let at = &r["at_threshold"];
    let c = &at["confusion"];
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>txguard model evaluation</title><style>body{font-family:sans-serif;margin:2rem;color:#1f2328}table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #d0d7de;padding:.25rem .6rem;text-align:right}th{background:#f6f8fa}td.l,th.l{text-align:left}.figs{display:flex;flex-wrap:wrap;gap:1rem}</style></head><body>",
    );
    let _ = write!(
        h,
        "<h1>Model evaluation</h1><p>Model <b>{}</b> ({}) on view <code>{}</code> of <code>{}</code>{}: {} rows, {} fraud{}.</p>",
        esc(r["model"]["version"].as_str().unwrap_or("")),
        esc(r["model"]["spec"].as_str().unwrap_or("")),
        esc(r["data"]["view"].as_str().unwrap_or("")),
        esc(r["data"]["pipeline"].as_str().unwrap_or("")),
        r["data"]["sets"]
            .as_array()
            .filter(|a| !a.is_empty())
            .map(|a| format!(
                " with {}",
                esc(&a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
            ))
            .unwrap_or_default(),
        r["rows"],
        r["positives"],
        match r["skipped_rows"].as_u64() {
            Some(0) | None => String::new(),
            Some(k) => format!(" ({k} rows with a missing feature left out)"),
        }
    );
    let _ = write!(
        h,
        "<table><tr><th class=l>ROC AUC</th><td>{}</td></tr><tr><th class=l>PR AUC (average precision)</th><td>{}</td></tr><tr><th class=l>threshold (score)</th><td>{:.4}</td></tr><tr><th class=l>flagged</th><td>{} ({}; trained at {})</td></tr><tr><th class=l>precision / recall / F1 at the threshold</th><td>{} / {} / {}</td></tr></table>",
        fmt(&r["roc_auc"]),
        fmt(&r["pr_auc"]),
        r["threshold"].as_f64().unwrap_or(f64::NAN),
        at["flagged"],
        pct(&at["flagged_rate"]),
        pct(&at["trained_flagged_rate"]),
        fmt(&at["precision"]),
        fmt(&at["recall"]),
        fmt(&at["f1"]),
    );
    let _ = write!(
        h,
        "<h2>Confusion at the threshold</h2><table><tr><th></th><th>flagged</th><th>not flagged</th></tr><tr><th class=l>fraud</th><td>{}</td><td>{}</td></tr><tr><th class=l>legit</th><td>{}</td><td>{}</td></tr></table>",
        c["tp"], c["fn"], c["fp"], c["tn"]
    );
    h.push_str("<h2>Top k</h2><table><tr><th>k</th><th>precision</th><th>recall</th></tr>");
    for t in r["top_k"].as_array().into_iter().flatten() {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            t["k"],
            fmt(&t["precision"]),
            fmt(&t["recall"])
        );
    }
    h.push_str("</table><div class=figs>");
    for f in figures {
        h.push_str(f);
    }
    h.push_str("</div>");
    if let Some(by) = r["by"].as_object() {
        for (name, groups) in by {
            let _ = write!(
                h,
                "<h2>By {}</h2><table><tr><th class=l>{}</th><th>rows</th><th>fraud</th><th>flagged</th><th>flagged rate</th><th>recall</th><th>precision</th></tr>",
                esc(name),
                esc(name)
            );
            for g in groups.as_array().into_iter().flatten() {
                let _ = write!(
                    h,
                    "<tr><td class=l>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(g["value"].as_str().unwrap_or("")),
                    g["rows"],
                    g["fraud"],
                    g["flagged"],
                    pct(&g["flagged_rate"]),
                    fmt(&g["recall"]),
                    fmt(&g["precision"])
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>\n");
    h
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |f| format!("{:.2}%", f * 100.0))
}
