//! `file` source: replays a JSON-lines file (what `txguard generate` and the Python producers
//! write), a file of raw text lines (`format = 'raw_string'`), an Avro object container file
//! (`format = 'avro'`, its records by field name; positions `path record N`), or a Parquet
//! file (what pandas' `to_parquet` writes), in file order. Lines are decoded into the table's declared columns
//! ([`Decoder`]); bad lines become dead letters positioned `path:line`. A blank line (only
//! whitespace) is layout, not a message: it is skipped, and counted in line numbers. Parquet is read as
//! Arrow, straight into the declared columns (by name; the file's types are cast to the
//! declared ones, and a file without a declared column is refused at open); positions are
//! `path row N`.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::SchemaRef;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::arrow::arrow_reader::{
    ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::decode::Decoder;
use txguard_engine::sql::{ConnectorSpec, Role, TableDef};

pub mod options;

pub use options::FileOptions;

/// `connector = 'file'` (and the format options: `format`, `json.aliases`, …).
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "file",
    roles: &[Role::Source],
    options: options::OPTIONS,
    metadata: &[],
    decodes: true,
    check_table: Some(check_table),
};

fn check_table(t: &TableDef, _: Role) -> Result<(), (txguard_engine::sql::Loc, String)> {
    FileOptions::from_table(t)
        .map(drop)
        .map_err(|e| e.located())
}

/// The connector.
pub struct FileConnector;

impl txguard_engine::connector::Connector for FileConnector {
    fn spec(&self) -> ConnectorSpec {
        SPEC
    }

    fn open_source<'a>(
        &'a self,
        table: &'a TableDef,
        resume: Option<&'a serde_json::Value>,
    ) -> futures::future::BoxFuture<'a, Result<Box<dyn Source>, ConnectorError>> {
        Box::pin(async move {
            let mut source =
                FileSource::from_table(table).map_err(|e| ConnectorError::new(&table.name, e))?;
            if let Some(at) = crate::resume_at::<FilePosition>(table, resume)? {
                source
                    .seek(&at)
                    .map_err(|e| ConnectorError::new(&table.name, e))?;
                tracing::info!(table = %table.name, at = %source.position(), "file source resumes");
            }
            // Decoding runs on a thread of its own, beside the operators (batch_rows at a
            // time: the file source sizes its own batches).
            let ahead = crate::read_ahead::ReadAhead::spawn(&table.name, Box::new(source), 0)?;
            Ok(Box::new(ahead) as Box<dyn Source>)
        })
    }
}

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

/// Where a file source is, to resume at: after `line` lines (JSON, text: `byte` bytes in),
/// records (Avro) or rows (Parquet).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilePosition {
    pub path: String,
    pub line: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byte: Option<u64>,
}

/// Batches of a JSON-lines, text-lines or Parquet file.
pub struct FileSource {
    path: PathBuf,
    label: String,
    /// The table's name, the dead letters' `source`.
    source: String,
    input: Input,
    /// Lines (JSON) or rows (Parquet) read so far, and (lines) the bytes they took.
    line_no: u64,
    byte: u64,
    batch_rows: usize,
    schema: SchemaRef,
}

enum Input {
    /// The reader, a line's bytes, the decoder.
    Lines(BufReader<File>, Vec<u8>, Box<Decoder>),
    /// The reader (declared columns only, in file order) and, per declared column, its
    /// index among them.
    Parquet(ParquetRecordBatchReader, Vec<Option<usize>>),
    Avro(
        Box<apache_avro::Reader<'static, BufReader<File>>>,
        Box<Decoder>,
    ),
}

fn is_parquet(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("parq"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
    move |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    }
}

impl FileSource {
    /// A source at the start of `input` (read from `path`), giving rows of `schema`.
    fn reading(
        path: PathBuf,
        source: &str,
        schema: SchemaRef,
        input: Input,
        batch_rows: usize,
    ) -> Self {
        FileSource {
            label: path.display().to_string(),
            source: source.to_string(),
            schema,
            input,
            path,
            line_no: 0,
            byte: 0,
            batch_rows: batch_rows.max(1),
        }
    }

    /// Opens `path` as lines, each decoded by `decoder`; `source` names the table.
    pub fn open_lines(
        path: impl AsRef<Path>,
        batch_rows: usize,
        decoder: Decoder,
        source: &str,
    ) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io(&path))?;
        let schema = decoder.schema();
        let reader = BufReader::with_capacity(1 << 20, file);
        Ok(FileSource::reading(
            path,
            source,
            schema,
            Input::Lines(reader, Vec::new(), Box::new(decoder)),
            batch_rows,
        ))
    }

    /// Opens `path` as an Avro object container file (its writer schema inside), each record
    /// decoded by `decoder`.
    pub fn open_avro(
        path: impl AsRef<Path>,
        batch_rows: usize,
        decoder: Decoder,
        source: &str,
    ) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io(&path))?;
        let reader =
            apache_avro::Reader::new(BufReader::with_capacity(1 << 20, file)).map_err(|e| {
                FileError::Io {
                    path: path.clone(),
                    error: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("not an Avro container file: {e}"),
                    ),
                }
            })?;
        let schema = decoder.schema();
        Ok(FileSource::reading(
            path,
            source,
            schema,
            Input::Avro(Box::new(reader), Box::new(decoder)),
            batch_rows,
        ))
    }

    /// Opens `path` as Parquet, reading the columns of `declared` (by name). A nullable
    /// declared column the file lacks reads as NULL (a table's older files lack its newer
    /// columns); a NOT NULL one, or one the file holds in a type that cannot be cast, is an
    /// error.
    pub fn open_parquet(
        path: impl AsRef<Path>,
        batch_rows: usize,
        declared: &SchemaRef,
        source: &str,
    ) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(io(&path))?;
        let bad = |e: String| FileError::Io {
            path: path.clone(),
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
        let file_schema = builder.schema().clone();
        let mut roots: Vec<Option<usize>> = Vec::new();
        for f in declared.fields() {
            let Ok(i) = file_schema.index_of(f.name()) else {
                if f.is_nullable() {
                    roots.push(None);
                    continue;
                }
                return Err(bad(format!(
                    "the table declares column {} but the Parquet file has none; it has {}",
                    f.name(),
                    txguard_engine::decode::column_list(&file_schema)
                )));
            };
            let from = file_schema.field(i).data_type();
            if !arrow::compute::can_cast_types(from, f.data_type()) {
                return Err(bad(format!(
                    "column {}: the Parquet file holds {from}, which does not convert to {}",
                    f.name(),
                    f.data_type()
                )));
            }
            roots.push(Some(i));
        }
        let mut sorted: Vec<usize> = roots.iter().flatten().copied().collect();
        sorted.sort_unstable();
        sorted.dedup();
        // The reader gives the projected columns in file order; `order` puts them in the
        // declared order (`None`: not in the file).
        let order: Vec<Option<usize>> = roots
            .iter()
            .map(|r| r.and_then(|r| sorted.iter().position(|s| *s == r)))
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), sorted);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let given = reader.schema();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(
            order
                .iter()
                .zip(declared.fields())
                .map(|(o, f)| match o {
                    Some(i) => given.field(*i).clone(),
                    None => f.as_ref().clone(),
                })
                .collect::<Vec<_>>(),
        ));
        Ok(FileSource::reading(
            path,
            source,
            schema,
            Input::Parquet(reader, order),
            batch_rows,
        ))
    }

    /// The source a table's options describe: Parquet when `format = 'parquet'` or the file
    /// name ends in `.parquet`, else lines in the table's format.
    pub fn from_table(table: &TableDef) -> Result<Self, FileError> {
        let option = |message: String| FileError::Option {
            table: table.name.clone(),
            message,
        };
        let opts = FileOptions::from_table(table).map_err(|e| option(e.to_string()))?;
        let (path, batch_rows) = (opts.path, opts.batch_rows);
        if opts.parquet {
            return FileSource::open_parquet(
                path,
                batch_rows,
                &table.payload_schema(),
                &table.name,
            );
        }
        let decoder = Decoder::for_table(table).map_err(|e| option(e.to_string()))?;
        if decoder.is_avro() {
            FileSource::open_avro(path, batch_rows, decoder, &table.name)
        } else {
            FileSource::open_lines(path, batch_rows, decoder, &table.name)
        }
    }

    /// Where it is, to resume at ([`FileSource::seek`]).
    pub fn at(&self) -> FilePosition {
        FilePosition {
            path: self.label.clone(),
            line: self.line_no,
            byte: matches!(self.input, Input::Lines(..)).then_some(self.byte),
        }
    }

    /// Moves a source just opened to `at`: lines by byte offset, Avro records and Parquet
    /// rows by skipping them. A file shorter than `at` (replaced since) is an error.
    pub fn seek(&mut self, at: &FilePosition) -> Result<(), FileError> {
        if at.path != self.label {
            tracing::warn!(
                "resuming {} at the position saved for {} (the path changed)",
                self.label,
                at.path
            );
        }
        let short = |what: &str| FileError::Io {
            path: self.path.clone(),
            error: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the checkpoint is {} {what} in, but the file is shorter (was it replaced?)",
                    at.line
                ),
            ),
        };
        match &mut self.input {
            Input::Lines(reader, ..) => {
                let byte = at.byte.unwrap_or(0);
                let len = reader.get_ref().metadata().map_err(io(&self.path))?.len();
                if byte > len {
                    return Err(short("lines"));
                }
                reader.seek(SeekFrom::Start(byte)).map_err(io(&self.path))?;
                self.byte = byte;
            }
            Input::Avro(reader, _) => {
                for _ in 0..at.line {
                    if reader.next().is_none() {
                        return Err(short("records"));
                    }
                }
            }
            Input::Parquet(reader, _) => {
                let mut left = at.line as usize;
                // Whole batches: the reader's batches are `batch_rows` long.
                while left > 0 {
                    match reader.next() {
                        Some(b) => {
                            let b = b?;
                            if b.num_rows() > left {
                                return Err(FileError::Io {
                                    path: self.path.clone(),
                                    error: std::io::Error::new(
                                        std::io::ErrorKind::InvalidInput,
                                        format!(
                                            "the checkpoint is at row {}, inside a batch \
                                             (batch_rows changed since?)",
                                            at.line
                                        ),
                                    ),
                                });
                            }
                            left -= b.num_rows();
                        }
                        None => return Err(short("rows")),
                    }
                }
            }
        }
        self.line_no = at.line;
        Ok(())
    }

    /// The next batch of rows and the dead letters among the same lines (none for Parquet);
    /// `None` at the end.
    pub fn next_batch(&mut self) -> Result<Option<(RecordBatch, Option<RecordBatch>)>, FileError> {
        let (reader, line, decoder) = match &mut self.input {
            Input::Lines(reader, line, decoder) => (reader, line, decoder),
            Input::Avro(reader, decoder) => {
                let mut taken = 0;
                while taken < self.batch_rows {
                    let Some(record) = reader.next() else { break };
                    self.line_no += 1;
                    taken += 1;
                    let position = format!("{} record {}", self.label, self.line_no);
                    match record {
                        Ok(v) => {
                            decoder.push_avro(v, &self.source, &position);
                        }
                        // A corrupt block ends the file: what follows cannot be framed.
                        Err(e) => {
                            return Err(FileError::Io {
                                path: self.path.clone(),
                                error: std::io::Error::new(
                                    std::io::ErrorKind::InvalidData,
                                    format!("Avro record {}: {e}", self.line_no),
                                ),
                            });
                        }
                    }
                }
                if taken == 0 {
                    return Ok(None);
                }
                let (rows, dead) = decoder.flush()?;
                return Ok(Some((rows, Some(dead))));
            }
            Input::Parquet(reader, order) => {
                let Some(batch) = reader.next() else {
                    return Ok(None);
                };
                let batch = batch?;
                let n = batch.num_rows();
                let cols = order
                    .iter()
                    .zip(self.schema.fields())
                    .map(|(o, f)| match o {
                        Some(i) => batch.column(*i).clone(),
                        None => arrow::array::new_null_array(f.data_type(), n),
                    })
                    .collect();
                let batch = RecordBatch::try_new_with_options(
                    self.schema.clone(),
                    cols,
                    &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
                )?;
                self.line_no += batch.num_rows() as u64;
                return Ok(Some((batch, None)));
            }
        };
        let mut taken = 0;
        while taken < self.batch_rows {
            line.clear();
            let n = reader.read_until(b'\n', line).map_err(io(&self.path))?;
            if n == 0 {
                break;
            }
            self.byte += n as u64;
            self.line_no += 1;
            let mut text = line.as_slice();
            while let [rest @ .., b'\n' | b'\r'] = text {
                text = rest;
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let position = format!("{}:{}", self.label, self.line_no);
            // Bytes that are not UTF-8 are the decoder's to reject, as a dead letter.
            decoder.push(text, &self.source, &position);
            taken += 1;
        }
        if taken == 0 {
            return Ok(None);
        }
        let (rows, dead) = decoder.flush()?;
        Ok(Some((rows, Some(dead))))
    }
}

impl Source for FileSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll(&mut self, _max_rows: usize) -> Result<Poll, ConnectorError> {
        match self.next_batch() {
            Ok(Some((rows, dead))) => Ok(Poll::Data { rows, dead }),
            Ok(None) => Ok(Poll::End),
            Err(e) => Err(ConnectorError::new(&self.source, e)),
        }
    }

    fn checkpoint(&self) -> serde_json::Value {
        serde_json::to_value(self.at()).unwrap_or_default()
    }

    fn position(&self) -> String {
        match self.input {
            Input::Lines(..) => format!("{}:{}", self.label, self.line_no),
            Input::Parquet(..) => format!("{} row {}", self.label, self.line_no),
            Input::Avro(..) => format!("{} record {}", self.label, self.line_no),
        }
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::AsArray;

    use super::*;

    /// The file table of `columns` reading `path`, `batch_rows` lines at a time.
    fn table(columns: &str, path: &Path, extra: &str) -> TableDef {
        let sql = format!(
            "CREATE TABLE tx ({columns}) WITH (connector = 'file', path = '{}', \
             batch_rows = 10{extra})",
            path.display()
        );
        txguard_engine::sql::parse("t.sql", &sql)
            .expect("parse")
            .tables
            .remove(0)
    }

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
        let t = table(
            "transaction_id TEXT NOT NULL, amount DOUBLE, ts TIMESTAMP",
            &p,
            ", 'json.aliases' = 'ts=timestamp'",
        );
        let mut src = FileSource::from_table(&t).expect("open");
        let (mut rows, mut dead, mut batches) = (0, Vec::new(), 0);
        while let Some((ok, bad)) = src.next_batch().expect("read") {
            rows += ok.num_rows();
            assert_eq!(ok.schema(), t.payload_schema(), "the declared columns");
            let bad = bad.expect("json lines give dead letters");
            let pos = bad.column(1).as_string::<i32>();
            dead.extend((0..bad.num_rows()).map(|i| pos.value(i).to_string()));
            assert!((0..bad.num_rows()).all(|i| bad.column(0).as_string::<i32>().value(i) == "tx"));
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
        let e = FileSource::from_table(&table("a TEXT", &dir.path().join("missing.jsonl"), ""))
            .err()
            .expect("missing file");
        assert!(e.to_string().contains("missing.jsonl: No such file"), "{e}");
    }

    #[test]
    fn reads_parquet_columns_by_name_as_pandas_writes_them() {
        use std::sync::Arc;

        use arrow::array::{Float64Array, Int64Array, StringArray, TimestampNanosecondArray};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        use deltalake::parquet::arrow::ArrowWriter;

        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("tx.parquet");
        // pandas: int64 ids, float amounts, naive datetime64[ns], an extra column.
        let schema = Arc::new(Schema::new(vec![
            Field::new("transaction_id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("x"), None])),
                Arc::new(Float64Array::from(vec![Some(12.5), None])),
                Arc::new(TimestampNanosecondArray::from(vec![
                    1_767_225_600_123_456_000,
                    1_767_225_601_000_000_000,
                ])),
            ],
        )
        .expect("batch");
        let mut w = ArrowWriter::try_new(std::fs::File::create(&p).expect("create"), schema, None)
            .expect("writer");
        w.write(&batch).expect("write");
        w.close().expect("close");

        // Declared in another order and with other types: the file's columns come in the
        // declared order, in the file's types (the runtime casts them).
        let t = table("ts TIMESTAMP, amount DOUBLE, transaction_id TEXT", &p, "");
        let mut src = FileSource::from_table(&t).expect("open");
        let (rows, dead) = src.next_batch().expect("read").expect("a batch");
        assert!(dead.is_none());
        assert!(src.next_batch().expect("read").is_none());
        let schema = rows.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["ts", "amount", "transaction_id"]);
        assert_eq!(
            rows.column(2)
                .as_primitive::<arrow::datatypes::Int64Type>()
                .value(1),
            2
        );
        assert_eq!(src.position(), format!("{} row 2", p.display()));

        // A nullable column the file lacks reads as NULL; a NOT NULL one is an error.
        let t = table("ts TIMESTAMP, user_id TEXT", &p, "");
        let mut src = FileSource::from_table(&t).expect("open");
        let (rows, _) = src.next_batch().expect("read").expect("a batch");
        assert_eq!(rows.column(1).null_count(), 2);
        let e = FileSource::from_table(&table("ts TIMESTAMP, user_id TEXT NOT NULL", &p, ""))
            .err()
            .expect("no user_id in the file");
        assert!(
            e.to_string()
                .contains("the table declares column user_id but the Parquet file has none"),
            "{e}"
        );
    }
}
