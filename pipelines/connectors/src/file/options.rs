//! The `file` connector's `WITH (...)` options (besides the format options every decoding
//! source takes), declared once and read back into [`FileOptions`].

use std::path::Path;

use txguard_engine::decode::FORMAT;
use txguard_engine::sql::{OptionError, OptionKind, OptionSpec, TableDef};

pub const PATH: OptionSpec = OptionSpec::required(
    "path",
    OptionKind::Text,
    "the file to replay: JSON lines, raw text lines, an Avro container file or Parquet",
);
pub const BATCH_ROWS: OptionSpec = OptionSpec::optional(
    "batch_rows",
    OptionKind::Integer,
    "lines decoded per batch (default 8192)",
);

/// Every option, as [`super::SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[PATH, BATCH_ROWS];

/// Rows per batch when `batch_rows` is not given.
pub const DEFAULT_BATCH_ROWS: usize = 8192;

/// A file table's options, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOptions {
    pub path: String,
    pub batch_rows: usize,
    /// Read as Parquet: `format = 'parquet'`, or no format and a `.parquet` file name.
    pub parquet: bool,
}

impl FileOptions {
    pub fn from_table(t: &TableDef) -> Result<Self, OptionError> {
        let path = t.required_text(&PATH)?;
        let parquet = match t.choice(&FORMAT)? {
            Some(f) => f == "parquet",
            None => super::is_parquet(Path::new(&path)),
        };
        Ok(FileOptions {
            batch_rows: t.positive(&BATCH_ROWS)?.unwrap_or(DEFAULT_BATCH_ROWS),
            path,
            parquet,
        })
    }
}
