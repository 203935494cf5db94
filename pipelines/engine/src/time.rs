//! Event time: a bounded-out-of-orderness watermark and the buffer that holds rows until the
//! watermark passes them, releasing them in event-time order. Rows that arrive behind the
//! watermark are returned as late with a reason — never dropped silently.
//!
//! Watermark `W = min(max event time seen, frontier) - bound`, where the frontier is what the
//! source reports its slowest part (Kafka partition) has reached ([`EventTimeBuffer::set_frontier`];
//! none: no limit). A row with `ts < W` on arrival is late; rows with `ts < W` held in the
//! buffer are complete (no row with an equal or smaller `ts` can still be accepted) and are
//! released, ties in arrival order. A row is judged late against the watermark as it stood
//! when its batch arrived. This is the only place rows wait for event time.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{AsArray, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use arrow::error::ArrowError;

/// Rows that arrived behind the watermark, with why.
#[derive(Debug)]
pub struct Late {
    pub rows: RecordBatch,
    pub reasons: Vec<String>,
}

/// The buffer's progress besides the rows it holds, for a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Marks {
    /// The newest event time accepted.
    pub max_seen: Option<i64>,
    /// The floor an idle source raised the watermark to.
    pub floor: Option<i64>,
    /// The source's frontier at the time: the first rows after a restore are judged late
    /// against the same watermark they would have met without the restart.
    #[serde(default)]
    pub frontier: Option<i64>,
}

/// Holds rows until the watermark passes them.
pub struct EventTimeBuffer {
    schema: SchemaRef,
    ts_col: usize,
    bound_micros: i64,
    max_seen: Option<i64>,
    /// Set when the source went idle: the watermark is at least this (the newest event time).
    floor: Option<i64>,
    /// The source's frontier, if it reports one.
    frontier: Option<i64>,
    /// (ts, arrival seq) -> (batch id, row)
    index: BTreeMap<(i64, u64), (u64, u32)>,
    /// batch id -> (batch, rows of it still held)
    batches: HashMap<u64, (RecordBatch, usize)>,
    next_batch: u64,
    seq: u64,
}

impl EventTimeBuffer {
    /// `ts_col` must be a non-null `Timestamp(Microsecond, _)` column.
    pub fn new(schema: SchemaRef, ts_col: usize, bound_micros: i64) -> Self {
        EventTimeBuffer {
            schema,
            ts_col,
            bound_micros,
            max_seen: None,
            floor: None,
            frontier: None,
            index: BTreeMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
            seq: 0,
        }
    }

    /// Schema of the rows held and released.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Current watermark, once any row was seen.
    pub fn watermark(&self) -> Option<i64> {
        let reached = match self.frontier {
            Some(f) => self.max_seen.map(|m| m.min(f)),
            None => self.max_seen,
        };
        let w = reached.map(|m| m.saturating_sub(self.bound_micros));
        w.max(self.floor)
    }

    /// The source's frontier (see the module doc): after a push (lateness is judged against
    /// the watermark of the last release), before the release.
    pub fn set_frontier(&mut self, frontier: Option<i64>) {
        self.frontier = frontier;
    }

    /// The source went idle: nothing older than the newest event time seen (up to the
    /// frontier) can still be accepted, so the watermark moves up to it and every row before
    /// it is released. An idle source does not hold its last rows (and windows) back forever.
    pub fn mark_idle(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        let reached = match self.frontier {
            Some(f) => self.max_seen.map(|m| m.min(f)),
            None => self.max_seen,
        };
        self.floor = reached.max(self.floor);
        self.release()
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The event-time column of `batch`.
    fn event_times(&self, batch: &RecordBatch) -> Result<TimestampMicrosecondArray, ArrowError> {
        batch
            .column(self.ts_col)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .cloned()
            .ok_or_else(|| {
                ArrowError::SchemaError("event-time column is not Timestamp(Microsecond)".into())
            })
    }

    /// Accepts a batch; returns its late rows (if any) with reasons.
    pub fn push(&mut self, batch: RecordBatch) -> Result<Option<Late>, ArrowError> {
        let ts = self.event_times(&batch)?;
        let mut late_idx = Vec::new();
        let mut reasons = Vec::new();
        let b = self.next_batch;
        self.next_batch += 1;
        let mut kept = 0;
        // Lateness is judged against the watermark as it stood when the batch arrived: every
        // row before it has been released, none at or after it. (Rows of one batch may come
        // from parts of the input the frontier tracks separately, so one row's time must not
        // make another row of the same batch late.)
        let watermark = self.watermark();
        for (r, t) in ts.iter().enumerate() {
            let Some(t) = t else {
                late_idx.push(r as u32);
                reasons.push("event time is NULL".to_string());
                continue;
            };
            if let Some(w) = watermark
                && t < w
            {
                late_idx.push(r as u32);
                reasons.push(format!(
                    "late by {} ms: event time {} is behind the watermark {} (allowed lateness {} ms)",
                    (w - t) / 1000,
                    crate::event::format_micros(t),
                    crate::event::format_micros(w),
                    self.bound_micros / 1000
                ));
                continue;
            }
            self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
            self.seq += 1;
            self.index.insert((t, self.seq), (b, r as u32));
            kept += 1;
        }
        if kept > 0 {
            self.batches.insert(b, (batch.clone(), kept));
        }
        if late_idx.is_empty() {
            return Ok(None);
        }
        let rows = take_record_batch(&batch, &UInt32Array::from(late_idx))?;
        Ok(Some(Late { rows, reasons }))
    }

    /// Releases every held row with `ts < watermark` in event-time order.
    pub fn release(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        match self.watermark() {
            Some(w) => self.release_before(w),
            None => Ok(None),
        }
    }

    /// Releases everything held (end of input).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.release_before(i64::MAX)
    }

    /// What a checkpoint keeps: the rows held, in release order, and the marks.
    pub fn snapshot(&self) -> Result<(RecordBatch, Marks), ArrowError> {
        let rows = match self.gather(&self.index)? {
            Some(rows) => rows,
            None => RecordBatch::new_empty(self.schema.clone()),
        };
        let marks = Marks {
            max_seen: self.max_seen,
            floor: self.floor,
            frontier: self.frontier,
        };
        Ok((rows, marks))
    }

    /// Puts back what [`EventTimeBuffer::snapshot`] took (into an empty buffer of the same
    /// schema): the rows are held again, none judged late.
    pub fn restore(&mut self, rows: RecordBatch, marks: Marks) -> Result<(), ArrowError> {
        if rows.schema().fields() != self.schema.fields() {
            return Err(ArrowError::SchemaError(
                "the saved event-time buffer has other columns than the table".into(),
            ));
        }
        let ts = self.event_times(&rows)?;
        self.index.clear();
        self.batches.clear();
        let b = self.next_batch;
        self.next_batch += 1;
        for (r, t) in ts.iter().enumerate() {
            let t = t.ok_or_else(|| {
                ArrowError::InvalidArgumentError("a saved held row has no event time".into())
            })?;
            self.seq += 1;
            self.index.insert((t, self.seq), (b, r as u32));
        }
        if rows.num_rows() > 0 {
            let n = rows.num_rows();
            self.batches.insert(b, (rows, n));
        }
        self.max_seen = marks.max_seen;
        self.floor = marks.floor;
        self.frontier = marks.frontier;
        Ok(())
    }

    /// The rows `entries` point at, in their order.
    fn gather(
        &self,
        entries: &BTreeMap<(i64, u64), (u64, u32)>,
    ) -> Result<Option<RecordBatch>, ArrowError> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut ids: Vec<u64> = entries.values().map(|(b, _)| *b).collect();
        ids.sort_unstable();
        ids.dedup();
        let pos: HashMap<u64, usize> = ids.iter().enumerate().map(|(i, b)| (*b, i)).collect();
        let parts: Vec<&RecordBatch> = ids
            .iter()
            .filter_map(|b| self.batches.get(b).map(|(batch, _)| batch))
            .collect();
        if parts.len() != ids.len() {
            return Err(ArrowError::InvalidArgumentError(
                "event-time buffer lost track of a batch".into(),
            ));
        }
        let idx: Vec<(usize, usize)> = entries
            .values()
            .map(|(b, r)| (pos[b], *r as usize))
            .collect();
        Ok(Some(interleave_record_batch(&parts, &idx)?))
    }

    fn release_before(&mut self, w: i64) -> Result<Option<RecordBatch>, ArrowError> {
        let rest = self.index.split_off(&(w, 0));
        let ready = std::mem::replace(&mut self.index, rest);
        let Some(out) = self.gather(&ready)? else {
            return Ok(None);
        };
        for (b, _) in ready.values() {
            if let Some(entry) = self.batches.get_mut(b) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    self.batches.remove(b);
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn batch(ts: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        )]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(TimestampMicrosecondArray::from(ts.to_vec()))],
        )
        .expect("batch")
    }

    #[test]
    fn an_idle_source_releases_what_it_holds() {
        let mut b = EventTimeBuffer::new(batch(&[]).schema(), 0, 5_000_000);
        assert!(
            b.push(batch(&[1_000_000, 9_000_000, 10_000_000]))
                .expect("push")
                .is_none()
        );
        // Watermark 5 s: only the first row is complete.
        assert_eq!(b.release().expect("release").map(|r| r.num_rows()), Some(1));
        assert_eq!(b.len(), 2);
        // Nothing more arrives: going idle moves the watermark to the newest event time.
        assert_eq!(b.mark_idle().expect("idle").map(|r| r.num_rows()), Some(1));
        assert_eq!(b.watermark(), Some(10_000_000));
        // A row before the raised watermark is late now; the newest one is still held.
        let late = b.push(batch(&[9_500_000])).expect("push").expect("late");
        assert_eq!(late.rows.num_rows(), 1);
        assert_eq!(b.flush().expect("flush").map(|r| r.num_rows()), Some(1));
    }

    #[test]
    fn the_frontier_holds_the_watermark_back() {
        // A fast part of the input is at 60 s, a slow one has reached 10 s.
        let mut b = EventTimeBuffer::new(batch(&[]).schema(), 0, 5_000_000);
        b.set_frontier(Some(10_000_000));
        assert!(
            b.push(batch(&[60_000_000, 4_000_000, 10_000_000]))
                .expect("push")
                .is_none()
        );
        assert_eq!(b.watermark(), Some(5_000_000), "min(60 s, 10 s) - 5 s");
        assert_eq!(b.release().expect("release").map(|r| r.num_rows()), Some(1));
        // The slow part's next row is not late, as it would be against 60 s - 5 s.
        assert!(b.push(batch(&[7_000_000])).expect("push").is_none());
        // Idle: the watermark rises to the frontier, not to the fast part's 60 s.
        assert_eq!(b.mark_idle().expect("idle").map(|r| r.num_rows()), Some(1));
        assert_eq!(b.watermark(), Some(10_000_000));
        assert_eq!(b.len(), 2);
        // The slow part catches up: everything before the new watermark goes.
        b.set_frontier(Some(i64::MAX));
        assert_eq!(b.watermark(), Some(55_000_000));
        assert_eq!(b.release().expect("release").map(|r| r.num_rows()), Some(1));
        assert_eq!(b.flush().expect("flush").map(|r| r.num_rows()), Some(1));
    }

    #[test]
    fn a_snapshot_restores_the_held_rows_and_the_watermark() {
        let mut b = EventTimeBuffer::new(batch(&[]).schema(), 0, 5_000_000);
        // A slow part of the input holds the watermark back; the restored buffer must too.
        b.set_frontier(Some(8_500_000));
        b.push(batch(&[9_000_000, 1_000_000, 7_000_000]))
            .expect("push");
        b.push(batch(&[8_000_000])).expect("push");
        assert_eq!(b.release().expect("release").map(|r| r.num_rows()), Some(1));
        let (rows, marks) = b.snapshot().expect("snapshot");
        assert_eq!(rows.num_rows(), 3);
        let mut again = EventTimeBuffer::new(batch(&[]).schema(), 0, 5_000_000);
        again.restore(rows, marks).expect("restore");
        assert_eq!(again.watermark(), b.watermark());
        // The same rows come out, in the same order, and the same rows are late.
        assert!(again.push(batch(&[3_000_000])).expect("push").is_some());
        assert!(b.push(batch(&[3_000_000])).expect("push").is_some());
        assert_eq!(
            again.flush().expect("flush"),
            b.flush().expect("flush"),
            "restored buffer releases what the original does"
        );
    }
}
