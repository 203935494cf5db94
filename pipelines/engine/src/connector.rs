//! The one interface every source and sink implements (generator, file, Delta, Kafka,
//! Postgres, stdout), and the error they report. Sources are polled synchronously by the
//! runtime, say where they are as a resumable position ([`Source::checkpoint`]) and are
//! reopened there after a restart; sinks run on their own task and deliver each checkpoint
//! epoch in two phases ([`Sink::prepare`], then [`Sink::commit`] once the checkpoint that
//! holds what `prepare` returned is durable), which is where exactly-once delivery hooks in.

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;

use crate::sql::{ConnectorSpec, OptionError, TableDef};

/// A connector failed: which table, and what to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{table}: {message}")]
pub struct ConnectorError {
    pub table: String,
    pub message: String,
}

impl ConnectorError {
    pub fn new(table: impl Into<String>, message: impl std::fmt::Display) -> Self {
        ConnectorError {
            table: table.into(),
            message: message.to_string(),
        }
    }
}

impl From<OptionError> for ConnectorError {
    fn from(e: OptionError) -> Self {
        ConnectorError {
            table: e.table.clone(),
            message: e.to_string(),
        }
    }
}

/// A connector: what it accepts in `WITH (...)` and how it opens the sources and sinks a
/// table declares. Each connector folder implements it once; the connectors crate lists them
/// in one place, so a new connector is one folder and one line.
pub trait Connector: Sync {
    /// Its name, roles, options and metadata fields, for validating pipeline files.
    fn spec(&self) -> ConnectorSpec;

    /// The source `table` declares, at its start or, after a restart, at `resume` (what its
    /// [`Source::checkpoint`] said in the checkpoint being restored). A source that cannot
    /// resume must refuse a `resume` rather than start over.
    fn open_source<'a>(
        &'a self,
        table: &'a TableDef,
        _resume: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, ConnectorError>> {
        let name = self.spec().name;
        Box::pin(async move {
            Err(ConnectorError::new(
                &table.name,
                format!("connector {name} cannot be a source"),
            ))
        })
    }

    /// The sink `table` declares, for rows of `ctx.schema`.
    fn open_sink<'a>(
        &'a self,
        table: &'a TableDef,
        _ctx: SinkContext,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, ConnectorError>> {
        let name = self.spec().name;
        Box::pin(async move {
            Err(ConnectorError::new(
                &table.name,
                format!("connector {name} cannot be a sink"),
            ))
        })
    }

    /// Where a sink table's rows go, for the run summary and the console (a Delta table's
    /// path, a Postgres table with its server; never a password).
    fn location(&self, _table: &TableDef) -> Option<String> {
        None
    }
}

/// What a source had when polled.
#[derive(Debug)]
pub enum Poll {
    /// Events in arrival order (in [`Source::schema`]) and the messages it rejected
    /// (dead-letter schema), either possibly empty.
    Data {
        rows: RecordBatch,
        dead: Option<RecordBatch>,
    },
    /// Nothing right now (a paced generator ahead of schedule, a quiet topic).
    Idle,
    /// No more input, ever.
    End,
}

/// A source of events.
pub trait Source: Send {
    /// The schema of the rows it gives; the runtime picks the table's declared columns from
    /// it by name.
    fn schema(&self) -> SchemaRef;

    /// Up to about `max_rows` rows.
    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError>;

    /// Where it is, for logs and dead letters (e.g. `line 1200`, `partition 3 offset 991`).
    fn position(&self) -> String;

    /// Where it is as a position it can be reopened at ([`Connector::open_source`]'s
    /// `resume`): just after every row and dead letter it has given so far. `Null`: it
    /// cannot resume (a restart begins again, which the runtime refuses when restoring).
    fn checkpoint(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The event time its input has reached everywhere, for a source whose input has
    /// several parts read at different paces (Kafka partitions): no row it gives later will
    /// be earlier than this in a part that is not caught up. The runtime's watermark waits
    /// for it (`min(newest seen, frontier) - lateness`). `None`: no such constraint.
    fn frontier(&mut self) -> Option<i64> {
        None
    }

    /// Per partition of its input (Kafka), how many messages it is behind the partition's
    /// end, as last reported (for `/metrics`); empty for a source without partitions.
    fn partition_lag(&self) -> Vec<(i32, i64)> {
        Vec::new()
    }

    /// A checkpoint barrier for `epoch`: of the rows this source has given, those with event
    /// time before `released_before` (all of them, when `None`) are in the dataflow; the rest
    /// wait in the runtime's event-time buffer. A source with offsets records here how far
    /// its input is fully handed over.
    fn barrier(&mut self, _epoch: u64, _released_before: Option<i64>) {}

    /// Every sink has made `epoch` durable: what [`Source::barrier`] recorded for it (or an
    /// earlier epoch) may be acknowledged upstream, e.g. as committed Kafka offsets.
    fn committed(&mut self, _epoch: u64) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// What a sink is opened with, besides its table.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The rows it will be given.
    pub schema: SchemaRef,
    /// The run's writer id when it keeps checkpoints ([`crate::checkpoint::Claim::writer`]):
    /// an exactly-once sink records the epochs it commits under it, so that runs writing one
    /// destination each find their own. `None`: no checkpoint will replay an epoch, and the
    /// sink keeps no record (its epochs are delivered once per run, at least once overall).
    pub writer: Option<String>,
}

impl SinkContext {
    /// For rows of `schema`, without a writer id.
    pub fn new(schema: SchemaRef) -> Self {
        SinkContext {
            schema,
            writer: None,
        }
    }

    /// The same, recording epochs as `writer`.
    pub fn with_writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = Some(writer.into());
        self
    }
}

/// What a sink's first phase left for its second ([`Sink::prepare`] → [`Sink::commit`]):
/// kept in the checkpoint, so that a run that stopped between the two can finish the commit
/// after a restart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prepared {
    /// Small, kept in the checkpoint's manifest (Delta: the add actions of the data files
    /// written during the epoch).
    pub meta: serde_json::Value,
    /// Kept in a file of the checkpoint (Postgres: the epoch's rows as a `COPY` stream).
    pub data: Vec<u8>,
}

impl Prepared {
    pub fn is_empty(&self) -> bool {
        self.meta.is_null() && self.data.is_empty()
    }
}

/// A destination for rows, written in epochs.
pub trait Sink: Send {
    /// Takes rows (in the sink table's declared schema). They may be buffered until
    /// [`Sink::prepare`].
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Phase one of epoch `epoch` (epochs only grow): everything written since the last
    /// call is made durable where [`Sink::commit`] can make it visible, or handed back to be
    /// kept in the checkpoint. A sink that cannot hold rows back delivers them here (at
    /// least once).
    fn prepare(&mut self, epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>>;

    /// Phase two: makes `prepared` visible as epoch `epoch`, atomically with the record of
    /// that epoch, and once: after [`Sink::last_epoch`] has reached `epoch` it does nothing.
    /// Called after the checkpoint holding `prepared` is durable, and again when a restart
    /// restores that checkpoint.
    fn commit(
        &mut self,
        epoch: u64,
        prepared: Prepared,
    ) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// The last epoch this sink committed as its writer ([`SinkContext::writer`]), in this
    /// run or an earlier one, if it records one (a Delta table's application transaction, a
    /// Postgres bookkeeping row).
    fn last_epoch(&self) -> Option<u64> {
        None
    }

    /// Whether a replay after a restart reaches the destination once (the commit and its
    /// epoch land together) or possibly again (at least once).
    fn exactly_once(&self) -> bool {
        false
    }

    /// Both phases at once, without a checkpoint between them (tests, benchmarks, a run
    /// without checkpoints).
    fn commit_now(&mut self, epoch: u64) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            let prepared = self.prepare(epoch).await?;
            self.commit(epoch, prepared).await
        })
    }
}

/// A sink that keeps every batch it is given, in memory: a view's rows for training, and
/// tests. Clones share the batches.
#[derive(Debug, Clone, Default)]
pub struct CollectSink(Arc<Mutex<Vec<RecordBatch>>>);

impl CollectSink {
    /// Everything received so far.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Everything received so far, leaving nothing behind.
    pub fn take(&self) -> Vec<RecordBatch> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl Sink for CollectSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let r = self.0.lock().map(|mut v| v.push(batch)).map_err(|_| {
            ConnectorError::new("collect", "a writer panicked while holding the rows")
        });
        Box::pin(async move { r })
    }

    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        Box::pin(async { Ok(Prepared::default()) })
    }

    fn commit(&mut self, _: u64, _: Prepared) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
}
