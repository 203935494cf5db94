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
//! State layout (a million keys is a normal benchmark): keys live in a slab of slots found
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

/// One key: its name, its rows within the widest frame, and which of its previous row's LAG
/// inputs are NULL (all of them before its first row); one cache line, so a row's lookup
/// and update touch the slot once. The previous row's LAG values are
/// `lag_values[slot * lag_k ..]`.
#[repr(align(64))]
struct Slot {
    key: Key,
    lag_nulls: u64,
    /// Per row, `stride` words: `ts`, the NULL mask of the frame inputs, then their values
    /// (`f64::to_bits`). Allocated while the key is active (in `OverWindows::active`).
    rows: VecDeque<u64>,
}

/// A partition key's bytes, inline up to 22 bytes (ids such as `u000042` need no allocation
/// and no pointer to follow).
enum Key {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(key: &[u8]) -> Key {
        let mut bytes = [0u8; 22];
        match bytes.get_mut(..key.len()) {
            Some(b) => {
                b.copy_from_slice(key);
                Key::Inline {
                    len: key.len() as u8,
                    bytes,
                }
            }
            None => Key::Heap(key.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

/// Asks the CPU to fetch `p`'s cache line (the next rows' state, while this row is worked on).
#[inline(always)]
fn prefetch<T>(p: *const T) {
    // SAFETY: SSE is part of every x86_64 CPU, and a prefetch never faults, whatever `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
            .map(|&s| self.slots[s as usize].rows.len() / self.stride)
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
            let rows = &slot.rows;
            let newest = rows.len().checked_sub(stride).map(|i| rows[i] as i64);
            if newest.is_some_and(|t| t >= horizon) {
                return true;
            }
            slot.rows = VecDeque::new();
            if !keep_last {
                let hash = hasher.hash_one(slot.key.bytes());
                if let Ok(entry) = table.find_entry(hash, |&i| i == s) {
                    entry.remove();
                }
                slot.key = Key::new(b"");
                free.push(s);
            }
            false
        });
    }

    /// The slot of `key`, made if it is new.
    fn slot_of(&mut self, key: &[u8]) -> u32 {
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
        if let Some(&s) = table.find(hash, |&i| slots[i as usize].key.bytes() == key) {
            return s;
        }
        let slot = Slot {
            key: Key::new(key),
            rows: VecDeque::new(),
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
        table.insert_unique(hash, s, |&i| hasher.hash_one(slots[i as usize].key.bytes()));
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
        // Every row's slot first: the lookups of different rows overlap in the CPU, and each
        // found key's rows and LAG values are fetched ahead of their use below.
        let mut slot_ids: Vec<u32> = Vec::with_capacity(n);
        for r in 0..n {
            let key = if keys.is_null(r) { "" } else { keys.value(r) };
            let s = self.slot_of(key.as_bytes());
            let slot = &self.slots[s as usize];
            prefetch(slot.rows.as_slices().0.as_ptr());
            if lag_k > 0 {
                prefetch(self.lag_values[s as usize * lag_k..].as_ptr());
            }
            slot_ids.push(s);
        }
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
            let group = &slot_ids[start..end];
            for (r, &s) in (start..end).zip(group) {
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
                    let rows = &mut slot.rows;
                    if rows.capacity() == 0 {
                        self.active.push(s);
                    }
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
                for &s in group {
                    let rows = self.slots[s as usize].rows.make_contiguous();
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
                        let values = frame_rows
                            .chunks_exact(stride)
                            .filter(|row| row[1] & (1u64 << input) == 0)
                            .map(|row| f64::from_bits(row[2 + input]));
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

#[cfg(test)]
mod tests {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Int64Type, TimeUnit};

    use super::*;

    const MIN: i64 = 60_000_000;

    fn batch(rows: &[(&str, i64, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new("x", DataType::Float64, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.1),
            )),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        RecordBatch::try_new(schema, cols).expect("batch")
    }

    fn op(lag: bool) -> OverWindows {
        let mut aggs = vec![
            OverAgg {
                name: "n".into(),
                func: OverFn::CountRows,
                input: 2,
                range_micros: 10 * MIN,
            },
            OverAgg {
                name: "sum".into(),
                func: OverFn::Sum,
                input: 2,
                range_micros: 10 * MIN,
            },
        ];
        if lag {
            aggs.push(OverAgg {
                name: "prev".into(),
                func: OverFn::Lag,
                input: 2,
                range_micros: 0,
            });
        }
        OverWindows::new(&batch(&[]).schema(), 0, 1, aggs).expect("operator")
    }

    /// Keys stored inline, on the heap (longer than 22 bytes) and empty are told apart, and a
    /// key's slot is reused after eviction without mixing two keys' rows.
    #[test]
    fn short_long_and_empty_keys_keep_their_own_rows() {
        let long = "a-partition-key-longer-than-twenty-two-bytes";
        let longer = "a-partition-key-longer-than-twenty-two-bytes!";
        let mut w = op(true);
        let out = w
            .process(&batch(&[
                ("u1", 0, 1.0),
                (long, MIN, 10.0),
                ("", 2 * MIN, 100.0),
                (longer, 3 * MIN, 1000.0),
                ("u1", 4 * MIN, 2.0),
                (long, 5 * MIN, 20.0),
            ]))
            .expect("process");
        let n: Vec<i64> = out.column(3).as_primitive::<Int64Type>().values().to_vec();
        let sum: Vec<f64> = out
            .column(4)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        let prev = out.column(5).as_primitive::<Float64Type>();
        assert_eq!(n, [1, 1, 1, 1, 2, 2]);
        assert_eq!(sum, [1.0, 10.0, 100.0, 1000.0, 3.0, 30.0]);
        let prev: Vec<Option<f64>> = prev.iter().collect();
        assert_eq!(prev, [None, None, None, None, Some(1.0), Some(10.0)]);
        assert_eq!(w.keys(), 4);

        // Without LAG, idle keys go and their slots are reused by new keys.
        let mut w = op(false);
        w.process(&batch(&[("u1", 0, 1.0), (long, MIN, 10.0)]))
            .expect("process");
        w.evict_idle(30 * MIN);
        assert_eq!((w.keys(), w.rows_held()), (0, 0));
        let out = w
            .process(&batch(&[(longer, 31 * MIN, 5.0), ("u1", 32 * MIN, 7.0)]))
            .expect("process");
        let sum: Vec<f64> = out
            .column(4)
            .as_primitive::<Float64Type>()
            .values()
            .to_vec();
        assert_eq!(sum, [5.0, 7.0]);
        assert_eq!((w.keys(), w.rows_held()), (2, 2));
    }
}
