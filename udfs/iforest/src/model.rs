//! The model file (versioned, self-describing JSON with a model card) and [`Forest`], a
//! validated, compiled model that scores rows the way scikit-learn's `IsolationForest` does.
//!
//! # NaN / null policy
//! A row whose features include a missing value, NaN, ±infinity, or a finite f64 outside the
//! f32 range (scikit-learn casts input to f32 and rejects such rows) has **no score**: the
//! batch functions write NaN for it and the single-row functions return `None`; the SQL
//! functions turn that into NULL. A missing feature is never imputed silently.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{ForestError, Result};
use crate::explain::{Explainer, Explanation};
use crate::score::{BLOCK_ROWS, Compiled, GROUP, ScoringKernel, block_pos};
use crate::tree::{Tree, average_path_length};

/// Value of the `format` field of every model file.
pub const FORMAT: &str = "txguard-iforest";
/// Newest model file layout this crate reads and the one it writes.
pub const FORMAT_VERSION: u32 = 1;

/// Quality metrics measured on labelled training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Rows that carried a label.
    pub labelled_rows: u64,
    /// Rows labelled anomalous.
    pub positives: u64,
    /// Area under the ROC curve of the anomaly score.
    pub roc_auc: Option<f64>,
    /// Average precision (area under the precision–recall curve) of the anomaly score.
    pub pr_auc: Option<f64>,
    /// Share of training rows flagged anomalous by the fitted offset.
    pub flagged_rate: f64,
}

/// What a reader needs to trust a model: where it came from and how good it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Human name of the model, e.g. `default`.
    #[serde(default)]
    pub name: Option<String>,
    /// RFC 3339 time the model was trained or exported.
    pub created_at: String,
    /// Who made it, e.g. `txguard 0.1.0` or `scikit-learn 1.5.2 (export_sklearn.py)`.
    pub trainer: String,
    /// Rows the forest was fitted on.
    #[serde(default)]
    pub training_rows: Option<u64>,
    /// Wall-clock fit time in seconds, when known.
    #[serde(default)]
    pub training_seconds: Option<f64>,
    /// Hash of the training matrix (f32 values, row-major), when known.
    #[serde(default)]
    pub data_fingerprint: Option<String>,
    /// Where the training data came from (file, pipeline, query).
    #[serde(default)]
    pub data_source: Option<String>,
    /// Fit parameters as given by the trainer.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Metrics on labelled training rows, when labels were given.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    /// Free text.
    #[serde(default)]
    pub notes: Option<String>,
    /// The training features' distribution, for drift checks while running (see
    /// [`crate::drift`]); absent in models made before it or by other trainers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_profile: Option<crate::drift::TrainingProfile>,
    /// The last evaluation filed with the model (`txguard model evaluate --into-card`): the
    /// data it ran on, its headline numbers and its ROC and precision–recall curves (thinned),
    /// for the console and `model info`. Not part of the model's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_json::Value>,
}

/// The on-disk model: everything scikit-learn's scoring needs, plus the card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub format: String,
    pub format_version: u32,
    /// Feature names in the order the model's inputs are given.
    pub features: Vec<String>,
    /// scikit-learn's `max_samples_`: rows drawn per tree.
    pub max_samples: u64,
    /// scikit-learn's `offset_`: `decision_function = score_samples - offset`.
    pub offset: f64,
    pub trees: Vec<Tree>,
    pub card: ModelCard,
}

/// Rows [`Forest::explain_rows`] needs before it spreads them over threads.
pub const PARALLEL_EXPLAIN_ROWS: usize = 16;

/// Rows [`Forest::explain_rows`] takes through the forest together, one tree at a time.
pub const EXPLAIN_BLOCK_ROWS: usize = 64;

/// A validated model ready to score.
#[derive(Debug, Clone)]
pub struct Forest {
    file: ModelFile,
    version: String,
    /// `n_estimators * c(max_samples)`, the normaliser of the summed path lengths.
    denominator: f64,
    compiled: Compiled,
    /// Built on the first explanation (most pipelines never ask for one).
    explainer: std::sync::OnceLock<Explainer>,
}

/// Scores of one row in scikit-learn's three conventions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowScore {
    /// `score_samples`: in [-1, 0), lower = more anomalous.
    pub score_samples: f64,
    /// `decision_function`: `score_samples - offset`; negative = anomaly.
    pub decision: f64,
}

impl RowScore {
    /// txguard's anomaly score, `-score_samples`, in (0, 1]; higher = more anomalous.
    pub fn anomaly_score(&self) -> f64 {
        -self.score_samples
    }
    /// scikit-learn's `predict(x) == -1`.
    pub fn is_anomaly(&self) -> bool {
        self.decision < 0.0
    }
}

/// One feature column of a batch to score.
#[derive(Debug, Clone, Copy)]
pub enum FeatureColumn<'a> {
    F64(&'a [f64]),
    F32(&'a [f32]),
}

impl FeatureColumn<'_> {
    pub fn len(&self) -> usize {
        match self {
            FeatureColumn::F64(v) => v.len(),
            FeatureColumn::F32(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`, widened to f64.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            FeatureColumn::F64(v) => v[i],
            FeatureColumn::F32(v) => f64::from(v[i]),
        }
    }
}

impl Forest {
    /// Validates a parsed model file and compiles it for scoring.
    pub fn from_model_file(file: ModelFile) -> Result<Self> {
        if file.format != FORMAT {
            return Err(ForestError::invalid(format!(
                "format is {:?}, expected {FORMAT:?}",
                file.format
            )));
        }
        if file.format_version == 0 || file.format_version > FORMAT_VERSION {
            return Err(ForestError::invalid(format!(
                "format_version {} is not supported (this txguard reads 1..={FORMAT_VERSION}); upgrade txguard",
                file.format_version
            )));
        }
        if file.features.is_empty() {
            return Err(ForestError::invalid("the model lists no features"));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &file.features {
            if f.is_empty() {
                return Err(ForestError::invalid("a feature name is empty"));
            }
            if !seen.insert(f.as_str()) {
                return Err(ForestError::invalid(format!(
                    "feature {f:?} is listed twice"
                )));
            }
        }
        if file.trees.is_empty() {
            return Err(ForestError::invalid("the model has no trees"));
        }
        if file.max_samples == 0 {
            return Err(ForestError::invalid("max_samples is 0"));
        }
        if !file.offset.is_finite() {
            return Err(ForestError::invalid(format!(
                "offset is {}, expected a finite number",
                file.offset
            )));
        }
        for (i, t) in file.trees.iter().enumerate() {
            t.validate(i, file.features.len())?;
        }
        if let Some(p) = &file.card.training_profile {
            p.validate(&file.features)?;
        }
        let denominator = file.trees.len() as f64 * average_path_length(file.max_samples as f64);
        let kernel = ScoringKernel::detect().map_err(ForestError::Setting)?;
        let compiled = Compiled::new(&file.trees, file.features.len(), kernel);
        let version = content_version(&file);
        Ok(Forest {
            file,
            version,
            denominator,
            compiled,
            explainer: std::sync::OnceLock::new(),
        })
    }

    /// Reads and validates a model file. Every failure names the file and what is wrong.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ForestError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            ForestError::Parse { message, .. } => ForestError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other.with_path(path),
        })
    }

    /// Parses and validates a model from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let file: ModelFile = serde_json::from_str(text).map_err(|e| ForestError::Parse {
            path: "<memory>".into(),
            message: describe_json_error(&e),
        })?;
        Self::from_model_file(file)
    }

    /// The model as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(&self.file).unwrap_or_default()
    }

    /// Writes the model file (atomically: a temporary file renamed into place).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |error| ForestError::Io {
            path: path.to_path_buf(),
            error,
        };
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    pub fn model_file(&self) -> &ModelFile {
        &self.file
    }
    pub fn features(&self) -> &[String] {
        &self.file.features
    }
    pub fn n_features(&self) -> usize {
        self.file.features.len()
    }
    pub fn n_estimators(&self) -> usize {
        self.file.trees.len()
    }
    pub fn max_samples(&self) -> u64 {
        self.file.max_samples
    }
    pub fn offset(&self) -> f64 {
        self.file.offset
    }
    pub fn card(&self) -> &ModelCard {
        &self.file.card
    }
    /// The model card, to edit: it does not affect scores or the version.
    pub fn card_mut(&mut self) -> &mut ModelCard {
        &mut self.file.card
    }
    /// Sets the decision offset (finite) without recompiling the trees.
    pub(crate) fn set_offset(&mut self, offset: f64) {
        self.file.offset = offset;
        self.version = content_version(&self.file);
    }
    /// Short content hash of features, trees and offset: identifies the model in outputs.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The kernel batches are scored with ([`ScoringKernel::detect`] at load).
    pub fn kernel(&self) -> ScoringKernel {
        self.compiled.kernel()
    }

    /// The kernel batches are actually walked with: [`Self::kernel`], or for a rank kernel
    /// the CPU's f32 kernel when this forest does not fit it (trees deeper than 8 levels,
    /// more than 16 features, more than 64 distinct leaf path lengths in a tree).
    pub fn kernel_in_use(&self) -> ScoringKernel {
        self.compiled.kernel_in_use()
    }

    /// Scores batches with another kernel (all give identical scores); fails when this CPU
    /// cannot run it.
    pub fn set_kernel(&mut self, kernel: ScoringKernel) -> Result<()> {
        if !kernel.is_supported() {
            return Err(ForestError::Setting(format!(
                "the {} scoring kernel needs a CPU with AVX-512 (AVX-512 BW for avx512-ranks16, and VBMI for avx512-ranks)",
                kernel.name()
            )));
        }
        self.compiled.set_kernel(kernel);
        Ok(())
    }

    /// `score_samples` from a row's path length sum in the forest's fixed-point units.
    fn score_samples_from_path_sum(&self, sum: i64) -> f64 {
        if self.denominator == 0.0 {
            -0.5
        } else {
            -(2f64.powf(-(self.compiled.path_length(sum) / self.denominator)))
        }
    }

    /// Scores one row of f64 features (in the model's feature order).
    /// `None` when the row has the wrong length or a value with no score (see module docs).
    pub fn score_row(&self, row: &[f64]) -> Option<RowScore> {
        let nf = self.n_features();
        if row.len() != nf {
            return None;
        }
        let mut buf = [0f32; 32];
        let mut heap;
        let x: &mut [f32] = if nf <= buf.len() {
            &mut buf[..nf]
        } else {
            heap = vec![0f32; nf];
            &mut heap
        };
        for (d, &v) in x.iter_mut().zip(row) {
            *d = v as f32;
            if !d.is_finite() {
                return None;
            }
        }
        let s = self.score_samples_from_path_sum(self.compiled.path_sum_row(x));
        Some(RowScore {
            score_samples: s,
            decision: s - self.file.offset,
        })
    }

    /// Explains one row of f64 features (in the model's feature order): each feature's exact
    /// TreeSHAP contribution to the row's mean path length (see [`crate::explain`]).
    /// `None` when the row has the wrong length or a value with no score (as [`Self::score_row`]).
    pub fn explain_row(&self, row: &[f64]) -> Option<Explanation> {
        let x = self.row_as_f32(row)?;
        Some(self.explainer().explain(&x))
    }

    /// [`Self::explain_row`] for many rows given row-major (`n_features` values each; a
    /// short last row gives `None`); the same values, faster: blocks of
    /// [`EXPLAIN_BLOCK_ROWS`] rows go through the forest one tree at a time (its tables stay
    /// in cache, see [`crate::explain`]), spread over rayon's threads when there are at least
    /// [`PARALLEL_EXPLAIN_ROWS`] rows. Fewer stay on the calling thread: waking rayon's pool
    /// for a row or two every few milliseconds (a paced pipeline's batches) keeps its threads
    /// spinning, which cost a live 10k tx/s pipeline most of a core and its scoring API its
    /// latency (docs/benchmarks.md).
    pub fn explain_rows(&self, rows: &[f64]) -> Vec<Option<Explanation>> {
        use rayon::prelude::*;
        let nf = self.n_features().max(1);
        let block = |rows: &[f64]| -> Vec<Option<Explanation>> {
            let cast: Vec<Option<Vec<f32>>> = rows.chunks(nf).map(|r| self.row_as_f32(r)).collect();
            let flat: Vec<f32> = cast.iter().flatten().flatten().copied().collect();
            let mut explained = self.explainer().explain_many(&flat).into_iter();
            cast.iter()
                .map(|c| c.as_ref().and_then(|_| explained.next()))
                .collect()
        };
        if rows.len() < PARALLEL_EXPLAIN_ROWS * nf {
            return rows
                .chunks(EXPLAIN_BLOCK_ROWS * nf)
                .flat_map(block)
                .collect();
        }
        let blocks: Vec<Vec<Option<Explanation>>> = rows
            .par_chunks(EXPLAIN_BLOCK_ROWS * nf)
            .map(block)
            .collect();
        blocks.into_iter().flatten().collect()
    }

    /// [`Self::explain_row`] by Lundberg et al.'s Algorithm 2 (shap's TreeSHAP), the
    /// reference the faster algorithms are tested and benchmarked against; same values.
    pub fn explain_row_reference(&self, row: &[f64]) -> Option<Explanation> {
        let x = self.row_as_f32(row)?;
        Some(self.explainer().explain_algorithm2(&x))
    }

    /// [`Self::explain_row`] by Linear TreeSHAP (what bigger forests use; Algorithm 2 for
    /// trees too deep for it), for benchmarks and comparisons; same values.
    pub fn explain_row_linear(&self, row: &[f64]) -> Option<Explanation> {
        let x = self.row_as_f32(row)?;
        Some(self.explainer().explain_linear_tree_shap(&x))
    }

    /// The algorithm [`Self::explain_row`] runs for this forest (see [`crate::explain`]).
    pub fn explain_algorithm(&self) -> &'static str {
        self.explainer().algorithm()
    }

    fn explainer(&self) -> &Explainer {
        self.explainer
            .get_or_init(|| Explainer::new(&self.file.trees, self.n_features()))
    }

    /// The row cast to f32 as scikit-learn does; `None` for the wrong length or a value with
    /// no score.
    fn row_as_f32(&self, row: &[f64]) -> Option<Vec<f32>> {
        if row.len() != self.n_features() {
            return None;
        }
        row.iter()
            .map(|&v| Some(v as f32).filter(|x| x.is_finite()))
            .collect()
    }

    /// Scores `n` rows given as feature columns (in the model's feature order), writing
    /// scikit-learn's `score_samples` into `out`; NaN marks a row with no score.
    /// `valid[r] == false` (e.g. an Arrow null) also gives NaN.
    pub fn score_samples_columns(
        &self,
        columns: &[FeatureColumn<'_>],
        valid: Option<&[bool]>,
        out: &mut [f64],
    ) -> Result<()> {
        let nf = self.n_features();
        let n = out.len();
        if columns.len() != nf {
            return Err(ForestError::Data(format!(
                "{} feature columns given, the model expects {nf} ({})",
                columns.len(),
                self.file.features.join(", ")
            )));
        }
        if let Some(c) = columns.iter().find(|c| c.len() != n) {
            return Err(ForestError::Data(format!(
                "a feature column has {} rows, expected {n}",
                c.len()
            )));
        }
        if valid.is_some_and(|v| v.len() != n) {
            return Err(ForestError::Data(
                "validity mask length differs from the row count".into(),
            ));
        }
        self.score_blocks(out, |start, len, block, ok| {
            if let Some(v) = valid {
                ok.copy_from_slice(&v[start..start + len]);
            }
            // One loop per column type: the match stays out of the per-value loop.
            for (j, col) in columns.iter().enumerate() {
                match col {
                    FeatureColumn::F64(v) => {
                        for (r, &x) in v[start..start + len].iter().enumerate() {
                            put(block, ok, r, j, nf, x as f32);
                        }
                    }
                    FeatureColumn::F32(v) => {
                        for (r, &x) in v[start..start + len].iter().enumerate() {
                            put(block, ok, r, j, nf, x);
                        }
                    }
                }
            }
        });
        Ok(())
    }

    /// Scores a row-major matrix of `out.len()` rows (`x.len() == out.len() * n_features`),
    /// writing `score_samples`; NaN marks a row with no score.
    pub fn score_samples_rows(&self, x: &[f64], out: &mut [f64]) -> Result<()> {
        let nf = self.n_features();
        if x.len() != out.len() * nf {
            return Err(ForestError::Data(format!(
                "{} values do not form {} rows of {nf} features",
                x.len(),
                out.len()
            )));
        }
        self.score_blocks(out, |start, len, block, ok| {
            let xs = &x[start * nf..(start + len) * nf];
            for r in 0..len {
                for j in 0..nf {
                    put(block, ok, r, j, nf, xs[r * nf + j] as f32);
                }
            }
        });
        Ok(())
    }

    /// Block driver shared by the batch entry points: `fill(start, len, block, ok)` writes rows
    /// `start..start + len` as f32 into `block` at [`block_pos`] and clears `ok[r]` for a row
    /// with no score (`ok` arrives all true); the trees are then walked over the block, padded
    /// to whole groups (padding rows hold earlier finite values or zeros and are discarded).
    fn score_blocks<F>(&self, out: &mut [f64], mut fill: F)
    where
        F: FnMut(usize, usize, &mut [f32], &mut [bool]),
    {
        let nf = self.n_features();
        let mut block = vec![0f32; BLOCK_ROWS * nf];
        let mut ok = [true; BLOCK_ROWS];
        let mut acc = [0i64; BLOCK_ROWS];
        for (b, outs) in out.chunks_mut(BLOCK_ROWS).enumerate() {
            let len = outs.len();
            ok[..len].fill(true);
            let padded = len.next_multiple_of(GROUP);
            fill(
                b * BLOCK_ROWS,
                len,
                &mut block[..padded * nf],
                &mut ok[..len],
            );
            acc[..padded].fill(0);
            self.compiled
                .path_sum_block(&block[..padded * nf], nf, &mut acc[..padded]);
            for ((o, &a), &good) in outs.iter_mut().zip(&acc[..len]).zip(&ok[..len]) {
                *o = if good {
                    self.score_samples_from_path_sum(a)
                } else {
                    f64::NAN
                };
            }
        }
    }
}

/// Writes feature `j` of row `r` into a block, or 0 with the row marked as having no score
/// when the value is not finite.
#[inline]
fn put(block: &mut [f32], ok: &mut [bool], r: usize, j: usize, nf: usize, x: f32) {
    let finite = x.is_finite();
    ok[r] &= finite;
    block[block_pos(r, j, nf)] = if finite { x } else { 0.0 };
}

/// Hash of what determines scores: features, max_samples, offset and trees.
fn content_version(file: &ModelFile) -> String {
    let mut h = blake3::Hasher::new();
    for f in &file.features {
        h.update(f.as_bytes());
        h.update(&[0]);
    }
    h.update(&file.max_samples.to_le_bytes());
    h.update(&file.offset.to_le_bytes());
    for t in &file.trees {
        for v in t
            .children_left
            .iter()
            .chain(&t.children_right)
            .chain(&t.feature)
        {
            h.update(&v.to_le_bytes());
        }
        for v in &t.threshold {
            h.update(&v.to_le_bytes());
        }
        for v in &t.n_node_samples {
            h.update(&v.to_le_bytes());
        }
        // Only explanations read these; files without them keep their versions.
        for v in t.weighted_n_node_samples.iter().flatten() {
            h.update(&v.to_le_bytes());
        }
    }
    h.finalize().to_hex()[..12].to_string()
}

fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!(
            "the file ends early (truncated?) at line {}, column {}",
            e.line(),
            e.column()
        ),
        Category::Syntax => format!("malformed JSON: {e}"),
        Category::Data => format!("unexpected content: {e}"),
        Category::Io => e.to_string(),
    }
}
