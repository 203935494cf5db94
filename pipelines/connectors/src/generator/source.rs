//! The generator as a pipeline [`Source`]: transactions straight into Arrow batches of the
//! event contract (no JSON round trip), as fast as possible (on a thread of its own) or paced
//! to `rate` per second of wall-clock time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use super::schema::transaction_schema;
use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::sql::TableDef;

use super::{Event, Generator, config_from, options::pace_from};

impl Generator {
    /// The next (up to) `rows` transactions in arrival order as Arrow rows of
    /// [`transaction_schema`]; `None` once the generator has ended.
    pub fn next_batch(&mut self, rows: usize) -> Option<Result<RecordBatch, ArrowError>> {
        let mut events = std::mem::take(&mut self.batch);
        events.clear();
        events.extend(std::iter::from_fn(|| self.next_event()).take(rows));
        let batch = (!events.is_empty()).then(|| to_batch(&self.id_prefix, &events));
        self.batch = events;
        batch
    }
}

/// Generated transactions as Arrow rows of [`transaction_schema`], formatted straight into
/// the column buffers. `id_prefix` is the generator's `tx-{seed:x}-`.
fn to_batch(id_prefix: &str, events: &[Event]) -> Result<RecordBatch, ArrowError> {
    let n = events.len();
    let mut scratch = String::with_capacity(32);
    let mut formatted = |f: &dyn Fn(&Event, &mut String), bytes: usize| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * bytes);
        for e in events {
            scratch.clear();
            f(e, &mut scratch);
            b.append_value(&scratch);
        }
        Arc::new(b.finish())
    };
    let ids = formatted(
        &|e, s| e.write_transaction_id(id_prefix, s),
        id_prefix.len() + 8,
    );
    let users = formatted(&|e, s| e.write_user_id(s), 7);
    let merchants = formatted(&|e, s| e.write_merchant(s), 18);
    let devices = formatted(&|e, s| e.write_device(s), 9);
    let fixed = |f: &dyn Fn(&Event) -> &'static str| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 8);
        for e in events {
            b.append_value(f(e));
        }
        Arc::new(b.finish())
    };
    let floats = |f: &dyn Fn(&Event) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(events.iter().map(f)))
    };
    let ts = TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.ts_micros))
        .with_timezone("UTC");
    let fraud: BooleanArray = events.iter().map(|e| Some(e.pattern.is_some())).collect();
    let mut patterns = StringBuilder::with_capacity(n, 0);
    for e in events {
        patterns.append_option(e.pattern.map(|p| p.name()));
    }
    let cols: Vec<ArrayRef> = vec![
        ids,
        users,
        floats(&|e| e.amount),
        Arc::new(ts),
        fixed(&|e| e.currency()),
        merchants,
        fixed(&|e| e.category()),
        fixed(&|e| e.location()),
        fixed(&|e| e.country()),
        devices,
        fixed(&|e| e.channel),
        floats(&|e| e.lat),
        floats(&|e| e.lon),
        Arc::new(fraud),
        Arc::new(patterns.finish()),
    ];
    RecordBatch::try_new(transaction_schema(), cols)
}

/// `connector = 'generator'` in a pipeline. Unpaced, the generator runs on its own thread a
/// few batches ahead of the pipeline (it is as much work as a pipeline stage); paced, it
/// generates inline when the schedule says so.
pub struct GeneratorSource {
    mode: Mode,
    /// Transactions generated so far (including batches queued for the pipeline).
    emitted: Arc<AtomicU64>,
    /// Transactions handed to the pipeline (since the stream's start, across restarts).
    given: u64,
}

/// Where a generator source is: how many transactions of its stream (a seed's stream is
/// always the same) it has given. A restarted run continues the same stream there.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeneratorPosition {
    pub given: u64,
}

enum Mode {
    Paced {
        generator: Box<Generator>,
        rate: f64,
        started: Option<Instant>,
        /// Transactions skipped to resume: the schedule counts from there.
        base: u64,
    },
    Ahead(Receiver<Result<RecordBatch, String>>),
}

/// Rows per batch the generator thread makes.
const AHEAD_BATCH: usize = 8192;

impl GeneratorSource {
    /// The source of `generator`'s stream, continuing after `at` (the transactions before it
    /// are generated and dropped: the same stream, at its cost).
    pub fn new(mut generator: Generator, pace: Option<f64>, at: Option<GeneratorPosition>) -> Self {
        let given = at.map_or(0, |a| a.given);
        for _ in 0..given {
            if generator.next_event().is_none() {
                break;
            }
        }
        let emitted = Arc::new(AtomicU64::new(given));
        let mode = match pace {
            Some(rate) => Mode::Paced {
                generator: Box::new(generator),
                rate,
                started: None,
                base: given,
            },
            None => {
                let (tx, rx) = sync_channel(4);
                let count = emitted.clone();
                let spawned = std::thread::Builder::new()
                    .name("generator".into())
                    .spawn(move || run_ahead(generator, &tx, &count));
                match spawned {
                    Ok(_) => Mode::Ahead(rx),
                    Err(e) => {
                        let (tx, rx) = sync_channel(1);
                        let _ = tx.send(Err(format!("cannot start the generator thread: {e}")));
                        Mode::Ahead(rx)
                    }
                }
            }
        };
        GeneratorSource {
            mode,
            emitted,
            given,
        }
    }

    /// The source a table's options describe, continuing after `at`.
    pub fn from_table(
        table: &TableDef,
        at: Option<GeneratorPosition>,
    ) -> Result<Self, ConnectorError> {
        let cfg = config_from(table)?;
        let pace = pace_from(table)?;
        let generator =
            Generator::new(cfg).map_err(|e| ConnectorError::new(&table.name, e.to_string()))?;
        Ok(GeneratorSource::new(generator, pace, at))
    }
}

/// The generator thread: batches until the generator ends or the pipeline hangs up.
fn run_ahead(
    mut generator: Generator,
    tx: &SyncSender<Result<RecordBatch, String>>,
    count: &AtomicU64,
) {
    while let Some(batch) = generator.next_batch(AHEAD_BATCH) {
        if let Ok(b) = &batch {
            count.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
        }
        if tx.send(batch.map_err(|e| e.to_string())).is_err() {
            return;
        }
    }
}

impl Source for GeneratorSource {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }

    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
        let polled = self.poll_inner(max_rows);
        if let Ok(Poll::Data { rows, .. }) = &polled {
            self.given += rows.num_rows() as u64;
        }
        polled
    }

    fn position(&self) -> String {
        format!("{} transactions given", self.given)
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::to_value(GeneratorPosition { given: self.given }).unwrap_or_default()
    }
}

impl GeneratorSource {
    fn poll_inner(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
        match &mut self.mode {
            Mode::Ahead(rx) => match rx.recv() {
                Ok(Ok(rows)) => Ok(Poll::Data { rows, dead: None }),
                Ok(Err(e)) => Err(ConnectorError::new("generator", e)),
                Err(_) => Ok(Poll::End),
            },
            Mode::Paced {
                generator,
                rate,
                started,
                base,
            } => {
                let started = *started.get_or_insert_with(Instant::now);
                let due = (started.elapsed().as_secs_f64() * *rate) as u64;
                let ahead = due.saturating_sub(generator.emitted().saturating_sub(*base));
                if ahead == 0 {
                    return Ok(Poll::Idle);
                }
                let want = max_rows.max(1).min(ahead as usize);
                let Some(batch) = generator.next_batch(want) else {
                    return Ok(Poll::End);
                };
                let rows = batch.map_err(|e| ConnectorError::new("generator", e))?;
                self.emitted
                    .fetch_add(rows.num_rows() as u64, Ordering::Relaxed);
                Ok(Poll::Data { rows, dead: None })
            }
        }
    }
}
