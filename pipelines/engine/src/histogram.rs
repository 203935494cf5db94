//! A fixed-bucket histogram of seconds that threads observe into without locks, read as
//! Prometheus' cumulative `le` buckets (the runtime's latencies; `/metrics` renders it).

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the latency buckets: 5 ms to 2 min, roughly ×2 apart (the
/// checkpoint interval, 1 s by default, sits in the middle).
pub const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Upper bounds (seconds) of the pipeline-step buckets: 50 µs to 5 s (one batch through the
/// dataflow takes ~1–50 ms; a stall shows in the top buckets).
pub const STEP_BOUNDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Counts per bucket (not cumulative; the last one is `+Inf`), the count and the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// Sum of the observations, in microseconds (integer adds need no CAS loop).
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(LATENCY_BOUNDS)
    }
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records `n` observations of `seconds` (e.g. a batch of `n` rows that waited as long).
    pub fn observe_n(&self, seconds: f64, n: u64) {
        if n == 0 || !seconds.is_finite() {
            return;
        }
        let seconds = seconds.max(0.0);
        let i = self.bounds.partition_point(|b| *b < seconds);
        self.counts[i].fetch_add(n, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64 * n, Ordering::Relaxed);
    }

    /// Records one observation: the time since `start`.
    pub fn observe_since(&self, start: std::time::Instant) {
        self.observe_n(start.elapsed().as_secs_f64(), 1);
    }

    /// `(upper bound, cumulative count)` per bucket, ending with `(+Inf, count)`; and the sum
    /// in seconds.
    pub fn cumulative(&self) -> (Vec<(f64, u64)>, f64) {
        let mut total = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            out.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), total));
        }
        (out, self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe_n(0.1, 2); // on the bound: le=0.1
        h.observe_n(0.5, 3);
        h.observe_n(7.0, 1);
        h.observe_n(f64::NAN, 9); // ignored
        let (b, sum) = h.cumulative();
        assert_eq!(b, vec![(0.1, 2), (1.0, 5), (f64::INFINITY, 6)]);
        assert!((sum - (0.2 + 1.5 + 7.0)).abs() < 1e-6, "{sum}");
    }
}
