//! `txguard checkpoints list|inspect`: what a pipeline's checkpoints hold — epochs, when they
//! were taken, size per operator, source positions, watermarks and the sinks' prepared
//! epochs — as text or JSON, read without running the pipeline.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use txguard_engine::checkpoint::CheckpointStore;
use txguard_engine::event::format_micros;

use crate::commands::pipeline::{default_checkpoint_dir, load};

#[derive(Debug, Subcommand)]
pub enum CheckpointsCommand {
    /// Every checkpoint, newest first: epoch, time, size, and whether it verifies.
    List(Where),
    /// One checkpoint in full (default: the newest that verifies).
    Inspect {
        #[command(flatten)]
        at: Where,
        /// The epoch to show.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

/// Which pipeline's checkpoints, and how to print them.
#[derive(Debug, Args)]
pub struct Where {
    /// Pipeline file whose default checkpoint folder to read (as `txguard run` finds it).
    #[arg(default_value = "sql/pipeline.sql")]
    pub pipeline: PathBuf,
    /// Overrides of the pipeline's table options, as given to `txguard run`.
    #[arg(long = "set", value_name = "TABLE.OPTION=VALUE")]
    pub sets: Vec<String>,
    /// The checkpoint folder (instead of the pipeline's default).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Where {
    fn store(&self) -> Result<CheckpointStore> {
        let dir = match &self.checkpoint_dir {
            Some(d) => d.clone(),
            None => default_checkpoint_dir(&load(&self.pipeline, &self.sets)?, &self.pipeline),
        };
        Ok(CheckpointStore::new(dir, usize::MAX))
    }
}

pub fn run(command: CheckpointsCommand) -> Result<()> {
    match command {
        CheckpointsCommand::List(at) => list(&at),
        CheckpointsCommand::Inspect { at, epoch } => inspect(&at, epoch),
    }
}

fn list(at: &Where) -> Result<()> {
    let store = at.store()?;
    let epochs = store
        .epochs()
        .with_context(|| format!("reading {}", store.dir().display()))?;
    let mut rows = Vec::new();
    for epoch in epochs {
        let row = match store.read(epoch) {
            Ok((m, _)) => serde_json::json!({
                "epoch": epoch,
                "created_at": format_micros(m.created_at),
                "bytes": m.written_bytes(),
                "operators": m.operators.len(),
                "ok": true,
            }),
            Err(e) => serde_json::json!({ "epoch": epoch, "ok": false, "error": e.to_string() }),
        };
        rows.push(row);
    }
    if at.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        outln!("no checkpoints in {}", store.dir().display());
        return Ok(());
    }
    outln!(
        "checkpoints in {}{}",
        store.dir().display(),
        writer_note(&store)
    );
    outln!(
        "{:>8}  {:<27}  {:>12}  {:>9}  state",
        "epoch",
        "taken",
        "bytes",
        "operators"
    );
    for r in rows {
        let epoch = r["epoch"].as_u64().unwrap_or_default();
        if r["ok"] == true {
            outln!(
                "{epoch:>8}  {:<27}  {:>12}  {:>9}  complete",
                r["created_at"].as_str().unwrap_or(""),
                r["bytes"].as_u64().unwrap_or_default(),
                r["operators"].as_u64().unwrap_or_default()
            );
        } else {
            outln!(
                "{epoch:>8}  {:<27}  {:>12}  {:>9}  unusable: {}",
                "",
                "",
                "",
                r["error"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// The folder's writer id, under which its runs' sinks record their epochs.
fn writer_note(store: &CheckpointStore) -> String {
    match store.writer_id() {
        Some(id) => format!(" (writer {id}: the sinks record their epochs under this id)"),
        None => String::new(),
    }
}

fn inspect(at: &Where, epoch: Option<u64>) -> Result<()> {
    let store = at.store()?;
    let manifest = match epoch {
        Some(e) => store.read(e)?.0,
        None => match store.latest()? {
            Some((m, _)) => m,
            None => bail!("no usable checkpoint in {}", store.dir().display()),
        },
    };
    if at.json {
        outln!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    let m = &manifest;
    outln!(
        "checkpoint {} in {}, taken {}, {} bytes written, {} read by a restore{}",
        m.epoch,
        store.dir().display(),
        format_micros(m.created_at),
        m.written_bytes(),
        m.bytes(),
        writer_note(&store)
    );
    outln!("operators:");
    for o in &m.operators {
        let what = match (o.changes, o.epoch) {
            (false, None) => String::new(),
            (false, Some(e)) => format!("  whole state of checkpoint {e}"),
            (true, None) => "  changes".to_string(),
            (true, Some(e)) => format!("  changes of checkpoint {e}"),
        };
        outln!(
            "  {:<40} {:>10} rows {:>12} bytes{what}",
            o.id,
            o.rows,
            o.bytes
        );
    }
    outln!("sources:");
    for s in &m.record.sources {
        outln!(
            "  {}: at {}; watermark {}; {} rows held; {} in, {} dead, {} late{}",
            s.name,
            s.shown,
            s.watermark
                .map(format_micros)
                .unwrap_or_else(|| "none".into()),
            s.held,
            s.messages_in,
            s.dead,
            s.late,
            if s.done { "; ended" } else { "" }
        );
        outln!("    resumes at {}", s.position);
    }
    outln!("sinks:");
    for s in &m.record.sinks {
        outln!(
            "  {}: {} rows prepared for epoch {}, {} committed before",
            s.table,
            s.prepared_rows,
            m.epoch,
            s.committed_rows
        );
    }
    let models = crate::hot_swap::recorded(&m.record.extra);
    if !models.is_empty() {
        outln!("models (the epoch was scored with):");
        for r in &models {
            outln!(
                "  {}: version {} from {}{}",
                r.name,
                r.version,
                r.source,
                r.file
                    .as_ref()
                    .map(|f| format!(" (copy: {f})"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
