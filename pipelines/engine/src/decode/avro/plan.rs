//! A writer schema compiled against the declared columns, so an Avro datum is read straight
//! from its bytes into the row's cells: each writer field is either decoded into the column
//! it fills (strings borrowed from the message) or skipped without being built. This is the
//! fast path of [`super::AvroDecoder`]; it gives the same cells and the same messages as
//! reading the datum into an `apache_avro` value first (a differential test holds the two
//! together). A schema with what the plan does not cover (named references, decimals,
//! durations, uuids, fixed, a record, array or map into a TEXT column) is read the general
//! way.

use std::borrow::Cow;

use apache_avro::Schema;
use apache_avro::types::Value;

use super::super::{Cell, Columns, Kind, epoch_to_micros, parse_time};

/// How one writer type is read.
#[derive(Debug)]
enum Ty {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Fixed(usize),
    Enum(Vec<String>),
    Date,
    /// Read as an int (time-millis) and only skipped.
    SkipInt,
    /// Read as a long (time-micros) and only skipped.
    SkipLong,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    Union(Vec<Ty>),
    Record(Plan),
    Array(Box<Ty>),
    Map(Box<Ty>),
}

/// A record's fields in writer order, each with the column it fills.
#[derive(Debug)]
pub(in crate::decode) struct Plan {
    fields: Vec<(Option<usize>, Ty)>,
}

/// A primitive as read, borrowing its bytes.
enum Prim<'a> {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Str(&'a str),
    Bytes(&'a [u8]),
    Date(i32),
    TsMillis(i64),
    TsMicros(i64),
    TsNanos(i64),
}

impl Prim<'_> {
    /// The same value as `apache_avro` gives it, for messages.
    fn value(&self) -> Value {
        match *self {
            Prim::Null => Value::Null,
            Prim::Bool(b) => Value::Boolean(b),
            Prim::Int(i) => Value::Int(i),
            Prim::Long(i) => Value::Long(i),
            Prim::Float(f) => Value::Float(f),
            Prim::Double(f) => Value::Double(f),
            Prim::Str(s) => Value::String(s.to_string()),
            Prim::Bytes(b) => Value::Bytes(b.to_vec()),
            Prim::Date(d) => Value::Date(d),
            Prim::TsMillis(t) => Value::TimestampMillis(t),
            Prim::TsMicros(t) => Value::TimestampMicros(t),
            Prim::TsNanos(t) => Value::TimestampNanos(t),
        }
    }
}

impl Plan {
    /// The plan for a writer record schema against `cols`, or `None` when the schema holds
    /// something only the general path reads.
    pub(in crate::decode) fn compile(schema: &Schema, cols: &Columns) -> Option<Plan> {
        match schema {
            Schema::Record(r) => {
                let mut fields = Vec::with_capacity(r.fields.len());
                for f in &r.fields {
                    let col = cols.lookup.get(f.name.as_str()).copied();
                    let ty = ty(&f.schema, col.map(|i| &cols.kinds[i]))?;
                    fields.push((col, ty));
                }
                Some(Plan { fields })
            }
            _ => None,
        }
    }

    /// One datum (all of `data`) into a row of `cols`' cells.
    pub(in crate::decode) fn row<'a>(
        &self,
        cols: &Columns,
        data: &'a [u8],
    ) -> Result<Vec<Cell<'a>>, String> {
        let mut r = Reader { data, at: 0 };
        let cells = self
            .cells(cols, &mut r)
            .map_err(|e| format!("not an Avro datum of its schema: {e}"))?;
        if r.at != data.len() {
            return Err(format!(
                "{} bytes left after the Avro datum",
                data.len() - r.at
            ));
        }
        cells.map_err(|w| w.0)
    }

    /// `Err` for bytes that do not frame; `Ok(Err)` for a value its column cannot take (the
    /// datum is still read to its end, as the general path reads it first).
    fn cells<'a>(
        &self,
        cols: &Columns,
        r: &mut Reader<'a>,
    ) -> Result<Result<Vec<Cell<'a>>, Wrong>, String> {
        let n = cols.kinds.len();
        let mut cells: Vec<Cell<'a>> = (0..n).map(|_| Cell::Null).collect();
        let mut given = vec![false; n];
        let mut wrong = None;
        for (col, ty) in &self.fields {
            match col {
                None => skip(ty, r)?,
                Some(i) => {
                    let i = *i;
                    given[i] = true;
                    match read(ty, &cols.kinds[i], &cols.names[i], r)? {
                        Ok(c) => cells[i] = c,
                        Err(w) => {
                            wrong.get_or_insert(w);
                        }
                    }
                }
            }
        }
        if let Some(w) = wrong {
            return Ok(Err(w));
        }
        for (i, c) in cells.iter().enumerate() {
            if !cols.fields[i].is_nullable() && matches!(c, Cell::Null) {
                return Ok(Err(Wrong(format!(
                    "column {} is NOT NULL but {}",
                    cols.names[i],
                    if given[i] { "null" } else { "missing" }
                ))));
            }
        }
        Ok(Ok(cells))
    }
}

/// A value its column cannot take, with the message.
struct Wrong(String);

/// The reading of a writer type, checked against the column kind it fills (if any).
fn ty(schema: &Schema, kind: Option<&Kind>) -> Option<Ty> {
    Some(match schema {
        Schema::Null => Ty::Null,
        Schema::Boolean => Ty::Boolean,
        Schema::Int => Ty::Int,
        Schema::Long => Ty::Long,
        Schema::Float => Ty::Float,
        Schema::Double => Ty::Double,
        Schema::Bytes => Ty::Bytes,
        Schema::String => Ty::String,
        Schema::Uuid if kind.is_none() => Ty::Bytes,
        Schema::Fixed(f) if kind.is_none() => Ty::Fixed(f.size),
        Schema::Enum(e) => Ty::Enum(e.symbols.clone()),
        Schema::Date => Ty::Date,
        Schema::TimeMillis if kind.is_none() => Ty::SkipInt,
        Schema::TimeMicros if kind.is_none() => Ty::SkipLong,
        Schema::TimestampMillis | Schema::LocalTimestampMillis => Ty::TimestampMillis,
        Schema::TimestampMicros | Schema::LocalTimestampMicros => Ty::TimestampMicros,
        Schema::TimestampNanos | Schema::LocalTimestampNanos => Ty::TimestampNanos,
        Schema::Union(u) => Ty::Union(
            u.variants()
                .iter()
                .map(|v| ty(v, kind))
                .collect::<Option<_>>()?,
        ),
        Schema::Record(r) => match kind {
            None => Ty::Record(Plan {
                fields: r
                    .fields
                    .iter()
                    .map(|f| Some((None, ty(&f.schema, None)?)))
                    .collect::<Option<_>>()?,
            }),
            Some(Kind::Struct(inner)) => Ty::Record(Plan::compile(schema, inner)?),
            Some(_) => return None,
        },
        Schema::Array(a) if kind.is_none() => Ty::Array(Box::new(ty(&a.items, None)?)),
        Schema::Map(m) if kind.is_none() => Ty::Map(Box::new(ty(&m.types, None)?)),
        _ => return None,
    })
}

/// Reads one value of `ty` into a cell of `kind`.
fn read<'a>(
    ty: &Ty,
    kind: &Kind,
    name: &str,
    r: &mut Reader<'a>,
) -> Result<Result<Cell<'a>, Wrong>, String> {
    let p = match ty {
        Ty::Union(branches) => {
            let b = r.branch(branches.len())?;
            return read(&branches[b], kind, name, r);
        }
        Ty::Record(plan) => {
            let Kind::Struct(inner) = kind else {
                return Err("a record plan for a column that is not a STRUCT".into());
            };
            return Ok(plan.cells(inner, r)?.map(Cell::Struct));
        }
        Ty::Null => Prim::Null,
        Ty::Boolean => Prim::Bool(r.boolean()?),
        Ty::Int => Prim::Int(r.int()?),
        Ty::Long => Prim::Long(r.long()?),
        Ty::Float => Prim::Float(f32::from_le_bytes(r.array()?)),
        Ty::Double => Prim::Double(f64::from_le_bytes(r.array()?)),
        Ty::Bytes => Prim::Bytes(r.bytes()?),
        Ty::String => Prim::Str(r.string()?),
        Ty::Enum(symbols) => {
            let i = r.int()?;
            let s = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| format!("enum index {i} of {} symbols", symbols.len()))?;
            // The symbol belongs to the plan, not the message: TEXT takes a copy.
            return Ok(match kind {
                Kind::Text => Ok(Cell::Text(Cow::Owned(s.clone()))),
                _ => Err(Wrong(format!(
                    "column {name}: expected {}, got {}",
                    kind.want(),
                    super::shown(&Value::Enum(i as u32, s.clone()))
                ))),
            });
        }
        Ty::Date => Prim::Date(r.int()?),
        Ty::TimestampMillis => Prim::TsMillis(r.long()?),
        Ty::TimestampMicros => Prim::TsMicros(r.long()?),
        Ty::TimestampNanos => Prim::TsNanos(r.long()?),
        Ty::Fixed(_) | Ty::SkipInt | Ty::SkipLong | Ty::Array(_) | Ty::Map(_) => {
            return Err("a skipped type planned into a column".into());
        }
    };
    Ok(cell(kind, name, p).map_err(Wrong))
}

/// A primitive into a cell of `kind`: the conversions of the general path's `cell`.
fn cell<'a>(kind: &Kind, name: &str, p: Prim<'a>) -> Result<Cell<'a>, String> {
    let wrong = |p: &Prim| {
        format!(
            "column {name}: expected {}, got {}",
            kind.want(),
            super::shown(&p.value())
        )
    };
    let float = |f: f64| kind.float(name, f, &f);
    let time =
        |r: Result<i64, String>| r.map(Cell::Time).map_err(|m| format!("column {name}: {m}"));
    match (kind, &p) {
        (_, Prim::Null) => Ok(Cell::Null),
        (Kind::Time, Prim::TsMicros(t)) => Ok(Cell::Time(*t)),
        (Kind::Time, Prim::TsMillis(t)) => t
            .checked_mul(1000)
            .map(Cell::Time)
            .ok_or_else(|| format!("column {name}: timestamp {t} ms is out of range")),
        (Kind::Time, Prim::TsNanos(t)) => Ok(Cell::Time(t / 1000)),
        (Kind::Time, Prim::Date(d)) => Ok(Cell::Time(i64::from(*d) * 86_400_000_000)),
        (Kind::Time, Prim::Long(t)) => time(epoch_to_micros(*t as f64)),
        (Kind::Time, Prim::Int(t)) => time(epoch_to_micros(f64::from(*t))),
        (Kind::Time, Prim::Double(t)) => time(epoch_to_micros(*t)),
        (Kind::Time, Prim::Str(s)) => time(parse_time(s)),
        (Kind::Int, Prim::Int(i)) => Ok(Cell::Int(i64::from(*i))),
        (Kind::Int, Prim::Long(i)) => Ok(Cell::Int(*i)),
        (Kind::UInt, Prim::Int(i)) if *i >= 0 => Ok(Cell::UInt(*i as u64)),
        (Kind::UInt, Prim::Long(i)) if *i >= 0 => Ok(Cell::UInt(*i as u64)),
        (Kind::Int, Prim::Str(s)) => s.trim().parse().map(Cell::Int).map_err(|_| wrong(&p)),
        (Kind::UInt, Prim::Str(s)) => s.trim().parse().map(Cell::UInt).map_err(|_| wrong(&p)),
        (Kind::Float64 | Kind::Float32, Prim::Double(f)) => float(*f),
        (Kind::Float64 | Kind::Float32, Prim::Float(f)) => float(f64::from(*f)),
        (Kind::Float64 | Kind::Float32, Prim::Int(i)) => float(f64::from(*i)),
        (Kind::Float64 | Kind::Float32, Prim::Long(i)) => float(*i as f64),
        (Kind::Float64 | Kind::Float32, Prim::Str(s)) => match s.trim().parse::<f64>() {
            Ok(f) => float(f),
            Err(_) => Err(wrong(&p)),
        },
        (Kind::Bool, Prim::Bool(b)) => Ok(Cell::Bool(*b)),
        (Kind::Bool, Prim::Int(i @ (0 | 1))) => Ok(Cell::Bool(*i == 1)),
        (Kind::Bool, Prim::Long(i @ (0 | 1))) => Ok(Cell::Bool(*i == 1)),
        (Kind::Text, Prim::Str(s)) => Ok(Cell::Text(Cow::Borrowed(s))),
        (Kind::Text, Prim::Bytes(b)) => std::str::from_utf8(b)
            .map(|s| Cell::Text(Cow::Borrowed(s)))
            .map_err(|_| format!("column {name}: bytes that are not UTF-8 text")),
        (
            Kind::Text,
            Prim::Bool(_) | Prim::Int(_) | Prim::Long(_) | Prim::Float(_) | Prim::Double(_),
        ) => serde_json::Value::try_from(p.value())
            .map(|j| Cell::Text(Cow::Owned(j.to_string())))
            .map_err(|e| format!("column {name}: {e}")),
        _ => Err(wrong(&p)),
    }
}

/// Reads past one value of `ty`.
fn skip(ty: &Ty, r: &mut Reader<'_>) -> Result<(), String> {
    match ty {
        Ty::Null => {}
        Ty::Boolean => {
            r.boolean()?;
        }
        Ty::Int | Ty::Date | Ty::SkipInt => {
            r.int()?;
        }
        Ty::Enum(symbols) => {
            let i = r.int()?;
            if usize::try_from(i).map_or(true, |i| i >= symbols.len()) {
                return Err(format!("enum index {i} of {} symbols", symbols.len()));
            }
        }
        Ty::Long
        | Ty::SkipLong
        | Ty::TimestampMillis
        | Ty::TimestampMicros
        | Ty::TimestampNanos => {
            r.long()?;
        }
        Ty::Float => r.take(4).map(drop)?,
        Ty::Double => r.take(8).map(drop)?,
        Ty::Bytes => r.bytes().map(drop)?,
        Ty::String => r.string().map(drop)?,
        Ty::Fixed(n) => r.take(*n).map(drop)?,
        Ty::Union(branches) => {
            let b = r.branch(branches.len())?;
            skip(&branches[b], r)?;
        }
        Ty::Record(plan) => {
            for (_, t) in &plan.fields {
                skip(t, r)?;
            }
        }
        Ty::Array(item) => r.blocks(|r| skip(item, r))?,
        Ty::Map(value) => r.blocks(|r| {
            r.string()?;
            skip(value, r)
        })?,
    }
    Ok(())
}

/// Avro's binary encoding over one datum's bytes.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| "the datum ends early".to_string())?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// A zig-zag varint of up to 64 bits.
    fn long(&mut self) -> Result<i64, String> {
        let mut v = 0u64;
        for j in 0..10 {
            let b = *self
                .data
                .get(self.at)
                .ok_or_else(|| "the datum ends early".to_string())?;
            self.at += 1;
            v |= u64::from(b & 0x7f) << (j * 7);
            if b & 0x80 == 0 {
                return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
            }
        }
        Err("an integer longer than 64 bits".into())
    }

    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("{v} does not fit an Avro int"))
    }

    fn boolean(&mut self) -> Result<bool, String> {
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("{b} is not a boolean")),
        }
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    fn branch(&mut self, n: usize) -> Result<usize, String> {
        let i = self.long()?;
        usize::try_from(i)
            .ok()
            .filter(|i| *i < n)
            .ok_or_else(|| format!("union branch {i} of {n}"))
    }

    /// An array's or map's blocks, calling `item` for each entry.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let n = self.long()?;
            if n == 0 {
                return Ok(());
            }
            if n < 0 {
                self.long()?; // the block's size in bytes
            }
            for _ in 0..n.unsigned_abs() {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The plan against the general path (datum → `apache_avro` value → cells) on random
    //! datums of a schema that exercises every planned type, conversion and failure.

    use apache_avro::types::Value;
    use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const WRITER: &str = r#"{"type": "record", "name": "tx", "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": ["null", "double"]},
        {"name": "cents", "type": "long"},
        {"name": "qty", "type": "int"},
        {"name": "rate", "type": "float"},
        {"name": "flag", "type": ["null", "boolean"]},
        {"name": "bit", "type": "int"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "when", "type": "string"},
        {"name": "num_text", "type": "string"},
        {"name": "kind", "type": {"type": "enum", "name": "k", "symbols": ["a", "b", "c"]}},
        {"name": "raw", "type": "bytes"},
        {"name": "merchant", "type": ["null", {"type": "record", "name": "m", "fields": [
            {"name": "mid", "type": "string"},
            {"name": "mcc", "type": ["null", "int"]},
            {"name": "junk", "type": {"type": "array", "items": "long"}}
        ]}]},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "fx", "type": {"type": "fixed", "name": "f4", "size": 4}},
        {"name": "skipped", "type": {"type": "record", "name": "s", "fields": [
            {"name": "a", "type": ["null", "string"]}, {"name": "b", "type": "double"}
        ]}},
        {"name": "count_text", "type": "long"},
        {"name": "score", "type": "double"}
    ]}"#;

    fn columns() -> Columns {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let merchant = Fields::from(vec![
            Field::new("mid", DataType::Utf8, false),
            Field::new("mcc", DataType::Int64, true),
        ]);
        let fields = Fields::from(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, false),
            Field::new("cents", DataType::UInt64, true),
            Field::new("qty", DataType::Float32, true),
            Field::new("rate", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("bit", DataType::Boolean, true),
            Field::new("ts", ts.clone(), false),
            Field::new("ts_us", ts.clone(), true),
            Field::new("day", ts.clone(), true),
            Field::new("when", ts, true),
            Field::new("num_text", DataType::Int64, true),
            Field::new("kind", DataType::Utf8, true),
            Field::new("raw", DataType::Utf8, true),
            Field::new("merchant", DataType::Struct(merchant), true),
            Field::new("count_text", DataType::Utf8, true),
            Field::new("score", DataType::Float32, true),
            Field::new("absent", DataType::Utf8, true),
        ]);
        Columns::new(&fields, &[], "").expect("columns")
    }

    fn datum(rng: &mut ChaCha8Rng) -> Value {
        let pick = |rng: &mut ChaCha8Rng, n: u32| rng.random_range(0..n);
        let text = |rng: &mut ChaCha8Rng| -> String {
            match pick(rng, 6) {
                0 => String::new(),
                1 => "12".into(),
                2 => " 7 ".into(),
                3 => "x\u{e9}y".into(),
                4 => "-3".into(),
                _ => format!("{}", rng.random_range(-1000i64..1000)),
            }
        };
        let union = |i: u32, v: Value| Value::Union(i, Box::new(v));
        let merchant = if pick(rng, 4) == 0 {
            union(0, Value::Null)
        } else {
            union(
                1,
                Value::Record(vec![
                    ("mid".into(), Value::String(text(rng))),
                    (
                        "mcc".into(),
                        if pick(rng, 3) == 0 {
                            union(0, Value::Null)
                        } else {
                            union(1, Value::Int(rng.random_range(1000..9999)))
                        },
                    ),
                    (
                        "junk".into(),
                        Value::Array((0..pick(rng, 3)).map(|i| Value::Long(i.into())).collect()),
                    ),
                ]),
            )
        };
        let big = [0.0, -1.5, 1e300, f64::NAN, f64::INFINITY, 12.25];
        Value::Record(vec![
            ("id".into(), Value::String(text(rng))),
            (
                "amount".into(),
                if pick(rng, 8) == 0 {
                    union(0, Value::Null)
                } else {
                    union(1, Value::Double(big[pick(rng, 6) as usize]))
                },
            ),
            ("cents".into(), Value::Long(rng.random_range(-5..100_000))),
            ("qty".into(), Value::Int(rng.random_range(-3..3))),
            ("rate".into(), Value::Float(rng.random_range(-2.0f32..2.0))),
            (
                "flag".into(),
                if pick(rng, 3) == 0 {
                    union(0, Value::Null)
                } else {
                    union(1, Value::Boolean(pick(rng, 2) == 1))
                },
            ),
            ("bit".into(), Value::Int(rng.random_range(-1..3))),
            (
                "ts".into(),
                Value::TimestampMillis(if pick(rng, 20) == 0 {
                    i64::MAX / 10
                } else {
                    1_700_000_000_000 + rng.random_range(0..1_000_000)
                }),
            ),
            (
                "ts_us".into(),
                if pick(rng, 2) == 0 {
                    union(0, Value::Null)
                } else {
                    union(1, Value::TimestampMicros(rng.random_range(0..i64::MAX / 4)))
                },
            ),
            ("day".into(), Value::Date(rng.random_range(0..20_000))),
            (
                "when".into(),
                Value::String(match pick(rng, 4) {
                    0 => "2026-12-02T00:31:50Z".into(),
                    1 => "1700000000".into(),
                    2 => "2026-12-02 00:31:50.123".into(),
                    _ => text(rng),
                }),
            ),
            ("num_text".into(), Value::String(text(rng))),
            (
                "kind".into(),
                Value::Enum(pick(rng, 3), ["a", "b", "c"][pick(rng, 3) as usize].into()),
            ),
            (
                "raw".into(),
                Value::Bytes(if pick(rng, 5) == 0 {
                    vec![0xff, 0xfe]
                } else {
                    b"ok".to_vec()
                }),
            ),
            ("merchant".into(), merchant),
            (
                "tags".into(),
                Value::Map(
                    (0..pick(rng, 3))
                        .map(|i| (format!("k{i}"), Value::String(text(rng))))
                        .collect(),
                ),
            ),
            ("fx".into(), Value::Fixed(4, vec![1, 2, 3, 4])),
            (
                "skipped".into(),
                Value::Record(vec![
                    ("a".into(), union(1, Value::String(text(rng)))),
                    ("b".into(), Value::Double(1.0)),
                ]),
            ),
            ("count_text".into(), Value::Long(rng.random_range(-9..9))),
            ("score".into(), Value::Double(big[pick(rng, 6) as usize])),
        ])
    }

    #[test]
    fn the_plan_reads_what_the_general_path_reads() {
        let schema = Schema::parse_str(WRITER).expect("schema");
        let cols = columns();
        let plan = Plan::compile(&schema, &cols).expect("this schema is planned");
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let (mut rows, mut refused) = (0, 0);
        for i in 0..5000 {
            // Enum symbols must match their index for the encoder.
            let mut v = datum(&mut rng);
            if let Value::Record(fields) = &mut v
                && let Some((_, Value::Enum(i, s))) = fields.iter_mut().find(|(n, _)| n == "kind")
            {
                *s = ["a", "b", "c"][*i as usize].into();
            }
            let bytes = apache_avro::to_avro_datum(&schema, v).expect("encodes");
            let general = super::super::read_value(&schema, &bytes)
                .map_err(|e| match e {
                    super::super::AvroError::Bad(m) | super::super::AvroError::Unavailable(m) => m,
                })
                .and_then(|value| {
                    super::super::record_cells(&cols, &value).map(|c| format!("{c:?}"))
                });
            let planned = plan.row(&cols, &bytes).map(|c| format!("{c:?}"));
            assert_eq!(planned, general, "datum {i}");
            if planned.is_ok() {
                rows += 1;
            } else {
                refused += 1;
            }
            // Cut short, it is a framing error on the plan's side too (never a row).
            let cut = &bytes[..bytes.len() / 2];
            assert!(plan.row(&cols, cut).is_err(), "datum {i} cut short");
        }
        // Both outcomes are well represented.
        assert!(
            rows > 300 && refused > 300,
            "rows {rows}, refused {refused}"
        );
    }

    #[test]
    fn schemas_outside_the_plan_take_the_general_path() {
        let cols = columns();
        for writer in [
            // A record into a TEXT column (as JSON), a decimal, a named reference.
            r#"{"type": "record", "name": "a", "fields": [{"name": "id", "type":
                {"type": "record", "name": "r", "fields": [{"name": "x", "type": "int"}]}}]}"#,
            r#"{"type": "record", "name": "a", "fields": [{"name": "absent", "type":
                {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]}"#,
            r#"{"type": "record", "name": "a", "fields": [
                {"name": "x", "type": {"type": "fixed", "name": "f", "size": 2}},
                {"name": "y", "type": "f"}]}"#,
        ] {
            let schema = Schema::parse_str(writer).expect("schema");
            assert!(Plan::compile(&schema, &cols).is_none(), "{writer}");
        }
    }
}
