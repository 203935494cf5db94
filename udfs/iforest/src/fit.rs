//! Training: scikit-learn's `IsolationForest` algorithm (bagged random-split trees with
//! `max_samples`, `max_features`, `bootstrap`, `contamination`), deterministic for a seed and
//! independent of the thread count.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use ndarray::ArrayView2;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::drift::TrainingProfile;

use crate::error::{ForestError, Result};
use crate::metrics::{average_precision, percentile_linear, roc_auc};
use crate::model::{FORMAT, FORMAT_VERSION, Forest, Metrics, ModelCard, ModelFile};
use crate::tree::{TREE_LEAF, Tree};

/// scikit-learn treats a feature as constant in a node when `max <= min + FEATURE_THRESHOLD`.
const FEATURE_THRESHOLD: f64 = 1e-7;

/// Rows drawn to grow each tree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxSamples {
    /// `min(256, n_rows)`.
    Auto,
    /// A row count (capped at the number of rows, as scikit-learn does).
    Count(u64),
    /// A share of the rows in (0, 1].
    Fraction(f64),
}

/// Expected share of anomalies, which sets the decision offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Contamination {
    /// offset = -0.5 (the original paper's threshold).
    Auto,
    /// A share in (0, 0.5]: the offset is that percentile of the training scores.
    Fraction(f64),
}

/// Features each tree may split on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxFeatures {
    Count(usize),
    Fraction(f64),
}

/// Training parameters, named as in scikit-learn.
#[derive(Debug, Clone, PartialEq)]
pub struct FitParams {
    pub n_estimators: usize,
    pub max_samples: MaxSamples,
    pub contamination: Contamination,
    pub max_features: MaxFeatures,
    pub bootstrap: bool,
    pub random_state: u64,
    /// Threads to fit on. The result does not depend on it.
    pub n_jobs: usize,
}

impl Default for FitParams {
    fn default() -> Self {
        FitParams {
            n_estimators: 100,
            max_samples: MaxSamples::Auto,
            contamination: Contamination::Auto,
            max_features: MaxFeatures::Fraction(1.0),
            bootstrap: false,
            random_state: 0,
            n_jobs: 1,
        }
    }
}

fn parse_fraction_or<T>(
    s: &str,
    param: &'static str,
    auto: Option<T>,
    int: impl Fn(u64) -> T,
    frac: impl Fn(f64) -> T,
) -> Result<T> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("auto") {
        return auto.ok_or_else(|| ForestError::Param {
            param,
            message: "\"auto\" is not accepted here".into(),
        });
    }
    if let Ok(i) = t.parse::<u64>() {
        return Ok(int(i));
    }
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(frac(f)),
        _ => Err(ForestError::Param {
            param,
            message: format!("{s:?} is neither \"auto\", a whole number nor a fraction"),
        }),
    }
}

impl FromStr for MaxSamples {
    type Err = ForestError;
    /// `auto`, a row count (`256`) or a fraction (`0.5`).
    fn from_str(s: &str) -> Result<Self> {
        parse_fraction_or(
            s,
            "max_samples",
            Some(MaxSamples::Auto),
            MaxSamples::Count,
            MaxSamples::Fraction,
        )
    }
}

impl FromStr for Contamination {
    type Err = ForestError;
    /// `auto` or a fraction (`0.01`).
    fn from_str(s: &str) -> Result<Self> {
        parse_fraction_or(
            s,
            "contamination",
            Some(Contamination::Auto),
            |i| Contamination::Fraction(i as f64),
            Contamination::Fraction,
        )
    }
}

impl FromStr for MaxFeatures {
    type Err = ForestError;
    /// A feature count (`3`) or a fraction (`0.5`); `1.0` means all.
    fn from_str(s: &str) -> Result<Self> {
        if s.trim().contains('.') {
            parse_fraction_or(
                s,
                "max_features",
                None,
                |i| MaxFeatures::Fraction(i as f64),
                MaxFeatures::Fraction,
            )
        } else {
            parse_fraction_or(
                s,
                "max_features",
                None,
                |i| MaxFeatures::Count(i as usize),
                MaxFeatures::Fraction,
            )
        }
    }
}

impl FitParams {
    /// The parameters as the model card records them, in scikit-learn's spelling.
    fn to_card(&self, max_samples_: usize) -> BTreeMap<String, serde_json::Value> {
        use serde_json::Value;
        let num = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
        let mut m = BTreeMap::new();
        m.insert("n_estimators".into(), self.n_estimators.into());
        m.insert(
            "max_samples".into(),
            match self.max_samples {
                MaxSamples::Auto => "auto".into(),
                MaxSamples::Count(c) => c.into(),
                MaxSamples::Fraction(f) => num(f),
            },
        );
        m.insert(
            "contamination".into(),
            match self.contamination {
                Contamination::Auto => "auto".into(),
                Contamination::Fraction(f) => num(f),
            },
        );
        m.insert(
            "max_features".into(),
            match self.max_features {
                MaxFeatures::Count(c) => c.into(),
                MaxFeatures::Fraction(f) => num(f),
            },
        );
        m.insert("bootstrap".into(), self.bootstrap.into());
        m.insert("random_state".into(), self.random_state.into());
        m.insert("max_samples_".into(), max_samples_.into());
        m
    }
}

impl fmt::Display for MaxSamples {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxSamples::Auto => write!(f, "auto"),
            MaxSamples::Count(c) => write!(f, "{c}"),
            MaxSamples::Fraction(x) => write!(f, "{x}"),
        }
    }
}

/// The data a forest is trained on.
#[derive(Debug, Clone, Copy)]
pub struct TrainingSet<'a> {
    /// Rows × features, any memory layout.
    pub x: ArrayView2<'a, f64>,
    /// Feature names, one per column.
    pub features: &'a [String],
    /// Optional anomaly labels (e.g. `is_fraud`) for the model card's metrics; never a feature.
    pub labels: Option<&'a [bool]>,
    /// Where the data came from, for the model card.
    pub source: Option<&'a str>,
}

struct Resolved {
    max_samples: usize,
    max_depth: u32,
    n_tree_features: usize,
}

fn resolve(params: &FitParams, n_rows: usize, n_features: usize) -> Result<Resolved> {
    let perr = |param, message: String| ForestError::Param { param, message };
    if params.n_estimators == 0 {
        return Err(perr("n_estimators", "must be at least 1".into()));
    }
    let max_samples = match params.max_samples {
        MaxSamples::Auto => n_rows.min(256),
        MaxSamples::Count(c) => (c as usize).min(n_rows),
        MaxSamples::Fraction(f) => {
            if !(f > 0.0 && f <= 1.0) {
                return Err(perr(
                    "max_samples",
                    format!("fraction {f} is not in (0, 1]"),
                ));
            }
            (f * n_rows as f64) as usize
        }
    };
    if max_samples == 0 {
        return Err(perr(
            "max_samples",
            format!(
                "{} of {n_rows} rows leaves no row to grow a tree",
                params.max_samples
            ),
        ));
    }
    let n_tree_features = match params.max_features {
        MaxFeatures::Count(c) => {
            if c == 0 || c > n_features {
                return Err(perr(
                    "max_features",
                    format!("{c} is not in 1..={n_features}"),
                ));
            }
            c
        }
        MaxFeatures::Fraction(f) => {
            if !(f > 0.0 && f <= 1.0) {
                return Err(perr(
                    "max_features",
                    format!("fraction {f} is not in (0, 1]"),
                ));
            }
            ((f * n_features as f64) as usize).max(1)
        }
    };
    if let Contamination::Fraction(c) = params.contamination
        && !(c > 0.0 && c <= 0.5)
    {
        return Err(perr(
            "contamination",
            format!("{c} is not \"auto\" nor in (0, 0.5]"),
        ));
    }
    let max_depth = (max_samples.max(2) as f64).log2().ceil() as u32;
    Ok(Resolved {
        max_samples,
        max_depth,
        n_tree_features,
    })
}

/// Fits an isolation forest. Rows with a value that is not finite as f32 are rejected with
/// an error naming the row and feature (scikit-learn rejects them too).
pub fn fit(data: TrainingSet<'_>, params: &FitParams) -> Result<Forest> {
    let started = Instant::now();
    let (n_rows, nf) = data.x.dim();
    if nf != data.features.len() {
        return Err(ForestError::Data(format!(
            "{nf} columns but {} feature names",
            data.features.len()
        )));
    }
    if n_rows == 0 || nf == 0 {
        return Err(ForestError::Data(format!(
            "cannot fit on {n_rows} rows × {nf} features"
        )));
    }
    if let Some(l) = data.labels
        && l.len() != n_rows
    {
        return Err(ForestError::Data(format!(
            "{} labels for {n_rows} rows",
            l.len()
        )));
    }
    let r = resolve(params, n_rows, nf)?;

    // Column-major f32 copy, as scikit-learn casts X to float32 before growing trees.
    let mut cols: Vec<Vec<f32>> = vec![Vec::with_capacity(n_rows); nf];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(n_rows as u64).to_le_bytes());
    hasher.update(&(nf as u64).to_le_bytes());
    for (i, row) in data.x.outer_iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let x = v as f32;
            if !x.is_finite() {
                return Err(ForestError::Data(format!(
                    "row {i}, feature {:?}: value {v} is not a finite 32-bit float",
                    data.features[j]
                )));
            }
            hasher.update(&x.to_le_bytes());
            cols[j].push(x);
        }
    }

    let build = |i: usize| grow_tree(&cols, n_rows, &r, params, i);
    let trees: Vec<Tree> = if params.n_jobs == 1 {
        (0..params.n_estimators).map(build).collect()
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(params.n_jobs)
            .build()
            .map_err(|e| ForestError::Param {
                param: "n_jobs",
                message: e.to_string(),
            })?;
        pool.install(|| {
            (0..params.n_estimators)
                .into_par_iter()
                .map(build)
                .collect()
        })
    };

    let params_map = params.to_card(r.max_samples);
    let file = ModelFile {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        features: data.features.to_vec(),
        max_samples: r.max_samples as u64,
        offset: -0.5,
        trees,
        card: ModelCard {
            name: None,
            created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            trainer: format!("txguard-iforest {}", env!("CARGO_PKG_VERSION")),
            training_rows: Some(n_rows as u64),
            training_seconds: None,
            data_fingerprint: Some(format!("blake3:{}", hasher.finalize().to_hex())),
            data_source: data.source.map(str::to_string),
            params: params_map,
            metrics: None,
            notes: None,
            training_profile: Some(TrainingProfile::from_columns(
                cols.iter().map(|c| c.iter().map(|&v| f64::from(v))),
            )),
            evaluation: None,
        },
    };
    let mut forest = Forest::from_model_file(file)?;
    if matches!(params.contamination, Contamination::Fraction(_)) || data.labels.is_some() {
        let columns: Vec<_> = cols
            .iter()
            .map(|c| crate::model::FeatureColumn::F32(c))
            .collect();
        let mut scores = vec![0.0; n_rows];
        forest.score_samples_columns(&columns, None, &mut scores)?;
        if let Contamination::Fraction(c) = params.contamination {
            forest.set_offset(percentile_linear(&scores, 100.0 * c));
        }
        let offset = forest.offset();
        let flagged = scores.iter().filter(|&&s| s - offset < 0.0).count();
        let flagged_rate = flagged as f64 / n_rows as f64;
        if let Some(p) = &mut forest.card_mut().training_profile {
            p.flagged_rate = Some(flagged_rate);
        }
        if let Some(labels) = data.labels {
            let anomaly: Vec<f64> = scores.iter().map(|s| -s).collect();
            forest.card_mut().metrics = Some(Metrics {
                labelled_rows: n_rows as u64,
                positives: labels.iter().filter(|&&l| l).count() as u64,
                roc_auc: roc_auc(&anomaly, labels),
                pr_auc: average_precision(&anomaly, labels),
                flagged_rate,
            });
        }
    }
    forest.card_mut().training_seconds = Some(started.elapsed().as_secs_f64());
    Ok(forest)
}

/// Grows tree `index`; its random stream depends only on the seed and the index.
fn grow_tree(cols: &[Vec<f32>], n_rows: usize, r: &Resolved, p: &FitParams, index: usize) -> Tree {
    let mut rng = ChaCha8Rng::seed_from_u64(p.random_state);
    rng.set_stream(index as u64 + 1);
    let nf = cols.len();

    // `draws[i]`: how many times the tree's i-th distinct row was drawn (bootstrap only).
    let (rows, draws): (Vec<usize>, Option<Vec<u32>>) = if p.bootstrap {
        // Draw with replacement; like scikit-learn (sample weights), a tree sees distinct rows
        // and keeps how often each was drawn as its weight.
        let mut v: Vec<usize> = (0..r.max_samples)
            .map(|_| rng.random_range(0..n_rows))
            .collect();
        v.sort_unstable();
        let mut rows: Vec<usize> = Vec::with_capacity(v.len());
        let mut draws: Vec<u32> = Vec::with_capacity(v.len());
        for i in v {
            if rows.last() == Some(&i) {
                if let Some(d) = draws.last_mut() {
                    *d += 1;
                }
            } else {
                rows.push(i);
                draws.push(1);
            }
        }
        (rows, Some(draws))
    } else {
        let mut v = rand::seq::index::sample(&mut rng, n_rows, r.max_samples).into_vec();
        v.sort_unstable();
        (v, None)
    };
    let features: Vec<usize> = if r.n_tree_features == nf {
        (0..nf).collect()
    } else {
        let mut f = rand::seq::index::sample(&mut rng, nf, r.n_tree_features).into_vec();
        f.sort_unstable();
        f
    };
    // Local column-major copy of the sampled rows.
    let local: Vec<Vec<f32>> = (0..nf)
        .map(|j| {
            if features.contains(&j) {
                rows.iter().map(|&i| cols[j][i]).collect()
            } else {
                Vec::new()
            }
        })
        .collect();

    let mut b = Builder {
        tree: Tree {
            children_left: Vec::new(),
            children_right: Vec::new(),
            feature: Vec::new(),
            threshold: Vec::new(),
            n_node_samples: Vec::new(),
            weighted_n_node_samples: None,
        },
        local,
        samples: (0..rows.len()).collect(),
        weighted: draws.as_ref().map(|_| Vec::new()),
        draws,
        rng,
        max_depth: r.max_depth,
    };
    b.grow(0, rows.len(), 0, features);
    let mut tree = b.tree;
    // Kept only where they differ from the distinct counts, as models/export_sklearn.py does.
    tree.weighted_n_node_samples = b.weighted.filter(|w| {
        w.iter()
            .zip(&tree.n_node_samples)
            .any(|(&w, &n)| w != n as f64)
    });
    tree
}

struct Builder {
    tree: Tree,
    local: Vec<Vec<f32>>,
    samples: Vec<usize>,
    /// Bootstrap draws per local sample, and the per-node sums of them being built.
    draws: Option<Vec<u32>>,
    weighted: Option<Vec<f64>>,
    rng: ChaCha8Rng,
    max_depth: u32,
}

impl Builder {
    fn push_node(&mut self, start: usize, end: usize) -> usize {
        let n = end - start;
        if let (Some(draws), Some(w)) = (&self.draws, &mut self.weighted) {
            w.push(
                self.samples[start..end]
                    .iter()
                    .map(|&s| f64::from(draws[s]))
                    .sum(),
            );
        }
        let t = &mut self.tree;
        t.children_left.push(TREE_LEAF);
        t.children_right.push(TREE_LEAF);
        t.feature.push(-2);
        t.threshold.push(-2.0);
        t.n_node_samples.push(n as u64);
        t.children_left.len() - 1
    }

    /// Grows the subtree over `samples[start..end]` in pre-order (left first), the node order
    /// scikit-learn's depth-first builder produces. `candidates` are the features not yet
    /// known to be constant here.
    fn grow(&mut self, start: usize, end: usize, depth: u32, mut candidates: Vec<usize>) -> usize {
        let n = end - start;
        let node = self.push_node(start, end);
        if n < 2 || depth >= self.max_depth {
            return node;
        }
        // Draw features until one is not constant over the node's samples.
        while !candidates.is_empty() {
            let k = self.rng.random_range(0..candidates.len());
            let f = candidates[k];
            let col = &self.local[f];
            let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
            for &s in &self.samples[start..end] {
                lo = lo.min(col[s]);
                hi = hi.max(col[s]);
            }
            let (lo, hi) = (lo as f64, hi as f64);
            if hi <= lo + FEATURE_THRESHOLD {
                candidates.swap_remove(k);
                continue;
            }
            let mut threshold = lo + (hi - lo) * self.rng.random::<f64>();
            if threshold >= hi {
                threshold = lo;
            }
            // Partition samples[start..end]: x <= threshold first.
            let mut mid = start;
            for i in start..end {
                let s = self.samples[i];
                if (col[s] as f64) <= threshold {
                    self.samples.swap(i, mid);
                    mid += 1;
                }
            }
            self.tree.feature[node] = f as i64;
            self.tree.threshold[node] = threshold;
            let left = self.grow(start, mid, depth + 1, candidates.clone());
            let right = self.grow(mid, end, depth + 1, candidates);
            self.tree.children_left[node] = left as i64;
            self.tree.children_right[node] = right as i64;
            return node;
        }
        node
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn data(n: usize) -> (Array2<f64>, Vec<String>) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = Array2::from_shape_fn((n, 3), |(_, j)| rng.random::<f64>() * (j + 1) as f64);
        (x, vec!["a".into(), "b".into(), "c".into()])
    }

    #[test]
    fn deterministic_for_a_seed_and_thread_count_independent() {
        let (x, f) = data(2000);
        let ts = TrainingSet {
            x: x.view(),
            features: &f,
            labels: None,
            source: None,
        };
        let p = FitParams {
            n_estimators: 20,
            random_state: 42,
            ..Default::default()
        };
        let a = fit(ts, &p).unwrap();
        let b = fit(
            ts,
            &FitParams {
                n_jobs: 2,
                ..p.clone()
            },
        )
        .unwrap();
        assert_eq!(a.model_file().trees, b.model_file().trees);
        assert_eq!(a.version(), b.version());
        let c = fit(
            ts,
            &FitParams {
                random_state: 43,
                ..p
            },
        )
        .unwrap();
        assert_ne!(a.model_file().trees, c.model_file().trees);
    }

    #[test]
    fn trees_respect_depth_limit_and_sample_counts() {
        let (x, f) = data(1000);
        let ts = TrainingSet {
            x: x.view(),
            features: &f,
            labels: None,
            source: None,
        };
        let m = fit(
            ts,
            &FitParams {
                n_estimators: 10,
                max_samples: MaxSamples::Count(100),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.max_samples(), 100);
        for t in &m.model_file().trees {
            assert_eq!(t.n_node_samples[0], 100);
            assert!(t.max_depth() <= 7, "ceil(log2(100)) = 7");
        }
    }

    #[test]
    fn contamination_sets_offset_to_training_percentile() {
        let (x, f) = data(500);
        let ts = TrainingSet {
            x: x.view(),
            features: &f,
            labels: None,
            source: None,
        };
        let m = fit(
            ts,
            &FitParams {
                n_estimators: 10,
                contamination: Contamination::Fraction(0.1),
                ..Default::default()
            },
        )
        .unwrap();
        let flagged = x
            .outer_iter()
            .filter(|r| m.score_row(r.as_slice().unwrap()).unwrap().is_anomaly())
            .count();
        assert!((45..=55).contains(&flagged), "{flagged} of 500 flagged");
    }

    #[test]
    fn bad_parameters_and_data_are_named() {
        let (x, f) = data(10);
        let ts = TrainingSet {
            x: x.view(),
            features: &f,
            labels: None,
            source: None,
        };
        let e = fit(
            ts,
            &FitParams {
                contamination: Contamination::Fraction(0.7),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("contamination"), "{e}");
        let e = fit(
            ts,
            &FitParams {
                max_features: MaxFeatures::Count(4),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_features: 4 is not in 1..=3"), "{e}");
        let mut bad = x.clone();
        bad[[3, 1]] = f64::NAN;
        let e = fit(
            TrainingSet {
                x: bad.view(),
                ..ts
            },
            &FitParams::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("row 3, feature \"b\""), "{e}");
        assert!("0.5".parse::<MaxSamples>().unwrap() == MaxSamples::Fraction(0.5));
        assert!("auto".parse::<MaxSamples>().unwrap() == MaxSamples::Auto);
        assert!("x".parse::<MaxSamples>().is_err());
    }
}
