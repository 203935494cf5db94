//! `delta` sink: appends rows to a Delta Lake table (Parquet files plus the `_delta_log`),
//! creating it with the sink table's columns on first use. Rows are encoded to Parquet as they
//! arrive; each checkpoint epoch is written in two phases: [`Sink::prepare`] finishes the
//! epoch's data files (in the table's folder, not yet in its log) and hands back their add
//! actions, which the checkpoint keeps; [`Sink::commit`] makes them one Delta commit carrying
//! the application transaction `txn(app_id = "txguard-<table>-<writer>", version = epoch)`,
//! the writer being the run's checkpoint folder's id (a run without checkpoints commits
//! without one), so each member of a consumer group finds its own epochs. A restart
//! that finds a checkpoint whose epoch the table lacks commits the same files then; one that
//! finds the epoch in the log does nothing, so no epoch lands twice or goes missing. Local paths, `memory://`, S3
//! (`s3://bucket/path`, or any S3-compatible store through `AWS_ENDPOINT_URL`), Azure
//! (`az://container/path`, `abfss://…`) and Google Cloud Storage (`gs://bucket/path`),
//! configured by `storage_options` and the usual `AWS_*` / `AZURE_*` / `GOOGLE_*` variables.

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use futures::FutureExt;
use futures::future::BoxFuture;
use txguard_engine::connector::{ConnectorError, Prepared, Sink, SinkContext};
use txguard_engine::sql::{ConnectorSpec, Role, TableDef};

pub mod options;

pub use options::DeltaOptions;

/// `connector = 'delta'`: a sink (the default) or, with `type = 'source'`, a replay of a
/// local table's rows (its current version), its Parquet read by column name.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "delta",
    roles: &[Role::Sink, Role::Source],
    options: options::OPTIONS,
    metadata: &[],
    decodes: false,
    check_table: Some(check_table),
};

fn check_table(t: &TableDef, _: Role) -> Result<(), (txguard_engine::sql::Loc, String)> {
    DeltaOptions::from_table(t)
        .map(drop)
        .map_err(|e| e.located())
}

/// The connector.
pub struct DeltaConnector;

impl txguard_engine::connector::Connector for DeltaConnector {
    fn spec(&self) -> ConnectorSpec {
        SPEC
    }

    fn open_source<'a>(
        &'a self,
        table: &'a TableDef,
        resume: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<Box<dyn txguard_engine::connector::Source>, ConnectorError>> {
        Box::pin(async move {
            let mut source = DeltaSource::open(table).await?;
            if let Some(at) = crate::resume_at::<DeltaPosition>(table, resume)? {
                source.seek(&at)?;
            }
            // Parquet is read on a thread of its own, beside the operators (batch_rows at
            // a time: the source sizes its own batches).
            let ahead = crate::read_ahead::ReadAhead::spawn(&table.name, Box::new(source), 0)?;
            Ok(Box::new(ahead) as Box<dyn txguard_engine::connector::Source>)
        })
    }

    fn open_sink<'a>(
        &'a self,
        table: &'a TableDef,
        ctx: SinkContext,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, ConnectorError>> {
        Box::pin(async move { Ok(Box::new(DeltaSink::open(table, ctx).await?) as Box<dyn Sink>) })
    }

    fn location(&self, table: &TableDef) -> Option<String> {
        table.text(&options::PATH)
    }
}

/// A Delta table as a source: the Parquet files of its current version, oldest first, each
/// read like a Parquet `file` source (the declared columns by name, straight into Arrow;
/// positions `file row N`). Local tables.
pub struct DeltaSource {
    files: std::collections::VecDeque<std::path::PathBuf>,
    current: Option<crate::file::FileSource>,
    /// Files read to their end.
    files_done: usize,
    batch_rows: usize,
    label: String,
    name: String,
    declared: arrow::datatypes::SchemaRef,
}

impl DeltaSource {
    pub async fn open(table: &TableDef) -> Result<Self, ConnectorError> {
        let opts = DeltaOptions::from_table(table)?;
        let (location, batch_rows) = (opts.path, opts.batch_rows);
        let err = |e: &dyn std::fmt::Display| delta_err(&table.name, &location, e);
        let url = deltalake::ensure_table_uri(&location).map_err(|e| err(&e))?;
        let mut t = DeltaTable::try_from_url(url).await.map_err(|e| err(&e))?;
        t.load().await.map_err(|e| err(&e))?;
        let mut files = std::collections::VecDeque::new();
        for uri in t.get_file_uris().map_err(|e| err(&e))? {
            // Local tables list plain paths; file:// URLs are local too; others are remote.
            let path = match url::Url::parse(&uri) {
                Ok(u) if u.scheme() == "file" => u.to_file_path().ok(),
                Ok(u) if u.scheme().len() > 1 => None,
                _ => Some(std::path::PathBuf::from(&uri)),
            }
            .ok_or_else(|| err(&format!("{uri}: only local tables can be read as a source")))?;
            files.push_back(path);
        }
        // The log lists files in no useful order; files written later hold later events
        // (the sink commits in event-time order), so replay by modification time.
        let mut timed: Vec<(std::time::SystemTime, std::path::PathBuf)> = files
            .into_iter()
            .map(|f| {
                let t = std::fs::metadata(&f)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
                (t, f)
            })
            .collect();
        timed.sort();
        let files: std::collections::VecDeque<_> = timed.into_iter().map(|(_, f)| f).collect();
        let declared = table.payload_schema();
        // A table without a declared column fails now, not at its first file.
        if let Some(first) = files.front() {
            crate::file::FileSource::open_parquet(first, 1, &declared, &table.name)
                .map_err(|e| err(&e))?;
        }
        Ok(DeltaSource {
            files,
            current: None,
            files_done: 0,
            batch_rows,
            label: location,
            name: table.name.clone(),
            declared,
        })
    }
}

/// Where a Delta source is: files (in replay order) read to their end, and rows of the next.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeltaPosition {
    pub files_done: usize,
    pub row: u64,
}

impl DeltaSource {
    fn open_file(&self, f: &std::path::Path) -> Result<crate::file::FileSource, ConnectorError> {
        crate::file::FileSource::open_parquet(f, self.batch_rows, &self.declared, &self.name)
            .map_err(|e| ConnectorError::new(&self.label, e))
    }

    /// Moves a source just opened to `at` (the table must not have lost files since).
    fn seek(&mut self, at: &DeltaPosition) -> Result<(), ConnectorError> {
        if at.files_done > self.files.len() {
            return Err(ConnectorError::new(
                &self.name,
                format!(
                    "the checkpoint has read {} files of {}, which now has {}",
                    at.files_done,
                    self.label,
                    self.files.len()
                ),
            ));
        }
        self.files.drain(..at.files_done);
        self.files_done = at.files_done;
        if at.row > 0
            && let Some(f) = self.files.pop_front()
        {
            let mut cur = self.open_file(&f)?;
            let file_at = crate::file::FilePosition {
                path: f.display().to_string(),
                line: at.row,
                byte: None,
            };
            cur.seek(&file_at)
                .map_err(|e| ConnectorError::new(&self.label, e))?;
            self.current = Some(cur);
        }
        Ok(())
    }
}

impl txguard_engine::connector::Source for DeltaSource {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.declared.clone()
    }

    fn poll(&mut self, max_rows: usize) -> Result<txguard_engine::connector::Poll, ConnectorError> {
        loop {
            if self.current.is_none() {
                let Some(f) = self.files.pop_front() else {
                    return Ok(txguard_engine::connector::Poll::End);
                };
                self.current = Some(self.open_file(&f)?);
            }
            if let Some(cur) = self.current.as_mut() {
                match cur.poll(max_rows)? {
                    txguard_engine::connector::Poll::End => {
                        self.current = None;
                        self.files_done += 1;
                    }
                    other => return Ok(other),
                }
            }
        }
    }

    fn checkpoint(&self) -> serde_json::Value {
        let row = self.current.as_ref().map_or(0, |c| c.at().line);
        serde_json::to_value(DeltaPosition {
            files_done: self.files_done,
            row,
        })
        .unwrap_or_default()
    }

    fn position(&self) -> String {
        match &self.current {
            Some(c) => c.position(),
            None => format!("{} ({} files left)", self.label, self.files.len()),
        }
    }
}

/// Appends to one Delta table.
pub struct DeltaSink {
    name: String,
    location: String,
    table: DeltaTable,
    schema: SchemaRef,
    writer: Option<RecordBatchWriter>,
    /// With a writer id: the application id its commits carry.
    app_id: Option<String>,
    last_epoch: Option<u64>,
}

fn delta_err(table: &str, location: &str, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::new(table, format!("delta table at {location}: {e}"))
}

/// Two Arrow types the same as Delta stores them (Delta timestamps are UTC microseconds).
fn same_type(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Timestamp(ua, _), DataType::Timestamp(ub, _)) => ua == ub,
        _ => a == b,
    }
}

/// Columns unique per row (ids, raw payloads): dictionary-encoding them is wasted work.
const UNIQUE_COLUMNS: [&str; 3] = ["transaction_id", "raw", "position"];

/// Snappy Parquet, dictionary encoding except for columns unique per row.
fn writer_properties(schema: &Schema) -> WriterProperties {
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for f in schema.fields() {
        if UNIQUE_COLUMNS.contains(&f.name().as_str()) {
            b = b.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), false);
        }
    }
    b.build()
}

impl DeltaSink {
    /// Opens (or creates) the table at the sink table's `path` for rows of `ctx.schema`.
    pub async fn open(table: &TableDef, ctx: SinkContext) -> Result<Self, ConnectorError> {
        let opts = DeltaOptions::from_table(table)?;
        DeltaSink::open_at(&table.name, &opts.path, ctx, opts.storage_options).await
    }

    /// Opens (or creates) the table at `location` with object-store settings `storage`.
    pub async fn open_at(
        name: &str,
        location: &str,
        ctx: SinkContext,
        storage: Vec<(String, String)>,
    ) -> Result<Self, ConnectorError> {
        let SinkContext { schema, writer } = ctx;
        let err = |e: &dyn std::fmt::Display| delta_err(name, location, e);
        let url = deltalake::ensure_table_uri(location).map_err(|e| err(&e))?;
        let mut table = deltalake::DeltaTableBuilder::from_url(url)
            .and_then(|b| {
                b.with_storage_options(storage.into_iter().collect())
                    .build()
            })
            .map_err(|e| err(&e))?;
        // A location without a log (a new directory or S3 prefix) is a new table: it is
        // created below without first asking deltalake to load it (which logs an error for
        // the missing log).
        if table
            .verify_deltatable_existence()
            .await
            .map_err(|e| err(&e))?
        {
            table.load().await.map_err(|e| err(&e))?;
        }
        if table.version().is_none() {
            let delta_schema: StructType = schema
                .as_ref()
                .try_into_kernel()
                .map_err(|e| err(&format!("columns cannot be stored in Delta: {e}")))?;
            table = table
                .create()
                .with_table_name(name)
                .with_columns(delta_schema.fields().cloned())
                .with_comment(format!("written by txguard (sink table {name})"))
                .await
                .map_err(|e| err(&format!("cannot create the table: {e}")))?;
            tracing::info!(table = name, location, "created Delta table");
        } else {
            let found: Schema = table
                .snapshot()
                .map_err(|e| err(&e))?
                .schema()
                .as_ref()
                .try_into_arrow()
                .map_err(|e| err(&e))?;
            let matches =
                found.fields().len() == schema.fields().len()
                    && found.fields().iter().zip(schema.fields()).all(|(a, b)| {
                        a.name() == b.name() && same_type(a.data_type(), b.data_type())
                    });
            if !matches {
                let cols = |s: &Schema| {
                    s.fields()
                        .iter()
                        .map(|f| format!("{} {}", f.name(), f.data_type()))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(err(&format!(
                    "the existing table has columns ({}) but the pipeline writes ({}); \
                     point path at a new location or remove the old table",
                    cols(&found),
                    cols(&schema)
                )));
            }
        }
        let app_id = writer.map(|w| format!("txguard-{name}-{w}"));
        let last_epoch = match &app_id {
            None => None,
            Some(id) => table
                .snapshot()
                .map_err(|e| err(&e))?
                .transaction_version(table.log_store().as_ref(), id)
                .await
                .map_err(|e| err(&e))?
                .and_then(|v| u64::try_from(v).ok()),
        };
        Ok(DeltaSink {
            name: name.to_string(),
            location: location.to_string(),
            table,
            schema,
            writer: None,
            app_id,
            last_epoch,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> ConnectorError {
        delta_err(&self.name, &self.location, e)
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        if self.writer.is_none() {
            self.writer = Some(
                RecordBatchWriter::for_table(&self.table)
                    .map_err(|e| self.err(e))?
                    .with_writer_properties(writer_properties(&self.schema)),
            );
        }
        let batch = if batch.schema().fields() == self.schema.fields() {
            batch
        } else {
            RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
                .map_err(|e| self.err(e))?
        };
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        w.write(batch)
            .await
            .map_err(|e| delta_err(&self.name, &self.location, e))
    }

    /// Phase one: the epoch's data files finished; their add actions, for the checkpoint.
    async fn prepare_epoch(&mut self) -> Result<Prepared, ConnectorError> {
        let Some(mut w) = self.writer.take() else {
            return Ok(Prepared::default());
        };
        let adds = w.flush().await.map_err(|e| self.err(e))?;
        if adds.is_empty() {
            return Ok(Prepared::default());
        }
        let meta = serde_json::to_value(&adds).map_err(|e| self.err(e))?;
        Ok(Prepared {
            meta,
            data: Vec::new(),
        })
    }

    /// Phase two: the prepared files as one commit with `txn(app_id, epoch)`, unless the
    /// log has that epoch already.
    async fn commit_epoch(&mut self, epoch: u64, prepared: Prepared) -> Result<(), ConnectorError> {
        if prepared.meta.is_null() {
            return Ok(());
        }
        if self.last_epoch.is_some_and(|l| epoch <= l) {
            tracing::debug!(table = %self.name, epoch, "epoch already committed; skipped");
            return Ok(());
        }
        let adds: Vec<Add> = serde_json::from_value(prepared.meta).map_err(|e| {
            self.err(format!(
                "the prepared files of epoch {epoch} do not read back: {e}"
            ))
        })?;
        let mut props = CommitProperties::default();
        if let Some(id) = &self.app_id {
            props = props.with_application_transaction(Transaction::new(
                id,
                i64::try_from(epoch).unwrap_or(i64::MAX),
            ));
        }
        let snapshot = self.table.snapshot().map_err(|e| self.err(e))?;
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: None,
            predicate: None,
        };
        let version = CommitBuilder::from(props)
            .with_actions(adds.into_iter().map(Action::Add).collect())
            .build(Some(snapshot), self.table.log_store(), operation)
            .await
            .map_err(|e| self.err(format!("commit of epoch {epoch} failed: {e}")))?
            .version();
        self.table.update_state().await.map_err(|e| self.err(e))?;
        self.last_epoch = Some(epoch);
        tracing::debug!(table = %self.name, epoch, version, "committed");
        Ok(())
    }
}

impl Sink for DeltaSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        self.write_batch(batch).boxed()
    }

    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        self.prepare_epoch().boxed()
    }

    fn commit(
        &mut self,
        epoch: u64,
        prepared: Prepared,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        self.commit_epoch(epoch, prepared).boxed()
    }

    fn last_epoch(&self) -> Option<u64> {
        self.last_epoch
    }

    fn exactly_once(&self) -> bool {
        self.app_id.is_some()
    }
}

#[cfg(test)]
mod tests;
