//! `file` source: replays a JSON-lines file (what `txguard generate` and the Python producers
//! write) or a Parquet file (what pandas' `to_parquet` writes) through the event-contract
//! decoder, in file order; bad rows become dead letters positioned `path:line` (JSON lines) or
//! `path row N` (Parquet). Parquet rows go through the same decoder as JSON, so aliases
//! (`ts`, `event_time`), integer ids, naive timestamps and every contract check are the same.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::decode::Decoder;
use txguard_engine::event::transaction_schema;
use txguard_engine::sql::{ConnectorSpec, OptionKind, OptionSpec, Role, TableDef};

/// `connector = 'file'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "file",
    roles: &[Role::Source],
    options: &[
        OptionSpec {
            key: "path",
            kind: OptionKind::Text,
            required: true,
            help: "the JSON-lines or Parquet file to replay",
        },
        OptionSpec {
            key: "format",
            kind: OptionKind::OneOf(&["json", "parquet"]),
            required: false,
            help: "json (one transaction object per line) or parquet; default from the file name",
        },
        OptionSpec {
            key: "batch_rows",
            kind: OptionKind::Integer,
            required: false,
            help: "lines decoded per batch (default 8192)",
        },
    ],
    metadata: &[],
};

/// Errors reading the file (bad lines are dead letters, not errors).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("table {table}: {message}")]
    Option { table: String, message: String },
}

/// Decoded batches of a JSON-lines or Parquet file.
pub struct FileSource {
    path: PathBuf,
    label: String,
    input: Input,
    /// Lines (JSON) or rows (Parquet) read so far.
    line_no: u64,
    batch_rows: usize,
    decoder: Decoder,
}

enum Input {
    Lines(std::io::Lines<BufReader<File>>),
    Parquet(ParquetRecordBatchReader),
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("parq"))
}

impl FileSource {
    /// Opens `path`, Parquet if its name ends in `.parquet`, else JSON lines.
    pub fn open(path: impl AsRef<Path>, batch_rows: usize) -> Result<Self, FileError> {
        let parquet = is_parquet(path.as_ref());
        FileSource::open_as(path, batch_rows, parquet)
    }

    /// Opens `path` as Parquet or as JSON lines.
    pub fn open_as(
        path: impl AsRef<Path>,
        batch_rows: usize,
        parquet: bool,
    ) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|error| FileError::Io {
            path: path.clone(),
            error,
        })?;
        let input = if parquet {
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(batch_rows.max(1)).build())
                .map_err(|e| FileError::Io {
                    path: path.clone(),
                    error: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
                })?;
            Input::Parquet(reader)
        } else {
            Input::Lines(BufReader::with_capacity(1 << 20, file).lines())
        };
        Ok(FileSource {
            label: path.display().to_string(),
            path,
            input,
            line_no: 0,
            batch_rows: batch_rows.max(1),
            decoder: Decoder::default(),
        })
    }

    /// The source a table's options describe.
    pub fn from_table(table: &TableDef) -> Result<Self, FileError> {
        let opt = |k: &str| table.option(k).map(|o| o.value.as_text());
        let path = opt("path").ok_or_else(|| FileError::Option {
            table: table.name.clone(),
            message: "needs option path".into(),
        })?;
        let batch_rows = match opt("batch_rows") {
            Some(v) => v.parse().map_err(|_| FileError::Option {
                table: table.name.clone(),
                message: format!("batch_rows {v} is not a whole number"),
            })?,
            None => 8192,
        };
        match opt("format").as_deref() {
            Some("parquet") => FileSource::open_as(path, batch_rows, true),
            Some(_) => FileSource::open_as(path, batch_rows, false),
            None => FileSource::open(path, batch_rows),
        }
    }

    /// The next batch of events and the dead letters among the same lines; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<(RecordBatch, RecordBatch)>, FileError> {
        let lines = match &mut self.input {
            Input::Lines(lines) => lines,
            Input::Parquet(reader) => {
                let Some(batch) = reader.next() else {
                    return Ok(None);
                };
                let batch = batch?;
                // Each row as a JSON object, through the same decoder as JSON lines.
                let mut buf = Vec::new();
                {
                    let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
                    w.write(&batch)?;
                    w.finish()?;
                }
                for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    self.line_no += 1;
                    let position = format!("{} row {}", self.label, self.line_no);
                    self.decoder.push(line, "file", &position);
                }
                return Ok(Some(self.decoder.flush()?));
            }
        };
        let mut taken = 0;
        while taken < self.batch_rows {
            let Some(line) = lines.next() else { break };
            let line = line.map_err(|error| FileError::Io {
                path: self.path.clone(),
                error,
            })?;
            self.line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            let position = format!("{}:{}", self.label, self.line_no);
            self.decoder.push(line.as_bytes(), "file", &position);
            taken += 1;
        }
        if taken == 0 {
            return Ok(None);
        }
        Ok(Some(self.decoder.flush()?))
    }
}

impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }

    fn poll(&mut self, _max_rows: usize) -> Result<Poll, ConnectorError> {
        match self.next_batch() {
            Ok(Some((rows, dead))) => Ok(Poll::Data {
                rows,
                dead: Some(dead),
            }),
            Ok(None) => Ok(Poll::End),
            Err(e) => Err(ConnectorError::new(&self.label, e)),
        }
    }

    fn position(&self) -> String {
        format!("{}:{}", self.label, self.line_no)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;

    use super::*;

    #[test]
    fn replays_lines_and_positions_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tx.jsonl");
        let mut text = String::new();
        for i in 0..25 {
            if i % 10 == 3 {
                text.push_str("{\"transaction_id\": \"broken\"\n");
            } else {
                text.push_str(&format!(
                    "{{\"transaction_id\": \"t{i}\", \"user_id\": \"u\", \"amount\": {i}, \"timestamp\": \"2026-01-01T00:00:{i:02}\"}}\n"
                ));
            }
            if i == 12 {
                text.push('\n');
            }
        }
        std::fs::write(&p, text).expect("write");
        let mut src = FileSource::open(&p, 10).expect("open");
        let (mut rows, mut dead, mut batches) = (0, Vec::new(), 0);
        while let Some((ok, bad)) = src.next_batch().expect("read") {
            rows += ok.num_rows();
            let pos = bad.column(1).as_string::<i32>();
            dead.extend((0..bad.num_rows()).map(|i| pos.value(i).to_string()));
            batches += 1;
        }
        assert_eq!(batches, 3);
        assert_eq!(rows, 22);
        let label = p.display().to_string();
        assert_eq!(
            dead,
            [4, 15, 25].map(|l| format!("{label}:{l}")),
            "line numbers count the blank line"
        );
        let e = FileSource::open(dir.path().join("missing.jsonl"), 10)
            .err()
            .expect("missing file");
        assert!(e.to_string().contains("missing.jsonl: No such file"), "{e}");
    }

    #[test]
    fn replays_parquet_as_pandas_writes_it() {
        use std::sync::Arc;

        use arrow::array::{Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        use deltalake::parquet::arrow::ArrowWriter;

        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tx.parquet");
        // pandas: int64 ids, float amounts, naive datetime64[ns] under the alias `ts`.
        let schema = Arc::new(Schema::new(vec![
            Field::new("transaction_id", DataType::Int64, false),
            Field::new("user_id", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![Some("u1"), None, Some("u2")])),
                Arc::new(Float64Array::from(vec![Some(12.5), Some(3.0), Some(-1.0)])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_767_225_600_123_456_000,
                    1_767_225_601_000_000_000,
                    1_767_225_602_000_000_000,
                ])),
            ],
        )
        .expect("batch");
        let mut w = ArrowWriter::try_new(std::fs::File::create(&p).expect("create"), schema, None)
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");

        let mut src = FileSource::open(&p, 100).expect("open");
        let (rows, dead) = src.next_batch().expect("read").expect("a batch");
        assert!(src.next_batch().expect("read").is_none());
        assert_eq!(rows.num_rows(), 1);
        assert_eq!(rows.column(0).as_string::<i32>().value(0), "1");
        let ts = rows
            .column(3)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            ts.value(0),
            1_767_225_600_123_456,
            "naive time is UTC, microseconds kept"
        );
        let pos = dead.column(1).as_string::<i32>();
        let why = dead.column(2).as_string::<i32>();
        let label = p.display().to_string();
        assert_eq!(pos.value(0), format!("{label} row 2"));
        assert!(why.value(0).contains("user_id"), "{}", why.value(0));
        assert_eq!(pos.value(1), format!("{label} row 3"));
        assert!(why.value(1).contains("amount"), "{}", why.value(1));
    }
}
