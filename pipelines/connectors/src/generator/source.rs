//! The generator as a pipeline [`Source`]: transactions straight into Arrow batches of the
//! event contract (no JSON round trip), as fast as possible (on a thread of its own) or paced
//! to `rate` per second of wall-clock time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::event::transaction_schema;
use txguard_engine::sql::TableDef;

use super::{Generated, Generator, config_from, options::pace_from};

/// Generated transactions as Arrow rows of [`transaction_schema`].
pub fn to_batch(events: &[Generated]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = events.len();
    let strings = |f: &dyn Fn(&Generated) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 12);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let floats = |f: &dyn Fn(&Generated) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(n);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut fraud = BooleanBuilder::with_capacity(n);
    for e in events {
        ts.append_value(e.ts_micros);
        fraud.append_option(e.transaction.is_fraud);
    }
    let cols: Vec<ArrayRef> = vec![
        strings(&|e| Some(&e.transaction.transaction_id)),
        strings(&|e| Some(&e.transaction.user_id)),
        floats(&|e| Some(e.transaction.amount)),
        Arc::new(ts.finish()),
        strings(&|e| e.transaction.currency.as_deref()),
        strings(&|e| e.transaction.merchant.as_deref()),
        strings(&|e| e.transaction.category.as_deref()),
        strings(&|e| e.transaction.location.as_deref()),
        strings(&|e| e.transaction.country.as_deref()),
        strings(&|e| e.transaction.device_id.as_deref()),
        strings(&|e| e.transaction.channel.as_deref()),
        floats(&|e| e.transaction.lat),
        floats(&|e| e.transaction.lon),
        Arc::new(fraud.finish()),
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
}

enum Mode {
    Paced {
        generator: Box<Generator>,
        rate: f64,
        started: Option<Instant>,
        buf: Vec<Generated>,
    },
    Ahead(Receiver<Result<RecordBatch, String>>),
}

/// Rows per batch the generator thread makes.
const AHEAD_BATCH: usize = 8192;

impl GeneratorSource {
    pub fn new(generator: Generator, pace: Option<f64>) -> Self {
        let generator = generator.without_text_timestamps();
        let emitted = Arc::new(AtomicU64::new(0));
        let mode = match pace {
            Some(rate) => Mode::Paced {
                generator: Box::new(generator),
                rate,
                started: None,
                buf: Vec::new(),
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
        GeneratorSource { mode, emitted }
    }

    /// The source a table's options describe.
    pub fn from_table(table: &TableDef) -> Result<Self, ConnectorError> {
        let err = |m: String| ConnectorError::new(&table.name, m);
        let cfg = config_from(table).map_err(err)?;
        let pace = pace_from(table).map_err(err)?;
        let generator = Generator::new(cfg).map_err(|e| err(e.to_string()))?;
        Ok(GeneratorSource::new(generator, pace))
    }
}

/// The generator thread: batches until the generator ends or the pipeline hangs up.
fn run_ahead(
    mut generator: Generator,
    tx: &SyncSender<Result<RecordBatch, String>>,
    count: &AtomicU64,
) {
    let mut buf = Vec::with_capacity(AHEAD_BATCH);
    loop {
        buf.clear();
        buf.extend(generator.by_ref().take(AHEAD_BATCH));
        if buf.is_empty() {
            return;
        }
        count.fetch_add(buf.len() as u64, Ordering::Relaxed);
        let batch = to_batch(&buf).map_err(|e| e.to_string());
        if tx.send(batch).is_err() {
            return;
        }
    }
}

impl Source for GeneratorSource {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }

    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
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
                buf,
            } => {
                let started = *started.get_or_insert_with(Instant::now);
                let due = (started.elapsed().as_secs_f64() * *rate) as u64;
                let ahead = due.saturating_sub(generator.emitted());
                if ahead == 0 {
                    return Ok(Poll::Idle);
                }
                let want = max_rows.max(1).min(ahead as usize);
                buf.clear();
                buf.extend(generator.by_ref().take(want));
                if buf.is_empty() {
                    return Ok(Poll::End);
                }
                self.emitted.fetch_add(buf.len() as u64, Ordering::Relaxed);
                let rows = to_batch(buf).map_err(|e| ConnectorError::new("generator", e))?;
                Ok(Poll::Data { rows, dead: None })
            }
        }
    }

    fn position(&self) -> String {
        format!(
            "{} transactions generated",
            self.emitted.load(Ordering::Relaxed)
        )
    }
}
