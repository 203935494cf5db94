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
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::checkpoint::{
    Checkpoint, CheckpointError, CheckpointStore, Manifest, RunRecord, SinkRecord, SourceRecord,
};
use crate::connector::{ConnectorError, Poll, Prepared, Sink, Source};
use crate::constraints::Constraints;
use crate::event::rows_as_dead_letters;
use crate::histogram::Histogram;
use crate::state::Snapshot;
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
    /// Where each epoch's checkpoint goes; `None`: no checkpoints (a restart begins again,
    /// and sinks get each epoch at least once).
    pub checkpoints: Option<CheckpointStore>,
    /// What may change only between two epochs, kept in every checkpoint (the models a
    /// running pipeline swaps).
    pub epoch_bound: Vec<Arc<dyn EpochBound>>,
}

/// Something outside the dataflow that the dataflow's functions read (a model) and that may
/// change only at an epoch boundary, so that every row of an epoch sees the same one and a
/// checkpoint says which one its epoch used.
pub trait EpochBound: std::fmt::Debug + Send + Sync {
    /// Its key in [`RunRecord::extra`].
    fn key(&self) -> &str;
    /// Epoch `epoch` begins, on the pipeline's thread between two batches: apply what has
    /// changed since the last one.
    fn begin(&self, epoch: u64);
    /// What the checkpoint of the epoch ending keeps of it.
    fn record(&self) -> serde_json::Value;
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            batch_rows: 8192,
            checkpoint_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(2),
            checkpoints: None,
            epoch_bound: Vec::new(),
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
    /// Messages and rows sent to the dead letters: undecodable messages and rows failing a
    /// CHECK (`check_failed` of them); late rows are counted apart, in `late`.
    pub dead: AtomicU64,
    pub check_failed: AtomicU64,
    pub late: AtomicU64,
    /// Rows released to the dataflow (on time).
    pub released: AtomicU64,
    /// Current watermark, µs since the epoch (i64::MIN before any row).
    pub watermark: AtomicI64,
    /// Per partition (Kafka), messages behind its end; refreshed at every checkpoint.
    pub partition_lag: std::sync::Mutex<Vec<(i32, i64)>>,
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
    /// Batches handed to the sink and not yet taken by it (of [`SINK_QUEUE`]): a full queue
    /// is a sink holding the pipeline back.
    pub queued: AtomicU64,
    /// Per row: from being handed to the sink to its commit being durable.
    pub commit_latency: Histogram,
    /// Per commit: how long the sink's commit took.
    pub commit_seconds: Histogram,
    /// When the last commit finished (µs since the Unix epoch; 0 = none yet).
    pub last_commit_micros: AtomicI64,
}

/// Batches (and checkpoint messages) a sink's queue holds before the pipeline waits for it.
pub const SINK_QUEUE: usize = 8;

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
    /// Checkpoints written by this run, the size of the last, how long it took (µs, from
    /// the barrier to the durable manifest), how long of that the dataflow stood still (µs:
    /// the sinks' prepare and the snapshot; the files are written meanwhile, off the
    /// pipeline's thread), and the checkpoint the run began from (0 = none).
    pub checkpoints: AtomicU64,
    pub checkpoint_bytes: AtomicU64,
    pub checkpoint_micros: AtomicU64,
    pub checkpoint_pause_micros: AtomicU64,
    pub restored_epoch: AtomicU64,
    /// Where the pipeline's thread spends its time.
    pub steps: StepMetrics,
}

/// How long each step of the pipeline's loop takes, one observation per occurrence (Flink's
/// busy, back-pressured and idle time, finer): the histograms' sums over time are the share
/// of the thread each step takes, and their top buckets are the stalls a scoring request or
/// a fresh row waits behind.
#[derive(Debug)]
pub struct StepMetrics {
    /// Reading a batch from a source (decoding included).
    pub poll: Histogram,
    /// Running a batch through the dataflow (SQL, OVER and window state, scoring).
    pub process: Histogram,
    /// Handing a batch's output to the sinks' queues: long when a sink's queue is full.
    pub deliver: Histogram,
    /// Ending an epoch: sinks' prepare, the state snapshot, settling the last checkpoint.
    pub commit: Histogram,
    /// Answering queued scoring requests (`POST /api/v1/score`).
    pub serve: Histogram,
    /// Per scoring request: from being queued for the pipeline's thread to being taken up.
    pub request_wait: Histogram,
    /// Napping with nothing to read.
    pub idle: Histogram,
}

impl Default for StepMetrics {
    fn default() -> Self {
        let h = || Histogram::new(crate::histogram::STEP_BOUNDS);
        StepMetrics {
            poll: h(),
            process: h(),
            deliver: h(),
            commit: h(),
            serve: h(),
            request_wait: h(),
            idle: h(),
        }
    }
}

impl StepMetrics {
    /// Each step's name (the `step` label) and histogram.
    pub fn all(&self) -> [(&'static str, &Histogram); 6] {
        [
            ("poll", &self.poll),
            ("process", &self.process),
            ("deliver", &self.deliver),
            ("commit", &self.commit),
            ("serve", &self.serve),
            ("idle", &self.idle),
        ]
    }
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
    #[error("sink {0} stopped (see the error above)")]
    SinkStopped(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("cannot restore checkpoint {epoch}: {message}")]
    Restore { epoch: u64, message: String },
}

impl From<arrow::error::ArrowError> for RunError {
    fn from(e: arrow::error::ArrowError) -> Self {
        RunError::Stream(StreamError::Arrow(e))
    }
}

enum SinkMsg {
    /// Rows, and when they were handed over (for the commit latency).
    Rows(RecordBatch, Instant),
    /// Phase one of an epoch: the reply carries what phase two needs.
    Prepare(u64, oneshot::Sender<Result<Prepared, ConnectorError>>),
    /// Phase two, once the checkpoint holding the prepared epoch is durable.
    Commit(u64, Prepared),
}

struct SinkTask {
    table: String,
    tx: mpsc::Sender<SinkMsg>,
    handle: JoinHandle<Result<(), ConnectorError>>,
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn spawn_sink(mut sink: Box<dyn Sink>, index: usize, metrics: Arc<Metrics>) -> SinkTask {
    let (tx, mut rx) = mpsc::channel::<SinkMsg>(SINK_QUEUE);
    let table = metrics.sinks[index].table.clone();
    let handle = tokio::spawn(async move {
        let (mut pending, mut prepared_rows) = (0u64, 0u64);
        // When each batch of the open epoch, and of the prepared one, was handed over.
        let (mut handed, mut prepared_handed) = (Vec::new(), Vec::new());
        while let Some(msg) = rx.recv().await {
            match msg {
                SinkMsg::Rows(b, at) => {
                    metrics.sinks[index].queued.fetch_sub(1, Ordering::Relaxed);
                    pending += b.num_rows() as u64;
                    handed.push((at, b.num_rows() as u64));
                    sink.write(b).await?;
                }
                SinkMsg::Prepare(epoch, reply) => {
                    let prepared = sink.prepare(epoch).await;
                    let failed = prepared.as_ref().err().cloned();
                    let _ = reply.send(prepared);
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    prepared_rows = std::mem::take(&mut pending);
                    prepared_handed = std::mem::take(&mut handed);
                }
                SinkMsg::Commit(epoch, prepared) => {
                    let started = Instant::now();
                    sink.commit(epoch, prepared).await?;
                    crate::fault::point(&format!("committed:{index}"), epoch);
                    let m = &metrics.sinks[index];
                    let done = Instant::now();
                    m.commit_seconds
                        .observe_n((done - started).as_secs_f64(), 1);
                    for (at, n) in prepared_handed.drain(..) {
                        m.commit_latency.observe_n((done - at).as_secs_f64(), n);
                    }
                    m.last_commit_micros.store(now_micros(), Ordering::Relaxed);
                    m.commits.fetch_add(1, Ordering::Relaxed);
                    m.committed_epoch.store(epoch, Ordering::Release);
                    m.committed_rows
                        .fetch_add(std::mem::take(&mut prepared_rows), Ordering::Relaxed);
                    if m.committed_rows.load(Ordering::Relaxed) > 0 {
                        let _ = metrics.first_commit_micros.compare_exchange(
                            0,
                            now_micros(),
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                }
            }
        }
        Ok(())
    });
    SinkTask { table, tx, handle }
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
/// of its sinks (in [`Dataflow::sinks`] order), and the checkpoint they were opened at (the
/// sources at its positions), which the run restores before anything else.
pub struct Connections {
    pub sources: Vec<(String, Box<dyn Source>)>,
    pub sinks: Vec<Box<dyn Sink>>,
    pub resume: Option<Checkpoint>,
    /// Rows to score against the live state between batches (the online scoring API).
    pub probes: Option<crate::probe::ProbeQueue>,
}

/// State ids of the event-time buffers and sinks' prepared epochs in a checkpoint (operator
/// ids begin with their node's number).
const BUFFER_STATE: &str = "buffer-";
const SINK_STATE: &str = "sink-";

/// The operator states of a checkpoint (not the buffers' and sinks').
pub fn operator_states(states: &[(String, RecordBatch)]) -> Vec<(String, RecordBatch)> {
    states
        .iter()
        .filter(|(id, _)| !id.starts_with(BUFFER_STATE) && !id.starts_with(SINK_STATE))
        .cloned()
        .collect()
}

fn find_state<'a>(states: &'a [(String, RecordBatch)], id: &str) -> Option<&'a RecordBatch> {
    states.iter().find(|(i, _)| i == id).map(|(_, b)| b)
}

/// A sink's prepared bytes as a one-row state batch, and back.
fn data_state(data: &[u8]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let col = arrow::array::LargeBinaryArray::from_vec(vec![data]);
    RecordBatch::try_from_iter([("data", Arc::new(col) as ArrayRef)])
}

fn state_data(b: &RecordBatch) -> Option<Vec<u8>> {
    use arrow::array::AsArray;
    let col = b.column_by_name("data")?.as_binary_opt::<i64>()?;
    (col.len() == 1).then(|| col.value(0).to_vec())
}

/// Runs `df` until its sources end or `stop` is set, then drains and commits. However it
/// ends, [`Metrics::finished`] is set when it returns (progress displays wait for it).
///
/// With [`RunOptions::checkpoints`], every epoch is a checkpoint: the sinks prepare, the
/// operators' state, the event-time buffers and the sources' positions are written as one
/// checkpoint, and only then do the sinks commit; a stop takes a last checkpoint instead of
/// draining, so the next run continues where this one stopped.
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

/// Puts a checkpoint back: operator state, event-time buffers, counters, and the commit of
/// its epoch in every sink that has not made it yet. Returns the epoch to continue after.
async fn restore(
    df: &mut Dataflow,
    sources: &mut [SourceState],
    sinks: &mut [Box<dyn Sink>],
    metrics: &Metrics,
    (manifest, states): Checkpoint,
) -> Result<u64, RunError> {
    let epoch = manifest.epoch;
    let fail = |message: String| RunError::Restore { epoch, message };
    df.restore(&operator_states(&states))
        .map_err(|e| fail(e.to_string()))?;
    let record = manifest.record;
    for s in sources.iter_mut() {
        let Some(rec) = record.sources.iter().find(|r| r.name == s.name) else {
            return Err(fail(format!(
                "the checkpoint has no position for source {}, which the pipeline reads \
                 (the SQL changed since the checkpoint)",
                s.name
            )));
        };
        if let Some(buf) = &mut s.buffer {
            let id = format!("{BUFFER_STATE}{}", s.name);
            let rows = find_state(&states, &id)
                .cloned()
                .unwrap_or_else(|| RecordBatch::new_empty(buf.schema()));
            buf.restore(rows, rec.marks)
                .map_err(|e| fail(format!("source {}: {e}", s.name)))?;
        }
        let m = &metrics.sources[s.index];
        m.messages_in.store(rec.messages_in, Ordering::Relaxed);
        m.rows.store(rec.rows, Ordering::Relaxed);
        m.dead.store(rec.dead, Ordering::Relaxed);
        m.check_failed.store(rec.check_failed, Ordering::Relaxed);
        m.late.store(rec.late, Ordering::Relaxed);
        m.released.store(rec.released, Ordering::Relaxed);
        m.watermark
            .store(rec.watermark.unwrap_or(i64::MIN), Ordering::Relaxed);
    }
    metrics
        .rejected_by_sinks
        .store(record.rejected_by_sinks, Ordering::Relaxed);
    let mut resume_after = epoch;
    for (i, sink) in sinks.iter_mut().enumerate() {
        let m = &metrics.sinks[i];
        let Some(rec) = record.sinks.iter().find(|r| r.table == m.table) else {
            continue;
        };
        m.rows.store(rec.rows, Ordering::Relaxed);
        m.commits.store(rec.commits, Ordering::Relaxed);
        m.committed_rows
            .store(rec.committed_rows + rec.prepared_rows, Ordering::Relaxed);
        let last = sink.last_epoch();
        if let Some(l) = last.filter(|l| *l > epoch) {
            tracing::warn!(
                sink = %m.table,
                "sink {} has committed epoch {l}, newer than checkpoint {epoch} (a newer \
                 checkpoint was lost): the rows of epochs {}..={l} will be written again",
                m.table,
                epoch + 1
            );
            resume_after = resume_after.max(l);
        }
        let data = find_state(&states, &format!("{SINK_STATE}{}", m.table))
            .and_then(state_data)
            .unwrap_or_default();
        let prepared = Prepared {
            meta: rec.meta.clone(),
            data,
        };
        if prepared.is_empty() || last.is_some_and(|l| l >= epoch) {
            continue;
        }
        tracing::info!(
            sink = %m.table,
            epoch,
            rows = rec.prepared_rows,
            "committing epoch {epoch}, which the previous run prepared but had not committed"
        );
        sink.commit(epoch, prepared).await?;
    }
    metrics.restored_epoch.store(epoch, Ordering::Relaxed);
    tracing::info!(
        epoch,
        "restored checkpoint {epoch}: {} operators, {} sources",
        operator_states(&states).len(),
        record.sources.len()
    );
    Ok(resume_after)
}

async fn run_to_end(
    mut df: Dataflow,
    mut conns: Connections,
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
    let mut cp = Checkpoints::default();
    let restored = match conns.resume.take() {
        Some(checkpoint) => {
            cp.last = Some(checkpoint.0.clone());
            Some(
                restore(
                    &mut df,
                    &mut sources,
                    &mut conns.sinks,
                    &metrics,
                    checkpoint,
                )
                .await?,
            )
        }
        None => None,
    };
    let start_epoch = conns
        .sinks
        .iter()
        .filter_map(|s| s.last_epoch())
        .chain(restored)
        .max()
        .map_or(1, |e| e + 1);
    let mut epoch = start_epoch;
    metrics.epoch.store(epoch, Ordering::Relaxed);
    begin_epoch(&opts.epoch_bound, epoch);
    let tasks: Vec<SinkTask> = conns
        .sinks
        .into_iter()
        .enumerate()
        .map(|(i, s)| spawn_sink(s, i, metrics.clone()))
        .collect();
    let store = opts.checkpoints.clone();
    let mut probes = conns.probes.take();
    let result = drive(
        &mut df,
        &mut sources,
        dead_index,
        &tasks,
        &opts,
        &metrics,
        &stop,
        &mut cp,
        &mut epoch,
        probes.as_mut(),
    )
    .await;
    // Requests still waiting get "not running" rather than a late answer.
    drop(probes);
    // The last epoch: a checkpoint after a clean end or a stop. After an error there is no
    // consistent cut to save: with checkpoints the next run continues from the last one;
    // without, what was processed is still committed (at least once).
    let mut outcome = match result {
        Ok(()) => {
            epoch_end(
                &mut df,
                &mut sources,
                &tasks,
                &metrics,
                store.as_ref(),
                &opts.epoch_bound,
                &mut cp,
                &mut epoch,
                true,
            )
            .await
        }
        Err(e) => {
            if store.is_none() {
                let _ = commit_without_checkpoint(&tasks, epoch).await;
            } else if let Err(late) = settle(&mut cp, &tasks, &metrics).await {
                // The error that stopped the run says more; this one is logged.
                tracing::error!("{late}");
            }
            Err(e)
        }
    };
    let clean = outcome.is_ok();
    for t in tasks {
        drop(t.tx);
        let failed = match t.handle.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(RunError::from(e)),
            Err(e) => Some(RunError::Setup(format!(
                "sink {}'s task failed: {e}",
                t.table
            ))),
        };
        if let Some(e) = failed {
            // A sink's own error says more than the pipeline's "the sink stopped".
            match &outcome {
                Ok(()) | Err(RunError::SinkStopped(_)) => outcome = Err(e),
                Err(_) => tracing::error!("{e}"),
            }
        }
    }
    if clean && outcome.is_ok() {
        for s in sources.iter_mut() {
            if let Err(e) = s.source.committed(epoch - 1) {
                outcome = Err(e.into());
            }
        }
    }
    metrics.finished.store(true, Ordering::Relaxed);
    outcome
}

/// Without checkpoints, after an error: both phases at once, so rows already processed are
/// not lost.
async fn commit_without_checkpoint(tasks: &[SinkTask], epoch: u64) -> Result<(), RunError> {
    for t in tasks {
        let (tx, rx) = oneshot::channel();
        if t.tx.send(SinkMsg::Prepare(epoch, tx)).await.is_err() {
            continue;
        }
        if let Ok(Ok(p)) = rx.await {
            let _ = t.tx.send(SinkMsg::Commit(epoch, p)).await;
        }
    }
    Ok(())
}

/// How long a checkpoint waits for a sink before saying so (and again each time after).
const SLOW_SINK: Duration = Duration::from_secs(10);

/// A checkpoint being written off the pipeline's thread, and what its epoch's sinks
/// prepared: they are told to commit once it is durable ([`settle`]).
/// The checkpoint being written, if any, and the last durable one (or the one restored):
/// the base the next checkpoint's changes chain onto.
#[derive(Default)]
struct Checkpoints {
    in_flight: Option<InFlight>,
    last: Option<Manifest>,
}

struct InFlight {
    epoch: u64,
    started: Instant,
    paused: Duration,
    write: JoinHandle<Result<Manifest, CheckpointError>>,
    prepared: Vec<Prepared>,
}

/// Waits for the checkpoint in flight, if any, to be durable, then tells every sink to
/// commit its epoch. Called before the next epoch's prepare, so that a sink has committed
/// epoch `e` before checkpoint `e + 1` (which no longer holds `e`'s prepared rows) can exist.
async fn settle(
    cp: &mut Checkpoints,
    tasks: &[SinkTask],
    metrics: &Metrics,
) -> Result<(), RunError> {
    let Some(f) = cp.in_flight.take() else {
        return Ok(());
    };
    let manifest = f
        .write
        .await
        .map_err(|err| RunError::Checkpoint(format!("the checkpoint writer failed: {err}")))?
        .map_err(|err| RunError::Checkpoint(err.to_string()))?;
    let bytes = manifest.written_bytes();
    let state_bytes = manifest.bytes();
    let total = f.started.elapsed();
    metrics.checkpoints.fetch_add(1, Ordering::Relaxed);
    metrics.checkpoint_bytes.store(bytes, Ordering::Relaxed);
    metrics
        .checkpoint_micros
        .store(total.as_micros() as u64, Ordering::Relaxed);
    metrics
        .checkpoint_pause_micros
        .store(f.paused.as_micros() as u64, Ordering::Relaxed);
    tracing::debug!(
        epoch = f.epoch,
        bytes,
        state_bytes,
        paused_ms = f.paused.as_secs_f64() * 1000.0,
        total_ms = total.as_secs_f64() * 1000.0,
        "checkpoint written"
    );
    crate::fault::point("checkpointed", f.epoch);
    cp.last = Some(manifest);
    commit_all(tasks, f.epoch, f.prepared).await
}

/// Tells every sink to commit epoch `epoch` with what it prepared.
async fn commit_all(
    tasks: &[SinkTask],
    epoch: u64,
    prepared: Vec<Prepared>,
) -> Result<(), RunError> {
    for (t, p) in tasks.iter().zip(prepared) {
        if t.tx.send(SinkMsg::Commit(epoch, p)).await.is_err() {
            return Err(RunError::SinkStopped(t.table.clone()));
        }
    }
    Ok(())
}

/// Ends epoch `epoch`: the checkpoint of the epoch before is settled (durable, its sinks
/// told to commit), every source marks where it is, every sink prepares (the wait holds the
/// pipeline back while a sink is slow or away, and is logged), the state is snapshotted and,
/// with a store, written off the pipeline's thread (`in_flight`; the sinks commit once it is
/// durable) — without one, every sink is told to commit at once. `last`: the run is ending,
/// so every row a source gave is in the dataflow, and the checkpoint is settled before
/// returning.
#[allow(clippy::too_many_arguments)]
async fn epoch_end(
    df: &mut Dataflow,
    sources: &mut [SourceState],
    tasks: &[SinkTask],
    metrics: &Metrics,
    store: Option<&CheckpointStore>,
    bound: &[Arc<dyn EpochBound>],
    cp: &mut Checkpoints,
    epoch: &mut u64,
    last: bool,
) -> Result<(), RunError> {
    settle(cp, tasks, metrics).await?;
    let started = Instant::now();
    let e = *epoch;
    for s in sources.iter_mut() {
        // A checkpoint keeps the event-time buffer's rows, so everything given is covered;
        // without one, only rows the buffer has released.
        let released_before = match (store, last) {
            (None, false) if !s.done => {
                s.buffer.as_ref().map(|b| b.watermark().unwrap_or(i64::MIN))
            }
            _ => None,
        };
        s.source.barrier(e, released_before);
    }
    let mut replies = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (tx, rx) = oneshot::channel();
        if t.tx.send(SinkMsg::Prepare(e, tx)).await.is_err() {
            return Err(RunError::SinkStopped(t.table.clone()));
        }
        replies.push(rx);
    }
    let mut prepared = Vec::with_capacity(tasks.len());
    for (t, mut rx) in tasks.iter().zip(replies) {
        let waiting = Instant::now();
        let p = loop {
            match tokio::time::timeout(SLOW_SINK, &mut rx).await {
                Ok(Ok(Ok(p))) => break p,
                Ok(Ok(Err(err))) => return Err(err.into()),
                Ok(Err(_)) => return Err(RunError::SinkStopped(t.table.clone())),
                Err(_) => tracing::warn!(
                    sink = %t.table,
                    epoch = e,
                    "epoch {e} has waited {:.0} s for sink {} to write its rows (slow or \
                     unavailable; the sources are held back meanwhile)",
                    waiting.elapsed().as_secs_f64(),
                    t.table
                ),
            }
        };
        prepared.push(p);
    }
    crate::fault::point("prepared", e);
    let Some(store) = store else {
        commit_all(tasks, e, prepared).await?;
        *epoch += 1;
        metrics.epoch.store(*epoch, Ordering::Relaxed);
        if !last {
            begin_epoch(bound, *epoch);
        }
        return Ok(());
    };
    // Changes only when they can chain onto a durable checkpoint.
    let mut states = df.snapshot(cp.last.is_some())?;
    let mut record = RunRecord {
        rejected_by_sinks: metrics.rejected_by_sinks.load(Ordering::Relaxed),
        extra: bound
            .iter()
            .map(|b| (b.key().to_string(), b.record()))
            .collect(),
        ..RunRecord::default()
    };
    for s in sources.iter() {
        let m = &metrics.sources[s.index];
        let (marks, held) = match &s.buffer {
            Some(buf) => {
                let (rows, marks) = buf.snapshot()?;
                let held = rows.num_rows() as u64;
                states.push((format!("{BUFFER_STATE}{}", s.name), Snapshot::full(rows)));
                (marks, held)
            }
            None => (Default::default(), 0),
        };
        if let Ok(mut lag) = m.partition_lag.lock() {
            *lag = s.source.partition_lag();
        }
        let watermark = m.watermark.load(Ordering::Relaxed);
        record.sources.push(SourceRecord {
            name: s.name.clone(),
            position: s.source.checkpoint(),
            shown: s.source.position(),
            watermark: (watermark != i64::MIN).then_some(watermark),
            marks,
            held,
            messages_in: m.messages_in.load(Ordering::Relaxed),
            rows: m.rows.load(Ordering::Relaxed),
            dead: m.dead.load(Ordering::Relaxed),
            check_failed: m.check_failed.load(Ordering::Relaxed),
            late: m.late.load(Ordering::Relaxed),
            released: m.released.load(Ordering::Relaxed),
            done: s.done,
        });
    }
    for (i, (t, p)) in tasks.iter().zip(&prepared).enumerate() {
        let m = &metrics.sinks[i];
        if !p.data.is_empty() {
            states.push((
                format!("{SINK_STATE}{}", t.table),
                Snapshot::full(data_state(&p.data)?),
            ));
        }
        let committed = m.committed_rows.load(Ordering::Relaxed);
        record.sinks.push(SinkRecord {
            table: t.table.clone(),
            meta: p.meta.clone(),
            // Rows handed to the sink up to this epoch's end, less those committed.
            prepared_rows: m.rows.load(Ordering::Relaxed).saturating_sub(committed),
            rows: m.rows.load(Ordering::Relaxed),
            committed_rows: committed,
            commits: m.commits.load(Ordering::Relaxed),
        });
    }
    let (store, base) = (store.clone(), cp.last.clone());
    cp.in_flight = Some(InFlight {
        epoch: e,
        started,
        paused: started.elapsed(),
        write: tokio::task::spawn_blocking(move || store.write(e, &states, record, base.as_ref())),
        prepared,
    });
    *epoch += 1;
    metrics.epoch.store(*epoch, Ordering::Relaxed);
    if last {
        settle(cp, tasks, metrics).await?;
    } else {
        begin_epoch(bound, *epoch);
    }
    Ok(())
}

/// Epoch `epoch` begins: what changed outside the dataflow (a swapped model) applies now.
fn begin_epoch(bound: &[Arc<dyn EpochBound>], epoch: u64) {
    for b in bound {
        b.begin(epoch);
    }
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
        metrics.sinks[s].queued.fetch_add(1, Ordering::Relaxed);
        if tasks[s]
            .tx
            .send(SinkMsg::Rows(b, Instant::now()))
            .await
            .is_err()
        {
            return Err(RunError::SinkStopped(tasks[s].table.clone()));
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

/// Answers the scoring requests waiting, against the dataflow's state now, timing it.
fn serve(
    q: &mut crate::probe::ProbeQueue,
    df: &Dataflow,
    sources: &[SourceState],
    steps: &StepMetrics,
) {
    let t = Instant::now();
    let watermark = |i: usize| {
        sources
            .iter()
            .find(|s| s.index == i)
            .and_then(|s| s.buffer.as_ref()?.watermark())
    };
    if q.serve(df, watermark, &steps.request_wait) > 0 {
        steps.serve.observe_since(t);
    }
}

/// Where a batch's output goes: the sinks, with their rejects to the dead letters.
struct Outlet<'a> {
    dead_index: usize,
    tasks: &'a [SinkTask],
    metrics: &'a Metrics,
}

impl Outlet<'_> {
    /// Runs `batch` (and the watermark) through the dataflow from source node `source` and
    /// hands the output to the sinks, timing both steps.
    async fn push(
        &self,
        df: &mut Dataflow,
        source: usize,
        batch: Option<RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<(), RunError> {
        let t = Instant::now();
        let out = df.push(source, batch, watermark)?;
        self.metrics.steps.process.observe_since(t);
        self.deliver(df, out).await
    }

    /// Ends source node `source`'s stream (closing its windows) and hands the output on.
    async fn finish(&self, df: &mut Dataflow, source: usize) -> Result<(), RunError> {
        let t = Instant::now();
        let out = df.finish(source)?;
        self.metrics.steps.process.observe_since(t);
        self.deliver(df, out).await
    }

    async fn deliver(
        &self,
        df: &mut Dataflow,
        out: Vec<(usize, RecordBatch)>,
    ) -> Result<(), RunError> {
        let t = Instant::now();
        deliver(df, self.dead_index, self.tasks, self.metrics, out).await?;
        self.metrics.steps.deliver.observe_since(t);
        Ok(())
    }
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
    cp: &mut Checkpoints,
    epoch: &mut u64,
    mut probes: Option<&mut crate::probe::ProbeQueue>,
) -> Result<(), RunError> {
    // Checkpoints come early (every 250 ms) until one has carried rows, so the first results
    // are visible within a fraction of a second even when a source's first rows take a while
    // to be released (a Kafka backlog aligning its partitions); then one every
    // `checkpoint_interval`.
    let early = opts.checkpoint_interval.min(Duration::from_millis(250));
    let mut next_commit = Instant::now() + early;
    let mut acked = 0u64;
    let outlet = Outlet {
        dead_index,
        tasks,
        metrics,
    };
    let steps = &metrics.steps;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && opts.checkpoints.is_some() {
            // The last checkpoint keeps what is buffered and open: the next run goes on.
            tracing::info!("stopping: taking a last checkpoint");
            return Ok(());
        }
        let mut busy = false;
        // Smaller batches while scoring requests come: each waits for the batch in progress.
        let batch_rows = probes
            .as_deref()
            .map_or(opts.batch_rows, |q| q.batch_rows(opts.batch_rows));
        for s in sources.iter_mut().filter(|s| !s.done) {
            let m = &metrics.sources[s.index];
            let poll = if stopping {
                tracing::info!(source = %s.name, position = %s.source.position(), "stopping: draining");
                Poll::End
            } else {
                let t = Instant::now();
                let poll = s.source.poll(batch_rows)?;
                steps.poll.observe_since(t);
                poll
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
                        outlet.push(df, dead_index, Some(dead), None).await?;
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
                        m.check_failed
                            .fetch_add(broken.num_rows() as u64, Ordering::Relaxed);
                        let dead =
                            rows_as_dead_letters(&s.name, &broken, &reasons, &s.source.position())?;
                        outlet.push(df, dead_index, Some(dead), None).await?;
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
                                outlet.push(df, dead_index, Some(dead), None).await?;
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
                    outlet.push(df, s.index, released, watermark).await?;
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
                    // The watermark may move without releasing anything (the rows held are
                    // all at the newest time): /api/status and the metrics say so.
                    if let Some(w) = buf.watermark() {
                        m.watermark.store(w, Ordering::Relaxed);
                    }
                    if let Some(rows) = rows {
                        m.released
                            .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                        if idle {
                            tracing::debug!(source = %s.name, "idle: watermark moved to the newest event");
                        }
                        outlet
                            .push(df, s.index, Some(rows), buf.watermark())
                            .await?;
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
                    outlet.push(df, s.index, rest, None).await?;
                    outlet.finish(df, s.index).await?;
                    s.done = true;
                    tracing::info!(source = %s.name, position = %s.source.position(), "source finished");
                }
            }
        }
        if sources.iter().all(|s| s.done) {
            // Close the dead-letter stream's windows too (it has none that need event time).
            outlet.finish(df, dead_index).await?;
            return Ok(());
        }
        if cp.in_flight.as_ref().is_some_and(|f| f.write.is_finished()) {
            // Durable: the sinks commit now rather than at the next epoch's end.
            let t = Instant::now();
            settle(cp, tasks, metrics).await?;
            steps.commit.observe_since(t);
        }
        acknowledge(sources, metrics, &mut acked)?;
        // An epoch ends once the previous checkpoint is durable: the dataflow never waits for
        // a write (one that takes longer than the interval, such as a chain being folded into
        // a whole state, lengthens the epoch instead).
        if Instant::now() >= next_commit && cp.in_flight.is_none() {
            let t = Instant::now();
            epoch_end(
                df,
                sources,
                tasks,
                metrics,
                opts.checkpoints.as_ref(),
                &opts.epoch_bound,
                cp,
                epoch,
                false,
            )
            .await?;
            steps.commit.observe_since(t);
            let rows_committed = metrics.first_commit_micros.load(Ordering::Relaxed) != 0;
            next_commit = Instant::now()
                + if rows_committed {
                    opts.checkpoint_interval
                } else {
                    early
                };
        }
        if let Some(q) = probes.as_deref_mut() {
            // Between two batches: scoring requests see the state every row so far made.
            serve(q, df, sources, steps);
        }
        if !busy {
            let t = Instant::now();
            let nap = tokio::time::sleep(Duration::from_millis(5));
            // A scoring request ends the nap and is answered at once, before the next poll
            // (which would otherwise make it wait for one more batch).
            let woken = match probes.as_deref_mut() {
                Some(q) => tokio::select! {
                    _ = nap => false,
                    _ = q.wait() => true,
                },
                None => {
                    nap.await;
                    false
                }
            };
            steps.idle.observe_since(t);
            if woken && let Some(q) = probes.as_deref_mut() {
                serve(q, df, sources, steps);
            }
        } else {
            tokio::task::yield_now().await;
        }
    }
}
