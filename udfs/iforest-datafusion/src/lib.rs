//! The isolation forest as DataFusion scalar functions over Arrow arrays.
//!
//! For a model registered under `name`, six functions exist (`NAME_SUFFIX` is empty for the
//! model named `default`, else `_name`):
//!
//! * `iforest_score{SUFFIX}(f1, …, fn)` → `DOUBLE`, the anomaly score in (0, 1], higher = more
//!   anomalous (= −scikit-learn `score_samples`);
//! * `iforest_is_anomaly{SUFFIX}(f1, …, fn)` → `BOOLEAN`, scikit-learn's `predict == -1`;
//! * `iforest_decision{SUFFIX}(f1, …, fn)` → `DOUBLE`, scikit-learn's `decision_function`
//!   (negative = anomaly; `iforest_decision(…) < 0` is the spelling that also runs on Arroyo);
//! * `iforest_model_version{SUFFIX}()` → `VARCHAR`, the model's content hash;
//! * `iforest_threshold{SUFFIX}()` → `DOUBLE`, the score above which a row is an anomaly
//!   (−`offset_`): `iforest_score(…) > iforest_threshold()` is exactly `iforest_is_anomaly(…)`
//!   but scores each row once when both the score and the flag are wanted;
//! * `iforest_explain{SUFFIX}(f1, …, fn)` → `VARCHAR`, why the row scored as it did: a JSON
//!   object with the features' exact TreeSHAP contributions to the row's mean path length
//!   (see [`explanation_json`]; negative = pushed towards an anomaly), most anomalous first.
//!   It costs `O(trees · nodes · depth)` per row (~100× a score; 16 or more rows of a batch
//!   are explained on all cores), so pipelines call it for the flagged rows only: `CASE WHEN iforest_score(…) > iforest_threshold() THEN iforest_explain(…) END`
//!   (DataFusion evaluates a `THEN` on the matching rows alone).
//!
//! [`model_udfs`] makes the same functions over a [`ModelSlot`], whose model a running
//! pipeline can replace between two epochs (a hot swap: `iforest_model_version()` and
//! `iforest_threshold()` are volatile, read per batch, never folded into the plan), and which
//! records what `iforest_score` scores into the current version's [`ScoreStats`] (the score
//! distribution and the rows above the threshold), exported as metrics; what runs inside
//! [`unobserved`] (the online scoring API's rows) is scored but not recorded.
//!
//! Arguments are the model's features in order; any numeric type is accepted (Float32 is
//! scored without widening). The wrong number or a non-numeric argument fails at planning
//! time with the model's feature list. A NULL, NaN or infinite feature gives NULL.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, StringArray, StringBuilder,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use txguard_iforest::drift::{LiveBins, TrainingProfile, psi};
use txguard_iforest::{FeatureColumn, Forest};

mod slot;
pub use slot::{Active, ModelSlot, Refused, Staged};

/// Name of the model whose functions carry no suffix.
pub const DEFAULT_MODEL: &str = "default";

/// Errors registering models.
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    #[error(
        "model name {0:?} is not usable in SQL: use lowercase letters, digits and underscores, starting with a letter"
    )]
    BadName(String),
    #[error("registering {0}: {1}")]
    Register(String, datafusion::error::DataFusionError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Score,
    Decision,
    IsAnomaly,
    Version,
    Threshold,
    Explain,
}

/// One of the forest functions bound to one model's slot.
#[derive(Debug)]
pub struct ForestUdf {
    name: String,
    model: String,
    kind: Kind,
    slot: Arc<ModelSlot>,
    signature: Signature,
    /// Whether `iforest_score` records what it scores into the slot's statistics.
    observed: bool,
}

thread_local! {
    /// Set while [`unobserved`] runs on this thread.
    static UNOBSERVED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the observed functions not recording into their [`ScoreStats`] (on this
/// thread): rows scored on request, not by the pipeline, are not the pipeline's scores.
pub fn unobserved(f: &mut dyn FnMut()) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNOBSERVED.set(self.0);
        }
    }
    let _reset = Reset(UNOBSERVED.replace(true));
    f();
}

/// Buckets of [`ScoreStats`]: scores are in (0, 1], cut every 0.05.
pub const SCORE_BUCKETS: usize = 20;

/// What one model's `iforest_score` calls scored: the score distribution (20 buckets of
/// 0.05), their sum, and how many were above the model's threshold (anomalies). Counted per
/// batch, then added with one atomic add per bucket.
#[derive(Debug)]
pub struct ScoreStats {
    pub model: String,
    pub version: String,
    /// The score above which a row is an anomaly (−`offset_`).
    pub threshold: f64,
    buckets: [AtomicU64; SCORE_BUCKETS],
    /// Sum of the scores, in units of 1e-9.
    sum_nanos: AtomicU64,
    flagged: AtomicU64,
    /// Live feature bins against the card's training profile (models that have one).
    drift: Option<Drift>,
    /// Slices of the drift window the flagged rate is judged over (for `/metrics`).
    recent_slices: AtomicU64,
}

/// A model's live drift window.
#[derive(Debug)]
struct Drift {
    features: Vec<String>,
    profile: TrainingProfile,
    live: Mutex<LiveBins>,
}

/// Time slices a drift window starts with, until [`ScoreStats::set_drift_slices`].
pub const DRIFT_SLICES: usize = 10;

/// Where a model's live data stands against its training profile: the features over the
/// whole drift window, the flagged rate over its newest slices.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftReport {
    /// Per feature (model order): its name and PSI (`None` before any row).
    pub psi: Vec<(String, Option<f64>)>,
    /// Rows scored in the whole window (what the PSIs are of).
    pub rows: u64,
    /// Rows scored in the flagged-rate window, and of them flagged.
    pub recent_rows: u64,
    pub recent_flagged: u64,
    /// The card's training flagged rate, when the trainer recorded it.
    pub trained_flagged_rate: Option<f64>,
}

/// Rows a drift window needs before [`DriftReport::warning`] judges it.
pub const DRIFT_MIN_ROWS: u64 = 1000;

/// How many times the trained flagged rate the live one may reach before
/// [`DriftReport::warning`] warns.
pub const FLAGGED_RATE_ALERT: f64 = 3.0;

impl DriftReport {
    /// The flagged-rate window's flagged rate (`None` before any row).
    pub fn flagged_rate(&self) -> Option<f64> {
        (self.recent_rows > 0).then(|| self.recent_flagged as f64 / self.recent_rows as f64)
    }

    /// What an operator should hear about this report, or `None` when nothing crossed a
    /// threshold: the flagged rate above [`FLAGGED_RATE_ALERT`] × the trained one (over
    /// `recent`, e.g. "the last 10m"), features whose PSI is above
    /// [`txguard_iforest::drift::PSI_ALERT`] (over `whole`; largest first). A window of
    /// fewer than [`DRIFT_MIN_ROWS`] rows is not judged.
    pub fn warning(&self, recent: &str, whole: &str) -> Option<String> {
        let mut parts = Vec::new();
        if let (Some(live), Some(trained)) = (self.flagged_rate(), self.trained_flagged_rate)
            && self.recent_rows >= DRIFT_MIN_ROWS
            && live > FLAGGED_RATE_ALERT * trained
        {
            parts.push(format!(
                "flagged {:.1}% of {} rows over {recent}, trained at {:.1}%",
                100.0 * live,
                self.recent_rows,
                100.0 * trained
            ));
        }
        if self.rows < DRIFT_MIN_ROWS {
            return (!parts.is_empty()).then(|| parts.join("; "));
        }
        let mut drifted: Vec<(&str, f64)> = self
            .psi
            .iter()
            .filter_map(|(f, p)| Some((f.as_str(), (*p)?)))
            .filter(|(_, p)| *p > txguard_iforest::drift::PSI_ALERT)
            .collect();
        drifted.sort_by(|a, b| b.1.total_cmp(&a.1));
        if !drifted.is_empty() {
            let list: Vec<String> = drifted.iter().map(|(f, p)| format!("{f} {p:.2}")).collect();
            parts.push(format!(
                "features drifted from training over {whole} (PSI > {}): {}",
                txguard_iforest::drift::PSI_ALERT,
                list.join(", ")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

impl ScoreStats {
    pub fn new(model: &str, forest: &Forest) -> Self {
        ScoreStats {
            model: model.to_string(),
            version: forest.version().to_string(),
            threshold: -forest.offset(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
            flagged: AtomicU64::new(0),
            drift: forest.card().training_profile.clone().map(|profile| Drift {
                features: forest.features().to_vec(),
                live: Mutex::new(LiveBins::new(&profile, DRIFT_SLICES)),
                profile,
            }),
            recent_slices: AtomicU64::new(DRIFT_SLICES as u64),
        }
    }

    /// Makes the drift window `slices` slices long (emptying it), the flagged rate judged
    /// over the newest `recent` of them; call [`Self::rotate_drift`] every window / `slices`.
    pub fn set_drift_slices(&self, slices: usize, recent: usize) {
        self.recent_slices.store(recent as u64, Ordering::Relaxed);
        if let Some(d) = &self.drift {
            *d.live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                LiveBins::new(&d.profile, slices);
        }
    }

    /// Starts a new slice of the drift window (the oldest is dropped).
    pub fn rotate_drift(&self) {
        if let Some(d) = &self.drift {
            d.live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .rotate();
        }
    }

    /// Whether the model's card has a training profile, so that [`Self::drift`] reports.
    pub fn has_training_profile(&self) -> bool {
        self.drift.is_some()
    }

    /// The drift window against the training profile, with the flagged rate over the newest
    /// slices [`Self::set_drift_slices`] set; `None` when the model's card has no profile
    /// (models trained before txguard kept one, or exported from scikit-learn).
    pub fn drift(&self) -> Option<DriftReport> {
        let recent_slices = self.recent_slices.load(Ordering::Relaxed) as usize;
        let d = self.drift.as_ref()?;
        let (w, (recent_rows, recent_flagged)) = {
            let live = d
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (live.window(), live.rows_in_last(recent_slices))
        };
        Some(DriftReport {
            psi: d
                .features
                .iter()
                .zip(d.profile.features.iter().zip(&w.counts))
                .map(|(name, (bins, counts))| (name.clone(), psi(&bins.fractions, counts)))
                .collect(),
            rows: w.rows,
            recent_rows,
            recent_flagged,
            trained_flagged_rate: d.profile.flagged_rate,
        })
    }

    /// Records a batch of `score_samples` values (negated scores; NaN = no score) and, for
    /// a model with a training profile, each scored row's features (`columns`, the batch's
    /// feature columns) into the drift window.
    fn record(&self, samples: &[f64], columns: &[FeatureColumn<'_>]) {
        let mut local = [0u64; SCORE_BUCKETS];
        let (mut sum, mut flagged) = (0.0f64, 0u64);
        for &s in samples {
            if s.is_nan() {
                continue;
            }
            let score = -s;
            let i = ((score * SCORE_BUCKETS as f64).ceil() as usize).clamp(1, SCORE_BUCKETS) - 1;
            local[i] += 1;
            sum += score;
            flagged += u64::from(score > self.threshold);
        }
        for (b, n) in self.buckets.iter().zip(local) {
            if n > 0 {
                b.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum_nanos
            .fetch_add((sum * 1e9) as u64, Ordering::Relaxed);
        self.flagged.fetch_add(flagged, Ordering::Relaxed);
        if let Some(d) = &self.drift {
            let scored: Vec<usize> = (0..samples.len())
                .filter(|&i| !samples[i].is_nan())
                .collect();
            let counts: Vec<Vec<u64>> = columns
                .iter()
                .zip(&d.profile.features)
                .map(|(col, bins)| {
                    let mut c = vec![0u64; bins.fractions.len()];
                    for &i in &scored {
                        c[bins.bin(col.get(i))] += 1;
                    }
                    c
                })
                .collect();
            d.live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .add(&counts, scored.len() as u64, flagged);
        }
    }

    /// `(upper bound, cumulative count)` for each bucket; the last bound is 1.0, which every
    /// score is at or below, so its count is the number of rows scored.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                total += b.load(Ordering::Relaxed);
                ((i + 1) as f64 / SCORE_BUCKETS as f64, total)
            })
            .collect()
    }

    pub fn sum(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Rows scored above the threshold.
    pub fn flagged(&self) -> u64 {
        self.flagged.load(Ordering::Relaxed)
    }
}

impl PartialEq for ForestUdf {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.kind == o.kind && Arc::ptr_eq(&self.slot, &o.slot)
    }
}
impl Eq for ForestUdf {}
impl Hash for ForestUdf {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.kind.hash(state);
        Arc::as_ptr(&self.slot).hash(state);
    }
}

/// SQL name of a function for a model: `base` for the default model, `base_model` otherwise.
pub fn function_name(base: &str, model: &str) -> String {
    if model == DEFAULT_MODEL {
        base.to_string()
    } else {
        format!("{base}_{model}")
    }
}

/// The six functions for `forest` registered as model `model` (a slot of its own, not
/// recording what it scores).
pub fn forest_udfs(model: &str, forest: Arc<Forest>) -> Result<Vec<ScalarUDF>, UdfError> {
    make_udfs(&ModelSlot::new(model, forest), false)
}

/// The six functions of the model in `slot`, scoring with whatever forest it holds when a
/// batch is evaluated, `iforest_score` recording into the current version's statistics.
pub fn model_udfs(slot: &Arc<ModelSlot>) -> Result<Vec<ScalarUDF>, UdfError> {
    make_udfs(slot, true)
}

fn make_udfs(slot: &Arc<ModelSlot>, observed: bool) -> Result<Vec<ScalarUDF>, UdfError> {
    let model = slot.name();
    if !txguard_iforest::arroyo::valid_function_name(model) {
        return Err(UdfError::BadName(model.to_string()));
    }
    let make = |base: &str, kind: Kind| {
        let signature = match kind {
            // Volatile: read per batch (a swapped model's version and threshold), never
            // folded into the plan as constants.
            Kind::Version | Kind::Threshold => Signature::exact(vec![], Volatility::Volatile),
            _ => Signature::user_defined(Volatility::Immutable),
        };
        ScalarUDF::new_from_impl(ForestUdf {
            name: function_name(base, model),
            model: model.to_string(),
            kind,
            slot: slot.clone(),
            signature,
            observed: observed && kind == Kind::Score,
        })
    };
    Ok(vec![
        make("iforest_score", Kind::Score),
        make("iforest_is_anomaly", Kind::IsAnomaly),
        make("iforest_decision", Kind::Decision),
        make("iforest_model_version", Kind::Version),
        make("iforest_threshold", Kind::Threshold),
        make("iforest_explain", Kind::Explain),
    ])
}

/// Registers the functions of `forest` as model `model` in a session or function registry.
pub fn register_forest(
    registry: &mut dyn FunctionRegistry,
    model: &str,
    forest: Arc<Forest>,
) -> Result<(), UdfError> {
    for udf in forest_udfs(model, forest)? {
        let name = udf.name().to_string();
        registry
            .register_udf(Arc::new(udf))
            .map_err(|e| UdfError::Register(name, e))?;
    }
    Ok(())
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Null)
}

impl ForestUdf {
    fn feature_list(&self) -> String {
        self.slot.forest().features().join(", ")
    }
}

impl ScalarUDFImpl for ForestUdf {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::Score | Kind::Decision | Kind::Threshold => DataType::Float64,
            Kind::IsAnomaly => DataType::Boolean,
            Kind::Version | Kind::Explain => DataType::Utf8,
        })
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let forest = self.slot.forest();
        let nf = forest.n_features();
        if arg_types.len() != nf {
            return plan_err!(
                "{}() takes {nf} arguments, the features of model '{}' in order: {}; got {}",
                self.name,
                self.model,
                self.feature_list(),
                arg_types.len()
            );
        }
        arg_types
            .iter()
            .zip(forest.features())
            .enumerate()
            .map(|(i, (t, f))| match t {
                DataType::Float32 => Ok(DataType::Float32),
                t if is_numeric(t) => Ok(DataType::Float64),
                t => plan_err!(
                    "{}(): argument {} is feature '{f}' of model '{}' and must be numeric, got {t} (features: {})",
                    self.name,
                    i + 1,
                    self.model,
                    self.feature_list()
                ),
            })
            .collect()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // One forest for the whole batch, whatever a swap does meanwhile.
        let active = self.slot.active();
        let forest = &active.forest;
        match self.kind {
            Kind::Version => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                    forest.version().to_string(),
                ))));
            }
            // anomaly ⇔ decision < 0 ⇔ -score - offset < 0 ⇔ score > -offset, exactly
            // (negation is exact in floating point).
            Kind::Threshold => {
                return Ok(ColumnarValue::Scalar(ScalarValue::Float64(Some(
                    -forest.offset(),
                ))));
            }
            _ => {}
        }
        let n = args.number_rows;
        let arrays = if args.args.is_empty() {
            vec![]
        } else {
            ColumnarValue::values_to_arrays(&args.args)?
        };
        if self.kind == Kind::Explain {
            return Ok(ColumnarValue::Array(Arc::new(explain_arrays(
                forest, &arrays, n,
            )?)));
        }
        let (columns, nulls) = feature_columns(forest, &arrays, n)?;
        let scores = score_columns(forest, &columns, nulls, n)?;
        if self.observed && !UNOBSERVED.get() {
            active.stats.record(&scores, &columns);
        }
        let out: ArrayRef = match self.kind {
            Kind::Score => Arc::new(Float64Array::from_iter(
                scores.iter().map(|&s| (!s.is_nan()).then_some(-s)),
            )),
            Kind::Decision => {
                let offset = forest.offset();
                Arc::new(Float64Array::from_iter(
                    scores.iter().map(|&s| (!s.is_nan()).then_some(s - offset)),
                ))
            }
            _ => {
                let offset = forest.offset();
                Arc::new(BooleanArray::from_iter(
                    scores
                        .iter()
                        .map(|&s| (!s.is_nan()).then_some(s - offset < 0.0)),
                ))
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The model's feature arrays as [`FeatureColumn`]s (Float64 or Float32, `n` values each) and
/// the rows where any of them is NULL.
fn feature_columns<'a>(
    forest: &Forest,
    arrays: &'a [ArrayRef],
    n: usize,
) -> Result<(Vec<FeatureColumn<'a>>, Option<NullBuffer>)> {
    let mut columns = Vec::with_capacity(arrays.len());
    for (a, f) in arrays.iter().zip(forest.features()) {
        if a.len() != n {
            return exec_err!("feature {f}: {} values for {n} rows", a.len());
        }
        if let Some(v) = a.as_any().downcast_ref::<Float64Array>() {
            columns.push(FeatureColumn::F64(v.values()));
        } else if let Some(v) = a.as_any().downcast_ref::<Float32Array>() {
            columns.push(FeatureColumn::F32(v.values()));
        } else {
            return exec_err!(
                "feature {f}: expected a Float64 or Float32 array, got {}",
                a.data_type()
            );
        }
    }
    let logical: Vec<Option<NullBuffer>> = arrays.iter().map(|a| a.logical_nulls()).collect();
    let nulls = NullBuffer::union_many(logical.iter().map(Option::as_ref));
    Ok((columns, nulls))
}

/// One JSON explanation per row (NULL where a feature is NULL, NaN or infinite): see
/// [`explanation_json`].
pub fn explain_arrays(forest: &Forest, arrays: &[ArrayRef], n: usize) -> Result<StringArray> {
    let (columns, nulls) = feature_columns(forest, arrays, n)?;
    // The rows to explain, row-major, then explained together (on all cores).
    let wanted: Vec<usize> = (0..n)
        .filter(|&i| !nulls.as_ref().is_some_and(|nb| nb.is_null(i)))
        .collect();
    let mut rows = Vec::with_capacity(wanted.len() * columns.len());
    for &i in &wanted {
        rows.extend(columns.iter().map(|col| col.get(i)));
    }
    let explained = forest.explain_rows(&rows);
    let mut out = StringBuilder::with_capacity(n, 0);
    let mut next = wanted
        .iter()
        .zip(explained.iter().zip(rows.chunks(columns.len().max(1))));
    let mut pending = next.next();
    for i in 0..n {
        match pending {
            Some((&at, (e, row))) if at == i => {
                match e {
                    Some(e) => out.append_value(explanation_json(forest, row, e)),
                    None => out.append_null(),
                }
                pending = next.next();
            }
            _ => out.append_null(),
        }
    }
    Ok(out.finish())
}

/// The JSON `iforest_explain` returns for one row:
///
/// ```json
/// {"path_length": 7.91, "expected_path_length": 10.94,
///  "contributions": [{"feature": "amount_z", "value": 6.2, "contribution": -2.1}, …]}
/// ```
///
/// `contributions` holds every feature, sorted by contribution ascending: the first ones
/// shortened the row's isolation paths most, i.e. made it most anomalous. They sum to
/// `path_length − expected_path_length`; the score is `2^(−path_length / c(max_samples))`.
pub fn explanation_json(forest: &Forest, row: &[f64], e: &txguard_iforest::Explanation) -> String {
    let mut order: Vec<usize> = (0..e.contributions.len()).collect();
    order.sort_by(|&a, &b| e.contributions[a].total_cmp(&e.contributions[b]));
    let contributions: Vec<serde_json::Value> = order
        .into_iter()
        .map(|j| {
            serde_json::json!({
                "feature": forest.features()[j],
                "value": row[j],
                "contribution": e.contributions[j],
            })
        })
        .collect();
    serde_json::json!({
        "path_length": e.path_length,
        "expected_path_length": e.expected,
        "contributions": contributions,
    })
    .to_string()
}

/// scikit-learn `score_samples` for `n` rows given as Float64/Float32 feature arrays in the
/// model's order; NaN marks a row with no score (a NULL, NaN or infinite feature).
pub fn score_arrays(forest: &Forest, arrays: &[ArrayRef], n: usize) -> Result<Vec<f64>> {
    let (columns, nulls) = feature_columns(forest, arrays, n)?;
    score_columns(forest, &columns, nulls, n)
}

/// [`score_arrays`] on columns [`feature_columns`] made.
fn score_columns(
    forest: &Forest,
    columns: &[FeatureColumn<'_>],
    nulls: Option<NullBuffer>,
    n: usize,
) -> Result<Vec<f64>> {
    let valid: Option<Vec<bool>> = nulls.map(|nb| nb.iter().collect());
    let mut out = vec![0.0; n];
    forest
        .score_samples_columns(columns, valid.as_deref(), &mut out)
        .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
    Ok(out)
}
