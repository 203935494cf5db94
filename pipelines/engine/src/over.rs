//! Per-event OVER windows computed incrementally:
//! `agg(x) OVER (PARTITION BY key ORDER BY ts RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW)`
//! for count, sum, avg, min, max and sample stddev, and `LAG(x)` (the key's previous row).
//!
//! Input arrives in event-time order (from [`crate::time::EventTimeBuffer`]). Each key keeps
//! only the rows inside its widest frame, and keys idle for longer than the widest frame are
//! dropped, so state is bounded by the windows, not by history. Semantics follow SQL (and
//! DataFusion's batch execution): a RANGE frame includes the current row's peers (rows of the
//! key with the same `ts`); aggregates over an empty input are NULL except COUNT.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Builder, RecordBatch,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;

/// A window function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFn {
    /// `COUNT(x)`: non-null values of the input.
    Count,
    /// `COUNT(*)`: rows in the frame.
    CountRows,
    Sum,
    Avg,
    Min,
    Max,
    /// Sample standard deviation (`STDDEV`, `STDDEV_SAMP`).
    Stddev,
    /// The value of the key's previous row (`LAG(x)`, no frame).
    Lag,
}

/// One output column.
#[derive(Debug, Clone, PartialEq)]
pub struct OverAgg {
    pub name: String,
    pub func: OverFn,
    /// Input column (Float64); ignored by [`OverFn::CountRows`].
    pub input: usize,
    /// Frame length in microseconds (`RANGE BETWEEN range PRECEDING AND CURRENT ROW`);
    /// ignored by [`OverFn::Lag`].
    pub range_micros: i64,
}

/// One key's rows within the widest frame, flat (no allocation per row): `ts[i]` and the
/// input values `vals[i * k .. (i + 1) * k]` for `k` inputs.
#[derive(Default)]
struct Rows {
    ts: VecDeque<i64>,
    vals: VecDeque<Option<f64>>,
}

/// A key's state: its rows while it is active (boxed, so an idle key costs a pointer), and
/// its previous row for LAG (kept however old it is).
#[derive(Default)]
struct KeyState {
    rows: Option<Box<Rows>>,
    last: Option<Box<[Option<f64>]>>,
}

/// The OVER-window operator for one `PARTITION BY key ORDER BY ts`.
pub struct OverWindows {
    key_col: usize,
    ts_col: usize,
    aggs: Vec<OverAgg>,
    inputs: Vec<usize>,
    max_range: i64,
    state: HashMap<Box<str>, KeyState>,
    out_schema: SchemaRef,
}

impl OverWindows {
    /// `key_col` must be Utf8, `ts_col` Timestamp(Microsecond), every input Float64.
    pub fn new(
        input: &Schema,
        key_col: usize,
        ts_col: usize,
        aggs: Vec<OverAgg>,
    ) -> Result<Self, ArrowError> {
        // COUNT(*) reads no column.
        let mut inputs: Vec<usize> = aggs
            .iter()
            .filter(|a| a.func != OverFn::CountRows)
            .map(|a| a.input)
            .collect();
        inputs.sort_unstable();
        inputs.dedup();
        for &i in &inputs {
            let f = input.fields().get(i).ok_or_else(|| {
                ArrowError::SchemaError(format!("window input column {i} does not exist"))
            })?;
            if f.data_type() != &DataType::Float64 {
                return Err(ArrowError::SchemaError(format!(
                    "window input {} must be DOUBLE, is {}",
                    f.name(),
                    f.data_type()
                )));
            }
        }
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        for a in &aggs {
            let t = if matches!(a.func, OverFn::Count | OverFn::CountRows) {
                DataType::Int64
            } else {
                DataType::Float64
            };
            let nullable = !matches!(a.func, OverFn::Count | OverFn::CountRows);
            fields.push(Arc::new(Field::new(&a.name, t, nullable)));
        }
        Ok(OverWindows {
            key_col,
            ts_col,
            max_range: aggs
                .iter()
                .filter(|a| a.func != OverFn::Lag)
                .map(|a| a.range_micros)
                .max()
                .unwrap_or(0),
            aggs,
            inputs,
            state: HashMap::default(),
            out_schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.out_schema.clone()
    }

    /// Keys with state.
    pub fn keys(&self) -> usize {
        self.state.len()
    }

    /// Rows held over all keys.
    pub fn rows_held(&self) -> usize {
        self.state
            .values()
            .map(|s| s.rows.as_ref().map_or(0, |r| r.ts.len()))
            .sum()
    }

    /// Drops window rows of keys whose newest row is older than `watermark - widest frame`
    /// (no future row can see them). Such keys disappear entirely unless a LAG needs their
    /// last row, which is all that is kept of them.
    pub fn evict_idle(&mut self, watermark: i64) {
        let horizon = watermark.saturating_sub(self.max_range);
        let keep_last = self.aggs.iter().any(|a| a.func == OverFn::Lag);
        self.state.retain(|_, s| {
            if s.rows
                .as_ref()
                .is_some_and(|r| r.ts.back().is_some_and(|t| *t >= horizon))
            {
                return true;
            }
            s.rows = None;
            keep_last
        });
    }

    /// Processes rows in event-time order (all rows of one `ts` in the same call) and
    /// returns them with the window columns appended.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let n = batch.num_rows();
        let keys = batch
            .column(self.key_col)
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("partition key must be VARCHAR".into()))?;
        let ts = batch
            .column(self.ts_col)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| ArrowError::SchemaError("ORDER BY column must be a timestamp".into()))?;
        let cols: Vec<&Float64Array> = self
            .inputs
            .iter()
            .map(|&i| batch.column(i).as_primitive::<Float64Type>())
            .collect();
        let slot = |col: usize| self.inputs.iter().position(|&c| c == col).unwrap_or(0);
        let agg_slots: Vec<usize> = self.aggs.iter().map(|a| slot(a.input)).collect();

        let mut counts: Vec<Int64Builder> = Vec::new();
        let mut floats: Vec<Float64Builder> = Vec::new();
        for a in &self.aggs {
            if matches!(a.func, OverFn::Count | OverFn::CountRows) {
                counts.push(Int64Builder::with_capacity(n));
            } else {
                floats.push(Float64Builder::with_capacity(n));
            }
        }
        let mut results: Vec<Vec<Option<f64>>> = vec![Vec::with_capacity(n); self.aggs.len()];

        // Rows are processed in groups of equal ts: all peers enter the state first.
        let k = cols.len();
        let mut lags: Vec<Option<f64>> = Vec::new();
        let mut start = 0;
        while start < n {
            let t = ts.value(start);
            let mut end = start + 1;
            while end < n && ts.value(end) == t {
                end += 1;
            }
            lags.clear();
            for r in start..end {
                let key = if keys.is_null(r) { "" } else { keys.value(r) };
                // Look up without allocating; only a new key pays for its String.
                if !self.state.contains_key(key) {
                    self.state.insert(key.into(), KeyState::default());
                }
                let Some(st) = self.state.get_mut(key) else {
                    continue;
                };
                let horizon = t.saturating_sub(self.max_range);
                let rows = st.rows.get_or_insert_with(Box::default);
                while rows.ts.front().is_some_and(|rt| *rt < horizon) {
                    rows.ts.pop_front();
                    rows.vals.drain(..k);
                }
                let row = cols.iter().map(|c| (!c.is_null(r)).then(|| c.value(r)));
                match &st.last {
                    Some(prev) => lags.extend_from_slice(prev),
                    None => lags.extend(std::iter::repeat_n(None, k)),
                }
                let last = st
                    .last
                    .get_or_insert_with(|| vec![None; k].into_boxed_slice());
                for (slot, v) in last.iter_mut().zip(row) {
                    *slot = v;
                    rows.vals.push_back(v);
                }
                rows.ts.push_back(t);
            }
            for (j, r) in (start..end).enumerate() {
                let key = if keys.is_null(r) { "" } else { keys.value(r) };
                let st = self.state.get(key).and_then(|s| s.rows.as_deref());
                for (a, (agg, &sl)) in self.aggs.iter().zip(&agg_slots).enumerate() {
                    let v = match (agg.func, st) {
                        (OverFn::Lag, _) => lags[j * k + sl],
                        (OverFn::CountRows, Some(st)) => {
                            let from = t.saturating_sub(agg.range_micros);
                            Some((st.ts.len() - st.ts.partition_point(|rt| *rt < from)) as f64)
                        }
                        (_, None) => None,
                        (f, Some(st)) => {
                            let from = t.saturating_sub(agg.range_micros);
                            let first = st.ts.partition_point(|rt| *rt < from);
                            aggregate(f, (first..st.ts.len()).filter_map(|i| st.vals[i * k + sl]))
                        }
                    };
                    results[a].push(v);
                }
            }
            start = end;
        }

        let mut out: Vec<ArrayRef> = batch.columns().to_vec();
        let (mut ci, mut fi) = (0, 0);
        for (a, agg) in self.aggs.iter().enumerate() {
            if matches!(agg.func, OverFn::Count | OverFn::CountRows) {
                let b = &mut counts[ci];
                for v in &results[a] {
                    b.append_value(v.unwrap_or(0.0) as i64);
                }
                out.push(Arc::new(b.finish()));
                ci += 1;
            } else {
                let b = &mut floats[fi];
                for v in &results[a] {
                    b.append_option(*v);
                }
                out.push(Arc::new(b.finish()));
                fi += 1;
            }
        }
        RecordBatch::try_new(self.out_schema.clone(), out)
    }
}

/// Aggregate of the non-null values in frame order.
fn aggregate(f: OverFn, values: impl Iterator<Item = f64> + Clone) -> Option<f64> {
    let n = values.clone().count();
    match f {
        OverFn::Count | OverFn::CountRows => Some(n as f64),
        _ if n == 0 => None,
        OverFn::Sum => Some(values.sum()),
        OverFn::Avg => Some(values.sum::<f64>() / n as f64),
        OverFn::Min => values.reduce(f64::min),
        OverFn::Max => values.reduce(f64::max),
        OverFn::Stddev => {
            if n < 2 {
                return None;
            }
            let mean = values.clone().sum::<f64>() / n as f64;
            let ss: f64 = values.map(|v| (v - mean) * (v - mean)).sum();
            Some((ss / (n - 1) as f64).sqrt())
        }
        OverFn::Lag => None,
    }
}
