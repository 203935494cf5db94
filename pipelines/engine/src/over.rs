//! Per-event OVER windows computed incrementally:
//! `agg(x) OVER (PARTITION BY key ORDER BY ts RANGE BETWEEN INTERVAL … PRECEDING AND CURRENT ROW)`
//! for count, sum, avg, min, max and sample stddev, and `LAG(x)` (the key's previous row).
//!
//! Input arrives in event-time order (from [`crate::time::EventTimeBuffer`]). Each key keeps
//! only the rows inside its widest frame, and keys idle for longer than the widest frame are
//! dropped, so state is bounded by the windows, not by history. Semantics follow SQL (and
//! DataFusion's batch execution): a RANGE frame includes the current row's peers (rows of the
//! key with the same `ts`); aggregates over an empty input are NULL except COUNT. A NULL
//! partition key is its own partition (not the empty string's).
//!
//! A row costs O(1) amortised whatever its key's frames hold: each frame of a key keeps
//! running accumulators that add a row as it enters and subtract it as it leaves the frame
//! (count; a compensated sum; Welford's mean and sum of squared deviations for STDDEV; a
//! monotonic deque for MIN and MAX). So rounding cannot build up over a key's history, a
//! frame's accumulators are recomputed from its rows whenever as many rows have left it as
//! it holds (amortised O(1) again), and from zero whenever it empties; results stay within
//! 1e-9 (relative) of DataFusion's, which the differential tests check.
//!
//! State layout (a million keys is a normal benchmark): keys live in a slab of slots found
//! through a `HashTable<u32>` of slot numbers (one hash per row), a key's frame rows are one
//! flat deque of words (`ts`, a NULL mask, the frame inputs), and the per-key numbers — each
//! frame's first row, the accumulators, LAG's previous row — are flat arrays indexed by slot.
//!
//! Checkpoints: one bit per slot notes that its state changed since the last snapshot, so a
//! checkpoint's snapshot holds only the keys an epoch touched (and those it removed), not
//! every key ([`crate::state::Stateful::take_snapshot`]).

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

/// Words per accumulator: the count of non-null values, their sum and its compensation
/// (Neumaier), Welford's mean and sum of squared deviations, and the largest that sum has
/// been since the accumulator was last recomputed.
const ACC_WORDS: usize = 6;

/// What a frame function without an accumulator (`COUNT(*)`) reads.
const NO_ACCUMULATOR: [f64; ACC_WORDS] = [0.0; ACC_WORDS];

/// Where one output column's values come from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A frame function of frame `frame`, reading accumulator `acc` (and, for MIN / MAX,
    /// extreme deque `ext`).
    Frame {
        func: OverFn,
        frame: usize,
        acc: usize,
        ext: usize,
    },
    /// LAG of LAG input `input`.
    Lag { input: usize },
}

/// One frame length and what is accumulated over it.
#[derive(Debug, Clone)]
struct Frame {
    range: i64,
    /// (accumulator, frame input) pairs of this frame.
    accs: Vec<(usize, usize)>,
    /// (extreme deque, frame input, is MAX) triples of this frame.
    exts: Vec<(usize, usize, bool)>,
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
    /// Distinct frame lengths, ascending (the last is the widest).
    frames: Vec<Frame>,
    n_accs: usize,
    n_exts: usize,
    max_range: i64,
    stride: usize,
    hasher: foldhash::fast::RandomState,
    table: HashTable<u32>,
    slots: Vec<Slot>,
    /// The slot of the NULL key, which is its own partition (not in `table`).
    null_key: Option<u32>,
    lag_values: Vec<f64>,
    /// Per slot `1 + 2 * frames` words: the absolute number of its first held row, then per
    /// frame the absolute number of the frame's first row and how many rows have left the
    /// frame since its accumulators were last recomputed.
    seqs: Vec<u64>,
    /// Per slot `n_accs * ACC_WORDS` accumulator words.
    acc_values: Vec<f64>,
    /// Per slot `n_exts` monotonic deques of (absolute row number, value): a frame's MIN or
    /// MAX is the front.
    extremes: Vec<VecDeque<(u64, f64)>>,
    /// Slots with rows (evicted keys leave it at the next [`OverWindows::evict_idle`]).
    active: Vec<u32>,
    /// Slots of removed keys, for reuse (only without LAG: LAG keeps every key).
    free: Vec<u32>,
    /// One bit per slot whose state changed since the last snapshot or restore, and the keys
    /// removed since (`None`: the NULL key): what an incremental snapshot holds.
    dirty: Vec<u64>,
    removed: Vec<Option<Box<[u8]>>>,
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
        let mut frames: Vec<Frame> = ranges
            .iter()
            .map(|&range| Frame {
                range,
                accs: Vec::new(),
                exts: Vec::new(),
            })
            .collect();
        let (mut n_accs, mut n_exts) = (0, 0);
        let position = |v: &[usize], c: usize| v.iter().position(|&x| x == c).unwrap_or(0);
        let mut sources = Vec::with_capacity(aggs.len());
        for a in &aggs {
            if a.func == OverFn::Lag {
                sources.push(Source::Lag {
                    input: position(&lag_inputs, a.input),
                });
                continue;
            }
            let frame = ranges
                .iter()
                .position(|&r| r == a.range_micros)
                .unwrap_or(0);
            let input = position(&frame_inputs, a.input);
            let f = &mut frames[frame];
            let (mut acc, mut ext) = (0, 0);
            if a.func != OverFn::CountRows {
                acc = match f.accs.iter().find(|(_, i)| *i == input) {
                    Some(&(acc, _)) => acc,
                    None => {
                        f.accs.push((n_accs, input));
                        n_accs += 1;
                        n_accs - 1
                    }
                };
            }
            if matches!(a.func, OverFn::Min | OverFn::Max) {
                let max = a.func == OverFn::Max;
                ext = match f.exts.iter().find(|(_, i, m)| *i == input && *m == max) {
                    Some(&(ext, _, _)) => ext,
                    None => {
                        f.exts.push((n_exts, input, max));
                        n_exts += 1;
                        n_exts - 1
                    }
                };
            }
            sources.push(Source::Frame {
                func: a.func,
                frame,
                acc,
                ext,
            });
        }
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
            frames,
            n_accs,
            n_exts,
            stride: 2 + frame_inputs.len(),
            frame_inputs,
            lag_inputs,
            sources,
            aggs,
            hasher: foldhash::fast::RandomState::default(),
            table: HashTable::new(),
            slots: Vec::new(),
            null_key: None,
            lag_values: Vec::new(),
            seqs: Vec::new(),
            acc_values: Vec::new(),
            extremes: Vec::new(),
            active: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            removed: Vec::new(),
            out_schema: Arc::new(Schema::new(fields)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        self.out_schema.clone()
    }

    /// Keys with state.
    pub fn keys(&self) -> usize {
        self.table.len() + usize::from(self.null_key.is_some())
    }

    /// Rows held over all keys.
    pub fn rows_held(&self) -> usize {
        self.active
            .iter()
            .map(|&s| self.slots[s as usize].rows.len() / self.stride)
            .sum()
    }

    fn seq_words(&self) -> usize {
        1 + 2 * self.frames.len()
    }

    /// Drops window rows of keys whose newest row is older than `watermark - widest frame`
    /// (no future row can see them). Such keys disappear entirely unless a LAG needs their
    /// last row, which is all that is kept of them.
    pub fn evict_idle(&mut self, watermark: i64) {
        let horizon = watermark.saturating_sub(self.max_range);
        let keep_last = !self.lag_inputs.is_empty();
        let stride = self.stride;
        let mut idle = Vec::new();
        self.active.retain(|&s| {
            let rows = &self.slots[s as usize].rows;
            let newest = rows.len().checked_sub(stride).map(|i| rows[i] as i64);
            if newest.is_some_and(|t| t >= horizon) {
                return true;
            }
            idle.push(s);
            false
        });
        for s in idle {
            self.slots[s as usize].rows = VecDeque::new();
            self.reset_frames(s);
            if keep_last {
                // Not a change a snapshot needs: the key's next row finds every frame empty
                // either way (see `enter`), so the saved rows are evicted after a restore.
                continue;
            }
            if self.null_key == Some(s) {
                self.null_key = None;
                self.removed.push(None);
            } else {
                self.removed
                    .push(Some(self.slots[s as usize].key.bytes().into()));
                let Self {
                    slots,
                    table,
                    hasher,
                    ..
                } = self;
                let hash = hasher.hash_one(slots[s as usize].key.bytes());
                if let Ok(entry) = table.find_entry(hash, |&i| i == s) {
                    entry.remove();
                }
            }
            self.slots[s as usize].key = Key::new(b"");
            self.free.push(s);
        }
    }

    /// Notes that slot `s`'s state changed (for the next incremental snapshot).
    #[inline(always)]
    fn mark(&mut self, s: u32) {
        let w = (s >> 6) as usize;
        if w >= self.dirty.len() {
            self.dirty.resize(w + 1, 0);
        }
        self.dirty[w] |= 1u64 << (s & 63);
    }

    /// The slots of keys `keep` picks: the NULL key's first, then the others in slot order
    /// (free slots skipped) — the order a restore allocates slots in.
    fn slots_where(&self, keep: impl Fn(u32) -> bool) -> Vec<u32> {
        let mut keyed = vec![true; self.slots.len()];
        for &f in &self.free {
            keyed[f as usize] = false;
        }
        if let Some(s) = self.null_key {
            keyed[s as usize] = false;
        }
        let mut slots: Vec<u32> = self.null_key.filter(|&s| keep(s)).into_iter().collect();
        slots.extend((0..self.slots.len() as u32).filter(|&s| keyed[s as usize] && keep(s)));
        slots
    }

    fn is_dirty(&self, s: u32) -> bool {
        self.dirty
            .get((s >> 6) as usize)
            .is_some_and(|w| w & (1u64 << (s & 63)) != 0)
    }

    /// The snapshot rows of `removed` keys (empty state) then of `slots`, with the
    /// [`crate::state::REMOVED`] column when `changes`.
    fn encode(
        &self,
        removed: &[Option<&[u8]>],
        slots: &[u32],
        changes: bool,
    ) -> Result<RecordBatch, ArrowError> {
        use crate::state::put_words;
        use arrow::array::{BinaryBuilder, UInt64Array};
        let key_of =
            |s: u32| (Some(s) != self.null_key).then(|| self.slots[s as usize].key.bytes());
        let (sw, aw, lag_k, n_exts) = (
            self.seq_words(),
            self.n_accs * ACC_WORDS,
            self.lag_inputs.len(),
            self.n_exts,
        );
        let n = removed.len() + slots.len();
        let sized = |words: usize| BinaryBuilder::with_capacity(n, n * words * 8);
        let (mut lag, mut rows, mut seqs, mut accs, mut exts) = (
            sized(lag_k),
            sized(self.stride * 4),
            sized(sw),
            sized(aw),
            sized(n_exts * 3),
        );
        let mut lag_nulls = Vec::with_capacity(n);
        lag_nulls.resize(removed.len(), 0);
        for _ in removed {
            for b in [&mut lag, &mut rows, &mut seqs, &mut accs, &mut exts] {
                b.append_value([]);
            }
        }
        for &s in slots {
            let si = s as usize;
            let slot = &self.slots[si];
            lag_nulls.push(slot.lag_nulls);
            put_words(
                &mut lag,
                self.lag_values[si * lag_k..][..lag_k]
                    .iter()
                    .map(|v| v.to_bits()),
            );
            put_words(&mut rows, slot.rows.iter().copied());
            put_words(&mut seqs, self.seqs[si * sw..][..sw].iter().copied());
            put_words(
                &mut accs,
                self.acc_values[si * aw..][..aw].iter().map(|v| v.to_bits()),
            );
            put_words(
                &mut exts,
                self.extremes[si * n_exts..][..n_exts].iter().flat_map(|d| {
                    std::iter::once(d.len() as u64)
                        .chain(d.iter().flat_map(|&(q, v)| [q, v.to_bits()]))
                }),
            );
        }
        let mut cols = crate::state::key_columns(
            removed
                .iter()
                .copied()
                .chain(slots.iter().map(|&s| key_of(s))),
        );
        cols.push(Arc::new(UInt64Array::from(lag_nulls)));
        for mut b in [lag, rows, seqs, accs, exts] {
            cols.push(Arc::new(b.finish()));
        }
        let binary = |n: &str| Field::new(n, DataType::Binary, false);
        let schema = crate::state::schema(
            &crate::state::Stateful::fingerprint(self),
            vec![
                Field::new("lag_nulls", DataType::UInt64, false),
                binary("lag"),
                binary("rows"),
                binary("frames"),
                binary("accumulators"),
                binary("extremes"),
            ],
        );
        if !changes {
            return RecordBatch::try_new(schema, cols);
        }
        cols.push(Arc::new(arrow::array::BooleanArray::from_iter(
            (0..n).map(|i| Some(i < removed.len())),
        )));
        RecordBatch::try_new(crate::state::changes_schema(&schema), cols)
    }

    /// Forgets the changes noted so far (a snapshot or restore has just captured them).
    fn clear_changes(&mut self) {
        self.dirty.iter_mut().for_each(|w| *w = 0);
        self.removed.clear();
    }

    /// Empties a slot's frames: no rows, zero accumulators, no extremes.
    fn reset_frames(&mut self, s: u32) {
        let (sw, aw, n_exts) = (self.seq_words(), self.n_accs * ACC_WORDS, self.n_exts);
        let s = s as usize;
        self.seqs[s * sw..][..sw].fill(0);
        self.acc_values[s * aw..][..aw].fill(0.0);
        for d in &mut self.extremes[s * n_exts..][..n_exts] {
            *d = VecDeque::new();
        }
    }

    /// A new slot for `key` (not yet findable).
    fn new_slot(&mut self, key: &[u8]) -> u32 {
        let slot = Slot {
            key: Key::new(key),
            rows: VecDeque::new(),
            lag_nulls: u64::MAX,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                self.lag_values
                    .extend(std::iter::repeat_n(0.0, self.lag_inputs.len()));
                self.seqs.extend(std::iter::repeat_n(0, self.seq_words()));
                self.acc_values
                    .extend(std::iter::repeat_n(0.0, self.n_accs * ACC_WORDS));
                self.extremes
                    .extend((0..self.n_exts).map(|_| VecDeque::new()));
                (self.slots.len() - 1) as u32
            }
        };
        self.reset_frames(s);
        s
    }

    /// The slot of `key` (`None`: the NULL key), made if it is new.
    fn slot_of(&mut self, key: Option<&[u8]>) -> u32 {
        let Some(key) = key else {
            if let Some(s) = self.null_key {
                return s;
            }
            let s = self.new_slot(b"");
            self.null_key = Some(s);
            return s;
        };
        let hash = self.hasher.hash_one(key);
        if let Some(&s) = self
            .table
            .find(hash, |&i| self.slots[i as usize].key.bytes() == key)
        {
            return s;
        }
        let s = self.new_slot(key);
        let Self {
            slots,
            table,
            hasher,
            ..
        } = self;
        table.insert_unique(hash, s, |&i| hasher.hash_one(slots[i as usize].key.bytes()));
        s
    }

    /// Moves each of slot `s`'s frames past the rows before `t - range` (subtracting them),
    /// drops the rows no frame holds any more, then adds the row `values` (with `nulls`) at
    /// `t` to every frame.
    fn enter(&mut self, s: u32, t: i64, nulls: u64, values: &[f64]) {
        let (stride, sw, aw, n_exts) = (
            self.stride,
            self.seq_words(),
            self.n_accs * ACC_WORDS,
            self.n_exts,
        );
        let si = s as usize;
        let Self {
            slots,
            frames,
            seqs,
            acc_values,
            extremes,
            active,
            ..
        } = self;
        let rows = &mut slots[si].rows;
        if rows.capacity() == 0 {
            active.push(s);
        }
        let seq = &mut seqs[si * sw..][..sw];
        let accs = &mut acc_values[si * aw..][..aw];
        let exts = &mut extremes[si * n_exts..][..n_exts];
        let base = seq[0];
        let end = base + (rows.len() / stride) as u64;
        for (f, frame) in frames.iter().enumerate() {
            let (start, removed, rebuilt) = advance(
                frame,
                rows,
                stride,
                (base, end),
                t.saturating_sub(frame.range),
                (seq[1 + 2 * f], seq[2 + 2 * f]),
                accs,
            );
            for &(ext, _, _) in &frame.exts {
                let d = &mut exts[ext];
                while d.front().is_some_and(|&(q, _)| q < start) {
                    d.pop_front();
                }
            }
            if rebuilt {
                rebuild_extremes(frame, rows, stride, base, start, exts);
            }
            seq[1 + 2 * f] = start;
            seq[2 + 2 * f] = removed;
        }
        // The widest frame starts first: rows before it are in no frame.
        let first = frames.last().map_or(end, |_| seq[sw - 2]);
        if first > base {
            rows.drain(..(first - base) as usize * stride);
            seq[0] = first;
        }
        let at = end;
        rows.push_back(t as u64);
        rows.push_back(nulls);
        rows.extend(values.iter().map(|v| v.to_bits()));
        for frame in frames.iter() {
            for &(acc, input) in &frame.accs {
                if nulls & (1u64 << input) == 0 {
                    add(&mut accs[acc * ACC_WORDS..][..ACC_WORDS], values[input]);
                }
            }
            for &(ext, input, max) in &frame.exts {
                if nulls & (1u64 << input) == 0 {
                    push_extreme(&mut exts[ext], at, values[input], max);
                }
            }
        }
    }

    /// The value of frame function `func` for slot `s` now.
    fn frame_value(
        &self,
        s: u32,
        func: OverFn,
        frame: usize,
        acc: usize,
        ext: usize,
    ) -> Option<f64> {
        let si = s as usize;
        let sw = self.seq_words();
        let seq = &self.seqs[si * sw..][..sw];
        let end = seq[0] + (self.slots[si].rows.len() / self.stride) as u64;
        // COUNT(*) alone has no accumulator.
        let a = self
            .acc_values
            .get((si * self.n_accs + acc) * ACC_WORDS..)
            .and_then(|a| a.get(..ACC_WORDS))
            .unwrap_or(&NO_ACCUMULATOR);
        let extreme = || {
            self.extremes[si * self.n_exts + ext]
                .front()
                .map_or(f64::NAN, |&(_, v)| v)
        };
        value_of(func, end - seq[1 + 2 * frame], a, extreme)
    }

    /// A batch's partition keys and event times.
    fn keys_and_times<'a>(
        &self,
        batch: &'a RecordBatch,
    ) -> Result<
        (
            &'a arrow::array::StringArray,
            &'a arrow::array::TimestampMicrosecondArray,
        ),
        ArrowError,
    > {
        let keys = batch
            .column(self.key_col)
            .as_string_opt::<i32>()
            .ok_or_else(|| ArrowError::SchemaError("partition key must be VARCHAR".into()))?;
        let ts = batch
            .column(self.ts_col)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| ArrowError::SchemaError("ORDER BY column must be a timestamp".into()))?;
        Ok((keys, ts))
    }

    /// An empty builder for each output column, for `n` rows.
    fn out_builders(&self, n: usize) -> Vec<Out> {
        self.aggs
            .iter()
            .map(|a| match a.func {
                OverFn::Count | OverFn::CountRows => Out::Count(Vec::with_capacity(n)),
                _ => Out::Float(Float64Builder::with_capacity(n)),
            })
            .collect()
    }

    /// `batch` with the built output columns appended.
    fn appended(&self, batch: &RecordBatch, outs: Vec<Out>) -> Result<RecordBatch, ArrowError> {
        let mut out: Vec<ArrayRef> = batch.columns().to_vec();
        out.extend(outs.into_iter().map(|o| -> ArrayRef {
            match o {
                Out::Count(v) => Arc::new(Int64Array::from(v)),
                Out::Float(mut b) => Arc::new(b.finish()),
            }
        }));
        RecordBatch::try_new(self.out_schema.clone(), out)
    }

    /// Processes rows in event-time order (all rows of one `ts` in the same call) and
    /// returns them with the window columns appended.
    pub fn process(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let n = batch.num_rows();
        let (keys, ts) = self.keys_and_times(batch)?;
        let column = |i: &usize| batch.column(*i).as_primitive::<Float64Type>();
        let frame_cols: Vec<&Float64Array> = self.frame_inputs.iter().map(column).collect();
        let lag_cols: Vec<&Float64Array> = self.lag_inputs.iter().map(column).collect();
        let mut outs = self.out_builders(n);

        let lag_k = self.lag_inputs.len();
        let framed = !self.frames.is_empty();
        let (sw, aw) = (self.seq_words(), self.n_accs * ACC_WORDS);
        // Every row's slot first: the lookups of different rows overlap in the CPU, and each
        // found key's rows, frame numbers and LAG values are fetched ahead of their use.
        let mut slot_ids: Vec<u32> = Vec::with_capacity(n);
        for r in 0..n {
            let key = (!keys.is_null(r)).then(|| keys.value(r).as_bytes());
            let s = self.slot_of(key);
            self.mark(s);
            let si = s as usize;
            prefetch(self.slots[si].rows.as_slices().0.as_ptr());
            if framed {
                prefetch(self.seqs[si * sw..].as_ptr());
                if aw > 0 {
                    prefetch(self.acc_values[si * aw..].as_ptr());
                }
            }
            if lag_k > 0 {
                prefetch(self.lag_values[si * lag_k..].as_ptr());
            }
            slot_ids.push(s);
        }
        let mut values: Vec<f64> = Vec::with_capacity(frame_cols.len());
        let mut start = 0;
        // Rows are processed in groups of equal ts: all peers enter the state first.
        while start < n {
            let t = ts.value(start);
            let mut end = start + 1;
            while end < n && ts.value(end) == t {
                end += 1;
            }
            for (r, &s) in (start..end).zip(&slot_ids[start..end]) {
                if lag_k > 0 {
                    // LAG: the previous row's values out, then this row's in.
                    let slot = &mut self.slots[s as usize];
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
                    let mut nulls = 0u64;
                    values.clear();
                    for (j, col) in frame_cols.iter().enumerate() {
                        if col.is_null(r) {
                            nulls |= 1u64 << j;
                        }
                        values.push(col.value(r));
                    }
                    self.enter(s, t, nulls, &values);
                }
            }
            if framed {
                for &s in &slot_ids[start..end] {
                    for (src, out) in self.sources.iter().zip(outs.iter_mut()) {
                        let Source::Frame {
                            func,
                            frame,
                            acc,
                            ext,
                        } = *src
                        else {
                            continue;
                        };
                        let v = self.frame_value(s, func, frame, acc, ext);
                        match out {
                            Out::Count(c) => c.push(v.unwrap_or(0.0) as i64),
                            Out::Float(b) => b.append_option(v),
                        }
                    }
                }
            }
            start = end;
        }

        self.appended(batch, outs)
    }

    /// The slot of `key` (`None`: the NULL key), if it has one; changes nothing.
    fn find(&self, key: Option<&[u8]>) -> Option<u32> {
        let Some(key) = key else {
            return self.null_key;
        };
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&i| self.slots[i as usize].key.bytes() == key)
            .copied()
    }

    /// What [`OverWindows::process`] would give for each row of `batch` if it were the next
    /// row of its key, each row on its own (rows of one batch do not see each other), without
    /// changing any state: the online scoring API's read of the live windows. Each row costs
    /// what entering it would (the rows leaving its frames, at most a frame's rows), not its
    /// key's history. A row must not be older than its key's newest row (the runtime probes
    /// only rows at or after the watermark, which every row held is before); one that is
    /// gets an error rather than a wrong answer.
    pub fn probe(&self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let n = batch.num_rows();
        let (keys, ts) = self.keys_and_times(batch)?;
        let column = |i: &usize| batch.column(*i).as_primitive::<Float64Type>();
        let frame_cols: Vec<&Float64Array> = self.frame_inputs.iter().map(column).collect();
        let mut outs = self.out_builders(n);
        let (sw, aw, lag_k) = (
            self.seq_words(),
            self.n_accs * ACC_WORDS,
            self.lag_inputs.len(),
        );
        let empty = VecDeque::new();
        // Per frame: its start once the row's time has moved it.
        let mut starts = vec![0u64; self.frames.len()];
        let mut accs = vec![0.0f64; aw];
        for r in 0..n {
            let t = ts.value(r);
            let key = (!keys.is_null(r)).then(|| keys.value(r).as_bytes());
            let slot = self.find(key);
            let rows = slot.map_or(&empty, |s| &self.slots[s as usize].rows);
            let (base, end) = match slot {
                Some(s) => {
                    let base = self.seqs[s as usize * sw];
                    (base, base + (rows.len() / self.stride) as u64)
                }
                None => (0, 0),
            };
            if let Some(i) = rows.len().checked_sub(self.stride)
                && rows[i] as i64 > t
            {
                return Err(ArrowError::ComputeError(format!(
                    "row at {} is older than its key's newest row at {}",
                    crate::event::format_micros(t),
                    crate::event::format_micros(rows[i] as i64)
                )));
            }
            match slot {
                Some(s) => accs.copy_from_slice(&self.acc_values[s as usize * aw..][..aw]),
                None => accs.fill(0.0),
            }
            let mut nulls = 0u64;
            for (j, col) in frame_cols.iter().enumerate() {
                if col.is_null(r) {
                    nulls |= 1u64 << j;
                }
            }
            for (f, frame) in self.frames.iter().enumerate() {
                let (start, removed) = match slot {
                    Some(s) => {
                        let seq = &self.seqs[s as usize * sw..][..sw];
                        (seq[1 + 2 * f], seq[2 + 2 * f])
                    }
                    None => (0, 0),
                };
                let (start, _, _) = advance(
                    frame,
                    rows,
                    self.stride,
                    (base, end),
                    t.saturating_sub(frame.range),
                    (start, removed),
                    &mut accs,
                );
                starts[f] = start;
                for &(acc, input) in &frame.accs {
                    if nulls & (1u64 << input) == 0 {
                        add(
                            &mut accs[acc * ACC_WORDS..][..ACC_WORDS],
                            frame_cols[input].value(r),
                        );
                    }
                }
            }
            for (src, out) in self.sources.iter().zip(outs.iter_mut()) {
                let v = match *src {
                    Source::Lag { input } => slot.and_then(|s| {
                        let null = self.slots[s as usize].lag_nulls & (1u64 << input) != 0;
                        (!null).then(|| self.lag_values[s as usize * lag_k + input])
                    }),
                    Source::Frame {
                        func,
                        frame,
                        acc,
                        ext,
                    } => {
                        let a = accs
                            .get(acc * ACC_WORDS..)
                            .and_then(|a| a.get(..ACC_WORDS))
                            .unwrap_or(&NO_ACCUMULATOR);
                        let extreme = || {
                            // The frame's extreme once the rows before its start have left,
                            // then this row's value where it beats it (as `push_extreme`).
                            let max = func == OverFn::Max;
                            let held = slot
                                .and_then(|s| {
                                    self.extremes[s as usize * self.n_exts + ext]
                                        .iter()
                                        .find(|&&(q, _)| q >= starts[frame])
                                })
                                .map(|&(_, v)| v);
                            let x = self.frames[frame]
                                .exts
                                .iter()
                                .find(|&&(e, _, _)| e == ext)
                                .map(|&(_, input, _)| frame_cols[input])
                                .filter(|c| !c.is_null(r))
                                .map(|c| c.value(r))
                                .filter(|x| !x.is_nan());
                            match (held, x) {
                                (Some(h), Some(x)) if (max && h <= x) || (!max && h >= x) => x,
                                (Some(h), _) => h,
                                (None, Some(x)) => x,
                                (None, None) => f64::NAN,
                            }
                        };
                        value_of(func, end - starts[frame] + 1, a, extreme)
                    }
                };
                match out {
                    Out::Count(c) => c.push(v.unwrap_or(0.0) as i64),
                    Out::Float(b) => b.append_option(v),
                }
            }
        }
        self.appended(batch, outs)
    }
}

impl crate::state::Stateful for OverWindows {
    fn keys(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    fn fingerprint(&self) -> String {
        let aggs: Vec<String> = self
            .aggs
            .iter()
            .map(|a| format!("{:?}({})/{}us", a.func, a.input, a.range_micros))
            .collect();
        format!(
            "over v1 key={} ts={} frame_inputs={:?} lag_inputs={:?} [{}]",
            self.key_col,
            self.ts_col,
            self.frame_inputs,
            self.lag_inputs,
            aggs.join(", ")
        )
    }

    /// One row per key: its LAG values, held frame rows, frame numbers, accumulators and
    /// extreme deques, each as little-endian words (exact); the NULL key first, then the
    /// keys in slot order — one pass over memory, no sort (a sort of a million keys by their
    /// bytes, each a cache miss, took longer than the rest), and the order a restore
    /// allocates slots in, so the snapshot of a restored operator is the snapshot it came from.
    fn snapshot(&self) -> Result<RecordBatch, ArrowError> {
        self.encode(&[], &self.slots_where(|_| true), false)
    }

    /// Only the keys changed since the last snapshot or restore (removed keys first): never
    /// more work than the whole state, and usually much less (the checkpoint writer folds
    /// changes into a whole state off the pipeline's thread).
    fn take_snapshot(&mut self, changes_only: bool) -> Result<crate::state::Snapshot, ArrowError> {
        if !changes_only {
            let batch = crate::state::Stateful::snapshot(self)?;
            self.clear_changes();
            return Ok(crate::state::Snapshot::full(batch));
        }
        let slots = self.slots_where(|s| self.is_dirty(s));
        let removed: Vec<Option<&[u8]>> = self.removed.iter().map(|k| k.as_deref()).collect();
        let batch = self.encode(&removed, &slots, true)?;
        self.clear_changes();
        Ok(crate::state::Snapshot {
            batch,
            changes: true,
        })
    }

    fn restore(&mut self, state: &RecordBatch) -> Result<(), ArrowError> {
        use crate::state::{binary, keys, words};
        crate::state::check_fingerprint(state, &crate::state::Stateful::fingerprint(self))?;
        let bad =
            |what: &str| ArrowError::InvalidArgumentError(format!("saved OVER state: {what}"));
        self.table.clear();
        self.slots.clear();
        self.null_key = None;
        self.lag_values.clear();
        self.seqs.clear();
        self.acc_values.clear();
        self.extremes.clear();
        self.active.clear();
        self.free.clear();
        self.clear_changes();
        let key = keys(state)?;
        let lag_nulls = crate::state::column(state, "lag_nulls")?
            .as_primitive_opt::<arrow::datatypes::UInt64Type>()
            .ok_or_else(|| bad("lag_nulls is not UInt64"))?;
        let (lag, rows, seqs, accs, exts) = (
            binary(state, "lag")?,
            binary(state, "rows")?,
            binary(state, "frames")?,
            binary(state, "accumulators")?,
            binary(state, "extremes")?,
        );
        let (sw, aw, lag_k, n_exts) = (
            self.seq_words(),
            self.n_accs * ACC_WORDS,
            self.lag_inputs.len(),
            self.n_exts,
        );
        for r in 0..state.num_rows() {
            let s = self.slot_of((!key.is_null(r)).then(|| key.value(r).as_bytes()));
            let si = s as usize;
            let slot = &mut self.slots[si];
            slot.lag_nulls = lag_nulls.value(r);
            slot.rows = words(rows.value(r))?.collect();
            if !slot.rows.len().is_multiple_of(self.stride) {
                return Err(bad("rows are not whole rows"));
            }
            if !slot.rows.is_empty() {
                self.active.push(s);
            }
            let fill = |dst: &mut [u64], src: &[u8], what: &str| -> Result<(), ArrowError> {
                let w: Vec<u64> = words(src)?.collect();
                if w.len() != dst.len() {
                    return Err(bad(what));
                }
                dst.copy_from_slice(&w);
                Ok(())
            };
            let mut tmp = vec![0u64; lag_k];
            fill(&mut tmp, lag.value(r), "LAG values of another width")?;
            for (d, w) in self.lag_values[si * lag_k..][..lag_k].iter_mut().zip(&tmp) {
                *d = f64::from_bits(*w);
            }
            fill(
                &mut self.seqs[si * sw..][..sw],
                seqs.value(r),
                "frames of another count",
            )?;
            let mut tmp = vec![0u64; aw];
            fill(&mut tmp, accs.value(r), "accumulators of another count")?;
            for (d, w) in self.acc_values[si * aw..][..aw].iter_mut().zip(&tmp) {
                *d = f64::from_bits(*w);
            }
            let mut w = words(exts.value(r))?;
            for d in &mut self.extremes[si * n_exts..][..n_exts] {
                let n = w.next().ok_or_else(|| bad("extremes cut short"))?;
                for _ in 0..n {
                    let (Some(q), Some(v)) = (w.next(), w.next()) else {
                        return Err(bad("extremes cut short"));
                    };
                    d.push_back((q, f64::from_bits(v)));
                }
            }
        }
        Ok(())
    }
}

/// Adds `x` to an accumulator.
fn add(a: &mut [f64], x: f64) {
    a[0] += 1.0;
    neumaier(a, x);
    let d = x - a[3];
    a[3] += d / a[0];
    a[4] += d * (x - a[3]);
    a[5] = a[5].max(a[4]);
}

/// Takes `x` (a value added before) out of an accumulator; `false` when the result cannot
/// be trusted and the caller must recompute: `x` was not finite (no subtraction undoes
/// it), or the squared deviations fell far below their peak (an outlier left the frame, and
/// the subtraction's rounding, relative to the peak, would dominate what is left).
fn remove(a: &mut [f64], x: f64) -> bool {
    a[0] -= 1.0;
    if a[0] <= 0.0 {
        a.fill(0.0);
        return x.is_finite();
    }
    neumaier(a, -x);
    let d = x - a[3];
    a[3] -= d / a[0];
    a[4] -= d * (x - a[3]);
    x.is_finite() && a[4] >= a[5] / 256.0
}

/// Neumaier's compensated addition of `x` to the sum `a[1]` (compensation `a[2]`).
fn neumaier(a: &mut [f64], x: f64) {
    let t = a[1] + x;
    if a[1].abs() >= x.abs() {
        a[2] += (a[1] - t) + x;
    } else {
        a[2] += (x - t) + a[1];
    }
    a[1] = t;
}

/// Appends row `at`'s value to a MIN (or MAX) deque, dropping the values it outlives and
/// beats; NaN is never a frame's MIN or MAX while another value is in it.
fn push_extreme(d: &mut VecDeque<(u64, f64)>, at: u64, x: f64, max: bool) {
    if x.is_nan() {
        return;
    }
    while d
        .back()
        .is_some_and(|&(_, v)| if max { v <= x } else { v >= x })
    {
        d.pop_back();
    }
    d.push_back((at, x));
}

/// Moves one frame's start past its rows before `from`, taking them out of the frame's
/// accumulators in `accs` (a key's rows are `rows`, numbered `base..end`; the frame held
/// `start..end`, `removed` of them having left since its accumulators were last computed
/// from rows). As every frame must: an emptied frame restarts from exact zeros, and one that
/// as many rows have left as it holds (or whose subtraction cannot be trusted) is recomputed
/// from its rows. Returns the new start and `removed`, and whether it recomputed (the
/// frame's extremes are then to be recomputed too).
fn advance(
    frame: &Frame,
    rows: &VecDeque<u64>,
    stride: usize,
    (base, end): (u64, u64),
    from: i64,
    (mut start, mut removed): (u64, u64),
    accs: &mut [f64],
) -> (u64, u64, bool) {
    while start < end {
        let i = (start - base) as usize * stride;
        if rows[i] as i64 >= from {
            break;
        }
        let row_nulls = rows[i + 1];
        for &(acc, input) in &frame.accs {
            if row_nulls & (1u64 << input) == 0 {
                let x = f64::from_bits(rows[i + 2 + input]);
                let a = &mut accs[acc * ACC_WORDS..][..ACC_WORDS];
                if !remove(a, x) {
                    removed = u64::MAX / 2; // recompute now
                }
            }
        }
        start += 1;
        removed += 1;
    }
    if start == end {
        // Every row has left the frame: its accumulators restart from exact zeros, as a new
        // key's do, so a key's results never depend on whether (or when) it was evicted
        // while idle.
        for &(acc, _) in &frame.accs {
            accs[acc * ACC_WORDS..][..ACC_WORDS].fill(0.0);
        }
        return (start, 0, false);
    }
    if removed > 0 && removed >= (end - start).max(8) {
        rebuild_accumulators(frame, rows, stride, base, start, accs);
        return (start, 0, true);
    }
    (start, removed, false)
}

/// The value of frame function `func` over a frame of `rows` rows with accumulator `a`;
/// `extreme` gives the frame's MIN or MAX (NaN: only NaN values).
fn value_of(func: OverFn, rows: u64, a: &[f64], extreme: impl FnOnce() -> f64) -> Option<f64> {
    let n = a[0];
    match func {
        OverFn::CountRows => Some(rows as f64),
        OverFn::Count => Some(n),
        _ if n == 0.0 => None,
        OverFn::Sum => Some(a[1] + a[2]),
        OverFn::Avg => Some((a[1] + a[2]) / n),
        OverFn::Stddev => (n >= 2.0).then(|| (a[4].max(0.0) / (n - 1.0)).sqrt()),
        // Only NaN values: the deque keeps none of them.
        OverFn::Min | OverFn::Max => Some(extreme()),
        OverFn::Lag => None,
    }
}

/// Recomputes one frame's accumulators from its rows (`start` on).
fn rebuild_accumulators(
    frame: &Frame,
    rows: &VecDeque<u64>,
    stride: usize,
    base: u64,
    start: u64,
    accs: &mut [f64],
) {
    for &(acc, _) in &frame.accs {
        accs[acc * ACC_WORDS..][..ACC_WORDS].fill(0.0);
    }
    let len = (rows.len() / stride) as u64;
    for q in start..base + len {
        let i = (q - base) as usize * stride;
        let nulls = rows[i + 1];
        for &(acc, input) in &frame.accs {
            if nulls & (1u64 << input) == 0 {
                add(
                    &mut accs[acc * ACC_WORDS..][..ACC_WORDS],
                    f64::from_bits(rows[i + 2 + input]),
                );
            }
        }
    }
}

/// Recomputes one frame's MIN and MAX deques from its rows (`start` on).
fn rebuild_extremes(
    frame: &Frame,
    rows: &VecDeque<u64>,
    stride: usize,
    base: u64,
    start: u64,
    exts: &mut [VecDeque<(u64, f64)>],
) {
    for &(ext, _, _) in &frame.exts {
        exts[ext].clear();
    }
    let len = (rows.len() / stride) as u64;
    for q in start..base + len {
        let i = (q - base) as usize * stride;
        let nulls = rows[i + 1];
        for &(ext, input, max) in &frame.exts {
            if nulls & (1u64 << input) == 0 {
                push_extreme(&mut exts[ext], q, f64::from_bits(rows[i + 2 + input]), max);
            }
        }
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

    /// A batch of `batch`'s schema whose keys may be NULL.
    fn nullable_batch(rows: &[(Option<String>, i64, f64)]) -> RecordBatch {
        let keys: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
        RecordBatch::try_new(
            batch(&[]).schema(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| r.1),
                )),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .expect("batch")
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

    /// Every function over three frames, on a few hot keys with hundreds of rows a frame (and
    /// peers, NULLs, NaN-free values of mixed magnitude): the running accumulators give what
    /// recomputing each frame from scratch gives.
    #[test]
    fn running_accumulators_equal_recomputing_every_frame() {
        use rand::{Rng, SeedableRng};
        let funcs = [
            OverFn::CountRows,
            OverFn::Count,
            OverFn::Sum,
            OverFn::Avg,
            OverFn::Min,
            OverFn::Max,
            OverFn::Stddev,
        ];
        let ranges = [MIN, 7 * MIN, 60 * MIN];
        let mut aggs = Vec::new();
        for &range_micros in &ranges {
            for &func in &funcs {
                aggs.push(OverAgg {
                    name: format!("{func:?}_{range_micros}"),
                    func,
                    input: 2,
                    range_micros,
                });
            }
        }
        let schema = batch(&[]).schema();
        let mut w = OverWindows::new(&schema, 0, 1, aggs.clone()).expect("operator");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        let mut history: Vec<(Option<String>, i64, Option<f64>)> = Vec::new();
        let mut t = 0i64;
        for _ in 0..40 {
            let mut rows: Vec<(Option<String>, i64, Option<f64>)> = Vec::new();
            t += 1; // a ts's peers all come in one call
            for _ in 0..250 {
                if rng.random_range(0..4) > 0 {
                    t += rng.random_range(0..20_000_000);
                }
                let key = match rng.random_range(0..10) {
                    0 => None,
                    1 => Some(String::new()),
                    k => Some(format!("k{}", k % 3)),
                };
                let x = match rng.random_range(0..10) {
                    0 => None,
                    1 => Some(1e9),
                    2 => Some(42.0),
                    _ => Some(rng.random_range(-100.0..100.0)),
                };
                rows.push((key, t, x));
            }
            // All peers of the last ts in the same call.
            let keys: Vec<Option<&str>> = rows.iter().map(|r| r.0.as_deref()).collect();
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(arrow::array::StringArray::from(keys)),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                    Arc::new(Float64Array::from(
                        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                    )),
                ],
            )
            .expect("batch");
            let out = w.process(&b).expect("process");
            history.extend(rows.iter().cloned());
            let done = history.len() - rows.len();
            for (j, row) in rows.iter().enumerate() {
                let frame_of = |range: i64| {
                    history
                        .iter()
                        .rev()
                        .take_while(|h| h.1 >= row.1 - 60 * MIN)
                        .filter(|h| h.0 == row.0 && h.1 <= row.1 && h.1 >= row.1 - range)
                        .collect::<Vec<_>>()
                };
                for (c, a) in aggs.iter().enumerate() {
                    let frame = frame_of(a.range_micros);
                    let xs: Vec<f64> = frame.iter().filter_map(|h| h.2).collect();
                    let n = xs.len() as f64;
                    let want = match a.func {
                        OverFn::CountRows => Some(frame.len() as f64),
                        OverFn::Count => Some(n),
                        _ if xs.is_empty() => None,
                        OverFn::Sum => Some(xs.iter().sum()),
                        OverFn::Avg => Some(xs.iter().sum::<f64>() / n),
                        OverFn::Min => xs.iter().copied().reduce(f64::min),
                        OverFn::Max => xs.iter().copied().reduce(f64::max),
                        OverFn::Stddev => (xs.len() > 1).then(|| {
                            let m = xs.iter().sum::<f64>() / n;
                            (xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
                        }),
                        OverFn::Lag => None,
                    };
                    let col = out.column(3 + c);
                    let got = match col.data_type() {
                        DataType::Int64 => Some(col.as_primitive::<Int64Type>().value(j) as f64),
                        _ => {
                            let f = col.as_primitive::<Float64Type>();
                            (!f.is_null(j)).then(|| f.value(j))
                        }
                    };
                    let ok = match (got, want) {
                        (Some(g), Some(x)) => (g - x).abs() <= 1e-9 * g.abs().max(x.abs()).max(1.0),
                        (g, x) => g == x,
                    };
                    assert!(
                        ok,
                        "row {} {}: got {got:?}, want {want:?}",
                        done + j,
                        a.name
                    );
                }
            }
        }
        assert_eq!(w.keys(), 5, "k0, k1, k2, '' and NULL");
    }

    /// Stopped at any batch, snapshotted and restored into a new operator, the windows go on
    /// to give bit for bit what an uninterrupted run gives; a snapshot does not restore into
    /// an operator with other windows.
    /// `probe` gives, bit for bit, what `process` gives for the same row as its key's next
    /// (frames emptied, rows leaving them, recomputed accumulators after an outlier left,
    /// NULL and NaN values, MIN and MAX, LAG, new keys and the NULL key), and changes nothing:
    /// an operator probed before every row gives the same outputs and snapshot as one never
    /// probed.
    #[test]
    fn probing_a_row_gives_what_entering_it_would_and_changes_nothing() {
        use rand::{Rng, SeedableRng};
        let funcs = [
            OverFn::CountRows,
            OverFn::Count,
            OverFn::Sum,
            OverFn::Avg,
            OverFn::Min,
            OverFn::Max,
            OverFn::Stddev,
        ];
        let mut aggs = Vec::new();
        for range_micros in [3 * MIN, 20 * MIN] {
            for func in funcs {
                aggs.push(OverAgg {
                    name: format!("{func:?}_{range_micros}"),
                    func,
                    input: 2,
                    range_micros,
                });
            }
        }
        aggs.push(OverAgg {
            name: "prev".into(),
            func: OverFn::Lag,
            input: 2,
            range_micros: 0,
        });
        let schema = batch(&[]).schema();
        let mut probed = OverWindows::new(&schema, 0, 1, aggs.clone()).expect("operator");
        let mut plain = OverWindows::new(&schema, 0, 1, aggs).expect("operator");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
        let bits = |b: &RecordBatch| -> Vec<Vec<Option<u64>>> {
            b.columns()[3..]
                .iter()
                .map(|c| {
                    (0..c.len())
                        .map(|i| {
                            (!c.is_null(i)).then(|| match c.data_type() {
                                DataType::Int64 => c.as_primitive::<Int64Type>().value(i) as u64,
                                _ => c.as_primitive::<Float64Type>().value(i).to_bits(),
                            })
                        })
                        .collect()
                })
                .collect()
        };
        let mut t = 0i64;
        for i in 0..3000 {
            if rng.random_range(0..5) > 0 {
                t += rng.random_range(0..90_000_000);
            }
            let key = match rng.random_range(0..12) {
                0 => None,
                k => Some(format!("k{}", k % 5)),
            };
            let x = match rng.random_range(0..12) {
                0 => None,
                1 => Some(f64::NAN),
                2 => Some(1e12),
                _ => Some(rng.random_range(-100.0..100.0)),
            };
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(arrow::array::StringArray::from(vec![key.as_deref()])),
                    Arc::new(TimestampMicrosecondArray::from_iter_values([t])),
                    Arc::new(Float64Array::from(vec![x])),
                ],
            )
            .expect("batch");
            let answer = probed.probe(&b).expect("probe");
            let entered = probed.process(&b).expect("process");
            let reference = plain.process(&b).expect("process");
            assert_eq!(
                bits(&answer),
                bits(&entered),
                "row {i}: probe and process differ"
            );
            assert_eq!(
                bits(&entered),
                bits(&reference),
                "row {i}: the probe changed state"
            );
            if i % 200 == 199 {
                probed.evict_idle(t);
                plain.evict_idle(t);
            }
        }
        use crate::state::Stateful;
        assert_eq!(
            probed.snapshot().expect("snapshot"),
            plain.snapshot().expect("snapshot"),
            "the probed operator's state is the other's"
        );
        // COUNT(*) alone keeps no accumulator.
        let mut only = OverWindows::new(
            &schema,
            0,
            1,
            vec![OverAgg {
                name: "n".into(),
                func: OverFn::CountRows,
                input: 2,
                range_micros: MIN,
            }],
        )
        .expect("operator");
        let count = |b: &RecordBatch| b.column(3).as_primitive::<Int64Type>().value(0);
        let first = batch(&[("k", 0, 1.0)]);
        assert_eq!(count(&only.probe(&first).expect("probe")), 1);
        assert_eq!(count(&only.process(&first).expect("process")), 1);
        let second = batch(&[("k", MIN / 2, 1.0)]);
        assert_eq!(count(&only.probe(&second).expect("probe")), 2);
        assert_eq!(count(&only.process(&second).expect("process")), 2);
        // A row older than its key's newest is refused, not answered wrongly.
        let old = batch(&[("k1", t - 1, 1.0)]);
        let newest = batch(&[("k1", t, 1.0)]);
        probed.process(&newest).expect("process");
        let e = probed
            .probe(&old)
            .expect_err("older than the key's newest row");
        assert!(
            e.to_string().contains("older than its key's newest row"),
            "{e}"
        );
    }

    #[test]
    fn snapshot_and_restore_continue_exactly() {
        use crate::state::Stateful;
        let aggs = |range: i64| {
            let f = |name: &str, func| OverAgg {
                name: name.into(),
                func,
                input: 2,
                range_micros: range,
            };
            vec![
                f("n", OverFn::CountRows),
                f("sum", OverFn::Sum),
                f("std", OverFn::Stddev),
                f("max", OverFn::Max),
                f("min", OverFn::Min),
                f("prev", OverFn::Lag),
            ]
        };
        let schema = batch(&[]).schema();
        let rows: Vec<(Option<String>, i64, f64)> = (0..3000)
            .map(|i: i64| {
                let key = match i % 7 {
                    0 => None,
                    1 => Some(String::new()),
                    k => Some(format!("user-{}", k * 1000 + i % 3)),
                };
                (key, i / 3 * 7_000_000, ((i * 7919) % 1000) as f64 / 7.0)
            })
            .collect();
        let batches: Vec<RecordBatch> = rows.chunks(300).map(nullable_batch).collect();
        let new = || OverWindows::new(&schema, 0, 1, aggs(10 * MIN)).expect("operator");
        let mut whole = new();
        let want: Vec<RecordBatch> = batches
            .iter()
            .map(|b| whole.process(b).expect("run"))
            .collect();
        for stop in [1, 4, 9] {
            let mut first = new();
            for b in &batches[..stop] {
                first.process(b).expect("run");
            }
            let state = first.snapshot().expect("snapshot");
            assert_eq!(state.num_rows(), first.keys());
            let mut second = new();
            second.restore(&state).expect("restore");
            assert_eq!(second.snapshot().expect("again"), state, "restore is exact");
            for (b, w) in batches[stop..].iter().zip(&want[stop..]) {
                assert_eq!(
                    &second.process(b).expect("run"),
                    w,
                    "stopped after batch {stop}"
                );
            }
        }
        let state = whole.snapshot().expect("snapshot");
        let mut other = OverWindows::new(&schema, 0, 1, aggs(20 * MIN)).expect("operator");
        let e = other.restore(&state).expect_err("other windows");
        assert!(e.to_string().contains("belongs to another operator"), "{e}");
    }

    #[test]
    fn incremental_snapshots_merged_restore_what_whole_ones_do() {
        use crate::state::Stateful;
        // 2000 keys (and NULL), each batch touching ~300 over 75 s, the frame 8 batches long:
        // most snapshots hold only changes; keys idle for longer than the frame are evicted
        // (removed, without LAG).
        let batches: Vec<(RecordBatch, i64)> = (0..12)
            .map(|b: i64| {
                let rows: Vec<(Option<String>, i64, f64)> = (b * 300..(b + 1) * 300)
                    .map(|i| {
                        let key = (i % 11 != 0).then(|| format!("u{}", (i * 7919) % 2000));
                        (key, i * 250_000, ((i * 31) % 97) as f64)
                    })
                    .collect();
                (nullable_batch(&rows), (b + 1) * 300 * 250_000)
            })
            .collect();
        for lag in [false, true] {
            let mut whole = op(lag);
            let want: Vec<RecordBatch> = batches
                .iter()
                .map(|(b, wm)| {
                    let out = whole.process(b).expect("run");
                    whole.evict_idle(*wm);
                    out
                })
                .collect();
            let mut inc = op(lag);
            let (mut base, mut chain) = (None::<RecordBatch>, Vec::new());
            let (mut deltas, mut removals) = (0, 0);
            for (i, (b, wm)) in batches.iter().enumerate() {
                inc.process(b).expect("run");
                inc.evict_idle(*wm);
                let snap = inc.take_snapshot(base.is_some()).expect("snapshot");
                if snap.changes {
                    deltas += 1;
                    let removed = snap.batch.column(snap.batch.num_columns() - 1);
                    removals += removed.as_boolean().true_count();
                    chain.push(snap.batch);
                } else {
                    base = Some(snap.batch);
                    chain.clear();
                }
                let state =
                    crate::state::merge(base.as_ref().expect("base"), &chain).expect("merge");
                assert_eq!(state.num_rows(), inc.keys(), "lag {lag}, batch {i}");
                let mut again = op(lag);
                again.restore(&state).expect("restore");
                for ((b, wm), w) in batches[i + 1..].iter().zip(&want[i + 1..]) {
                    assert_eq!(&again.process(b).expect("run"), w, "lag {lag}, after {i}");
                    again.evict_idle(*wm);
                }
            }
            assert_eq!(
                deltas,
                batches.len() - 1,
                "lag {lag}: changes after the first"
            );
            assert_eq!(
                removals > 0,
                !lag,
                "keys removed only without LAG: {removals}"
            );
        }
    }
}
