//! Per-event OVER windows computed incrementally:
//! `agg(x) OVER (PARTITION BY key ORDER BY ts RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW)`
//! for count, sum, avg, min, max and sample stddev, and `LAG(x)` (the key's previous row).
//!
//! Input arrives in event-time order (from [`crate::time::EventTimeBuffer`]). Each key keeps
//! only the rows inside its widest frame, and keys idle for longer than the widest frame are
//! dropped, so state is bounded by the windows, not by history. Semantics follow SQL (and
//! DataFusion's batch execution): a RANGE frame includes the current row's peers (rows of the
//! key with the same `ts`); aggregates over an empty input are NULL except COUNT.
//!
//! State layout (a million keys is a normal benchmark): keys live in a slab of [`Slot`]s found
//! through a `HashTable<u32>` of slot numbers (one hash per row), a key's frame rows are one
//! flat deque of words (`ts`, a NULL mask, the frame inputs), and LAG keeps only the LAG inputs
//! of the previous row, in one flat array indexed by slot.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Float64Builder, Int64Array, RecordBatch,
};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;
use hashbrown::HashTable;

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

/// Most distinct frame inputs (and, separately, LAG inputs) one operator takes: a row's NULLs
/// are one 64-bit mask.
pub const MAX_INPUTS: usize = 64;

/// One key: its name, its rows within the widest frame while it is active (boxed, so an idle
/// key costs a pointer), and which of its previous row's LAG inputs are NULL (all of them
/// before its first row). The previous row's LAG values are `lag_values[slot * lag_k ..]`.
struct Slot {
    key: Box<str>,
    /// Per row, `stride` words: `ts`, the NULL mask of the frame inputs, then their values
    /// (`f64::to_bits`).
    rows: Option<Box<VecDeque<u64>>>,
    lag_nulls: u64,
}

/// Where one output column's values come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A frame function over frame input `input`, in frame group `frame`.
    Frame {
        func: OverFn,
        input: usize,
        frame: usize,
    },
    /// LAG of LAG input `input`.
    Lag { input: usize },
}

/// An output column being built.
enum Out {
    Count(Vec<i64>),
    Float(Float64Builder),
}

/// The OVER-window operator for one `PARTITION BY key ORDER BY ts`.
pub struct OverWindows {
    key_col: usize,
    ts_col: usize,
    aggs: Vec<OverAgg>,
    sources: Vec<Source>,
    /// Columns of the frame inputs and of the LAG inputs (each distinct, ascending).
    frame_inputs: Vec<usize>,
    lag_inputs: Vec<usize>,
    /// Distinct frame lengths (a row's frame start is searched once per length).
    ranges: Vec<i64>,
    max_range: i64,
    stride: usize,
    hasher: foldhash::fast::RandomState,
    table: HashTable<u32>,
    slots: Vec<Slot>,
    lag_values: Vec<f64>,
    /// Slots with rows (evicted keys leave it at the next [`OverWindows::evict_idle`]).
    active: Vec<u32>,
    /// Slots of removed keys, for reuse (only without LAG: LAG keeps every key).
    free: Vec<u32>,
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
        let distinct = |lag: bool| {
            let mut cols: Vec<usize> = aggs
                .iter()
                .filter(|a| a.func != OverFn::CountRows && (a.func == OverFn::Lag) == lag)
                .map(|a| a.input)
                .collect();
            cols.sort_unstable();
            cols.dedup();
            cols
        };
        let (frame_inputs, lag_inputs) = (distinct(false), distinct(true));
        if frame_inputs.len() > MAX_INPUTS || lag_inputs.len() > MAX_INPUTS {
            return Err(ArrowError::SchemaError(format!(
                "OVER windows take at most {MAX_INPUTS} distinct inputs for frames and \
                 {MAX_INPUTS} for LAG over one PARTITION BY; split the query"
            )));
        }
        for &i in frame_inputs.iter().chain(&lag_inputs) {
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
        let mut ranges: Vec<i64> = aggs
            .iter()
            .filter(|a| a.func != OverFn::Lag)
            .map(|a| a.range_micros)
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        let position = |v: &[usize], c: usize| v.iter().position(|&x| x == c).unwrap_or(0);
        let sources = aggs
            .iter()
            .map(|a| match a.func {
                OverFn::Lag => Source::Lag {
                    input: position(&lag_inputs, a.input),
                },
                func => Source::Frame {
                    func,
                    input: position(&frame_inputs, a.input),
                    frame: ranges
                        .iter()
                        .position(|&r| r == a.range_micros)
                        .unwrap_or(0),
                },
            })
            .collect();
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        for a in &aggs {
            let count = matches!(a.func, OverFn::Count | OverFn::CountRows);
            let t = if count {
                DataType::Int64
            } else {
                DataType::Float64
            };
            fields.push(Arc::new(Field::new(&a.name, t, !count)));
        }
        Ok(OverWindows {
            key_col,
            ts_col,
            max_range: ranges.last().copied().unwrap_or(0),
            ranges,
            stride: 2 + frame_inputs.len(),
            frame_inputs,
            lag_inputs,
            sources,
            aggs,
            hasher: foldhash::fast::RandomState::default(),
            table: HashTable::new(),
            slots: Vec::new(),
            lag_values: Vec::new(),
            active: Vec::new(),
            free: Vec::new(),
            out_schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.out_schema.clone()
    }

    /// Keys with state.
    pub fn keys(&self) -> usize {
        self.table.len()
    }

    /// Rows held over all keys.
    pub fn rows_held(&self) -> usize {
        self.active
            .iter()
            .filter_map(|&s| self.slots[s as usize].rows.as_ref())
            .map(|r| r.len() / self.stride)
            .sum()
    }

    /// Drops window rows of keys whose newest row is older than `watermark - widest frame`
    /// (no future row can see them). Such keys disappear entirely unless a LAG needs their
    /// last row, which is all that is kept of them.
    pub fn evict_idle(&mut self, watermark: i64) {
        let horizon = watermark.saturating_sub(self.max_range);
        let keep_last = !self.lag_inputs.is_empty();
        let stride = self.stride;
        let Self {
            slots,
            active,
            table,
            free,
            hasher,
            ..
        } = self;
        active.retain(|&s| {
            let slot = &mut slots[s as usize];
            let newest = slot
                .rows
                .as_ref()
                .and_then(|r| r.len().checked_sub(stride).map(|i| r[i] as i64));
            if newest.is_some_and(|t| t >= horizon) {
                return true;
            }
            slot.rows = None;
            if !keep_last {
                let hash = hasher.hash_one(&*slot.key);
                if let Ok(entry) = table.find_entry(hash, |&i| i == s) {
                    entry.remove();
                }
                slot.key = Box::default();
                free.push(s);
            }
            false
        });
    }

    /// The slot of `key`, made if it is new.
    fn slot_of(&mut self, key: &str) -> u32 {
        let hash = self.hasher.hash_one(key);
        let Self {
            slots,
            table,
            hasher,
            free,
            lag_values,
            lag_inputs,
            ..
        } = self;
        if let Some(&s) = table.find(hash, |&i| &*slots[i as usize].key == key) {
            return s;
        }
        let slot = Slot {
            key: key.into(),
            rows: None,
            lag_nulls: u64::MAX,
        };
        let s = match free.pop() {
            Some(s) => {
                slots[s as usize] = slot;
                s
            }
            None => {
                slots.push(slot);
                lag_values.extend(std::iter::repeat_n(0.0, lag_inputs.len()));
                (slots.len() - 1) as u32
            }
        };
        table.insert_unique(hash, s, |&i| hasher.hash_one(&*slots[i as usize].key));
        s
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
        let column = |i: &usize| batch.column(*i).as_primitive::<Float64Type>();
        let frame_cols: Vec<&Float64Array> = self.frame_inputs.iter().map(column).collect();
        let lag_cols: Vec<&Float64Array> = self.lag_inputs.iter().map(column).collect();
        let mut outs: Vec<Out> = self
            .aggs
            .iter()
            .map(|a| match a.func {
                OverFn::Count | OverFn::CountRows => Out::Count(Vec::with_capacity(n)),
                _ => Out::Float(Float64Builder::with_capacity(n)),
            })
            .collect();

        let (stride, lag_k) = (self.stride, self.lag_inputs.len());
        let framed = !self.ranges.is_empty();
        let mut group: Vec<u32> = Vec::new();
        let mut firsts: Vec<usize> = vec![0; self.ranges.len()];
        let mut start = 0;
        // Rows are processed in groups of equal ts: all peers enter the state first.
        while start < n {
            let t = ts.value(start);
            let mut end = start + 1;
            while end < n && ts.value(end) == t {
                end += 1;
            }
            let horizon = t.saturating_sub(self.max_range);
            group.clear();
            for r in start..end {
                let key = if keys.is_null(r) { "" } else { keys.value(r) };
                let s = self.slot_of(key);
                group.push(s);
                let slot = &mut self.slots[s as usize];
                if lag_k > 0 {
                    // LAG: the previous row's values out, then this row's in.
                    let last = &mut self.lag_values[s as usize * lag_k..][..lag_k];
                    for (src, out) in self.sources.iter().zip(outs.iter_mut()) {
                        if let (Source::Lag { input }, Out::Float(b)) = (src, out) {
                            let null = slot.lag_nulls & (1u64 << input) != 0;
                            b.append_option((!null).then(|| last[*input]));
                        }
                    }
                    let mut nulls = 0u64;
                    for (j, (col, v)) in lag_cols.iter().zip(last.iter_mut()).enumerate() {
                        if col.is_null(r) {
                            nulls |= 1u64 << j;
                        } else {
                            *v = col.value(r);
                        }
                    }
                    slot.lag_nulls = nulls;
                }
                if framed {
                    let rows = match &mut slot.rows {
                        Some(rows) => rows,
                        None => {
                            self.active.push(s);
                            slot.rows.insert(Box::default())
                        }
                    };
                    while rows.front().is_some_and(|&rt| (rt as i64) < horizon) {
                        rows.drain(..stride);
                    }
                    let mut nulls = 0u64;
                    for (j, col) in frame_cols.iter().enumerate() {
                        if col.is_null(r) {
                            nulls |= 1u64 << j;
                        }
                    }
                    rows.push_back(t as u64);
                    rows.push_back(nulls);
                    rows.extend(frame_cols.iter().map(|c| c.value(r).to_bits()));
                }
            }
            if framed {
                for &s in &group {
                    let Some(rows) = self.slots[s as usize].rows.as_deref_mut() else {
                        continue;
                    };
                    let rows = rows.make_contiguous();
                    let len = rows.len() / stride;
                    for (first, &range) in firsts.iter_mut().zip(&self.ranges) {
                        let from = t.saturating_sub(range);
                        *first = partition_point(len, |i| (rows[i * stride] as i64) < from);
                    }
                    for (src, out) in self.sources.iter().zip(outs.iter_mut()) {
                        let Source::Frame { func, input, frame } = *src else {
                            continue;
                        };
                        let frame_rows = &rows[firsts[frame] * stride..];
                        let values = frame_rows.chunks_exact(stride).filter_map(|row| {
                            (row[1] & (1u64 << input) == 0).then(|| f64::from_bits(row[2 + input]))
                        });
                        match out {
                            Out::Count(v) => v.push(if func == OverFn::CountRows {
                                (frame_rows.len() / stride) as i64
                            } else {
                                values.count() as i64
                            }),
                            Out::Float(b) => b.append_option(aggregate(func, values)),
                        }
                    }
                }
            }
            start = end;
        }

        let mut out: Vec<ArrayRef> = batch.columns().to_vec();
        out.extend(outs.into_iter().map(|o| -> ArrayRef {
            match o {
                Out::Count(v) => Arc::new(Int64Array::from(v)),
                Out::Float(mut b) => Arc::new(b.finish()),
            }
        }));
        RecordBatch::try_new(self.out_schema.clone(), out)
    }
}

/// The first `i` in `0..len` for which `before(i)` is false (`before` is true, then false).
fn partition_point(len: usize, before: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
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
