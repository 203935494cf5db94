//! Windowed GROUP BY on streams, Arroyo's `TUMBLE(width)`, `HOP(slide, width)` and
//! `SESSION(gap)` as a GROUP BY column: per key and window, count / sum / min / max / avg of
//! Float64 inputs, emitted once the watermark passes the window's end (so each window is
//! emitted exactly once, complete).
//!
//! Windows are half-open `[start, end)`, aligned to the Unix epoch (`start` a multiple of
//! the width or slide). A session closes when no row of the key follows within `gap`; its
//! `end` is the last row's time plus `gap`, as in Arroyo and Flink.

use std::collections::BTreeMap;

use foldhash::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use arrow::error::ArrowError;

/// The window of a windowed GROUP BY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble { width: i64 },
    Hop { slide: i64, width: i64 },
    Session { gap: i64 },
}

impl WindowKind {
    /// Checks the widths (positive; HOP width a multiple of its slide, as Arroyo requires).
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            WindowKind::Tumble { width } if width <= 0 => {
                Err("TUMBLE width must be positive".into())
            }
            WindowKind::Hop { slide, width } if slide <= 0 || width <= 0 => {
                Err("HOP slide and width must be positive".into())
            }
            WindowKind::Hop { slide, width } if width % slide != 0 => Err(format!(
                "HOP width ({width} us) must be a multiple of its slide ({slide} us)"
            )),
            WindowKind::Session { gap } if gap <= 0 => Err("SESSION gap must be positive".into()),
            _ => Ok(()),
        }
    }
}

/// Aggregate function of a windowed GROUP BY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupFn {
    /// `COUNT(*)`
    CountRows,
    Sum,
    Min,
    Max,
    Avg,
}

/// One aggregate output column.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupAgg {
    pub name: String,
    pub func: GroupFn,
    /// Float64 input column (ignored by `CountRows`).
    pub input: usize,
}

#[derive(Debug, Clone)]
struct Acc {
    rows: i64,
    /// Per aggregate: (count of non-null, sum, min, max).
    vals: Vec<(i64, f64, f64, f64)>,
}

impl Acc {
    fn new(n: usize) -> Self {
        Acc {
            rows: 0,
            vals: vec![(0, 0.0, f64::INFINITY, f64::NEG_INFINITY); n],
        }
    }
    fn add(&mut self, values: &[Option<f64>]) {
        self.rows += 1;
        for (a, v) in self.vals.iter_mut().zip(values) {
            if let Some(x) = v {
                a.0 += 1;
                a.1 += x;
                a.2 = a.2.min(*x);
                a.3 = a.3.max(*x);
            }
        }
    }
}

struct Session {
    start: i64,
    last: i64,
    acc: Acc,
}

/// One window end's groups: by key, and the NULL key's own group (a NULL key is its own
/// group, as in SQL, not the empty string's).
#[derive(Default)]
struct Groups {
    keyed: HashMap<String, (i64, Acc)>,
    null: Option<(i64, Acc)>,
}

impl Groups {
    fn len(&self) -> usize {
        self.keyed.len() + usize::from(self.null.is_some())
    }

    fn insert(&mut self, key: Option<&str>, group: (i64, Acc)) {
        match key {
            Some(k) => {
                self.keyed.insert(k.to_string(), group);
            }
            None => self.null = Some(group),
        }
    }
}

/// Adds a row's values to the window `(end, key)`, opening it (from `start`) if new.
fn add_to(
    open: &mut BTreeMap<i64, Groups>,
    end: i64,
    start: i64,
    key: Option<&str>,
    values: &[Option<f64>],
) {
    let groups = open.entry(end).or_default();
    let found = match key {
        Some(k) => groups.keyed.get_mut(k),
        None => groups.null.as_mut(),
    };
    match found {
        Some((_, acc)) => acc.add(values),
        None => {
            let mut acc = Acc::new(values.len());
            acc.add(values);
            groups.insert(key, (start, acc));
        }
    }
}

/// Windowed aggregation for one `GROUP BY key, <window>`.
pub struct WindowAggregate {
    kind: WindowKind,
    key_col: usize,
    ts_col: usize,
    aggs: Vec<GroupAgg>,
    /// Windows to emit once the watermark reaches their end: end -> key -> (start, acc).
    /// Tumble/hop windows live here from their first row; sessions once closed. (Two levels,
    /// so a row of an open window is added without allocating its key.)
    open: BTreeMap<i64, Groups>,
    /// Session: key -> the key's open session.
    sessions: HashMap<String, Session>,
    /// The NULL key's open session.
    null_session: Option<Session>,
    out_schema: SchemaRef,
}

impl WindowAggregate {
    pub fn new(
        input: &Schema,
        kind: WindowKind,
        key_col: usize,
        ts_col: usize,
        aggs: Vec<GroupAgg>,
    ) -> Result<Self, ArrowError> {
        kind.validate().map_err(ArrowError::InvalidArgumentError)?;
        for a in aggs.iter().filter(|a| a.func != GroupFn::CountRows) {
            let f = input.fields().get(a.input).ok_or_else(|| {
                ArrowError::SchemaError(format!(
                    "aggregate input column {} does not exist",
                    a.input
                ))
            })?;
            if f.data_type() != &DataType::Float64 {
                return Err(ArrowError::SchemaError(format!(
                    "aggregate input {} must be DOUBLE, is {}",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        let key_name = input
            .fields()
            .get(key_col)
            .map(|f| f.name().clone())
            .unwrap_or_else(|| "key".into());
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new(key_name, DataType::Utf8, true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ];
        for a in &aggs {
            fields.push(match a.func {
                GroupFn::CountRows => Field::new(&a.name, DataType::Int64, false),
                _ => Field::new(&a.name, DataType::Float64, true),
            });
        }
        Ok(WindowAggregate {
            kind,
            key_col,
            ts_col,
            aggs,
            open: BTreeMap::new(),
            sessions: HashMap::default(),
            null_session: None,
            out_schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.out_schema.clone()
    }

    /// Windows (or sessions) still open.
    pub fn open_windows(&self) -> usize {
        self.open.values().map(Groups::len).sum::<usize>()
            + self.sessions.len()
            + usize::from(self.null_session.is_some())
    }

    /// Adds rows. Tumble and hop accept any order; sessions need event-time order (the
    /// event-time buffer's output). Rows must not be behind the last watermark given to
    /// [`Self::advance`].
    pub fn process(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let keys = batch
            .column(self.key_col)
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("GROUP BY key must be VARCHAR".into()))?;
        let ts = batch
            .column(self.ts_col)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| {
                ArrowError::SchemaError("window time column must be a timestamp".into())
            })?;
        let inputs: Vec<Option<&Float64Array>> = self
            .aggs
            .iter()
            .map(|a| {
                (a.func != GroupFn::CountRows)
                    .then(|| batch.column(a.input).as_primitive::<Float64Type>())
            })
            .collect();
        let n_aggs = self.aggs.len();
        let mut values = vec![None; n_aggs];
        for r in 0..batch.num_rows() {
            let t = ts.value(r);
            let key = (!keys.is_null(r)).then(|| keys.value(r));
            for (v, col) in values.iter_mut().zip(&inputs) {
                *v = col.and_then(|c| (!c.is_null(r)).then(|| c.value(r)));
            }
            match self.kind {
                WindowKind::Tumble { width } => {
                    let end = t.div_euclid(width) * width + width;
                    add_to(&mut self.open, end, end - width, key, &values);
                }
                WindowKind::Hop { slide, width } => {
                    // Windows [s, s + width) with s a multiple of slide and s <= t < s + width.
                    let last_start = t.div_euclid(slide) * slide;
                    let mut s = last_start;
                    while s > t - width {
                        add_to(&mut self.open, s + width, s, key, &values);
                        s -= slide;
                    }
                }
                WindowKind::Session { gap } => {
                    let fresh = || Session {
                        start: t,
                        last: t,
                        acc: Acc::new(n_aggs),
                    };
                    let s = match key {
                        Some(k) => {
                            if !self.sessions.contains_key(k) {
                                self.sessions.insert(k.to_string(), fresh());
                            }
                            self.sessions.get_mut(k).ok_or_else(|| {
                                ArrowError::ComputeError("session state vanished".into())
                            })?
                        }
                        None => self.null_session.get_or_insert_with(fresh),
                    };
                    if t - s.last > gap {
                        // The old session is complete; keep it for emission at its end.
                        let done = std::mem::replace(s, fresh());
                        self.open
                            .entry(done.last + gap)
                            .or_default()
                            .insert(key, (done.start, done.acc));
                    }
                    s.last = s.last.max(t);
                    s.acc.add(&values);
                }
            }
        }
        Ok(())
    }

    /// Emits every window whose end is at or before `watermark` (all its rows have arrived).
    pub fn advance(&mut self, watermark: i64) -> Result<Option<RecordBatch>, ArrowError> {
        if let WindowKind::Session { gap } = self.kind {
            // Sessions whose last row + gap is behind the watermark cannot grow any more.
            let done: Vec<String> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.last + gap < watermark)
                .map(|(k, _)| k.clone())
                .collect();
            for k in done {
                if let Some(s) = self.sessions.remove(&k) {
                    self.open
                        .entry(s.last + gap)
                        .or_default()
                        .insert(Some(&k), (s.start, s.acc));
                }
            }
            if let Some(s) = self.null_session.take_if(|s| s.last + gap < watermark) {
                self.open
                    .entry(s.last + gap)
                    .or_default()
                    .insert(None, (s.start, s.acc));
            }
        }
        let rest = self.open.split_off(&watermark.saturating_add(1));
        let ready = std::mem::replace(&mut self.open, rest);
        if ready.is_empty() {
            return Ok(None);
        }
        self.emit(ready).map(Some)
    }

    /// Emits everything still open (end of input).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.advance(i64::MAX)
    }

    fn emit(&self, ready: BTreeMap<i64, Groups>) -> Result<RecordBatch, ArrowError> {
        // By end, then key (NULL first): the same output for the same input, whatever the
        // hashing.
        let mut rows: Vec<(i64, Option<String>, (i64, Acc))> = Vec::new();
        for (end, groups) in ready {
            let mut w: Vec<(String, (i64, Acc))> = groups.keyed.into_iter().collect();
            w.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            rows.extend(groups.null.map(|v| (end, None, v)));
            rows.extend(w.into_iter().map(|(k, v)| (end, Some(k), v)));
        }
        let n = rows.len();
        let mut keys = StringBuilder::with_capacity(n, n * 8);
        let mut starts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut ends = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut cols: Vec<(Option<Int64Builder>, Option<Float64Builder>)> = self
            .aggs
            .iter()
            .map(|a| match a.func {
                GroupFn::CountRows => (Some(Int64Builder::with_capacity(n)), None),
                _ => (None, Some(Float64Builder::with_capacity(n))),
            })
            .collect();
        for (end, key, (start, acc)) in &rows {
            keys.append_option(key.as_deref());
            starts.append_value(*start);
            ends.append_value(*end);
            for ((a, (c, f)), v) in self.aggs.iter().zip(cols.iter_mut()).zip(&acc.vals) {
                match (a.func, c, f) {
                    (GroupFn::CountRows, Some(c), _) => c.append_value(acc.rows),
                    (func, _, Some(f)) => f.append_option((v.0 > 0).then(|| match func {
                        GroupFn::Sum => v.1,
                        GroupFn::Min => v.2,
                        GroupFn::Max => v.3,
                        _ => v.1 / v.0 as f64,
                    })),
                    _ => {}
                }
            }
        }
        let mut out: Vec<ArrayRef> = vec![
            Arc::new(keys.finish()),
            Arc::new(starts.finish()),
            Arc::new(ends.finish()),
        ];
        for (c, f) in cols.iter_mut() {
            if let Some(c) = c {
                out.push(Arc::new(c.finish()));
            } else if let Some(f) = f {
                out.push(Arc::new(f.finish()));
            }
        }
        RecordBatch::try_new(self.out_schema.clone(), out)
    }
}

impl Acc {
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        self.vals
            .iter()
            .flat_map(|v| [v.0 as u64, v.1.to_bits(), v.2.to_bits(), v.3.to_bits()])
    }

    fn from_words(rows: i64, n: usize, bytes: &[u8]) -> Result<Acc, ArrowError> {
        let w: Vec<u64> = crate::state::words(bytes)?.collect();
        if w.len() != 4 * n {
            return Err(ArrowError::InvalidArgumentError(
                "saved window state: aggregates of another count".into(),
            ));
        }
        Ok(Acc {
            rows,
            vals: w
                .chunks_exact(4)
                .map(|c| {
                    (
                        c[0] as i64,
                        f64::from_bits(c[1]),
                        f64::from_bits(c[2]),
                        f64::from_bits(c[3]),
                    )
                })
                .collect(),
        })
    }
}

impl crate::state::Stateful for WindowAggregate {
    fn keys(&self) -> usize {
        self.open.values().map(Groups::len).sum::<usize>()
            + self.sessions.len()
            + usize::from(self.null_session.is_some())
    }

    fn fingerprint(&self) -> String {
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| format!("{:?}({})", a.func, a.input))
            .collect();
        format!(
            "window v1 {:?} key={} ts={} [{}]",
            self.kind,
            self.key_col,
            self.ts_col,
            aggs.join(", ")
        )
    }

    /// One row per window waiting for the watermark (`state` 0, at its end) and per open
    /// session (`state` 1, at its last row), in that order, then by end and key.
    fn snapshot(&self) -> Result<RecordBatch, ArrowError> {
        use arrow::array::{BinaryBuilder, Int64Array, UInt8Array};
        type Row<'a> = (u8, i64, Option<&'a str>, i64, &'a Acc);
        let mut rows: Vec<Row> = Vec::new();
        for (&end, g) in &self.open {
            if let Some((start, acc)) = &g.null {
                rows.push((0, end, None, *start, acc));
            }
            let mut keyed: Vec<_> = g.keyed.iter().collect();
            keyed.sort_unstable_by(|a, b| a.0.cmp(b.0));
            rows.extend(
                keyed
                    .into_iter()
                    .map(|(k, (start, acc))| (0, end, Some(k.as_str()), *start, acc)),
            );
        }
        if let Some(s) = &self.null_session {
            rows.push((1, s.last, None, s.start, &s.acc));
        }
        let mut sessions: Vec<_> = self.sessions.iter().collect();
        sessions.sort_unstable_by(|a, b| a.0.cmp(b.0));
        rows.extend(
            sessions
                .into_iter()
                .map(|(k, s)| (1, s.last, Some(k.as_str()), s.start, &s.acc)),
        );
        let mut vals = BinaryBuilder::new();
        for r in &rows {
            crate::state::put_words(&mut vals, r.4.words());
        }
        let mut cols = crate::state::key_columns(rows.iter().map(|r| r.2.map(str::as_bytes)));
        cols.push(Arc::new(UInt8Array::from_iter_values(
            rows.iter().map(|r| r.0),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.1),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.3),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.4.rows),
        )));
        cols.push(Arc::new(vals.finish()));
        let schema = crate::state::schema(
            &crate::state::Stateful::fingerprint(self),
            vec![
                Field::new("state", DataType::UInt8, false),
                Field::new("end", DataType::Int64, false),
                Field::new("start", DataType::Int64, false),
                Field::new("rows", DataType::Int64, false),
                Field::new("aggregates", DataType::Binary, false),
            ],
        );
        RecordBatch::try_new(schema, cols)
    }

    fn restore(&mut self, state: &RecordBatch) -> Result<(), ArrowError> {
        use arrow::datatypes::{Int64Type, UInt8Type};
        crate::state::check_fingerprint(state, &crate::state::Stateful::fingerprint(self))?;
        let bad =
            |what: &str| ArrowError::InvalidArgumentError(format!("saved window state: {what}"));
        let keys = crate::state::keys(state)?;
        let int = |name: &str| {
            crate::state::column(state, name)?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad(&format!("{name} is not BIGINT")))
        };
        let (end, start, rows) = (int("end")?, int("start")?, int("rows")?);
        let kind = crate::state::column(state, "state")?
            .as_primitive_opt::<UInt8Type>()
            .ok_or_else(|| bad("state is not a small integer"))?;
        let vals = crate::state::binary(state, "aggregates")?;
        self.open.clear();
        self.sessions.clear();
        self.null_session = None;
        let n = self.aggs.len();
        for r in 0..state.num_rows() {
            let key = (!keys.is_null(r)).then(|| keys.value(r));
            let acc = Acc::from_words(rows.value(r), n, vals.value(r))?;
            match kind.value(r) {
                0 => self
                    .open
                    .entry(end.value(r))
                    .or_default()
                    .insert(key, (start.value(r), acc)),
                1 => {
                    let s = Session {
                        start: start.value(r),
                        last: end.value(r),
                        acc,
                    };
                    match key {
                        Some(k) => {
                            self.sessions.insert(k.to_string(), s);
                        }
                        None => self.null_session = Some(s),
                    }
                }
                other => return Err(bad(&format!("unknown row state {other}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};

    use super::*;
    use crate::state::Stateful;

    /// Stopped anywhere, snapshotted and restored, TUMBLE / HOP / SESSION aggregation goes on
    /// to emit exactly what an uninterrupted run emits (NULL keys included); a snapshot does
    /// not restore into other windows.
    #[test]
    fn snapshot_and_restore_continue_exactly() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("x", DataType::Float64, true),
        ]));
        let batches: Vec<RecordBatch> = (0..12)
            .map(|b| {
                let rows: Vec<(Option<String>, i64, Option<f64>)> = (0..200)
                    .map(|i| {
                        let n = b * 200 + i;
                        let key = match n % 5 {
                            0 => None,
                            k => Some(format!("k{k}")),
                        };
                        // 0.3 s apart, with a 40 s pause every 97 rows (sessions end).
                        let ts = n * 300_000 + (n / 97) * 40_000_000;
                        (key, ts, (n % 11 != 0).then_some((n % 13) as f64))
                    })
                    .collect();
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from(
                            rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                        )),
                        Arc::new(TimestampMicrosecondArray::from_iter_values(
                            rows.iter().map(|r| r.1),
                        )),
                        Arc::new(Float64Array::from(
                            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                        )),
                    ],
                )
                .expect("batch")
            })
            .collect();
        let aggs = vec![
            GroupAgg {
                name: "n".into(),
                func: GroupFn::CountRows,
                input: 2,
            },
            GroupAgg {
                name: "sum".into(),
                func: GroupFn::Sum,
                input: 2,
            },
            GroupAgg {
                name: "max".into(),
                func: GroupFn::Max,
                input: 2,
            },
        ];
        for kind in [
            WindowKind::Tumble { width: 60_000_000 },
            WindowKind::Hop {
                slide: 20_000_000,
                width: 60_000_000,
            },
            WindowKind::Session { gap: 30_000_000 },
        ] {
            let new = || WindowAggregate::new(&schema, kind, 0, 1, aggs.clone()).expect("op");
            let step = |w: &mut WindowAggregate, b: &RecordBatch| {
                w.process(b).expect("process");
                let ts = b.column(1).as_primitive::<TimestampMicrosecondType>();
                w.advance(ts.value(b.num_rows() - 1) - 5_000_000)
                    .expect("advance")
            };
            let mut whole = new();
            let want: Vec<Option<RecordBatch>> =
                batches.iter().map(|b| step(&mut whole, b)).collect();
            let want_end = whole.flush().expect("flush");
            for stop in [1, 5, 11] {
                let mut first = new();
                for b in &batches[..stop] {
                    step(&mut first, b);
                }
                let state = first.snapshot().expect("snapshot");
                assert_eq!(state.num_rows(), first.open_windows(), "{kind:?}");
                let mut second = new();
                second.restore(&state).expect("restore");
                assert_eq!(second.snapshot().expect("again"), state, "{kind:?}: exact");
                for (b, w) in batches[stop..].iter().zip(&want[stop..]) {
                    assert_eq!(&step(&mut second, b), w, "{kind:?} stopped after {stop}");
                }
                assert_eq!(second.flush().expect("flush"), want_end, "{kind:?}");
            }
            let other = WindowKind::Tumble { width: 120_000_000 };
            let mut w = WindowAggregate::new(&schema, other, 0, 1, aggs.clone()).expect("op");
            let e = w
                .restore(&whole.snapshot().expect("snapshot"))
                .expect_err("other");
            assert!(e.to_string().contains("belongs to another operator"), "{e}");
        }
    }
}
