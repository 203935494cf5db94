//! Avro payloads into the declared columns, by field name, with the same coercions as JSON:
//! Confluent's wire format (a zero byte, the schema's registry id as 4 big-endian bytes, then
//! the datum; the writer schema looked up once per id through a [`SchemaLookup`] and kept),
//! plain datums written with the schema the table gives in `'avro.schema'`, and the records
//! of an Avro object container file ([`Decoder::push_avro`], for the file source). Unions with
//! null are NULL or their value; `timestamp-millis` / `-micros` are event times; a record
//! fills a `STRUCT` column, and a record, array or map fills a `TEXT` column as JSON.

use std::borrow::Cow;

use apache_avro::Schema;
use apache_avro::types::Value;
use hashbrown::HashMap;

use super::{Cell, Columns, Kind, epoch_to_micros, parse_time};

mod plan;

use plan::Plan;

/// Where Confluent schema ids are resolved: a schema registry (`GET /schemas/ids/{id}`).
pub trait SchemaLookup: Send {
    /// The writer schema (Avro JSON) registered under `id`.
    fn schema(&mut self, id: u32) -> Result<String, LookupError>;
}

/// Why a schema lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The registry answered: it has no such schema (the message's fault: a dead letter).
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be asked (down, unreachable, an error of its own): the run
    /// stops there, uncommitted, rather than dead-lettering good messages.
    #[error("{0}")]
    Unavailable(String),
}

/// Why an Avro message could not be read.
pub(super) enum AvroError {
    Bad(String),
    Unavailable(String),
}

impl From<String> for AvroError {
    fn from(s: String) -> Self {
        AvroError::Bad(s)
    }
}

/// The Avro side of a [`super::Decoder`].
pub(super) struct AvroDecoder {
    /// `'avro.schema'`: the writer schema of plain datums.
    writer: Option<Schema>,
    /// `'avro.confluent_schema_registry'`: datums in Confluent's wire format.
    confluent: bool,
    /// The writer schema compiled against the columns ([`Decoder::new`] makes it).
    writer_plan: Option<Plan>,
    lookup: Option<Box<dyn SchemaLookup>>,
    /// Schemas by registry id, each with its plan when it has one; a failed lookup is not
    /// kept, so a registry back up is used.
    schemas: HashMap<u32, (Schema, Option<Plan>)>,
}

/// A datum read: straight into cells (a planned schema), or as a value.
pub(super) enum Datum<'p> {
    Cells(Vec<Cell<'p>>),
    Value(Value),
}

impl AvroDecoder {
    pub(super) fn new(writer: Option<&str>, confluent: bool) -> Result<Self, String> {
        let writer = writer
            .map(|s| Schema::parse_str(s).map_err(|e| format!("avro.schema: {e}")))
            .transpose()?;
        if confluent && writer.is_some() {
            return Err(
                "give avro.schema or avro.confluent_schema_registry, not both: with the \
                 registry each message names its writer schema"
                    .into(),
            );
        }
        Ok(AvroDecoder {
            writer,
            confluent,
            writer_plan: None,
            lookup: None,
            schemas: HashMap::new(),
        })
    }

    /// Compiles the table's writer schema (if it gives one) against the columns.
    pub(super) fn plan(&mut self, cols: &Columns) {
        self.writer_plan = self.writer.as_ref().and_then(|s| Plan::compile(s, cols));
    }

    pub(super) fn set_lookup(&mut self, lookup: Box<dyn SchemaLookup>) {
        self.lookup = Some(lookup);
    }

    pub(super) fn confluent_wire(&self) -> bool {
        self.confluent
    }

    /// One message's datum, read against `cols`: into checked cells where its schema has a
    /// plan, else as a value.
    pub(super) fn datum<'p>(
        &mut self,
        cols: &Columns,
        payload: &'p [u8],
    ) -> Result<Datum<'p>, AvroError> {
        let (schema, plan, datum) = if self.confluent {
            if payload.len() < 5 || payload[0] != 0 {
                return Err(AvroError::Bad(
                    "not in Confluent's wire format (a zero byte and a 4-byte schema id first)"
                        .into(),
                ));
            }
            let id = u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]);
            if !self.schemas.contains_key(&id) {
                let lookup = self.lookup.as_mut().ok_or_else(|| {
                    "avro.confluent_schema_registry needs schema_registry.endpoint".to_string()
                })?;
                let text = lookup.schema(id).map_err(|e| match e {
                    LookupError::NotFound(m) => AvroError::Bad(m),
                    LookupError::Unavailable(m) => AvroError::Unavailable(m),
                })?;
                let schema = Schema::parse_str(&text)
                    .map_err(|e| format!("schema {id} from the registry: {e}"))?;
                let plan = Plan::compile(&schema, cols);
                self.schemas.insert(id, (schema, plan));
            }
            let (schema, plan) = &self.schemas[&id];
            (schema, plan.as_ref(), &payload[5..])
        } else {
            let schema = self.writer.as_ref().ok_or_else(|| {
                "format avro needs avro.schema or avro.confluent_schema_registry".to_string()
            })?;
            (schema, self.writer_plan.as_ref(), payload)
        };
        match plan {
            Some(plan) => Ok(Datum::Cells(plan.row(cols, datum)?)),
            None => Ok(Datum::Value(read_value(schema, datum)?)),
        }
    }
}

/// A datum (all of `datum`) as an Avro value of `schema`.
pub(super) fn read_value(schema: &Schema, mut datum: &[u8]) -> Result<Value, AvroError> {
    let value = apache_avro::from_avro_datum(schema, &mut datum, None)
        .map_err(|e| format!("not an Avro datum of its schema: {e}"))?;
    if !datum.is_empty() {
        return Err(AvroError::Bad(format!(
            "{} bytes left after the Avro datum",
            datum.len()
        )));
    }
    Ok(value)
}

/// An Avro value for display in a message.
fn shown(v: &Value) -> String {
    match serde_json::Value::try_from(v.clone()) {
        Ok(j) => super::got(&j),
        Err(_) => format!("{v:?}"),
    }
}

/// A top-level record's fields as the row's cells, borrowing its strings.
pub(super) fn record_cells<'v>(cols: &Columns, v: &'v Value) -> Result<Vec<Cell<'v>>, String> {
    let fields = match v {
        Value::Record(fields) => fields,
        Value::Union(_, inner) => return record_cells(cols, inner),
        other => return Err(format!("not an Avro record: {}", shown(other))),
    };
    let n = cols.kinds.len();
    let mut cells: Vec<Cell<'v>> = (0..n).map(|_| Cell::Null).collect();
    let mut given = vec![false; n];
    for (name, value) in fields {
        let Some(&i) = cols.lookup.get(name.as_str()) else {
            continue;
        };
        given[i] = true;
        cells[i] = cell(&cols.kinds[i], &cols.names[i], value)?;
    }
    for (i, c) in cells.iter().enumerate() {
        if !cols.fields[i].is_nullable() && matches!(c, Cell::Null) {
            return Err(format!(
                "column {} is NOT NULL but {}",
                cols.names[i],
                if given[i] { "null" } else { "missing" }
            ));
        }
    }
    Ok(cells)
}

/// One Avro value into a column of `kind`, borrowing its text.
fn cell<'v>(kind: &Kind, name: &str, v: &'v Value) -> Result<Cell<'v>, String> {
    let wrong = |v: &Value| format!("column {name}: expected {}, got {}", kind.want(), shown(v));
    let float = |f: f64| kind.float(name, f, &f);
    let time =
        |r: Result<i64, String>| r.map(Cell::Time).map_err(|m| format!("column {name}: {m}"));
    match (kind, v) {
        (_, Value::Null) => Ok(Cell::Null),
        (_, Value::Union(_, inner)) => cell(kind, name, inner),
        (Kind::Struct(cols), Value::Record(_)) => record_cells(cols, v).map(Cell::Struct),
        (Kind::Time, Value::TimestampMicros(t) | Value::LocalTimestampMicros(t)) => {
            Ok(Cell::Time(*t))
        }
        (Kind::Time, Value::TimestampMillis(t) | Value::LocalTimestampMillis(t)) => t
            .checked_mul(1000)
            .map(Cell::Time)
            .ok_or_else(|| format!("column {name}: timestamp {t} ms is out of range")),
        (Kind::Time, Value::TimestampNanos(t) | Value::LocalTimestampNanos(t)) => {
            Ok(Cell::Time(t / 1000))
        }
        (Kind::Time, Value::Date(d)) => Ok(Cell::Time(i64::from(*d) * 86_400_000_000)),
        (Kind::Time, Value::Long(t)) => time(epoch_to_micros(*t as f64)),
        (Kind::Time, Value::Int(t)) => time(epoch_to_micros(f64::from(*t))),
        (Kind::Time, Value::Double(t)) => time(epoch_to_micros(*t)),
        (Kind::Time, Value::String(s)) => time(parse_time(s)),
        (Kind::Int, Value::Int(i)) => Ok(Cell::Int(i64::from(*i))),
        (Kind::Int, Value::Long(i)) => Ok(Cell::Int(*i)),
        (Kind::UInt, Value::Int(i)) if *i >= 0 => Ok(Cell::UInt(*i as u64)),
        (Kind::UInt, Value::Long(i)) if *i >= 0 => Ok(Cell::UInt(*i as u64)),
        (Kind::Int, Value::String(s)) => s.trim().parse().map(Cell::Int).map_err(|_| wrong(v)),
        (Kind::UInt, Value::String(s)) => s.trim().parse().map(Cell::UInt).map_err(|_| wrong(v)),
        (Kind::Float64 | Kind::Float32, Value::Double(f)) => float(*f),
        (Kind::Float64 | Kind::Float32, Value::Float(f)) => float(f64::from(*f)),
        (Kind::Float64 | Kind::Float32, Value::Int(i)) => float(f64::from(*i)),
        (Kind::Float64 | Kind::Float32, Value::Long(i)) => float(*i as f64),
        (Kind::Float64 | Kind::Float32, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(f) => float(f),
            Err(_) => Err(wrong(v)),
        },
        (Kind::Bool, Value::Boolean(b)) => Ok(Cell::Bool(*b)),
        (Kind::Bool, Value::Int(i @ (0 | 1))) => Ok(Cell::Bool(*i == 1)),
        (Kind::Bool, Value::Long(i @ (0 | 1))) => Ok(Cell::Bool(*i == 1)),
        (Kind::Text, Value::String(s) | Value::Enum(_, s)) => Ok(Cell::Text(Cow::Borrowed(s))),
        (Kind::Text, Value::Uuid(u)) => Ok(Cell::Text(Cow::Owned(u.to_string()))),
        (Kind::Text, Value::Bytes(b)) => std::str::from_utf8(b)
            .map(|s| Cell::Text(Cow::Borrowed(s)))
            .map_err(|_| format!("column {name}: bytes that are not UTF-8 text")),
        (
            Kind::Text,
            Value::Record(_)
            | Value::Array(_)
            | Value::Map(_)
            | Value::Boolean(_)
            | Value::Int(_)
            | Value::Long(_)
            | Value::Float(_)
            | Value::Double(_),
        ) => serde_json::Value::try_from(v.clone())
            .map(|j| Cell::Text(Cow::Owned(j.to_string())))
            .map_err(|e| format!("column {name}: {e}")),
        (_, v) => Err(wrong(v)),
    }
}
