//! Offline tabular files (CSV, Parquet) for the `score` and `train` commands: registering an
//! input as a DataFusion table, writing a batch stream, and the progress display.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};
use indicatif::{ProgressBar, ProgressStyle};

/// File formats the offline commands read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    /// The format of a path, from its extension.
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(Format::Csv),
            Some("parquet") | Some("pq") => Ok(Format::Parquet),
            _ => bail!(
                "{}: unknown file type; use a .csv or .parquet file",
                path.display()
            ),
        }
    }
}

/// Registers `path` as table `name`. Returns the number of rows when it is cheap to know.
pub async fn register_input(ctx: &SessionContext, name: &str, path: &Path) -> Result<Option<u64>> {
    if !path.exists() {
        bail!("{}: no such file", path.display());
    }
    let p = path
        .to_str()
        .with_context(|| format!("{}: path is not UTF-8", path.display()))?;
    match Format::of(path)? {
        Format::Csv => {
            ctx.register_csv(name, p, CsvReadOptions::new().has_header(true))
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(None)
        }
        Format::Parquet => {
            ctx.register_parquet(name, p, ParquetReadOptions::default())
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let reader = datafusion::parquet::file::reader::SerializedFileReader::new(
                File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )
            .with_context(|| format!("{}: not a Parquet file", path.display()))?;
            use datafusion::parquet::file::reader::FileReader;
            Ok(Some(reader.metadata().file_metadata().num_rows() as u64))
        }
    }
}

/// Writes record batches to a CSV or Parquet file, chosen by extension.
pub enum BatchWriter {
    Csv(Box<datafusion::arrow::csv::Writer<File>>),
    Parquet(Box<ArrowWriter<File>>),
}

impl BatchWriter {
    pub fn create(path: &Path, schema: SchemaRef) -> Result<BatchWriter> {
        let format = Format::of(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(match format {
            Format::Csv => BatchWriter::Csv(Box::new(datafusion::arrow::csv::Writer::new(file))),
            Format::Parquet => BatchWriter::Parquet(Box::new(
                ArrowWriter::try_new(file, schema, None).context("starting the Parquet writer")?,
            )),
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            BatchWriter::Csv(w) => w.write(batch).context("writing CSV"),
            BatchWriter::Parquet(w) => w.write(batch).context("writing Parquet"),
        }
    }

    pub fn finish(self) -> Result<()> {
        match self {
            BatchWriter::Csv(w) => {
                w.into_inner().sync_all().context("flushing CSV")?;
            }
            BatchWriter::Parquet(w) => {
                w.close().context("closing Parquet")?;
            }
        }
        Ok(())
    }
}

/// A progress bar over rows (a spinner when the total is unknown); hidden when stderr is not
/// a terminal, so logs and CI output stay clean.
pub fn row_progress(total: Option<u64>, what: &str) -> ProgressBar {
    let pb = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} rows ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {human_pos} rows ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    pb.set_message(what.to_string());
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

/// Quotes an SQL identifier (column or table name) for DataFusion.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
