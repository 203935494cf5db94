//! The `stdout` connector's `WITH (...)` option, declared once and read back as a [`Format`].

use txguard_engine::sql::{OptionError, OptionKind, OptionSpec, TableDef};

use super::Format;

pub const FORMAT: OptionSpec = OptionSpec::optional(
    "format",
    OptionKind::OneOf(&["json", "table"]),
    "json (one object per row, default) or table",
);

/// Every option, as [`super::SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[FORMAT];

/// How a stdout table prints its rows.
pub fn format(t: &TableDef) -> Result<Format, OptionError> {
    Ok(match t.choice(&FORMAT)? {
        Some("table") => Format::Table,
        _ => Format::Json,
    })
}
