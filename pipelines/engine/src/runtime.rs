//! The runtime that runs a [`Dataflow`] on one machine: polls the sources, picks the declared
//! columns, holds rows in an [`EventTimeBuffer`] until the watermark passes them (late rows go
//! to the dead-letter stream with the reason), pushes released rows through the dataflow and
//! hands sink rows to one task per sink. Every `checkpoint_interval` it starts a new epoch and
//! every sink commits what it has; at the end of input (or on stop) it drains the buffers,
//! closes open windows and commits a last time. Counts are kept in [`Metrics`] so that
//! `in = out + dead + late` can be checked at any moment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connector::{ConnectorError, Poll, Sink, Source};
use crate::constraints::Constraints;
use crate::event::rows_as_dead_letters;
use crate::stream::{DEAD_LETTERS, Dataflow, StreamError, cast_to};
use crate::time::EventTimeBuffer;

/// How the runtime paces itself.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Rows asked of a source per poll.
    pub batch_rows: usize,
    /// Time between checkpoints (sink commits).
    pub checkpoint_interval: Duration,
    /// A source with nothing for this long no longer holds its last rows back: its watermark
    /// moves up to the newest event time it has seen.
    pub idle_timeout: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_rows: 8192,
            checkpoint_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    pub name: String,
    /// Messages read (decoded rows plus rejected messages).
    pub messages_in: AtomicU64,
    pub rows: AtomicU64,
    pub dead: AtomicU64,
    pub late: AtomicU64,
    /// Rows released to the dataflow (on time).
    pub released: AtomicU64,
    /// Current watermark, µs since the epoch (i64::MIN before any row).
    pub watermark: AtomicI64,
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    pub table: String,
    pub rows: AtomicU64,
    pub commits: AtomicU64,
    /// Rows made durable by commits.
    pub committed_rows: AtomicU64,
    /// The last epoch this sink made durable (0 = none yet).
    pub committed_epoch: AtomicU64,
}

/// What the runtime has done so far; shared with the web UI and `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sources: Vec<SourceMetrics>,
    pub sinks: Vec<SinkMetrics>,
    pub epoch: AtomicU64,
    /// When the run started and when the first sink commit with rows landed (µs since the
    /// Unix epoch; 0 = not yet).
    pub started_micros: AtomicI64,
    pub first_commit_micros: AtomicI64,
    pub finished: AtomicBool,
    /// Rows sinks refused (NULL in a NOT NULL column), sent to the dead letters.
    pub rejected_by_sinks: AtomicU64,
}

impl Metrics {
    /// Metrics for `dataflow`'s sources and sinks.
    pub fn for_dataflow(df: &Dataflow) -> Self {
        Metrics {
            sources: df
                .sources()
                .iter()
                .map(|s| SourceMetrics {
                    name: s.name.clone(),
                    watermark: AtomicI64::new(i64::MIN),
                    ..Default::default()
                })
                .collect(),
            sinks: df
                .sinks()
                .iter()
                .map(|s| SinkMetrics {
                    table: s.table.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    pub fn source(&self, name: &str) -> Option<&SourceMetrics> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn sink(&self, table: &str) -> Option<&SinkMetrics> {
        self.sinks.iter().find(|s| s.table == table)
    }
}

/// A run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("{0}")]
    Stream(#[from] StreamError),
    #[error("{0}")]
    Setup(String),
}

impl From<arrow::error::ArrowError> for RunError {
    fn from(e: arrow::error::ArrowError) -> Self {
        RunError::Stream(StreamError::Arrow(e))
    }
}

enum SinkMsg {
    Rows(RecordBatch),
    Commit(u64),
}

struct SinkTask {
    tx: mpsc::Sender<SinkMsg>,
    handle: JoinHandle<Result<(), ConnectorError>>,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn spawn_sink(mut sink: Box<dyn Sink>, index: usize, metrics: Arc<Metrics>) -> SinkTask {
    let (tx, mut rx) = mpsc::channel::<SinkMsg>(8);
    let handle = tokio::spawn(async move {
        let mut pending = 0u64;
        while let Some(msg) = rx.recv().await {
            match msg {
                SinkMsg::Rows(b) => {
                    pending += b.num_rows() as u64;
                    sink.write(b).await?;
                }
                SinkMsg::Commit(epoch) => {
                    sink.commit(epoch).await?;
                    let m = &metrics.sinks[index];
                    m.commits.fetch_add(1, Ordering::Relaxed);
                    m.committed_epoch.store(epoch, Ordering::Release);
                    m.committed_rows.fetch_add(pending, Ordering::Relaxed);
                    if pending > 0 {
                        let _ = metrics.first_commit_micros.compare_exchange(
                            0,
                            now_micros(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    pending = 0;
                }
            }
        }
        Ok(())
    });
    SinkTask { tx, handle }
}

/// Picks a table's declared columns out of what its source gives, by name, and applies the
/// table's constraints.
struct ColumnPick {
    indices: Vec<usize>,
    schema: SchemaRef,
    constraints: Constraints,
}

impl ColumnPick {
    fn new(
        table: &str,
        given: &SchemaRef,
        declared: &SchemaRef,
        checks: &[crate::sql::CheckDef],
        event_time: Option<usize>,
    ) -> Result<Self, RunError> {
        let indices = declared
            .fields()
            .iter()
            .map(|f| {
                given.index_of(f.name()).map_err(|_| {
                    RunError::Setup(format!(
                        "table {table}: column {} is not given by its connector; it gives {}",
                        f.name(),
                        given
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let constraints = Constraints::new(declared.clone(), checks, event_time)
            .map_err(|e| RunError::Setup(format!("table {table}: {e}")))?;
        Ok(ColumnPick {
            indices,
            schema: declared.clone(),
            constraints,
        })
    }

    /// The declared columns of `b`, split into rows that hold the table's constraints and
    /// those that break one (with the reasons).
    fn pick(&self, b: &RecordBatch) -> Result<crate::constraints::Checked, RunError> {
        let mut reasons: Vec<Option<String>> = Vec::new();
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(self.indices.len());
        for (&i, f) in self.indices.iter().zip(self.schema.fields()) {
            let given = b.column(i);
            let cast = cast_to(given.clone(), f.data_type())?;
            // A cast turns a value it cannot convert into NULL: such rows are bad, not NULL.
            if cast.null_count() > given.null_count() {
                reasons.resize(b.num_rows(), None);
                for r in (0..b.num_rows()).filter(|&r| cast.is_null(r) && given.is_valid(r)) {
                    reasons[r].get_or_insert_with(|| {
                        format!(
                            "column {}: {} value does not convert to {}",
                            f.name(),
                            given.data_type(),
                            f.data_type()
                        )
                    });
                }
            }
            cols.push(cast);
        }
        Ok(self.constraints.apply(cols, reasons)?)
    }
}

struct SourceState {
    /// Index in the dataflow's sources.
    index: usize,
    name: String,
    source: Box<dyn Source>,
    pick: ColumnPick,
    buffer: Option<EventTimeBuffer>,
    idle_since: Option<Instant>,
    done: bool,
    /// Messages in a row that were dead letters, and the count last warned about.
    dead_run: u64,
    warned_at: u64,
}

impl SourceState {
    /// Takes note of a poll's outcome: `good` rows went on, `bad` messages were dead letters
    /// (the last for `reason`). A long unbroken run of dead letters is logged (at 1000, then
    /// at each tenfold), since it usually means the table's DDL does not fit the data.
    fn note(&mut self, good: usize, bad: usize, reason: Option<String>) {
        if good > 0 {
            self.dead_run = 0;
            self.warned_at = 0;
            return;
        }
        self.dead_run += bad as u64;
        if self.dead_run >= 1000 && self.dead_run >= self.warned_at.max(100) * 10 {
            self.warned_at = self.dead_run;
            tracing::warn!(
                source = %self.name,
                "every one of the last {} messages of {} was a dead letter (the last: {}); \
                 check the table's columns and format against the data",
                self.dead_run,
                self.name,
                reason.as_deref().unwrap_or("?")
            );
        }
    }
}

/// The reason of the last dead letter in `dead`.
fn last_reason(dead: &RecordBatch) -> Option<String> {
    use arrow::array::AsArray;
    let n = dead.num_rows().checked_sub(1)?;
    dead.column_by_name("reason")
        .and_then(|c| c.as_string_opt::<i32>().map(|a| a.value(n).to_string()))
}

/// A source for each of the dataflow's declared sources (by table name) and a sink for each
/// of its sinks (in [`Dataflow::sinks`] order).
pub struct Connections {
    pub sources: Vec<(String, Box<dyn Source>)>,
    pub sinks: Vec<Box<dyn Sink>>,
}

/// Runs `df` until its sources end or `stop` is set, then drains and commits. However it
/// ends, [`Metrics::finished`] is set when it returns (progress displays wait for it).
pub async fn run(
    df: Dataflow,
    conns: Connections,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    let result = run_to_end(df, conns, opts, metrics.clone(), stop).await;
    metrics.finished.store(true, Ordering::Relaxed);
    result
}

async fn run_to_end(
    mut df: Dataflow,
    conns: Connections,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(), RunError> {
    metrics
        .started_micros
        .store(now_micros(), Ordering::Relaxed);
    let dead_index = df
        .source_index(DEAD_LETTERS)
        .ok_or_else(|| RunError::Setup("the dataflow has no dead-letter stream".into()))?;
    let mut sources = Vec::new();
    for (name, source) in conns.sources {
        let index = df
            .source_index(&name)
            .ok_or_else(|| RunError::Setup(format!("no source table {name} in the pipeline")))?;
        let decl = &df.sources()[index];
        let pick = ColumnPick::new(
            &name,
            &source.schema(),
            &decl.schema,
            &decl.checks,
            decl.event_time.map(|(c, _)| c),
        )?;
        let buffer = decl
            .event_time
            .map(|(col, bound)| EventTimeBuffer::new(decl.schema.clone(), col, bound));
        sources.push(SourceState {
            index,
            name,
            source,
            pick,
            buffer,
            idle_since: None,
            done: false,
            dead_run: 0,
            warned_at: 0,
        });
    }
    if conns.sinks.len() != df.sinks().len() {
        return Err(RunError::Setup(format!(
            "{} sinks given for {} sink tables",
            conns.sinks.len(),
            df.sinks().len()
        )));
    }
    let start_epoch = conns
        .sinks
        .iter()
        .filter_map(|s| s.last_epoch())
        .max()
        .map_or(1, |e| e + 1);
    let mut epoch = start_epoch;
    metrics.epoch.store(epoch, Ordering::Relaxed);
    let tasks: Vec<SinkTask> = conns
        .sinks
        .into_iter()
        .enumerate()
        .map(|(i, s)| spawn_sink(s, i, metrics.clone()))
        .collect();

    let result = drive(
        &mut df,
        &mut sources,
        dead_index,
        &tasks,
        &opts,
        &metrics,
        &stop,
        &mut epoch,
    )
    .await;
    // Last commit (also after an error, so what was processed is not lost). Only a clean
    // end has released every row, so only then may sources acknowledge all they gave.
    let clean = result.is_ok();
    if clean {
        for s in sources.iter_mut() {
            s.source.barrier(epoch, None);
        }
    }
    let mut outcome = result;
    for t in &tasks {
        if t.tx.send(SinkMsg::Commit(epoch)).await.is_err() && outcome.is_ok() {
            outcome = Err(RunError::Setup("a sink stopped early".into()));
        }
    }
    for t in tasks {
        drop(t.tx);
        match t.handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                if outcome.is_ok() {
                    outcome = Err(e.into());
                } else {
                    tracing::error!("{e}");
                }
            }
            Err(e) => {
                if outcome.is_ok() {
                    outcome = Err(RunError::Setup(format!("a sink task failed: {e}")));
                }
            }
        }
    }
    if clean && outcome.is_ok() {
        for s in sources.iter_mut() {
            if let Err(e) = s.source.committed(epoch) {
                outcome = Err(e.into());
            }
        }
    }
    metrics.finished.store(true, Ordering::Relaxed);
    outcome
}

async fn send(
    tasks: &[SinkTask],
    metrics: &Metrics,
    out: Vec<(usize, RecordBatch)>,
) -> Result<(), RunError> {
    for (s, b) in out {
        metrics.sinks[s]
            .rows
            .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        if tasks[s].tx.send(SinkMsg::Rows(b)).await.is_err() {
            return Err(RunError::Setup(format!(
                "sink {} stopped (see the error above)",
                metrics.sinks[s].table
            )));
        }
    }
    Ok(())
}

/// Hands `out` to the sinks, then routes the rows sinks refused (NULL in a NOT NULL column)
/// to the dead-letter stream. Rows the dead-letter sinks themselves refuse cannot go round
/// again: they are counted and logged.
async fn deliver(
    df: &mut Dataflow,
    dead_index: usize,
    tasks: &[SinkTask],
    metrics: &Metrics,
    out: Vec<(usize, RecordBatch)>,
) -> Result<(), RunError> {
    send(tasks, metrics, out).await?;
    for dead in df.take_rejected() {
        metrics
            .rejected_by_sinks
            .fetch_add(dead.num_rows() as u64, Ordering::Relaxed);
        let out = df.push(dead_index, Some(dead), None)?;
        send(tasks, metrics, out).await?;
        for lost in df.take_rejected() {
            metrics
                .rejected_by_sinks
                .fetch_add(lost.num_rows() as u64, Ordering::Relaxed);
            tracing::error!(
                "{} dead letters refused by a dead-letter sink (NULL in a NOT NULL column); \
                 declare its columns without NOT NULL",
                lost.num_rows()
            );
        }
    }
    Ok(())
}

/// Tells the sources the newest epoch every sink has made durable, once.
fn acknowledge(
    sources: &mut [SourceState],
    metrics: &Metrics,
    acked: &mut u64,
) -> Result<(), RunError> {
    let done = metrics
        .sinks
        .iter()
        .map(|s| s.committed_epoch.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    if done > *acked {
        *acked = done;
        for s in sources.iter_mut() {
            s.source.committed(done)?;
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    df: &mut Dataflow,
    sources: &mut [SourceState],
    dead_index: usize,
    tasks: &[SinkTask],
    opts: &RunOptions,
    metrics: &Metrics,
    stop: &AtomicBool,
    epoch: &mut u64,
) -> Result<(), RunError> {
    // Checkpoints come early (every 250 ms) until one has carried rows, so the first results
    // are visible within a fraction of a second even when a source's first rows take a while
    // to be released (a Kafka backlog aligning its partitions); then one every
    // `checkpoint_interval`.
    let early = opts.checkpoint_interval.min(Duration::from_millis(250));
    let mut next_commit = Instant::now() + early;
    let mut acked = 0u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut busy = false;
        for s in sources.iter_mut().filter(|s| !s.done) {
            let m = &metrics.sources[s.index];
            let poll = if stopping {
                tracing::info!(source = %s.name, position = %s.source.position(), "stopping: draining");
                Poll::End
            } else {
                s.source.poll(opts.batch_rows)?
            };
            match poll {
                Poll::Data { rows, dead } => {
                    busy = true;
                    s.idle_since = None;
                    let (mut bad, mut reason) = (0, None);
                    if let Some(dead) = dead.filter(|d| d.num_rows() > 0) {
                        bad += dead.num_rows();
                        reason = last_reason(&dead);
                        m.dead.fetch_add(dead.num_rows() as u64, Ordering::Relaxed);
                        m.messages_in
                            .fetch_add(dead.num_rows() as u64, Ordering::Relaxed);
                        let out = df.push(dead_index, Some(dead), None)?;
                        deliver(df, dead_index, tasks, metrics, out).await?;
                    }
                    if rows.num_rows() == 0 {
                        s.note(0, bad, reason);
                        continue;
                    }
                    m.messages_in
                        .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                    let checked = s.pick.pick(&rows)?;
                    let rows = checked.rows;
                    m.rows.fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                    if let Some((broken, reasons)) = checked.broken {
                        bad += broken.num_rows();
                        reason = reasons.last().cloned();
                        m.dead
                            .fetch_add(broken.num_rows() as u64, Ordering::Relaxed);
                        let dead =
                            rows_as_dead_letters(&s.name, &broken, &reasons, &s.source.position())?;
                        let out = df.push(dead_index, Some(dead), None)?;
                        deliver(df, dead_index, tasks, metrics, out).await?;
                    }
                    s.note(rows.num_rows(), bad, reason);
                    if rows.num_rows() == 0 {
                        continue;
                    }
                    let (released, watermark) = match &mut s.buffer {
                        Some(buf) => {
                            // Late is judged against the watermark the last release used
                            // (the frontier before this poll), then the new frontier (which
                            // these rows may have moved) decides what goes on.
                            let late = buf.push(rows)?;
                            buf.set_frontier(s.source.frontier());
                            if let Some(late) = late {
                                m.late
                                    .fetch_add(late.rows.num_rows() as u64, Ordering::Relaxed);
                                let dead = rows_as_dead_letters(
                                    &s.name,
                                    &late.rows,
                                    &late.reasons,
                                    &s.source.position(),
                                )?;
                                let out = df.push(dead_index, Some(dead), None)?;
                                deliver(df, dead_index, tasks, metrics, out).await?;
                            }
                            (buf.release()?, buf.watermark())
                        }
                        None => (Some(rows), None),
                    };
                    if let Some(w) = watermark {
                        m.watermark.store(w, Ordering::Relaxed);
                    }
                    if let Some(r) = &released {
                        m.released.fetch_add(r.num_rows() as u64, Ordering::Relaxed);
                    }
                    let out = df.push(s.index, released, watermark)?;
                    deliver(df, dead_index, tasks, metrics, out).await?;
                }
                Poll::Idle => {
                    let since = *s.idle_since.get_or_insert_with(Instant::now);
                    let Some(buf) = &mut s.buffer else { continue };
                    // The frontier may have moved without new rows (a partition caught up).
                    buf.set_frontier(s.source.frontier());
                    let idle = since.elapsed() >= opts.idle_timeout;
                    let rows = if idle {
                        buf.mark_idle()?
                    } else {
                        buf.release()?
                    };
                    if let Some(rows) = rows {
                        m.released
                            .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                        if let Some(w) = buf.watermark() {
                            m.watermark.store(w, Ordering::Relaxed);
                        }
                        if idle {
                            tracing::debug!(source = %s.name, "idle: watermark moved to the newest event");
                        }
                        let out = df.push(s.index, Some(rows), buf.watermark())?;
                        deliver(df, dead_index, tasks, metrics, out).await?;
                    }
                }
                Poll::End => {
                    let rest = match &mut s.buffer {
                        Some(buf) => buf.flush()?,
                        None => None,
                    };
                    if let Some(r) = &rest {
                        m.released.fetch_add(r.num_rows() as u64, Ordering::Relaxed);
                    }
                    let out = df.push(s.index, rest, None)?;
                    deliver(df, dead_index, tasks, metrics, out).await?;
                    let out = df.finish(s.index)?;
                    deliver(df, dead_index, tasks, metrics, out).await?;
                    s.done = true;
                    tracing::info!(source = %s.name, position = %s.source.position(), "source finished");
                }
            }
        }
        if sources.iter().all(|s| s.done) {
            // Close the dead-letter stream's windows too (it has none that need event time).
            let out = df.finish(dead_index)?;
            deliver(df, dead_index, tasks, metrics, out).await?;
            return Ok(());
        }
        acknowledge(sources, metrics, &mut acked)?;
        if Instant::now() >= next_commit {
            for s in sources.iter_mut().filter(|s| !s.done) {
                let released_before = s.buffer.as_ref().map(|b| b.watermark().unwrap_or(i64::MIN));
                s.source.barrier(*epoch, released_before);
            }
            for t in tasks {
                if t.tx.send(SinkMsg::Commit(*epoch)).await.is_err() {
                    return Err(RunError::Setup(
                        "a sink stopped (see the error above)".into(),
                    ));
                }
            }
            *epoch += 1;
            metrics.epoch.store(*epoch, Ordering::Relaxed);
            let rows_committed = metrics.first_commit_micros.load(Ordering::Relaxed) != 0;
            next_commit = Instant::now()
                + if rows_committed {
                    opts.checkpoint_interval
                } else {
                    early
                };
        }
        if !busy {
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
}
