//! `stdout` sink: rows as JSON lines (one object per row) or as a pretty table, for quick
//! looks at a pipeline's output.

use std::io::Write;

use arrow::array::RecordBatch;
use arrow::error::ArrowError;
use futures::future::BoxFuture;
use txguard_engine::connector::{ConnectorError, Prepared, Sink};
use txguard_engine::sql::{ConnectorSpec, Role, TableDef};

pub mod options;

/// `connector = 'stdout'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "stdout",
    roles: &[Role::Sink],
    options: options::OPTIONS,
    metadata: &[],
    decodes: false,
    check_table: None,
};

/// The connector.
pub struct StdoutConnector;

impl txguard_engine::connector::Connector for StdoutConnector {
    fn spec(&self) -> ConnectorSpec {
        SPEC
    }

    fn open_sink<'a>(
        &'a self,
        table: &'a TableDef,
        _ctx: txguard_engine::connector::SinkContext,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, ConnectorError>> {
        Box::pin(async move {
            Ok(Box::new(StdoutSink::from_table(std::io::stdout(), table)?) as Box<dyn Sink>)
        })
    }
}

/// How rows are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
}

/// Writes batches to any `Write` (standard output in a pipeline).
pub struct StdoutSink<W: Write> {
    out: W,
    format: Format,
}

impl<W: Write> StdoutSink<W> {
    pub fn new(out: W, format: Format) -> Self {
        StdoutSink { out, format }
    }

    /// The sink a table's options describe.
    pub fn from_table(out: W, table: &TableDef) -> Result<Self, ConnectorError> {
        Ok(StdoutSink::new(out, options::format(table)?))
    }

    /// Formats the whole batch first and writes it with one `write_all`: standard output
    /// is locked for that call, so the lines of two stdout sinks never interleave.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let mut text = Vec::new();
        match self.format {
            Format::Json => {
                let mut w = arrow::json::LineDelimitedWriter::new(&mut text);
                w.write(batch)?;
                w.finish()?;
            }
            Format::Table => {
                let t = arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?;
                writeln!(text, "{t}").map_err(|e| ArrowError::IoError(e.to_string(), e))?;
            }
        }
        self.out
            .write_all(&text)
            .map_err(|e| ArrowError::IoError(e.to_string(), e))
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> Sink for StdoutSink<W> {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        let r = StdoutSink::write(self, &batch).map_err(|e| ConnectorError::new("stdout", e));
        Box::pin(async move { r })
    }

    /// At least once: rows are printed as they come and flushed here.
    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        let r = self
            .out
            .flush()
            .map(|()| Prepared::default())
            .map_err(|e| ConnectorError::new("stdout", e));
        Box::pin(async move { r })
    }

    fn commit(&mut self, _: u64, _: Prepared) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("user_id", DataType::Utf8, false),
                Field::new("score", DataType::Float64, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["u1", "u2"])),
                Arc::new(Float64Array::from(vec![Some(0.5), None])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn json_lines_and_table() {
        let mut s = StdoutSink::new(Vec::new(), Format::Json);
        s.write(&batch()).expect("write");
        let out = String::from_utf8(s.into_inner()).expect("utf8");
        assert_eq!(
            out,
            "{\"user_id\":\"u1\",\"score\":0.5}\n{\"user_id\":\"u2\"}\n"
        );
        let mut s = StdoutSink::new(Vec::new(), Format::Table);
        s.write(&batch()).expect("write");
        let out = String::from_utf8(s.into_inner()).expect("utf8");
        assert!(out.contains("| user_id | score |"), "{out}");
    }
}
