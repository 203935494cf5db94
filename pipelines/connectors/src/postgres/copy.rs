//! Arrow columns → PostgreSQL's binary `COPY` format, written straight from the arrays (no
//! per-value trait objects). [`Encoder::new`] checks every column against the target
//! table's column type once, so a mismatch fails at start naming the column; encoding then
//! cannot fail except for an integer that does not fit a narrower Postgres column.
//!
//! Format (PostgreSQL docs, "COPY … Binary Format"): an 11-byte signature, a 4-byte flags
//! field and a 4-byte header-extension length; per row a 16-bit field count, then per field a
//! 32-bit length (-1 for NULL) and the value in the type's binary send format; a 16-bit -1
//! trailer.

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, RecordBatch,
};
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use bytes::{BufMut, BytesMut};
use tokio_postgres::types::Type;

/// The signature, flags and header-extension length that open a binary COPY stream.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end-of-data marker.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from the Unix epoch to Postgres' epoch, 2000-01-01.
const PG_EPOCH_US: i64 = 946_684_800_000_000;
/// Days from 1970-01-01 to 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// A column that cannot go to its Postgres column.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CopyError {
    #[error(
        "column {column}: {arrow} cannot be written to Postgres type {pg}; \
         change the Postgres column or the pipeline column's type"
    )]
    Type {
        column: String,
        arrow: DataType,
        pg: String,
    },
    #[error("column {column}: value {value} does not fit Postgres type {pg}")]
    Range {
        column: String,
        value: i64,
        pg: &'static str,
    },
}

/// How one Arrow column is written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Text,
    Jsonb,
    Int8,
    Int4,
    Int2,
    Float8,
    Float4,
    Bool,
    /// timestamp or timestamptz (same wire format), from any Arrow time unit.
    Timestamp,
    Date,
}

fn kind_for(arrow: &DataType, pg: &Type) -> Option<Kind> {
    use DataType as D;
    let text = matches!(arrow, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let int = matches!(arrow, D::Int16 | D::Int32 | D::Int64);
    Some(match *pg {
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::JSON if text => Kind::Text,
        Type::JSONB if text => Kind::Jsonb,
        Type::INT8 if int => Kind::Int8,
        Type::INT4 if int => Kind::Int4,
        Type::INT2 if int => Kind::Int2,
        Type::FLOAT8 if matches!(arrow, D::Float64 | D::Float32) || int => Kind::Float8,
        Type::FLOAT4 if matches!(arrow, D::Float32 | D::Float64) => Kind::Float4,
        Type::BOOL if matches!(arrow, D::Boolean) => Kind::Bool,
        Type::TIMESTAMP | Type::TIMESTAMPTZ if matches!(arrow, D::Timestamp(..)) => Kind::Timestamp,
        Type::DATE if matches!(arrow, D::Date32) => Kind::Date,
        _ => return None,
    })
}

/// Encodes batches of one schema for one target column list.
#[derive(Debug, Clone)]
pub struct Encoder {
    kinds: Vec<Kind>,
    names: Vec<String>,
}

/// One column of a batch, typed for the row loop.
enum Col<'a> {
    Utf8(&'a arrow::array::StringArray),
    LargeUtf8(&'a arrow::array::LargeStringArray),
    Utf8View(&'a arrow::array::StringViewArray),
    I64(&'a Int64Array),
    I32(&'a Int32Array),
    I16(&'a Int16Array),
    F64(&'a Float64Array),
    F32(&'a Float32Array),
    Bool(&'a BooleanArray),
    /// The array (for nulls), its values, and the factor to microseconds (negative: divide).
    Ts(&'a dyn Array, &'a [i64], i64),
    Date(&'a Date32Array),
}

impl Encoder {
    /// Checks `schema`'s columns against the Postgres types of the same columns (in order).
    pub fn new(schema: &Schema, pg_types: &[Type]) -> Result<Self, CopyError> {
        let mut kinds = Vec::with_capacity(pg_types.len());
        for (f, pg) in schema.fields().iter().zip(pg_types) {
            let k = kind_for(f.data_type(), pg).ok_or_else(|| CopyError::Type {
                column: f.name().clone(),
                arrow: f.data_type().clone(),
                pg: pg.name().to_string(),
            })?;
            kinds.push(k);
        }
        Ok(Encoder {
            kinds,
            names: schema.fields().iter().map(|f| f.name().clone()).collect(),
        })
    }

    /// Appends `batch`'s rows (no header or trailer) to `out`.
    pub fn encode(&self, batch: &RecordBatch, out: &mut BytesMut) -> Result<(), CopyError> {
        let cols = batch
            .columns()
            .iter()
            .zip(&self.names)
            .map(|(a, name)| typed(a, name))
            .collect::<Result<Vec<Col<'_>>, CopyError>>()?;
        let n = batch.num_rows();
        out.reserve(n * (2 + cols.len() * 12));
        let ncols = cols.len() as i16;
        for row in 0..n {
            out.put_i16(ncols);
            for (c, (col, kind)) in cols.iter().zip(&self.kinds).enumerate() {
                self.field(col, *kind, row, out, c)?;
            }
        }
        Ok(())
    }

    #[inline]
    fn field(
        &self,
        col: &Col<'_>,
        kind: Kind,
        row: usize,
        out: &mut BytesMut,
        c: usize,
    ) -> Result<(), CopyError> {
        macro_rules! null_or {
            ($arr:expr, $body:expr) => {
                if $arr.is_null(row) {
                    out.put_i32(-1);
                    return Ok(());
                } else {
                    $body
                }
            };
        }
        match col {
            Col::Utf8(a) => null_or!(a, put_text(out, a.value(row), kind)),
            Col::LargeUtf8(a) => null_or!(a, put_text(out, a.value(row), kind)),
            Col::Utf8View(a) => null_or!(a, put_text(out, a.value(row), kind)),
            Col::I64(a) => null_or!(a, self.put_int(out, a.value(row), kind, c)?),
            Col::I32(a) => null_or!(a, self.put_int(out, i64::from(a.value(row)), kind, c)?),
            Col::I16(a) => null_or!(a, self.put_int(out, i64::from(a.value(row)), kind, c)?),
            Col::F64(a) => null_or!(a, put_float(out, a.value(row), kind)),
            Col::F32(a) => null_or!(a, put_float(out, f64::from(a.value(row)), kind)),
            Col::Bool(a) => null_or!(a, {
                out.put_i32(1);
                out.put_u8(u8::from(a.value(row)));
            }),
            Col::Ts(a, values, factor) => null_or!(a, {
                let v = values[row];
                let us = if *factor >= 0 {
                    v.saturating_mul(*factor)
                } else {
                    v / -*factor
                };
                out.put_i32(8);
                out.put_i64(us - PG_EPOCH_US);
            }),
            Col::Date(a) => null_or!(a, {
                out.put_i32(4);
                out.put_i32(a.value(row) - PG_EPOCH_DAYS);
            }),
        }
        Ok(())
    }

    fn put_int(&self, out: &mut BytesMut, v: i64, kind: Kind, c: usize) -> Result<(), CopyError> {
        let range = |pg: &'static str| CopyError::Range {
            column: self.names[c].clone(),
            value: v,
            pg,
        };
        match kind {
            Kind::Int8 => {
                out.put_i32(8);
                out.put_i64(v);
            }
            Kind::Int4 => {
                out.put_i32(4);
                out.put_i32(i32::try_from(v).map_err(|_| range("integer"))?);
            }
            Kind::Int2 => {
                out.put_i32(2);
                out.put_i16(i16::try_from(v).map_err(|_| range("smallint"))?);
            }
            _ => put_float(out, v as f64, Kind::Float8),
        }
        Ok(())
    }
}

#[inline]
fn put_text(out: &mut BytesMut, s: &str, kind: Kind) {
    if kind == Kind::Jsonb {
        // jsonb's binary format is a version byte (1) and the JSON text.
        out.put_i32(s.len() as i32 + 1);
        out.put_u8(1);
    } else {
        out.put_i32(s.len() as i32);
    }
    out.put_slice(s.as_bytes());
}

#[inline]
fn put_float(out: &mut BytesMut, v: f64, kind: Kind) {
    if kind == Kind::Float4 {
        out.put_i32(4);
        out.put_f32(v as f32);
    } else {
        out.put_i32(8);
        out.put_f64(v);
    }
}

fn typed<'a>(a: &'a ArrayRef, name: &str) -> Result<Col<'a>, CopyError> {
    use DataType as D;
    Ok(match a.data_type() {
        D::Utf8 => Col::Utf8(a.as_string::<i32>()),
        D::LargeUtf8 => Col::LargeUtf8(a.as_string::<i64>()),
        D::Utf8View => Col::Utf8View(a.as_string_view()),
        D::Int64 => Col::I64(a.as_primitive::<Int64Type>()),
        D::Int32 => Col::I32(a.as_primitive::<Int32Type>()),
        D::Int16 => Col::I16(a.as_primitive::<Int16Type>()),
        D::Float64 => Col::F64(a.as_primitive()),
        D::Float32 => Col::F32(a.as_primitive()),
        D::Boolean => Col::Bool(a.as_boolean()),
        D::Date32 => Col::Date(a.as_primitive()),
        D::Timestamp(TimeUnit::Second, _) => Col::Ts(
            a.as_ref(),
            a.as_primitive::<TimestampSecondType>().values(),
            1_000_000,
        ),
        D::Timestamp(TimeUnit::Millisecond, _) => Col::Ts(
            a.as_ref(),
            a.as_primitive::<TimestampMillisecondType>().values(),
            1_000,
        ),
        D::Timestamp(TimeUnit::Microsecond, _) => Col::Ts(
            a.as_ref(),
            a.as_primitive::<TimestampMicrosecondType>().values(),
            1,
        ),
        D::Timestamp(TimeUnit::Nanosecond, _) => Col::Ts(
            a.as_ref(),
            a.as_primitive::<TimestampNanosecondType>().values(),
            -1_000,
        ),
        other => {
            return Err(CopyError::Type {
                column: name.to_string(),
                arrow: other.clone(),
                pg: "any".into(),
            });
        }
    })
}
