//! txguard's isolation forest: training, a versioned model file with a model card, and
//! scoring that equals scikit-learn's `IsolationForest` (`score_samples`,
//! `decision_function`, `predict`) for the same trees. No query-engine dependencies: the
//! DataFusion UDFs and the Arroyo UDF generator build on this crate.
//!
//! ```no_run
//! let forest = txguard_iforest::Forest::load("models/default.json")?;
//! let s = forest.score_row(&[120.0, 4.78, 3.0, 11.0, 80.0, 25.0, 0.5, 600.0]);
//! # Ok::<(), txguard_iforest::ForestError>(())
//! ```

pub mod arroyo;
pub mod drift;
mod error;
pub mod explain;
pub mod fit;
pub mod metrics;
mod model;
#[cfg(target_arch = "x86_64")]
mod rank;
#[cfg(target_arch = "x86_64")]
mod rank16;
mod score;
pub mod tree;

pub use error::{ForestError, Result};
pub use explain::Explanation;
pub use fit::{Contamination, FitParams, MaxFeatures, MaxSamples, TrainingSet, fit};
pub use model::{
    FORMAT, FORMAT_VERSION, FeatureColumn, Forest, Metrics, ModelCard, ModelFile, RowScore,
};
pub use score::{KERNEL_ENV, ScoringKernel};
pub use tree::Tree;
