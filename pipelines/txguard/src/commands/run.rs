//! `txguard run`: run a pipeline file until its sources end or Ctrl-C, with a live progress
//! line, and say where the results went. With checkpoints (the default) a run continues from
//! the last checkpoint of the same pipeline, and Ctrl-C takes a last one.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use txguard_engine::checkpoint::{Checkpoint, CheckpointStore};
use txguard_engine::runtime::{
    Metrics, RunError, RunOptions, operator_states, run as run_dataflow,
};

use txguard_engine::decode::DecodeOptions;
use txguard_engine::probe::Prober;
use txguard_iforest_datafusion::{DRIFT_SLICES, ModelSlot};

use crate::commands::pipeline::{connect, default_checkpoint_dir, load, plan, progress, status};
use crate::commands::validate::pipeline_models_with;
use crate::hot_swap::{self, LiveModels};

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Pipeline file (Arroyo SQL dialect).
    #[arg(default_value = "sql/pipeline.sql")]
    pub pipeline: PathBuf,
    /// A model for the iforest_* functions: `path` (model `default`) or `name=path`;
    /// repeatable. Default: models/default.json, when the pipeline calls an iforest_* function.
    #[arg(long = "model", value_name = "[NAME=]PATH")]
    pub models: Vec<String>,
    /// Override a table option: `table.option=value`, e.g. `transactions.count=100000` or
    /// `transactions_scored.path=/tmp/scored`; repeatable.
    #[arg(long = "set", value_name = "TABLE.OPTION=VALUE")]
    pub sets: Vec<String>,
    /// Time between checkpoints: each sink commits what it has (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// Where checkpoints go: operator state, source positions and the sinks' prepared epochs.
    /// A run finds the newest complete one there and continues from it. Default: beside the
    /// first local Delta sink (`<its folder>/_checkpoints/<pipeline>`), else
    /// `./data/_checkpoints/<pipeline>`.
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Checkpoints kept (the newest ones; older ones are deleted).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub keep_checkpoints: usize,
    /// Begin again: delete the pipeline's checkpoints instead of continuing from them (the
    /// sinks keep what they hold).
    #[arg(long)]
    pub from_scratch: bool,
    /// No checkpoints: a restart begins again, and sinks may get an epoch twice.
    #[arg(long, conflicts_with_all = ["checkpoint_dir", "from_scratch"])]
    pub no_checkpoints: bool,
    /// Rows asked of a source per poll.
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// No progress line (for logs and scripts).
    #[arg(long)]
    pub quiet: bool,
    /// Where the web UI, JSON status (/api/status) and Prometheus metrics (/metrics) listen
    /// (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8787", value_name = "ADDR")]
    pub ui: String,
    /// Do not start the web UI (nor the scoring API).
    #[arg(long, conflicts_with = "ui")]
    pub no_ui: bool,
    /// Keep the console up after the run has ended, until Ctrl-C. Default: when the run is
    /// watched from a terminal (stderr is one) without --quiet.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub keep_ui: Option<bool>,
    /// Token the console's data (/api/v1/: anomalies, SQL preview, the scoring API …)
    /// requires, as `Authorization: Bearer <token>` (the console asks for it once). Without
    /// one, /api/v1/ answers only while --ui is a loopback address. Also TXGUARD_UI_TOKEN.
    #[arg(
        long,
        visible_alias = "api-token",
        env = "TXGUARD_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub ui_token: Option<String>,
    /// The sink table whose rows the console's Anomalies page shows. Default: the sink table
    /// named `anomalies`, if the pipeline has one.
    #[arg(long, value_name = "TABLE")]
    pub console_anomalies: Option<String>,
    /// The sink table holding two models' verdicts on the same rows (BOOLEAN columns
    /// `<model>_flag`, optionally `<model>_version` and `is_fraud`), compared live on the
    /// console's Models page: agreement, each alone, precision and recall. Default: the sink
    /// table named `shadow_scores`, if the pipeline has one (sql/examples/champion_challenger.sql).
    #[arg(long, value_name = "TABLE")]
    pub console_shadow: Option<String>,
    /// Do not serve the online scoring API (POST /api/v1/score).
    #[arg(long)]
    pub no_score_api: bool,
    /// Rows asked of a source per poll while the scoring API is in use (for 2 s after each
    /// request): a request is answered between two batches, so smaller ones should answer
    /// sooner, at some cost in throughput (docs/benchmarks.md has what it measured). At most
    /// --batch-rows.
    #[arg(long, default_value_t = txguard_engine::probe::DEFAULT_ACTIVE_BATCH_ROWS, value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub score_api_batch_rows: usize,
    /// Drift window: each model whose card has a training profile has its features' live
    /// distribution compared with training's (PSI) over the last this long. A day by default,
    /// so daily cycles (hour of day, night-time counts) compare like with like.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub drift_window: Duration,
    /// The live flagged rate is compared with the card's over the last this long, judged
    /// every tenth of it: a warning in the log beyond 3× the trained rate.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub flagged_rate_window: Duration,
    /// How often each model's source is checked for a new model (hot swap): a model file's
    /// size and time, a registry alias's version. A new model with the same features scores
    /// from the next epoch on; 0 checks only on POST /api/v1/models/{name}/reload.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub model_poll: Duration,
}

/// Most slices a drift window is cut into (memory: slices × features × 10 bins × 8 bytes).
const MAX_DRIFT_SLICES: u32 = 2000;

/// Every tenth of `flagged_window` (or longer, to cut `window` into at most
/// [`MAX_DRIFT_SLICES`]): judges each model's drift (a warning in the log when it crosses a
/// threshold, repeated at most once per flagged-rate window per model) and starts a new slice.
fn watch_drift(
    slots: Vec<Arc<ModelSlot>>,
    window: Duration,
    flagged_window: Duration,
) -> Option<(tokio::task::JoinHandle<()>, Vec<Arc<ModelSlot>>, Judge)> {
    if !slots.iter().any(|s| s.stats().has_training_profile()) {
        for s in &slots {
            tracing::info!(model = %s.name(), "no drift checks: the model's card has no training profile (retrain it with txguard train)");
        }
        return None;
    }
    let slice = (flagged_window / DRIFT_SLICES as u32)
        .max(window / MAX_DRIFT_SLICES)
        .max(Duration::from_millis(10));
    let slices = window.as_nanos().div_ceil(slice.as_nanos()).max(1) as usize;
    let recent = (flagged_window.as_nanos().div_ceil(slice.as_nanos()).max(1) as usize).min(slices);
    for s in &slots {
        s.set_drift_slices(slices, recent);
    }
    let judge = Judge {
        recent: format!("the last {}", humantime::format_duration(flagged_window)),
        whole: format!("the last {}", humantime::format_duration(window)),
    };
    let watched = slots.clone();
    let says = judge.clone();
    let watch = tokio::spawn(async move {
        let mut tick = tokio::time::interval(slice);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // Slices since each model's last warning (a warning repeats at most once per
        // flagged-rate window).
        let mut quiet = vec![recent; slots.len()];
        loop {
            tick.tick().await;
            for (slot, quiet) in slots.iter().zip(&mut quiet) {
                // The version in use (a swapped-in model is judged against its own card).
                let s = slot.stats();
                *quiet += 1;
                if let Some(w) = s.drift().and_then(|r| says.warning(&r))
                    && *quiet >= recent
                {
                    tracing::warn!(model = %s.model, version = %s.version, "drift: {w}");
                    *quiet = 0;
                }
                s.rotate_drift();
            }
        }
    });
    Some((watch, watched, judge))
}

/// How drift warnings name their windows.
#[derive(Clone)]
struct Judge {
    recent: String,
    whole: String,
}

impl Judge {
    fn warning(&self, r: &txguard_iforest_datafusion::DriftReport) -> Option<String> {
        r.warning(&self.recent, &self.whole)
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = rt.block_on(run_async(args));
    // A run stopped while a connector still waited on an unreachable service leaves that
    // wait on a blocking thread: it is not waited for (everything else has finished).
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn run_async(args: RunArgs) -> Result<()> {
    let mut p = load(&args.pipeline, &args.sets)?;
    let store = (!args.no_checkpoints).then(|| {
        let dir = args
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| default_checkpoint_dir(&p, &args.pipeline));
        CheckpointStore::new(dir, args.keep_checkpoints)
    });
    // The models the last checkpoint was scored with: a source that cannot be read now (a
    // registry away) falls back on the copy kept beside the checkpoints.
    let recorded = match (&store, args.from_scratch) {
        (Some(store), false) => last_models(store),
        _ => Vec::new(),
    };
    let copies = store.as_ref().map(|s| hot_swap::copies_dir(s.dir()));
    let fallback = |name: &str, e: &anyhow::Error| {
        let r = recorded.iter().find(|r| r.name == name)?;
        let forest = hot_swap::kept_copy(copies.as_ref()?, &r.version)?;
        tracing::warn!(
            model = name,
            "{e:#}; continuing with version {} that the last checkpoint was scored with (kept in {})",
            r.version,
            copies
                .as_ref()
                .map_or(String::new(), |c| c.display().to_string())
        );
        Some(forest)
    };
    let models = pipeline_models_with(&p, &args.models, &fallback)?;
    for (slot, r) in models.slots.iter().filter_map(|slot| {
        recorded
            .iter()
            .find(|r| r.name == slot.name())
            .map(|r| (slot, r))
    }) {
        let now = slot.forest().version().to_string();
        if now != r.version {
            tracing::info!(
                model = slot.name(),
                "the last checkpoint was scored with version {}; its source ({}) now gives {now}, \
                 which scores from the first epoch on (as a swap would have)",
                r.version,
                r.source
            );
        }
    }
    let live_models = LiveModels::new(&models, copies.clone())?;
    let df = plan(&mut p, &models.functions).await?;
    // Held to the end of the run: no other run may checkpoint into this folder meanwhile.
    let claim = match &store {
        Some(store) => Some(
            store
                .claim()
                .context("taking the checkpoint folder (--checkpoint-dir)")?,
        ),
        None => None,
    };
    let resume = match &store {
        Some(store) => resume_from(store, &df, args.from_scratch)?,
        None => None,
    };
    let writer = claim.as_ref().map(|c| c.writer());
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let checkpointing = store.is_some();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::Relaxed) {
                eprintln!("second Ctrl-C: exiting without a final commit");
                std::process::exit(130);
            }
            if checkpointing {
                eprintln!(
                    "stopping: taking a last checkpoint and committing (Ctrl-C again to abort)"
                );
            } else {
                eprintln!(
                    "stopping: draining buffered events and committing (Ctrl-C again to abort)"
                );
            }
        })
        .context("installing the Ctrl-C handler")?;
    }
    // Opening the connectors can wait on unreachable services (they log why and retry):
    // Ctrl-C then ends the run before it has read or written anything.
    let conns = {
        let connecting = connect(&p, &df, Vec::new(), resume, writer);
        tokio::pin!(connecting);
        loop {
            tokio::select! {
                conns = &mut connecting => break conns?,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if stop.load(Ordering::Relaxed) {
                        eprintln!("stopped while opening the connectors: nothing was read or written");
                        return Ok(());
                    }
                }
            }
        }
    };
    let mut conns = conns;
    let prober = if args.no_ui || args.no_score_api {
        None
    } else {
        let decode: Vec<(String, DecodeOptions)> = p
            .tables
            .iter()
            .filter_map(|t| Some((t.name.clone(), DecodeOptions::from_table(t).ok()?)))
            .collect();
        let (prober, queue) = Prober::new(&df, &decode).context("setting up the scoring API")?;
        conns.probes = Some(
            queue
                .with_scope(txguard_iforest_datafusion::unobserved)
                .with_active_batch_rows(args.score_api_batch_rows),
        );
        Some(prober)
    };
    let drift = watch_drift(
        models.slots.clone(),
        args.drift_window,
        args.flagged_rate_window,
    );
    let metrics = Arc::new(Metrics::for_dataflow(&df));
    let mut console = None;
    if !args.no_ui {
        let graph = df.graph();
        let anomalies_table = console_anomalies(&graph, &df, args.console_anomalies.as_deref())?;
        let shadow_table = console_sink(
            &graph,
            &df,
            "--console-shadow",
            args.console_shadow.as_deref(),
            "shadow_scores",
        )?;
        let info = txguard_web::RunInfo {
            pipeline: args.pipeline.display().to_string(),
            sql: std::fs::read_to_string(&args.pipeline).unwrap_or_default(),
            slots: models.slots.clone(),
            models: models.cards,
            model_control: Some(live_models.clone()),
            sink_locations: p
                .tables
                .iter()
                .filter_map(|t| txguard_connectors::sink_location(t).map(|l| (t.name.clone(), l)))
                .collect(),
            graph,
            watch: Some(df.watch()),
            anomalies_table,
            shadow_table,
            workbench: Some(txguard_web::workbench::Workbench {
                specs: txguard_connectors::specs(),
                functions: models.functions.clone(),
            }),
            checkpoints: store.is_some(),
        };
        let scoring = prober
            .as_ref()
            .and_then(|p| p.target(None, None).ok().cloned());
        let api = txguard_web::Api {
            prober,
            token: args
                .ui_token
                .clone()
                .or_else(|| std::env::var("TXGUARD_UI_TOKEN").ok())
                .filter(|t| !t.is_empty()),
        };
        match txguard_web::serve(&args.ui, metrics.clone(), info, api).await {
            Ok(addr) => {
                console = Some(addr);
                eprintln!("web UI: http://{addr}/ (metrics: http://{addr}/metrics)");
                if let Some(t) = scoring {
                    eprintln!(
                        "scoring API: POST http://{addr}/api/v1/score (one {} row as JSON, or an \
                         array; answers with view {})",
                        df.sources()[t.source].name,
                        t.view
                    );
                }
            }
            Err(e) => {
                tracing::warn!("{e}; running without the web UI (choose another --ui address)")
            }
        }
    }
    tracing::info!(
        "running {} ({} sources, {} sinks)",
        args.pipeline.display(),
        df.sources().len() - 1,
        df.sinks().len()
    );
    let opts = RunOptions {
        batch_rows: args.batch_rows,
        checkpoint_interval: args.checkpoint_interval,
        checkpoints: store.clone(),
        epoch_bound: vec![live_models.clone()],
        ..RunOptions::default()
    };
    let model_watch = live_models.watch(args.model_poll);
    let started = Instant::now();
    let bar = (!args.quiet).then(|| progress(metrics.clone()));
    let result = run_dataflow(df, conns, opts, metrics.clone(), stop.clone()).await;
    let elapsed = started.elapsed();
    if let Some(w) = model_watch {
        w.abort();
    }
    if let Some((watch, slots, judge)) = drift {
        watch.abort();
        // The end of the run is judged too (a run shorter than a slice is judged only here).
        for s in slots.iter().map(|s| s.stats()) {
            if let Some(w) = s.drift().and_then(|r| judge.warning(&r)) {
                tracing::warn!(model = %s.model, version = %s.version, "drift: {w}");
            }
        }
    }
    if let Some((pb, handle)) = bar {
        // The run has set `finished`, so the display's task ends within one tick.
        let _ = handle.await;
        pb.finish_and_clear();
    }
    if let Err(e @ RunError::Restore { .. }) = &result {
        bail!("{e}; run with --from-scratch to begin again without the saved state");
    }
    result?;
    let first = metrics.first_commit_micros.load(Ordering::Relaxed);
    let start = metrics.started_micros.load(Ordering::Relaxed);
    eprintln!(
        "done in {:.2} s: {}",
        elapsed.as_secs_f64(),
        status(&metrics, elapsed)
    );
    if first > 0 {
        eprintln!(
            "first rows committed {:.0} ms after start",
            (first - start) as f64 / 1000.0
        );
    }
    if let Some(store) = &store {
        let n = metrics.checkpoints.load(Ordering::Relaxed);
        eprintln!(
            "checkpoints: {n} written to {} (the last {:.1} MB in {:.0} ms, the dataflow paused \
             {:.0} ms){}",
            store.dir().display(),
            metrics.checkpoint_bytes.load(Ordering::Relaxed) as f64 / 1e6,
            metrics.checkpoint_micros.load(Ordering::Relaxed) as f64 / 1000.0,
            metrics.checkpoint_pause_micros.load(Ordering::Relaxed) as f64 / 1000.0,
            match metrics.restored_epoch.load(Ordering::Relaxed) {
                0 => String::new(),
                e => format!("; continued from checkpoint {e}"),
            }
        );
    }
    if let Some(kib) = peak_rss_kib() {
        eprintln!("peak memory (RSS) {:.0} MB", kib as f64 / 1024.0);
    }
    for s in &metrics.sources {
        let rows = s.rows.load(Ordering::Relaxed);
        let dead = s.dead.load(Ordering::Relaxed);
        let late = s.late.load(Ordering::Relaxed);
        if rows + dead > 0 {
            eprintln!(
                "  source {}: {} events in, {} on time, {} late, {} rejected",
                s.name,
                rows + dead,
                s.released.load(Ordering::Relaxed),
                late,
                dead
            );
        }
    }
    let refused = metrics.rejected_by_sinks.load(Ordering::Relaxed);
    if refused > 0 {
        eprintln!(
            "  {refused} rows had NULL in a sink's NOT NULL column and went to the dead letters"
        );
    }
    for s in &metrics.sinks {
        let where_ = p
            .table(&s.table)
            .and_then(txguard_connectors::sink_location)
            .map(|l| format!(" -> {l}"))
            .unwrap_or_default();
        eprintln!(
            "  sink {}: {} rows in {} commits{where_}",
            s.table,
            s.committed_rows.load(Ordering::Relaxed),
            s.commits.load(Ordering::Relaxed)
        );
    }
    // A run that ended by itself, watched from a terminal: the console stays to be looked at.
    if let Some(addr) = console
        && args
            .keep_ui
            .unwrap_or(!args.quiet && std::io::stderr().is_terminal())
        && !stop.load(Ordering::Relaxed)
    {
        eprintln!(
            "the run has finished; its console stays up at http://{addr}/ until Ctrl-C \
             (--keep-ui false to leave at once)"
        );
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The sink table the console's Anomalies page follows: `--console-anomalies` (which must
/// be a sink of the pipeline), else the sink named `anomalies`, if any.
fn console_anomalies(
    graph: &txguard_engine::stream::Graph,
    df: &txguard_engine::stream::Dataflow,
    given: Option<&str>,
) -> Result<Option<String>> {
    console_sink(graph, df, "--console-anomalies", given, "anomalies")
}

/// A sink table the console follows: the one `flag` gives (which must be a sink of the
/// pipeline), else the sink named `default`, if any.
fn console_sink(
    graph: &txguard_engine::stream::Graph,
    df: &txguard_engine::stream::Dataflow,
    flag: &str,
    given: Option<&str>,
    default: &str,
) -> Result<Option<String>> {
    let sinks: Vec<&str> = df.sinks().iter().map(|s| s.table.as_str()).collect();
    match given {
        Some(t) if graph.relation(t).is_some_and(|n| n.kind == "sink") => Ok(Some(t.to_string())),
        Some(t) => bail!(
            "{flag} {t}: the pipeline has no sink table {t}; its sinks: {}",
            sinks.join(", ")
        ),
        None => Ok(sinks
            .iter()
            .find(|s| s.eq_ignore_ascii_case(default))
            .map(|s| s.to_string())),
    }
}

/// The newest usable checkpoint in `store` (after checking it fits `df`), or none: with
/// `from_scratch` its checkpoints are deleted first (the folder and its writer id stay).
fn resume_from(
    store: &CheckpointStore,
    df: &txguard_engine::stream::Dataflow,
    from_scratch: bool,
) -> Result<Option<Checkpoint>> {
    let dir = store.dir();
    if from_scratch {
        let n = store
            .clear()
            .with_context(|| format!("deleting the checkpoints in {}", dir.display()))?;
        tracing::info!(
            "--from-scratch: deleted {n} checkpoints in {}",
            dir.display()
        );
    }
    let Some(cp) = store
        .latest()
        .with_context(|| format!("reading the checkpoints in {}", dir.display()))?
    else {
        if !from_scratch {
            tracing::info!(
                "no checkpoint in {}: starting from the beginning",
                dir.display()
            );
        }
        return Ok(None);
    };
    let (manifest, states) = &cp;
    df.check_restore(&operator_states(states)).map_err(|e| {
        anyhow::anyhow!(
            "cannot continue from checkpoint {} in {}: {e}; run with --from-scratch to \
             begin again without the saved state (the sinks keep what they hold)",
            manifest.epoch,
            dir.display()
        )
    })?;
    let age = (chrono::Utc::now().timestamp_micros() - manifest.created_at) as f64 / 1e6;
    let at: Vec<String> = manifest
        .record
        .sources
        .iter()
        .map(|s| format!("{} at {}", s.name, s.shown))
        .collect();
    eprintln!(
        "continuing from checkpoint {} in {} (taken {age:.0} s ago): {}",
        manifest.epoch,
        dir.display(),
        at.join("; ")
    );
    Ok(Some(cp))
}

/// The models the newest checkpoint with a manifest in `store` names (none when there is
/// none; the restore says why a checkpoint does not read).
fn last_models(store: &CheckpointStore) -> Vec<hot_swap::Recorded> {
    let mut epochs = store.epochs().unwrap_or_default();
    epochs.sort_unstable();
    epochs
        .into_iter()
        .rev()
        .find_map(|e| store.manifest(e).ok())
        .map(|m| hot_swap::recorded(&m.record.extra))
        .unwrap_or_default()
}

/// Peak resident set size of this process (Linux `VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
