//! What the training data looked like, kept in the model card ([`TrainingProfile`]: per
//! feature, the training deciles and the share of rows between them), and how far live data
//! has moved from it: the population stability index (PSI) of a window of live values
//! against those bins ([`psi`]), and the windowed live counts themselves ([`LiveBins`]).
//!
//! PSI = Σ (live − train) · ln(live / train) over the bins, shares floored at 1e-4 so an
//! empty bin stays finite. The usual reading: below 0.1 no shift, 0.1–0.25 a moderate one,
//! above 0.25 a significant one ([`PSI_ALERT`]).

use serde::{Deserialize, Serialize};

/// Bins per feature in a [`TrainingProfile`] (deciles).
pub const PROFILE_BINS: usize = 10;

/// The PSI above which a feature's live distribution has shifted significantly.
pub const PSI_ALERT: f64 = 0.25;

/// Floor of a bin's share in [`psi`].
const SHARE_FLOOR: f64 = 1e-4;

/// The training distribution of a model's features, for drift checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingProfile {
    /// Per feature, in the model's feature order.
    pub features: Vec<FeatureBins>,
    /// Share of training rows above the model's threshold (its flagged rate), when the
    /// trainer scored them.
    #[serde(default)]
    pub flagged_rate: Option<f64>,
}

/// One feature's training bins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureBins {
    /// Ascending inner edges (training quantiles, without repeats): bin `i` holds the values
    /// in `(edges[i − 1], edges[i]]`, the first everything up to `edges[0]`, the last
    /// everything above the last edge.
    pub edges: Vec<f64>,
    /// Share of the training values in each bin (`edges.len() + 1` of them, summing to 1).
    pub fractions: Vec<f64>,
}

impl FeatureBins {
    /// Deciles of `values` (finite ones; ties keep their bin whole, so a feature with few
    /// distinct values has fewer bins).
    pub fn from_values(values: impl Iterator<Item = f64>) -> Self {
        let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return FeatureBins {
                edges: Vec::new(),
                fractions: vec![1.0],
            };
        }
        v.sort_unstable_by(f64::total_cmp);
        let n = v.len();
        let mut edges: Vec<f64> = (1..PROFILE_BINS)
            .map(|k| v[(k * n / PROFILE_BINS).min(n - 1)])
            .collect();
        edges.dedup();
        // The top edge at the maximum leaves the last bin empty: drop it.
        if edges.last() == v.last() {
            edges.pop();
        }
        let mut counts = vec![0u64; edges.len() + 1];
        for &x in &v {
            counts[bin(&edges, x)] += 1;
        }
        FeatureBins {
            fractions: counts.iter().map(|&c| c as f64 / n as f64).collect(),
            edges,
        }
    }

    /// The bin `x` falls in.
    pub fn bin(&self, x: f64) -> usize {
        bin(&self.edges, x)
    }
}

fn bin(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|e| *e < x)
}

impl TrainingProfile {
    /// Checks the profile fits a model with `features`: one entry per feature, ascending
    /// finite edges, one share per bin, shares in [0, 1].
    pub fn validate(&self, features: &[String]) -> crate::Result<()> {
        let bad =
            |what: String| crate::ForestError::invalid(format!("card.training_profile: {what}"));
        if self.features.len() != features.len() {
            return Err(bad(format!(
                "{} features profiled, the model has {}",
                self.features.len(),
                features.len()
            )));
        }
        for (f, name) in self.features.iter().zip(features) {
            if !f.edges.iter().all(|e| e.is_finite()) || !f.edges.windows(2).all(|w| w[0] < w[1]) {
                return Err(bad(format!("{name}: edges must be finite and ascending")));
            }
            if f.fractions.len() != f.edges.len() + 1 {
                return Err(bad(format!(
                    "{name}: {} shares for {} bins",
                    f.fractions.len(),
                    f.edges.len() + 1
                )));
            }
            if !f.fractions.iter().all(|s| (0.0..=1.0).contains(s)) {
                return Err(bad(format!("{name}: a share is outside [0, 1]")));
            }
        }
        if let Some(r) = self.flagged_rate
            && !(0.0..=1.0).contains(&r)
        {
            return Err(bad(format!("flagged_rate {r} is outside [0, 1]")));
        }
        Ok(())
    }

    /// The profile of training columns (one iterator of values per feature).
    pub fn from_columns<I: Iterator<Item = f64>>(columns: impl IntoIterator<Item = I>) -> Self {
        TrainingProfile {
            features: columns.into_iter().map(FeatureBins::from_values).collect(),
            flagged_rate: None,
        }
    }
}

/// PSI of live bin `counts` against training `fractions` (same length); `None` when no live
/// value was counted or the lengths differ.
pub fn psi(fractions: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || fractions.len() != counts.len() {
        return None;
    }
    Some(
        fractions
            .iter()
            .zip(counts)
            .map(|(&train, &c)| {
                let train = train.max(SHARE_FLOOR);
                let live = (c as f64 / total as f64).max(SHARE_FLOOR);
                (live - train) * (live / train).ln()
            })
            .sum(),
    )
}

/// Live counts per feature bin and of scored and flagged rows over a sliding window of
/// `slots` time slices: [`LiveBins::add`] counts into the current slice, [`LiveBins::rotate`]
/// starts a new one (dropping the oldest), [`LiveBins::window`] sums the slices.
#[derive(Debug, Clone)]
pub struct LiveBins {
    /// Per slice: per feature, per bin.
    slices: Vec<Vec<Vec<u64>>>,
    /// Per slice: rows counted and rows flagged.
    rows: Vec<(u64, u64)>,
    current: usize,
}

/// A window's sums (see [`LiveBins::window`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveWindow {
    pub counts: Vec<Vec<u64>>,
    pub rows: u64,
    pub flagged: u64,
}

impl LiveBins {
    pub fn new(profile: &TrainingProfile, slots: usize) -> Self {
        let empty: Vec<Vec<u64>> = profile
            .features
            .iter()
            .map(|f| vec![0; f.fractions.len()])
            .collect();
        LiveBins {
            slices: vec![empty; slots.max(1)],
            rows: vec![(0, 0); slots.max(1)],
            current: 0,
        }
    }

    /// Adds per-feature bin counts (same shape as the profile) of `rows` rows, `flagged` of
    /// them flagged, to the current slice.
    pub fn add(&mut self, counts: &[Vec<u64>], rows: u64, flagged: u64) {
        for (slot, add) in self.slices[self.current].iter_mut().zip(counts) {
            for (c, a) in slot.iter_mut().zip(add) {
                *c += a;
            }
        }
        let r = &mut self.rows[self.current];
        r.0 += rows;
        r.1 += flagged;
    }

    /// Starts a new slice, forgetting the oldest.
    pub fn rotate(&mut self) {
        self.current = (self.current + 1) % self.slices.len();
        for f in &mut self.slices[self.current] {
            f.fill(0);
        }
        self.rows[self.current] = (0, 0);
    }

    /// Rows counted and flagged in the newest `k` slices (the current one included).
    pub fn rows_in_last(&self, k: usize) -> (u64, u64) {
        let n = self.rows.len();
        (0..k.min(n))
            .map(|back| self.rows[(self.current + n - back) % n])
            .fold((0, 0), |(r, f), (a, b)| (r + a, f + b))
    }

    /// Slices in the window.
    pub fn slices(&self) -> usize {
        self.slices.len()
    }

    /// The sums over every slice.
    pub fn window(&self) -> LiveWindow {
        let mut counts: Vec<Vec<u64>> = self.slices[0].iter().map(|f| vec![0; f.len()]).collect();
        for s in &self.slices {
            for (sum, f) in counts.iter_mut().zip(s) {
                for (a, b) in sum.iter_mut().zip(f) {
                    *a += b;
                }
            }
        }
        let (rows, flagged) = self
            .rows
            .iter()
            .fold((0, 0), |(r, f), &(a, b)| (r + a, f + b));
        LiveWindow {
            counts,
            rows,
            flagged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_of_a_uniform_feature_hold_a_tenth_each() {
        let f = FeatureBins::from_values((0..1000).map(f64::from));
        assert_eq!(f.edges.len(), 9);
        assert_eq!(f.edges[0], 100.0);
        // (…, 100] holds 0..=100: 101 values; the others 100 (the last 99).
        assert!((f.fractions[0] - 0.101).abs() < 1e-12, "{:?}", f.fractions);
        assert!((f.fractions.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(f.bin(-5.0), 0);
        assert_eq!(f.bin(100.0), 0);
        assert_eq!(f.bin(100.5), 1);
        assert_eq!(f.bin(1e9), 9);
    }

    #[test]
    fn a_feature_with_few_values_keeps_its_ties_whole() {
        // 0/1 flag, 70% zeros: one edge at 0, bins (…, 0] and (0, …).
        let f = FeatureBins::from_values((0..100).map(|i| if i < 70 { 0.0 } else { 1.0 }));
        assert_eq!(f.edges, vec![0.0]);
        assert_eq!(f.fractions, vec![0.7, 0.3]);
        let constant = FeatureBins::from_values(std::iter::repeat_n(3.0, 50));
        assert!(constant.edges.is_empty());
        assert_eq!(constant.fractions, vec![1.0]);
        let none = FeatureBins::from_values([f64::NAN].into_iter());
        assert_eq!(none.fractions, vec![1.0]);
    }

    #[test]
    fn psi_is_zero_for_the_training_shares_and_grows_with_the_shift() {
        let f = FeatureBins::from_values((0..1000).map(f64::from));
        let count = |values: &mut dyn Iterator<Item = f64>| {
            let mut c = vec![0u64; f.fractions.len()];
            for v in values {
                c[f.bin(v)] += 1;
            }
            c
        };
        let same = count(&mut (0..1000).map(f64::from));
        assert!(psi(&f.fractions, &same).expect("counts") < 1e-12);
        let shifted = count(&mut (300..1300).map(f64::from));
        let far = count(&mut (900..1900).map(f64::from));
        let (a, b) = (
            psi(&f.fractions, &shifted).expect("counts"),
            psi(&f.fractions, &far).expect("counts"),
        );
        assert!(a > PSI_ALERT && b > a, "{a} then {b}");
        assert_eq!(psi(&f.fractions, &vec![0; f.fractions.len()]), None);
    }

    #[test]
    fn the_window_forgets_its_oldest_slice() {
        let profile = TrainingProfile {
            features: vec![FeatureBins {
                edges: vec![0.0],
                fractions: vec![0.5, 0.5],
            }],
            flagged_rate: Some(0.01),
        };
        let mut live = LiveBins::new(&profile, 2);
        live.add(&[vec![3, 1]], 4, 1);
        live.rotate();
        live.add(&[vec![0, 2]], 2, 0);
        assert_eq!(
            live.window(),
            LiveWindow {
                counts: vec![vec![3, 3]],
                rows: 6,
                flagged: 1
            }
        );
        assert_eq!(live.rows_in_last(1), (2, 0));
        assert_eq!(live.rows_in_last(2), (6, 1));
        assert_eq!(live.rows_in_last(5), (6, 1));
        live.rotate(); // drops the first slice
        assert_eq!(live.window().counts, vec![vec![0, 2]]);
        assert_eq!(live.window().rows, 2);
        assert_eq!(live.rows_in_last(1), (0, 0));
    }
}
