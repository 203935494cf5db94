//! What `run`, `validate` and `train --pipeline` share: reading a pipeline file with `--set`
//! overrides, checking and planning it, opening its connectors, and the live progress line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use txguard_engine::checkpoint::Checkpoint;
use txguard_engine::connector::{Sink, SinkContext};
use txguard_engine::event::format_micros;
use txguard_engine::runtime::{Connections, Metrics};
use txguard_engine::sql::{
    OptionValue, Pipeline, PlanningFunctions, Role, TableOption, check, infer_sink_columns, parse,
};
use txguard_engine::stream::{DEAD_LETTERS, Dataflow};

/// Reads and parses `path`, then applies `--set table.option=value` overrides. Setting
/// `table.connector` drops the table's other options (they belonged to the old connector).
pub fn load(path: &Path, sets: &[String]) -> Result<Pipeline> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut p = parse(path, &text)?;
    // A new connector starts with none of the old one's options: apply those sets first.
    let mut sets: Vec<&String> = sets.iter().collect();
    sets.sort_by_key(|s| {
        !s.split('=')
            .next()
            .is_some_and(|k| k.ends_with(".connector"))
    });
    for s in sets {
        let Some((key, value)) = s.split_once('=') else {
            bail!("--set {s}: expected table.option=value, e.g. --set transactions.count=100000");
        };
        let Some((table, option)) = key.split_once('.') else {
            bail!("--set {s}: expected table.option=value, e.g. --set transactions.count=100000");
        };
        let Some(t) = p.tables.iter_mut().find(|t| t.name == table) else {
            bail!(
                "--set {s}: {} has no table {table}; its tables: {}",
                path.display(),
                p.tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        if option == "connector" {
            t.connector = value.to_string();
            t.options.retain(|o| o.key == "connector");
        }
        let value = OptionValue::Text(value.to_string());
        match t.options.iter_mut().find(|o| o.key == option) {
            Some(o) => o.value = value,
            None => t.options.push(TableOption {
                key: option.to_string(),
                value,
                loc: t.loc,
            }),
        }
    }
    Ok(p)
}

/// Each table's role, from its connector.
pub fn roles(p: &Pipeline) -> Result<HashMap<String, Role>> {
    Ok(txguard_engine::sql::roles(p, &txguard_connectors::specs())?)
}

/// Fills the columns of sinks declared without any from their INSERTs, checks `p` against
/// the connectors and plans it.
pub async fn plan(p: &mut Pipeline, functions: &PlanningFunctions) -> Result<Dataflow> {
    infer_sink_columns(p, functions).await;
    let p = &*p;
    check(p, &txguard_connectors::specs(), functions).await?;
    Ok(txguard_engine::stream::plan(p, &roles(p)?, functions).await?)
}

/// Opens every source of `df` (at its position in `resume`, when restoring a checkpoint)
/// and, for each of its sinks that is a table of `p`, the sink (recording its epochs as
/// `writer`, the checkpoint folder's id, in a run with checkpoints); `extra` supplies the
/// sinks of taps (in order after the tables' sinks).
pub async fn connect(
    p: &Pipeline,
    df: &Dataflow,
    mut extra: Vec<Box<dyn Sink>>,
    resume: Option<Checkpoint>,
    writer: Option<&str>,
) -> Result<Connections> {
    let mut sources = Vec::new();
    for s in df.sources() {
        if s.name == DEAD_LETTERS {
            continue;
        }
        let t = p
            .table(&s.name)
            .with_context(|| format!("no table {}", s.name))?;
        let at = match &resume {
            Some((m, _)) => {
                let rec = m.record.sources.iter().find(|r| r.name == s.name);
                match rec.map(|r| &r.position) {
                    Some(v) if !v.is_null() => Some(v),
                    _ => bail!(
                        "checkpoint {} has no position for source {} (the pipeline changed, or \
                         its connector cannot resume); run with --from-scratch to begin again",
                        m.epoch,
                        s.name
                    ),
                }
            }
            None => None,
        };
        sources.push((
            s.name.clone(),
            txguard_connectors::open_source(t, at).await?,
        ));
    }
    let mut sinks = Vec::new();
    extra.reverse();
    for s in df.sinks() {
        match p.table(&s.table) {
            Some(t) => {
                let mut ctx = SinkContext::new(s.schema.clone());
                ctx.writer = writer.map(str::to_string);
                sinks.push(txguard_connectors::open_sink(t, ctx).await?);
            }
            None => sinks.push(
                extra
                    .pop()
                    .with_context(|| format!("no sink for the tap on {}", s.table))?,
            ),
        }
    }
    Ok(Connections {
        sources,
        sinks,
        resume,
        probes: None,
    })
}

/// Where a pipeline's checkpoints go by default: beside its first local Delta sink
/// (`<that table's folder>/_checkpoints/<pipeline>`), else `./data/_checkpoints/<pipeline>`.
pub fn default_checkpoint_dir(p: &Pipeline, file: &Path) -> PathBuf {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());
    let roles = roles(p).unwrap_or_default();
    let local = p
        .tables
        .iter()
        .filter(|t| t.connector == "delta" && roles.get(&t.name) == Some(&Role::Sink))
        .filter_map(txguard_connectors::sink_location)
        .find(|l| !l.contains("://"));
    let base = local
        .as_deref()
        .and_then(|l| Path::new(l).parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("data"));
    base.join("_checkpoints").join(stem)
}

/// A live line on the terminal: events in, rows out, dead and late, rate, watermark.
pub fn progress(metrics: Arc<Metrics>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let bar = pb.clone();
    let handle = tokio::spawn(async move {
        let start = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            bar.set_message(status(&metrics, start.elapsed()));
            bar.tick();
            if metrics.finished.load(Ordering::Relaxed) {
                break;
            }
        }
    });
    (pb, handle)
}

/// One line of counts for the terminal.
pub fn status(m: &Metrics, elapsed: Duration) -> String {
    let (mut inp, mut dead, mut late, mut wm) = (0u64, 0u64, 0u64, i64::MIN);
    for s in &m.sources {
        inp += s.rows.load(Ordering::Relaxed);
        dead += s.dead.load(Ordering::Relaxed);
        late += s.late.load(Ordering::Relaxed);
        wm = wm.max(s.watermark.load(Ordering::Relaxed));
    }
    let rate = inp as f64 / elapsed.as_secs_f64().max(1e-3);
    let sinks: Vec<String> = m
        .sinks
        .iter()
        .map(|s| format!("{} {}", s.table, s.rows.load(Ordering::Relaxed)))
        .collect();
    let wm = if wm == i64::MIN {
        "-".to_string()
    } else {
        format_micros(wm)
    };
    format!(
        "{inp} events ({:.0}k/s), {dead} dead, {late} late | {} | watermark {wm} | epoch {}",
        rate / 1000.0,
        sinks.join(", "),
        m.epoch.load(Ordering::Relaxed)
    )
}
