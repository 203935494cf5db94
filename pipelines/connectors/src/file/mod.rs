//! `file` source: replays a JSON-lines file (what `txguard generate` and the Python producers
//! write) through the event-contract decoder, in file order; bad lines become dead letters
//! positioned `path:line`. (Parquet replay comes next.)

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
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
            help: "the JSON-lines file to replay",
        },
        OptionSpec {
            key: "format",
            kind: OptionKind::OneOf(&["json"]),
            required: false,
            help: "json: one transaction object per line",
        },
        OptionSpec {
            key: "batch_rows",
            kind: OptionKind::Integer,
            required: false,
            help: "lines decoded per batch (default 8192)",
        },
    ],
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

/// Decoded batches of a JSON-lines file.
pub struct FileSource {
    path: PathBuf,
    label: String,
    lines: std::io::Lines<BufReader<File>>,
    line_no: u64,
    batch_rows: usize,
    decoder: Decoder,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>, batch_rows: usize) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|error| FileError::Io {
            path: path.clone(),
            error,
        })?;
        Ok(FileSource {
            label: path.display().to_string(),
            path,
            lines: BufReader::with_capacity(1 << 20, file).lines(),
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
        FileSource::open(path, batch_rows)
    }

    /// The next batch of events and the dead letters among the same lines; `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<(RecordBatch, RecordBatch)>, FileError> {
        let mut taken = 0;
        while taken < self.batch_rows {
            let Some(line) = self.lines.next() else { break };
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
}
