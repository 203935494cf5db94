//! What the console keeps of a running pipeline, all in bounded rings on the web side (the
//! pipeline's thread only hands over batches it already made, through the dataflow's taps):
//! the latest rows of the anomalies sink as JSON with a live feed for the stream endpoint, the
//! latest dead letters and their counts by reason, and one sample a second of the run's
//! counters (throughput, anomaly rate, commit latency, checkpoints) for the charts.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::RecordBatch;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use txguard_engine::runtime::Metrics;
use txguard_engine::stream::{DEAD_LETTERS, Graph, Tap, Watch};
use txguard_iforest_datafusion::ModelSlot;

/// Anomalies kept for the table (the newest).
pub const ANOMALIES_KEPT: usize = 1000;
/// Dead letters kept (the newest).
pub const DEAD_LETTERS_KEPT: usize = 200;
/// Samples kept: 15 minutes at one a second.
pub const SAMPLES_KEPT: usize = 900;
/// Checkpoints kept in the history.
pub const CHECKPOINTS_KEPT: usize = 100;
/// Batches a tap may hold before it drops (the console is behind, not the pipeline).
const TAP_BATCHES: usize = 256;

/// A bounded ring of the newest items, each with its sequence number (1-based, across the
/// whole run).
#[derive(Debug)]
pub struct Ring<T> {
    items: VecDeque<(u64, T)>,
    cap: usize,
    seen: u64,
}

impl<T: Clone> Ring<T> {
    pub fn new(cap: usize) -> Self {
        Ring {
            items: VecDeque::with_capacity(cap.min(4096)),
            cap,
            seen: 0,
        }
    }

    pub fn push(&mut self, item: T) -> u64 {
        self.seen += 1;
        if self.items.len() == self.cap {
            self.items.pop_front();
        }
        self.items.push_back((self.seen, item));
        self.seen
    }

    /// Items pushed in the whole run.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The newest first.
    pub fn newest(&self) -> impl Iterator<Item = &(u64, T)> {
        self.items.iter().rev()
    }

    pub fn oldest(&self) -> impl Iterator<Item = &(u64, T)> {
        self.items.iter()
    }
}

/// One sample of the run's counters (the charts' data).
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// Rows released to the dataflow by the declared sources, per second since the last sample.
    pub rows_per_second: f64,
    /// Rows committed by all sinks, per second.
    pub committed_per_second: f64,
    /// Dead letters (decode, check, late, sink-refused) per second.
    pub dead_letters_per_second: f64,
    /// Per model `name version`: rows scored and flagged since the last sample.
    pub models: Vec<ModelSample>,
    /// Handing a row to a sink → its commit durable, over the rows committed since the last
    /// sample (all sinks), in seconds; none without commits.
    pub commit_latency_p50: Option<f64>,
    pub commit_latency_p99: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSample {
    pub model: String,
    pub scored: u64,
    pub flagged: u64,
}

/// One checkpoint the run wrote (as seen by the sampler).
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointEntry {
    pub epoch: u64,
    /// Milliseconds since the Unix epoch, when the sampler saw it.
    pub t: i64,
    pub bytes: u64,
    pub duration_ms: f64,
    pub pause_ms: f64,
}

/// A row of a tapped relation, as JSON, with its sequence number.
pub type Row = Arc<Map<String, Value>>;

/// The console's rings.
pub struct Live {
    /// The anomalies sink's table, if the run has one.
    pub anomalies_table: Option<String>,
    pub anomalies: Mutex<Ring<Row>>,
    /// Each new anomaly as `(sequence, row)`.
    pub feed: broadcast::Sender<(u64, Row)>,
    pub dead_letters: Mutex<Ring<Row>>,
    /// Dead letters by reason (the reason's text up to its first `:`), over the whole run.
    pub dead_reasons: Mutex<BTreeMap<String, u64>>,
    pub samples: Mutex<Ring<Sample>>,
    pub checkpoints: Mutex<Ring<CheckpointEntry>>,
    /// Batches the taps lost because the console was behind.
    pub dropped_batches: AtomicU64,
    /// Two models' verdicts compared on the shadow table's rows (champion / challenger).
    pub comparison: Option<Arc<crate::compare::Comparison>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("anomalies_table", &self.anomalies_table)
            .finish()
    }
}

/// The group a dead letter's reason counts under: its text up to the first `:` (a reason
/// names its kind first: `late by 120 ms: …`, `column amount: …`, `not valid JSON: …`), with
/// every number as `N`, at most 80 characters.
pub fn reason_group(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    let mut out = String::new();
    let mut in_number = false;
    for c in head.chars().take(80) {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// A batch's rows as JSON objects (Arrow's JSON writer: timestamps as RFC 3339 text, NULLs
/// left out).
pub fn batch_rows(batch: &RecordBatch) -> Vec<Map<String, Value>> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        if w.write(batch).and_then(|()| w.finish()).is_err() {
            return Vec::new();
        }
    }
    match serde_json::from_slice::<Vec<Map<String, Value>>>(&buf) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::debug!("console: a batch did not convert to JSON: {e}");
            Vec::new()
        }
    }
}

impl Live {
    /// Starts the taps and the sampler: the anomalies sink is `anomalies_table` (if given and
    /// in `graph`), dead letters come from the dead-letter stream.
    pub fn start(
        graph: &Graph,
        watch: Option<&Arc<Watch>>,
        anomalies_table: Option<String>,
        shadow_table: Option<String>,
        metrics: Arc<Metrics>,
        stats: Vec<Arc<ModelSlot>>,
    ) -> Arc<Live> {
        let (feed, _) = broadcast::channel(1024);
        let anomalies_table = anomalies_table.filter(|t| graph.relation(t).is_some());
        let shadow_table = shadow_table.filter(|t| graph.relation(t).is_some());
        let comparison = shadow_table
            .as_deref()
            .map(|t| Arc::new(crate::compare::Comparison::new(t, "is_fraud")));
        let live = Arc::new(Live {
            anomalies_table: anomalies_table.clone(),
            anomalies: Mutex::new(Ring::new(ANOMALIES_KEPT)),
            feed,
            dead_letters: Mutex::new(Ring::new(DEAD_LETTERS_KEPT)),
            dead_reasons: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(Ring::new(SAMPLES_KEPT)),
            checkpoints: Mutex::new(Ring::new(CHECKPOINTS_KEPT)),
            dropped_batches: AtomicU64::new(0),
            comparison: comparison.clone(),
        });
        if let Some(watch) = watch {
            let node = |name: &str| graph.relation(name).map(|n| n.id);
            if let Some(tap) = anomalies_table
                .as_deref()
                .and_then(node)
                .and_then(|n| watch.subscribe(n, TAP_BATCHES))
            {
                tokio::spawn(follow(live.clone(), tap, |l, b| {
                    take_anomalies(l, batch_rows(b))
                }));
            }
            if let Some(tap) = node(DEAD_LETTERS).and_then(|n| watch.subscribe(n, TAP_BATCHES)) {
                tokio::spawn(follow(live.clone(), tap, |l, b| {
                    take_dead_letters(l, batch_rows(b))
                }));
            }
            if let (Some(cmp), Some(tap)) = (
                comparison,
                shadow_table
                    .as_deref()
                    .and_then(node)
                    .and_then(|n| watch.subscribe(n, TAP_BATCHES)),
            ) {
                // Counted from the Arrow columns: no JSON for every row of the table.
                tokio::spawn(follow(live.clone(), tap, move |_, b| cmp.add(b)));
            }
        }
        tokio::spawn(sample(live.clone(), metrics, stats));
        live
    }

    fn note_dropped(&self, tap: &Tap, seen: &mut u64) {
        let d = tap.dropped();
        if d > *seen {
            self.dropped_batches.fetch_add(d - *seen, Ordering::Relaxed);
            *seen = d;
        }
    }
}

/// Follows a tap: each batch to `take`, counting the batches the tap dropped.
async fn follow(live: Arc<Live>, mut tap: Tap, take: impl Fn(&Live, &RecordBatch)) {
    let mut dropped = 0;
    while let Some(batch) = tap.recv().await {
        live.note_dropped(&tap, &mut dropped);
        take(&live, &batch);
    }
}

/// New anomalies: into the ring and onto the feed.
fn take_anomalies(live: &Live, rows: Vec<Map<String, Value>>) {
    let mut ring = live.anomalies.lock().unwrap_or_else(|e| e.into_inner());
    for row in rows {
        let row = Arc::new(row);
        let seq = ring.push(row.clone());
        // No receiver is not an error: nobody watches the stream.
        let _ = live.feed.send((seq, row));
    }
}

/// New dead letters: counted by reason, into the ring.
fn take_dead_letters(live: &Live, rows: Vec<Map<String, Value>>) {
    let mut reasons = live.dead_reasons.lock().unwrap_or_else(|e| e.into_inner());
    for row in &rows {
        let reason = row.get("reason").and_then(Value::as_str).unwrap_or("");
        *reasons.entry(reason_group(reason)).or_default() += 1;
    }
    drop(reasons);
    let mut ring = live.dead_letters.lock().unwrap_or_else(|e| e.into_inner());
    for row in rows {
        ring.push(Arc::new(row));
    }
}

/// Dead letters of the run so far: undecodable, failing a CHECK, late, refused by a sink.
pub fn dead_letters_total(m: &Metrics) -> u64 {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    m.sources
        .iter()
        .map(|s| load(&s.dead) + load(&s.late))
        .sum::<u64>()
        + load(&m.rejected_by_sinks)
}

/// The `q`-quantile of the observations between two cumulative `le` bucket readings, by
/// linear interpolation inside the bucket (as PromQL's `histogram_quantile`).
pub fn quantile_between(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = after
        .iter()
        .enumerate()
        .map(|(i, (le, n))| (*le, n - before.get(i).map_or(0, |b| b.1.min(*n))))
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, n) in &delta {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = (n - lower.1) as f64;
            let frac = if inside > 0.0 {
                (rank - lower.1 as f64) / inside
            } else {
                0.0
            };
            return Some(lower.0 + (le - lower.0) * frac);
        }
        lower = (le, n);
    }
    Some(lower.0)
}

/// Sums the cumulative buckets of several histograms with the same bounds.
fn sum_buckets(all: impl Iterator<Item = Vec<(f64, u64)>>) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for b in all {
        if out.is_empty() {
            out = b;
        } else {
            for (o, (_, n)) in out.iter_mut().zip(b) {
                o.1 += n;
            }
        }
    }
    out
}

async fn sample(live: Arc<Live>, metrics: Arc<Metrics>, stats: Vec<Arc<ModelSlot>>) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let released = |m: &Metrics| -> u64 {
        m.sources
            .iter()
            .filter(|s| s.name != DEAD_LETTERS)
            .map(|s| load(&s.released))
            .sum()
    };
    let committed = |m: &Metrics| -> u64 { m.sinks.iter().map(|s| load(&s.committed_rows)).sum() };
    let dead = dead_letters_total;
    let latency =
        |m: &Metrics| sum_buckets(m.sinks.iter().map(|s| s.commit_latency.cumulative().0));
    // Per model, over every version it has had (a swap does not reset the counts).
    let models = |st: &[Arc<ModelSlot>]| -> Vec<(u64, u64)> {
        st.iter()
            .map(|slot| {
                slot.all_stats().iter().fold((0, 0), |(sc, fl), s| {
                    (
                        sc + s.cumulative().last().map_or(0, |(_, n)| *n),
                        fl + s.flagged(),
                    )
                })
            })
            .collect()
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut at = std::time::Instant::now();
    let read = || {
        (
            released(&metrics),
            committed(&metrics),
            dead(&metrics),
            latency(&metrics),
            models(&stats),
            load(&metrics.checkpoints),
        )
    };
    let mut prev = read();
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        let dt = now.duration_since(at).as_secs_f64().max(1e-3);
        at = now;
        let next = read();
        let t = chrono_ms();
        let sample = Sample {
            t,
            rows_per_second: next.0.saturating_sub(prev.0) as f64 / dt,
            committed_per_second: next.1.saturating_sub(prev.1) as f64 / dt,
            dead_letters_per_second: next.2.saturating_sub(prev.2) as f64 / dt,
            models: stats
                .iter()
                .zip(next.4.iter().zip(&prev.4))
                .map(|(s, ((sc, fl), (psc, pfl)))| ModelSample {
                    model: format!("{} {}", s.name(), s.forest().version()),
                    scored: sc.saturating_sub(*psc),
                    flagged: fl.saturating_sub(*pfl),
                })
                .collect(),
            commit_latency_p50: quantile_between(&prev.3, &next.3, 0.5),
            commit_latency_p99: quantile_between(&prev.3, &next.3, 0.99),
        };
        live.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(sample);
        if next.5 > prev.5 {
            live.checkpoints
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(CheckpointEntry {
                    epoch: load(&metrics.epoch),
                    t,
                    bytes: load(&metrics.checkpoint_bytes),
                    duration_ms: load(&metrics.checkpoint_micros) as f64 / 1000.0,
                    pause_ms: load(&metrics.checkpoint_pause_micros) as f64 / 1000.0,
                });
        }
        prev = next;
        if metrics.finished.load(Ordering::Relaxed) {
            // One last sample after the end, then the charts stand still.
            break;
        }
    }
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let before = [(1.0, 0), (2.0, 0), (f64::INFINITY, 0)];
        let after = [(1.0, 50), (2.0, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile_between(&before, &after, 0.5), Some(1.0));
        assert_eq!(quantile_between(&before, &after, 0.75), Some(1.5));
        assert_eq!(quantile_between(&after, &after, 0.5), None);
        let over = [(1.0, 0), (2.0, 0), (f64::INFINITY, 10)];
        assert_eq!(quantile_between(&before, &over, 0.99), Some(2.0));
    }

    #[test]
    fn rings_keep_the_newest() {
        let mut r = Ring::new(2);
        for i in 0..5 {
            r.push(i);
        }
        let kept: Vec<_> = r.newest().map(|(s, v)| (*s, *v)).collect();
        assert_eq!(kept, vec![(5, 4), (4, 3)]);
        assert_eq!(r.seen(), 5);
    }

    #[test]
    fn reasons_group_by_their_kind() {
        assert_eq!(
            reason_group("late by 1200 ms: event time 3 is behind the watermark"),
            "late by N ms"
        );
        assert_eq!(reason_group("column amount: not a number"), "column amount");
        assert_eq!(reason_group("no colon here"), "no colon here");
    }
}
