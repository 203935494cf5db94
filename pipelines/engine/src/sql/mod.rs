//! Pipeline files in Arroyo's SQL dialect: `CREATE TABLE … WITH (connector = …)` for sources
//! and sinks (with `WATERMARK FOR ts AS ts - INTERVAL 'n' SECOND`), `CREATE VIEW`, and
//! `INSERT INTO sink SELECT …`. [`parse`] reads a file into a [`Pipeline`]; [`check`] validates
//! connectors and options against [`ConnectorSpec`]s and plans every view and insert with
//! DataFusion. Every error names the file, line and column.

mod check;
mod options;
mod parse;

use std::fmt;
use std::path::PathBuf;

use arrow::datatypes::DataType;

pub use check::strip;
pub(crate) use check::window_udfs;
pub use check::{PlanningFunctions, check, infer_sink_columns, metadata_columns, role_of, roles};
pub use options::OptionError;
pub use parse::{parse, parse_interval_micros};

/// An error in a pipeline file, at a position.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct SqlError {
    pub file: PathBuf,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// A position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
}

/// Whether a table is read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Sink,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Sink => "sink",
        })
    }
}

/// A declared column. Two columns are equal when they mean the same (name, type, NULLs,
/// metadata field), wherever they are written.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data_type: DataType,
    pub nullable: bool,
    /// `METADATA FROM 'key'` (or the older `GENERATED ALWAYS AS (metadata('key')) STORED`):
    /// the connector fills the column from the message's metadata (Kafka: `partition`,
    /// `offset_id`, `timestamp`, `key`, `topic`) instead of the payload.
    pub metadata: Option<String>,
    pub loc: Loc,
}

impl PartialEq for Column {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.data_type == other.data_type
            && self.nullable == other.nullable
            && self.metadata == other.metadata
    }
}

/// A `CHECK (expr)` constraint of a source table, column-level or table-level, named as
/// written (`CONSTRAINT name CHECK …`) or as Postgres names unnamed ones (`<table>_<column>_check`,
/// `<table>_check`). A row for which `expr` is false goes to the dead letters naming it; NULL
/// passes, as in SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckDef {
    pub name: String,
    /// The expression as written (SQL text over the table's columns).
    pub expr: String,
    pub loc: Loc,
}

/// `WATERMARK FOR column AS column - INTERVAL …`.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub column: String,
    pub delay_micros: i64,
    pub loc: Loc,
}

/// The value of a `WITH` option as written.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    Text(String),
    Number(String),
    Bool(bool),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Text(s) => write!(f, "'{s}'"),
            OptionValue::Number(s) => f.write_str(s),
            OptionValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl OptionValue {
    /// The value as text (a number or bool as written).
    pub fn as_text(&self) -> String {
        match self {
            OptionValue::Text(s) | OptionValue::Number(s) => s.clone(),
            OptionValue::Bool(b) => b.to_string(),
        }
    }
}

/// One `key = value` of a `WITH` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct TableOption {
    pub key: String,
    pub value: OptionValue,
    pub loc: Loc,
}

/// `CREATE TABLE`.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Column>,
    pub watermark: Option<Watermark>,
    /// `CHECK` constraints, in declaration order.
    pub checks: Vec<CheckDef>,
    pub connector: String,
    pub options: Vec<TableOption>,
    pub loc: Loc,
}

impl TableDef {
    pub fn option(&self, key: &str) -> Option<&TableOption> {
        self.options.iter().find(|o| o.key == key)
    }

    /// The columns the payload fills: every declared column but the metadata ones.
    pub fn payload_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.metadata.is_none())
    }

    /// The payload columns as an Arrow schema (what a decoder fills).
    pub fn payload_schema(&self) -> arrow::datatypes::SchemaRef {
        arrow_schema(self.payload_columns())
    }

    /// Every declared column as an Arrow schema.
    pub fn schema(&self) -> arrow::datatypes::SchemaRef {
        arrow_schema(self.columns.iter())
    }
}

fn arrow_schema<'a>(columns: impl Iterator<Item = &'a Column>) -> arrow::datatypes::SchemaRef {
    std::sync::Arc::new(arrow::datatypes::Schema::new(
        columns
            .map(|c| arrow::datatypes::Field::new(&c.name, c.data_type.clone(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// `CREATE VIEW name AS query` (the statement text as written).
#[derive(Debug, Clone, PartialEq)]
pub struct ViewDef {
    pub name: String,
    pub sql: String,
    pub loc: Loc,
}

/// `INSERT INTO table query`.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertDef {
    pub table: String,
    pub query: String,
    pub loc: Loc,
}

/// A parsed pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub file: PathBuf,
    pub tables: Vec<TableDef>,
    pub views: Vec<ViewDef>,
    pub inserts: Vec<InsertDef>,
}

impl Pipeline {
    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub(crate) fn err(&self, loc: Loc, message: impl Into<String>) -> SqlError {
        SqlError {
            file: self.file.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        }
    }
}

/// Kind of value an option takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionKind {
    Text,
    Integer,
    Number,
    Bool,
    OneOf(&'static [&'static str]),
}

/// One option a connector accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionSpec {
    pub key: &'static str,
    pub kind: OptionKind,
    pub required: bool,
    pub help: &'static str,
}

impl OptionSpec {
    /// An option that may be left out.
    pub const fn optional(key: &'static str, kind: OptionKind, help: &'static str) -> Self {
        OptionSpec {
            key,
            kind,
            required: false,
            help,
        }
    }

    /// An option every table of the connector must give.
    pub const fn required(key: &'static str, kind: OptionKind, help: &'static str) -> Self {
        OptionSpec {
            key,
            kind,
            required: true,
            help,
        }
    }
}

/// A connector's own check of a table's DDL in the role it plays (its options parse, its
/// columns are ones it can serve): `Err((where, why))`.
pub type TableCheck = fn(&TableDef, Role) -> Result<(), (Loc, String)>;

/// What a connector accepts in `WITH (...)`; each connector folder declares its own.
#[derive(Debug, Clone, Copy)]
pub struct ConnectorSpec {
    pub name: &'static str,
    /// The roles it can play; the first is the default when `type` is absent.
    pub roles: &'static [Role],
    pub options: &'static [OptionSpec],
    /// The `metadata('key')` fields its source can fill columns from.
    pub metadata: &'static [MetadataSpec],
    /// Whether its source decodes payloads, and so takes the format options
    /// ([`crate::decode::FORMAT_OPTIONS`]: `format`, `json.aliases`, …).
    pub decodes: bool,
    /// The connector's own checks of a table's DDL at validate (e.g. the generator refusing
    /// a column it cannot fill): `Err((where, why))`.
    pub check_table: Option<TableCheck>,
}

/// Kind of value a metadata field holds, which decides the column types it may fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetadataKind {
    /// A whole number: any integer column (or DOUBLE).
    Integer,
    /// Text: a TEXT column.
    Text,
    /// A point in time: a TIMESTAMP column.
    Timestamp,
}

/// One metadata field a source connector offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetadataSpec {
    pub key: &'static str,
    pub kind: MetadataKind,
    pub help: &'static str,
}
