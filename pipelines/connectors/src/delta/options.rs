//! The `delta` connector's `WITH (...)` options, declared once and read back into
//! [`DeltaOptions`].

use txguard_engine::sql::{OptionError, OptionKind, OptionSpec, TableDef};

pub const PATH: OptionSpec = OptionSpec::required(
    "path",
    OptionKind::Text,
    "the table's location: a local directory (created if missing), s3://bucket/path, \
           az://container/path or gs://bucket/path",
);
pub const STORAGE_OPTIONS: OptionSpec = OptionSpec::optional(
    "storage_options",
    OptionKind::Text,
    "object-store settings, 'key=value' separated by commas (e.g. \
           'AWS_ENDPOINT_URL=http://minio:9000,AWS_ALLOW_HTTP=true'); credentials are best \
           left to the AWS_* environment variables",
);
pub const FORMAT: OptionSpec = OptionSpec::optional(
    "format",
    OptionKind::OneOf(&["parquet"]),
    "parquet (the only format of Delta tables; accepted for Arroyo compatibility)",
);
pub const BATCH_ROWS: OptionSpec = OptionSpec::optional(
    "batch_rows",
    OptionKind::Integer,
    "as a source: rows per batch (default 8192)",
);

/// Every option, as [`super::SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[PATH, STORAGE_OPTIONS, FORMAT, BATCH_ROWS];

/// A delta table's options, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaOptions {
    pub path: String,
    pub storage_options: Vec<(String, String)>,
    pub batch_rows: usize,
}

impl DeltaOptions {
    pub fn from_table(t: &TableDef) -> Result<Self, OptionError> {
        t.choice(&FORMAT)?;
        Ok(DeltaOptions {
            path: t.required_text(&PATH)?,
            storage_options: t.key_values(&STORAGE_OPTIONS)?,
            batch_rows: t
                .positive(&BATCH_ROWS)?
                .unwrap_or(crate::file::options::DEFAULT_BATCH_ROWS),
        })
    }
}
