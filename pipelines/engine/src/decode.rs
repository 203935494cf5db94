//! Payload → Arrow decoding for any declared schema, with dead letters.
//!
//! A source table's DDL is the schema: a [`Decoder`] fills exactly the table's payload columns
//! (every column but the metadata ones), by field name, from each message in its
//! [`Format`]:
//!
//! * `json`: one object per message. Fields are matched by name (and by the table's
//!   `json.aliases`); unknown fields are ignored; a missing field and `null` are both NULL. A
//!   `STRUCT<…>` column takes a nested object the same way; a `TEXT` column takes a string, a
//!   number (as written) or a nested object or array (as its JSON text, for JSON functions).
//! * `raw_string`: the whole payload (UTF-8) as the table's one `TEXT` column.
//! * `avro`: Confluent's wire format with a schema registry, or plain datums with the writer
//!   schema given in the table ([`avro`]).
//!
//! Coercions, the same for every format that carries JSON values: numbers as JSON numbers
//! or numeric strings; integers into `DOUBLE`/`REAL`; whole numbers only into `BIGINT`
//! (`BIGINT UNSIGNED`: none below zero); `true`/`false`, `0`/`1` and the strings `"true"` /
//! `"false"` into `BOOLEAN`; event times as RFC 3339 / ISO 8601 strings (no zone = UTC, `T`
//! or space, Python's `datetime.isoformat()`) or epoch seconds / milliseconds (numbers or
//! numeric strings: below 1e11 they are seconds, else milliseconds). A floating-point column
//! never holds NaN or infinity (JSON has neither; `"NaN"` is refused).
//!
//! Everything else — not UTF-8 (raw_string), not JSON, not an object, a value that does not
//! fit its column, a `NOT NULL` column missing or null, a field given twice, a message over
//! the size limit — becomes a dead letter with the raw payload, the column and reason, and
//! the source position. Every pushed message ends up in exactly one of the two outputs.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float32Builder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, StructArray, TimestampMicrosecondBuilder, UInt64Builder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Fields, SchemaRef};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDateTime};
use hashbrown::HashMap;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::event::dead_letter_schema;
use crate::sql::{OptionError, OptionKind, OptionSpec, TableDef};

mod avro;

pub use avro::{LookupError, SchemaLookup};

/// Default largest message accepted (bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// `format`: how payloads are read.
pub const FORMAT: OptionSpec = OptionSpec::optional(
    "format",
    OptionKind::OneOf(&["json", "raw_string", "avro", "parquet"]),
    "json (one object per message, fields by column name), raw_string (the payload \
           as the table's one TEXT column), avro (fields by name) or, for files, parquet \
           (default json, or from the file name)",
);
/// `avro.confluent_schema_registry`.
pub const AVRO_CONFLUENT: OptionSpec = OptionSpec::optional(
    "avro.confluent_schema_registry",
    OptionKind::Bool,
    "Avro in Confluent's wire format, writer schemas looked up by id in the schema \
           registry (schema_registry.endpoint)",
);
/// `avro.schema`.
pub const AVRO_SCHEMA: OptionSpec = OptionSpec::optional(
    "avro.schema",
    OptionKind::Text,
    "the writer schema (Avro JSON) of plain Avro datums",
);
/// `json.aliases`.
pub const JSON_ALIASES: OptionSpec = OptionSpec::optional(
    "json.aliases",
    OptionKind::Text,
    "other field names a column is read from, 'column=name|name' separated by commas \
           or semicolons (e.g. 'ts=timestamp|event_time')",
);
/// `max_message_bytes`.
pub const MAX_MESSAGE_BYTES: OptionSpec = OptionSpec::optional(
    "max_message_bytes",
    OptionKind::Integer,
    "larger messages go to the dead letters (default 1048576)",
);

/// The options of every source that decodes payloads (`kafka`, `file`), declared once.
pub const FORMAT_OPTIONS: &[OptionSpec] = &[
    FORMAT,
    AVRO_CONFLUENT,
    AVRO_SCHEMA,
    JSON_ALIASES,
    MAX_MESSAGE_BYTES,
];

/// How a payload is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    RawString,
    Avro,
}

/// Why a message went to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Reject(pub String);

fn reject(msg: impl Into<String>) -> Reject {
    Reject(msg.into())
}

/// A table's DDL that no decoder can fill.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

/// A schema's columns as `name type, …`, for messages.
pub fn column_list(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Epoch seconds (below 1e11) or milliseconds to UTC microseconds.
fn epoch_to_micros(v: f64) -> Result<i64, String> {
    if !v.is_finite() {
        return Err(format!("timestamp {v} is not a finite number"));
    }
    let micros = if v.abs() < 1e11 { v * 1e6 } else { v * 1e3 };
    if micros.abs() > 9.0e18 {
        return Err(format!("timestamp {v} is out of range"));
    }
    Ok(micros.round() as i64)
}

/// Parses an event time to UTC microseconds.
pub fn parse_time_text(s: &str) -> Result<i64, Reject> {
    parse_time(s).map_err(Reject)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]` (what almost every producer writes) to UTC
/// microseconds without chrono's general parser; `None` for anything else (then the general
/// parsers decide).
fn parse_iso_fast(t: &[u8]) -> Option<i64> {
    let num = |a: usize, b: usize| -> Option<i64> {
        let mut v = 0i64;
        for &c in t.get(a..b)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Some(v)
    };
    if t.len() < 19 || t[4] != b'-' || t[7] != b'-' || !matches!(t[10], b'T' | b' ') {
        return None;
    }
    if t[13] != b':' || t[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if t.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < t.len() && t[i].is_ascii_digit() {
            if i - start < 6 {
                micros = micros * 10 + i64::from(t[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset = match &t[i..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let hh = num(i + 1, i + 3)?;
            let mm = num(i + 4, i + 6)?;
            if hh > 23 || mm > 59 {
                return None;
            }
            let o = (hh * 60 + mm) * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + micros)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn parse_time(s: &str) -> Result<i64, String> {
    let t = s.trim();
    if let Some(micros) = parse_iso_fast(t.as_bytes()) {
        return Ok(micros);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc().timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.timestamp_micros());
        }
    }
    if let Ok(v) = t.parse::<f64>() {
        return epoch_to_micros(v);
    }
    Err(format!(
        "timestamp {s:?} is not ISO 8601 / RFC 3339 nor epoch seconds/milliseconds"
    ))
}

/// What a column holds, and so which JSON values it takes.
#[derive(Debug)]
enum Kind {
    Text,
    Int,
    UInt,
    Float64,
    Float32,
    Bool,
    Time,
    Struct(Box<Columns>),
}

impl Kind {
    /// What a column of this kind takes, for messages.
    fn want(&self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Int => "a whole number",
            Kind::UInt => "a whole number >= 0",
            Kind::Float64 | Kind::Float32 => "a number",
            Kind::Bool => "true/false or 0/1",
            Kind::Time => "an ISO 8601 / RFC 3339 time or epoch seconds/milliseconds",
            Kind::Struct(_) => "an object",
        }
    }

    /// `v` for a floating-point column `name`: finite, and within range for a REAL.
    fn float(&self, name: &str, v: f64, shown: &dyn fmt::Display) -> Result<Cell<'static>, String> {
        if !v.is_finite() {
            return Err(format!(
                "column {name}: {} is not a finite number",
                got(shown)
            ));
        }
        if matches!(self, Kind::Float32) && v.abs() > f64::from(f32::MAX) {
            return Err(format!("column {name}: {} does not fit a REAL", got(shown)));
        }
        Ok(Cell::Float(v))
    }
}

/// A decoded value, borrowing from its payload where it can.
#[derive(Debug)]
enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Time(i64),
    Struct(Vec<Cell<'a>>),
}

/// The columns of one level (the table, or a `STRUCT` column): their kinds, the field names
/// they are read from, and their builders.
#[derive(Debug)]
struct Columns {
    names: Vec<String>,
    kinds: Vec<Kind>,
    fields: Fields,
    /// Field name (and alias) → column.
    lookup: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
    builders: Vec<Builder>,
}

#[derive(Debug)]
enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    UInt(UInt64Builder),
    Float64(Float64Builder),
    Float32(Float32Builder),
    Bool(BooleanBuilder),
    Time(TimestampMicrosecondBuilder),
    Struct(Vec<bool>),
}

impl Columns {
    fn new(
        fields: &Fields,
        aliases: &[(String, Vec<String>)],
        path: &str,
    ) -> Result<Self, SchemaError> {
        let mut c = Columns {
            names: Vec::new(),
            kinds: Vec::new(),
            fields: fields.clone(),
            lookup: HashMap::default(),
            builders: Vec::new(),
        };
        for (i, f) in fields.iter().enumerate() {
            let name = format!("{path}{}", f.name());
            let (kind, builder) = match f.data_type() {
                DataType::Utf8 => (Kind::Text, Builder::Text(StringBuilder::new())),
                DataType::Int64 => (Kind::Int, Builder::Int(Int64Builder::new())),
                DataType::UInt64 => (Kind::UInt, Builder::UInt(UInt64Builder::new())),
                DataType::Float64 => (Kind::Float64, Builder::Float64(Float64Builder::new())),
                DataType::Float32 => (Kind::Float32, Builder::Float32(Float32Builder::new())),
                DataType::Boolean => (Kind::Bool, Builder::Bool(BooleanBuilder::new())),
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some(tz))
                    if tz.as_ref() == "UTC" =>
                {
                    (
                        Kind::Time,
                        Builder::Time(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
                    )
                }
                DataType::Struct(inner) => (
                    Kind::Struct(Box::new(Columns::new(inner, &[], &format!("{name}."))?)),
                    Builder::Struct(Vec::new()),
                ),
                other => {
                    return Err(SchemaError(format!(
                        "column {name}: type {other} cannot be decoded"
                    )));
                }
            };
            c.names.push(name);
            c.kinds.push(kind);
            c.builders.push(builder);
            c.lookup.insert(f.name().as_str().into(), i);
        }
        for (col, names) in aliases {
            let Some(&i) = c.lookup.get(col.as_str()) else {
                return Err(SchemaError(format!(
                    "json.aliases: the table has no column {col}"
                )));
            };
            for n in names {
                if let Some(&j) = c.lookup.get(n.as_str())
                    && j != i
                {
                    return Err(SchemaError(format!(
                        "json.aliases: {n} is already the field of column {}",
                        c.names[j]
                    )));
                }
                c.lookup.insert(n.as_str().into(), i);
            }
        }
        Ok(c)
    }

    /// Appends one row's cells (as many as columns; a cell that does not match its column's
    /// builder, which decoding never makes, becomes NULL).
    fn append<'a>(&mut self, cells: impl IntoIterator<Item = Cell<'a>>) {
        for ((b, k), cell) in self
            .builders
            .iter_mut()
            .zip(self.kinds.iter_mut())
            .zip(cells)
        {
            match (b, cell) {
                (Builder::Text(b), Cell::Text(s)) => b.append_value(&s),
                (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
                (Builder::UInt(b), Cell::UInt(v)) => b.append_value(v),
                (Builder::Float64(b), Cell::Float(v)) => b.append_value(v),
                (Builder::Float32(b), Cell::Float(v)) => b.append_value(v as f32),
                (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
                (Builder::Time(b), Cell::Time(v)) => b.append_value(v),
                (Builder::Struct(valid), Cell::Struct(inner)) => {
                    valid.push(true);
                    if let Kind::Struct(c) = k {
                        c.append(inner);
                    }
                }
                (Builder::Struct(valid), _) => {
                    valid.push(false);
                    if let Kind::Struct(c) = k {
                        c.append_null_row();
                    }
                }
                (b, _) => b.append_null(),
            }
        }
    }

    /// A row of NULLs (the children of a NULL struct).
    fn append_null_row(&mut self) {
        let n = self.builders.len();
        self.append((0..n).map(|_| Cell::Null));
    }

    fn finish(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        let mut out: Vec<ArrayRef> = Vec::with_capacity(self.builders.len());
        for (b, k) in self.builders.iter_mut().zip(self.kinds.iter_mut()) {
            out.push(match (b, k) {
                (Builder::Text(b), _) => Arc::new(b.finish()),
                (Builder::Int(b), _) => Arc::new(b.finish()),
                (Builder::UInt(b), _) => Arc::new(b.finish()),
                (Builder::Float64(b), _) => Arc::new(b.finish()),
                (Builder::Float32(b), _) => Arc::new(b.finish()),
                (Builder::Bool(b), _) => Arc::new(b.finish()),
                (Builder::Time(b), _) => Arc::new(b.finish()),
                (Builder::Struct(valid), Kind::Struct(inner)) => {
                    let children = inner.finish()?;
                    let nulls = NullBuffer::from(std::mem::take(valid));
                    Arc::new(StructArray::try_new(
                        inner.fields.clone(),
                        children,
                        Some(nulls),
                    )?)
                }
                (Builder::Struct(_), _) => {
                    return Err(ArrowError::SchemaError(
                        "struct builder without fields".into(),
                    ));
                }
            });
        }
        Ok(out)
    }

    fn rows(&self) -> usize {
        match self.builders.first() {
            Some(Builder::Text(b)) => b.len(),
            Some(Builder::Int(b)) => b.len(),
            Some(Builder::UInt(b)) => b.len(),
            Some(Builder::Float64(b)) => b.len(),
            Some(Builder::Float32(b)) => b.len(),
            Some(Builder::Bool(b)) => b.len(),
            Some(Builder::Time(b)) => b.len(),
            Some(Builder::Struct(v)) => v.len(),
            None => 0,
        }
    }
}

impl Builder {
    fn append_null(&mut self) {
        match self {
            Builder::Text(b) => b.append_null(),
            Builder::Int(b) => b.append_null(),
            Builder::UInt(b) => b.append_null(),
            Builder::Float64(b) => b.append_null(),
            Builder::Float32(b) => b.append_null(),
            Builder::Bool(b) => b.append_null(),
            Builder::Time(b) => b.append_null(),
            Builder::Struct(v) => v.push(false),
        }
    }
}

/// A JSON value's kind, for error messages.
fn got(v: &dyn fmt::Display) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        let cut = (0..=40).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

/// Reads a field name into the index of its column (`None`: not a declared field). Producers
/// send fields in one order, so the column after the last one matched is tried first, by
/// comparing names, before the hash table.
struct KeySeed<'c, 'h> {
    cols: &'c Columns,
    next: &'h mut usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        let guess = *self.next;
        if let Some(f) = self.cols.fields.get(guess)
            && f.name() == v
        {
            *self.next = guess + 1;
            return Ok(Some(guess));
        }
        let found = self.cols.lookup.get(v).copied();
        if let Some(i) = found {
            *self.next = i + 1;
        }
        Ok(found)
    }
}

/// Reads one JSON object into a row of cells for its columns, into `cells` (an empty vector
/// whose allocation is reused from row to row).
struct RowVisitor<'c, 'de> {
    cols: &'c Columns,
    cells: Vec<Cell<'de>>,
}

/// `v`, emptied, as a vector of another lifetime: the allocation is kept (an in-place collect
/// of an empty vector of a type of the same layout), so decoding allocates no row vector.
fn recycle<'b>(mut v: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    v.clear();
    v.into_iter().map(|_| Cell::Null).collect()
}

impl<'de> Visitor<'de> for RowVisitor<'_, 'de> {
    type Value = Vec<Cell<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let cols = self.cols;
        let n = cols.kinds.len();
        let mut cells = self.cells;
        cells.clear();
        cells.resize_with(n, || Cell::Null);
        // Which columns were given (a field given twice is refused); past 128 columns a
        // repeat is not detected and the last value wins.
        let mut seen = 0u128;
        let mut next = 0usize;
        while let Some(key) = map.next_key_seed(KeySeed {
            cols,
            next: &mut next,
        })? {
            let Some(i) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if i < 128 {
                if seen & (1 << i) != 0 {
                    return Err(de::Error::custom(format!(
                        "column {}: the field is given twice",
                        cols.names[i]
                    )));
                }
                seen |= 1 << i;
            }
            cells[i] = map.next_value_seed(CellSeed {
                kind: &cols.kinds[i],
                name: &cols.names[i],
            })?;
        }
        for (i, c) in cells.iter().enumerate() {
            if !cols.fields[i].is_nullable() && matches!(c, Cell::Null) {
                let given = i < 128 && seen & (1 << i) != 0;
                return Err(de::Error::custom(format!(
                    "column {} is NOT NULL but {}",
                    cols.names[i],
                    if given { "null" } else { "missing" }
                )));
            }
        }
        Ok(cells)
    }
}

/// Reads one field's value into its column's cell.
#[derive(Clone, Copy)]
struct CellSeed<'c> {
    kind: &'c Kind,
    name: &'c str,
}

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = Cell<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl CellSeed<'_> {
    fn wrong<E: de::Error>(&self, value: &dyn fmt::Display) -> E {
        E::custom(format!(
            "column {}: expected {}, got {}",
            self.name,
            self.kind.want(),
            got(value)
        ))
    }

    fn float<E: de::Error>(&self, v: f64, shown: &dyn fmt::Display) -> Result<Cell<'static>, E> {
        self.kind.float(self.name, v, shown).map_err(E::custom)
    }

    fn time<E: de::Error>(&self, r: Result<i64, String>) -> Result<Cell<'static>, E> {
        r.map(Cell::Time)
            .map_err(|m| E::custom(format!("column {}: {m}", self.name)))
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = Cell<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} for column {}", self.kind.want(), self.name)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Cell::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        match self.kind {
            Kind::Bool => Ok(Cell::Bool(v)),
            Kind::Text => Ok(Cell::Text(Cow::Borrowed(if v { "true" } else { "false" }))),
            _ => Err(self.wrong(&v)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match self.kind {
            Kind::Int => Ok(Cell::Int(v)),
            Kind::UInt => u64::try_from(v).map(Cell::UInt).map_err(|_| self.wrong(&v)),
            Kind::Float64 | Kind::Float32 => self.float(v as f64, &v),
            Kind::Bool => match v {
                0 | 1 => Ok(Cell::Bool(v == 1)),
                _ => Err(self.wrong(&v)),
            },
            Kind::Time => self.time(epoch_to_micros(v as f64)),
            Kind::Text => Ok(Cell::Text(Cow::Owned(v.to_string()))),
            Kind::Struct(_) => Err(self.wrong(&v)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        if let Ok(i) = i64::try_from(v) {
            return self.visit_i64(i);
        }
        // Past i64::MAX.
        match self.kind {
            Kind::UInt => Ok(Cell::UInt(v)),
            Kind::Int => Err(E::custom(format!(
                "column {}: {v} does not fit a BIGINT",
                self.name
            ))),
            Kind::Float64 | Kind::Float32 => self.float(v as f64, &v),
            Kind::Time => self.time(epoch_to_micros(v as f64)),
            Kind::Text => Ok(Cell::Text(Cow::Owned(v.to_string()))),
            Kind::Bool | Kind::Struct(_) => Err(self.wrong(&v)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let whole = v.is_finite() && v.fract() == 0.0;
        match self.kind {
            // 2^63 and 2^64 are the first floats past the integer ranges.
            Kind::Int if whole && v.abs() < 2f64.powi(63) => Ok(Cell::Int(v as i64)),
            Kind::UInt if whole && (0.0..2f64.powi(64)).contains(&v) => Ok(Cell::UInt(v as u64)),
            Kind::Float64 | Kind::Float32 => self.float(v, &v),
            Kind::Time => self.time(epoch_to_micros(v)),
            Kind::Text => Ok(Cell::Text(Cow::Owned(v.to_string()))),
            _ => Err(self.wrong(&v)),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        match self.kind {
            Kind::Text => Ok(Cell::Text(Cow::Borrowed(v))),
            _ => self.visit_str(v),
        }
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        match self.kind {
            Kind::Text => Ok(Cell::Text(Cow::Owned(v))),
            _ => self.visit_str(&v),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let shown = || format!("{v:?}");
        let t = v.trim();
        match self.kind {
            Kind::Text => Ok(Cell::Text(Cow::Owned(v.to_string()))),
            Kind::Int => match t.parse::<i64>() {
                Ok(n) => Ok(Cell::Int(n)),
                Err(_) => match t.parse::<f64>() {
                    Ok(f) => self.visit_f64(f).map_err(|_: E| self.wrong(&shown())),
                    Err(_) => Err(self.wrong(&shown())),
                },
            },
            Kind::UInt => match t.parse::<u64>() {
                Ok(n) => Ok(Cell::UInt(n)),
                Err(_) => Err(self.wrong(&shown())),
            },
            Kind::Float64 | Kind::Float32 => match t.parse::<f64>() {
                Ok(f) => self.float(f, &shown()),
                Err(_) => Err(self.wrong(&shown())),
            },
            Kind::Bool => match t {
                "1" => Ok(Cell::Bool(true)),
                "0" => Ok(Cell::Bool(false)),
                _ if t.eq_ignore_ascii_case("true") => Ok(Cell::Bool(true)),
                _ if t.eq_ignore_ascii_case("false") => Ok(Cell::Bool(false)),
                _ => Err(self.wrong(&shown())),
            },
            Kind::Time => self.time(parse_time(v)),
            Kind::Struct(_) => Err(self.wrong(&shown())),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match self.kind {
            Kind::Struct(cols) => RowVisitor {
                cols,
                cells: Vec::new(),
            }
            .visit_map(map)
            .map(Cell::Struct),
            Kind::Text => {
                let v = serde_json::Value::deserialize_from(
                    de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(Cell::Text(Cow::Owned(v.to_string())))
            }
            _ => Err(self.wrong(&"an object")),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        match self.kind {
            Kind::Text => {
                let v = serde_json::Value::deserialize_from(
                    de::value::SeqAccessDeserializer::new(seq),
                )?;
                Ok(Cell::Text(Cow::Owned(v.to_string())))
            }
            _ => Err(self.wrong(&"an array")),
        }
    }
}

/// `Value::deserialize` under a name that does not clash with the visitor methods.
trait DeserializeFrom: Sized {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

impl DeserializeFrom for serde_json::Value {
    fn deserialize_from<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// serde_json's message without its ` at line 1 column 57` suffix, which for a one-line
/// message says less than the column name already in it.
fn data_error(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// How a table's payloads are decoded: its format and the format options.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub format: Format,
    /// Column → other field names it is read from (`json.aliases`).
    pub aliases: Vec<(String, Vec<String>)>,
    pub max_message_bytes: usize,
    /// `'avro.schema'`.
    pub avro_schema: Option<String>,
    /// `'avro.confluent_schema_registry'`.
    pub avro_confluent: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            format: Format::Json,
            aliases: Vec::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            avro_schema: None,
            avro_confluent: false,
        }
    }
}

impl DecodeOptions {
    /// The format options of a source table ([`FORMAT_OPTIONS`]); `parquet` is the file
    /// source's own business and is refused here.
    pub fn from_table(table: &TableDef) -> Result<Self, OptionError> {
        let format = match table.choice(&FORMAT)? {
            None | Some("json") => Format::Json,
            Some("raw_string") => Format::RawString,
            Some("avro") => Format::Avro,
            Some(_) => {
                return Err(table.option_error(
                    &FORMAT,
                    "parquet reads files (connector file); messages are json, raw_string or avro",
                ));
            }
        };
        let mut o = DecodeOptions {
            format,
            ..DecodeOptions::default()
        };
        if let Some(text) = table.text(&JSON_ALIASES) {
            for pair in text
                .split([',', ';'])
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let (col, names) = pair.split_once('=').ok_or_else(|| {
                    table.option_error(
                        &JSON_ALIASES,
                        format!("{pair:?} is not column=name|name (e.g. ts=timestamp|event_time)"),
                    )
                })?;
                o.aliases.push((
                    col.trim().to_ascii_lowercase(),
                    names
                        .split('|')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty())
                        .collect(),
                ));
            }
            if o.format != Format::Json {
                return Err(table.option_error(&JSON_ALIASES, "needs format json"));
            }
        }
        o.avro_schema = table.text(&AVRO_SCHEMA);
        o.avro_confluent = table.flag(&AVRO_CONFLUENT)?.unwrap_or(false);
        if o.format != Format::Avro && (o.avro_schema.is_some() || o.avro_confluent) {
            let spec = if o.avro_schema.is_some() {
                &AVRO_SCHEMA
            } else {
                &AVRO_CONFLUENT
            };
            return Err(table.option_error(spec, "the avro.* options need format = 'avro'"));
        }
        if let Some(m) = table.positive(&MAX_MESSAGE_BYTES)? {
            o.max_message_bytes = m;
        }
        Ok(o)
    }
}

/// Accumulates messages into a batch of rows (the declared payload columns) and a batch of
/// dead letters.
pub struct Decoder {
    format: Format,
    max_message_bytes: usize,
    schema: SchemaRef,
    cols: Columns,
    dead: DeadLetters,
    avro: Option<avro::AvroDecoder>,
    /// The row vector, kept between messages for its allocation.
    scratch: Vec<Cell<'static>>,
    /// A failure that is not the message's fault (the schema registry unavailable), for the
    /// source to stop at.
    failure: Option<String>,
}

impl Decoder {
    /// A decoder filling `schema` (every field: nullable or not, as declared).
    pub fn new(schema: SchemaRef, opts: &DecodeOptions) -> Result<Self, SchemaError> {
        if opts.format == Format::RawString
            && (schema.fields().len() != 1 || schema.field(0).data_type() != &DataType::Utf8)
        {
            return Err(SchemaError(format!(
                "format raw_string fills one TEXT column (e.g. value TEXT) with the whole \
                 payload; the table declares {}",
                column_list(&schema)
            )));
        }
        if opts.format != Format::Json && !opts.aliases.is_empty() {
            return Err(SchemaError("json.aliases needs format json".into()));
        }
        let cols = Columns::new(schema.fields(), &opts.aliases, "")?;
        let avro = match opts.format {
            Format::Avro => {
                let mut a =
                    avro::AvroDecoder::new(opts.avro_schema.as_deref(), opts.avro_confluent)
                        .map_err(SchemaError)?;
                a.plan(&cols);
                Some(a)
            }
            _ => None,
        };
        Ok(Decoder {
            format: opts.format,
            max_message_bytes: opts.max_message_bytes,
            cols,
            schema,
            dead: DeadLetters::default(),
            avro,
            scratch: Vec::new(),
            failure: None,
        })
    }

    /// The decoder a source table declares: its payload columns, in its format.
    pub fn for_table(table: &TableDef) -> Result<Self, SchemaError> {
        let opts = DecodeOptions::from_table(table).map_err(|e| SchemaError(e.to_string()))?;
        Decoder::new(table.payload_schema(), &opts)
    }

    /// The schema of the rows it makes.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Where Confluent schema ids are looked up (a connector's schema registry client).
    pub fn set_schema_lookup(&mut self, lookup: Box<dyn SchemaLookup>) {
        if let Some(a) = &mut self.avro {
            a.set_lookup(lookup);
        }
    }

    /// Whether it decodes Avro in Confluent's wire format (and so needs a schema lookup).
    pub fn needs_schema_registry(&self) -> bool {
        self.avro.as_ref().is_some_and(|a| a.confluent_wire())
    }

    /// Whether its format is Avro.
    pub fn is_avro(&self) -> bool {
        self.format == Format::Avro
    }

    /// Decodes one Avro record (a container file's) into a row; a bad one is recorded as a
    /// dead letter with the record as JSON. Returns whether it became a row.
    pub fn push_avro(
        &mut self,
        value: apache_avro::types::Value,
        source: &str,
        position: &dyn fmt::Display,
    ) -> bool {
        match avro::record_cells(&self.cols, &value) {
            Ok(cells) => {
                self.cols.append(cells);
                true
            }
            Err(why) => {
                // The record as JSON, made only for a dead letter.
                let raw = serde_json::Value::try_from(value.clone())
                    .map(|j| j.to_string())
                    .unwrap_or_else(|_| format!("{value:?}"));
                self.dead.push(source, position, &why, raw.as_bytes());
                false
            }
        }
    }

    /// Decodes one message into a row; `Err` says why not.
    fn decode(&mut self, payload: &[u8]) -> Result<(), Reject> {
        if let Some(a) = &mut self.avro {
            match a.datum(&self.cols, payload) {
                Ok(avro::Datum::Cells(cells)) => self.cols.append(cells),
                Ok(avro::Datum::Value(value)) => {
                    let cells = avro::record_cells(&self.cols, &value).map_err(Reject)?;
                    self.cols.append(cells);
                }
                Err(avro::AvroError::Bad(m)) => return Err(Reject(m)),
                Err(avro::AvroError::Unavailable(m)) => self.failure = Some(m),
            }
            return Ok(());
        }
        if self.format == Format::RawString {
            let text =
                std::str::from_utf8(payload).map_err(|e| reject(format!("not UTF-8 text: {e}")))?;
            self.cols.append(vec![Cell::Text(Cow::Borrowed(text))]);
            return Ok(());
        }
        match payload.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            None => return Err(reject("empty message")),
            Some(_) if serde_json::from_slice::<IgnoredAny>(payload).is_err() => {
                return Err(reject(format!(
                    "not valid JSON: {}",
                    String::from_utf8_lossy(&payload[..payload.len().min(40)])
                )));
            }
            Some(_) => return Err(reject("not a JSON object")),
        }
        let mut de = serde_json::Deserializer::from_slice(payload);
        let visitor = RowVisitor {
            cols: &self.cols,
            cells: recycle(std::mem::take(&mut self.scratch)),
        };
        let mut cells = de
            .deserialize_map(visitor)
            .and_then(|cells| de.end().map(|()| cells))
            .map_err(|e| {
                use serde_json::error::Category;
                match e.classify() {
                    Category::Syntax | Category::Eof => reject(format!("not valid JSON: {e}")),
                    _ => reject(data_error(&e)),
                }
            })?;
        self.cols.append(cells.drain(..));
        self.scratch = recycle(cells);
        Ok(())
    }

    /// Decodes one message; a bad one is recorded as a dead letter with `source` and
    /// `position` (e.g. `transactions` and `partition 3 offset 1042`). Returns whether the
    /// message became a row.
    pub fn push(&mut self, payload: &[u8], source: &str, position: &dyn fmt::Display) -> bool {
        if payload.len() > self.max_message_bytes {
            let reason = format!(
                "message of {} bytes exceeds the {}-byte limit (max_message_bytes)",
                payload.len(),
                self.max_message_bytes
            );
            let keep = &payload[..payload.len().min(1024)];
            self.dead.push(source, position, &reason, keep);
            return false;
        }
        match self.decode(payload) {
            Ok(()) => self.failure.is_none(),
            Err(r) => {
                self.dead.push(source, position, &r.0, payload);
                false
            }
        }
    }

    /// A failure that is not a message's fault (the schema registry unavailable), once: the
    /// message pushed last was neither a row nor a dead letter, and the source should stop
    /// without committing it.
    pub fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// Rows decoded since the last flush.
    pub fn pending_rows(&self) -> usize {
        self.cols.rows()
    }

    /// Dead letters recorded since the last flush.
    pub fn pending_dead(&self) -> usize {
        self.dead.len()
    }

    /// The rows and dead letters so far; resets.
    pub fn flush(&mut self) -> Result<(RecordBatch, RecordBatch), ArrowError> {
        let n = self.cols.rows();
        let cols = self.cols.finish()?;
        let rows = RecordBatch::try_new_with_options(
            self.schema.clone(),
            cols,
            &arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok((rows, self.dead.finish()?))
    }
}

/// Dead letters accumulated by a [`Decoder`] (or by late-data handling).
pub struct DeadLetters {
    source: StringBuilder,
    position: StringBuilder,
    reason: StringBuilder,
    raw: StringBuilder,
    received: TimestampMicrosecondBuilder,
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters {
            source: StringBuilder::new(),
            position: StringBuilder::new(),
            reason: StringBuilder::new(),
            raw: StringBuilder::new(),
            received: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
        }
    }
}

impl DeadLetters {
    /// Records one dead letter.
    pub fn push(&mut self, source: &str, position: &dyn fmt::Display, reason: &str, raw: &[u8]) {
        self.source.append_value(source);
        self.position.append_value(position.to_string());
        self.reason.append_value(reason);
        self.raw.append_value(String::from_utf8_lossy(raw));
        self.received
            .append_value(chrono::Utc::now().timestamp_micros());
    }

    pub fn len(&self) -> usize {
        self.reason.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dead letters so far as a batch of [`dead_letter_schema`]; resets.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.received.finish()),
        ];
        RecordBatch::try_new(dead_letter_schema(), cols)
    }
}
