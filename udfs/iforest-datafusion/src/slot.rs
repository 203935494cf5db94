//! A model of a running pipeline as one replaceable slot: the forest its SQL functions score
//! with now, a forest staged to replace it, and what every version it has held scored.
//!
//! A swap is two steps so that no batch is scored by two models: [`ModelSlot::stage`] checks
//! a candidate (same features, in the same order) and keeps it; [`ModelSlot::apply_pending`]
//! makes it current, called by the pipeline's thread between two epochs, while no batch is
//! being evaluated. Every function of the slot reads the current forest once per batch, so a
//! row's `iforest_model_version()` always names the model that scored it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwap;
use txguard_iforest::Forest;

use crate::ScoreStats;

/// The forest a slot scores with now and its statistics.
#[derive(Debug)]
pub struct Active {
    pub forest: Arc<Forest>,
    pub stats: Arc<ScoreStats>,
}

/// Why a candidate model was not staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "its features ({got}) are not the running model's ({want}): a model with other features needs the pipeline's SQL changed and a restart"
    )]
    Features { got: String, want: String },
}

/// What [`ModelSlot::stage`] did with a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// It is the version in use (and none other is pending): nothing to do.
    Unchanged,
    /// It replaces the current model at the next epoch boundary.
    Pending { version: String },
}

/// One model of a pipeline, swappable between epochs.
#[derive(Debug)]
pub struct ModelSlot {
    name: String,
    current: ArcSwap<Active>,
    pending: Mutex<Option<Arc<Forest>>>,
    /// Every version this slot has held, oldest first (a rollback reuses its entry, so each
    /// version's counters only grow).
    versions: Mutex<Vec<Arc<ScoreStats>>>,
    /// The drift window's shape ([`ScoreStats::set_drift_slices`]), applied to new versions.
    drift_slices: Mutex<Option<(usize, usize)>>,
    swaps: AtomicU64,
    refused: AtomicU64,
    last_refusal: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ModelSlot {
    pub fn new(name: &str, forest: Arc<Forest>) -> Arc<Self> {
        let stats = Arc::new(ScoreStats::new(name, &forest));
        Arc::new(ModelSlot {
            name: name.to_string(),
            current: ArcSwap::from_pointee(Active {
                forest,
                stats: stats.clone(),
            }),
            pending: Mutex::new(None),
            versions: Mutex::new(vec![stats]),
            drift_slices: Mutex::new(None),
            swaps: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_refusal: Mutex::new(None),
        })
    }

    /// The model's name (`default`, or the `name` of `--model name=…`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The forest and statistics in use now.
    pub fn active(&self) -> Arc<Active> {
        self.current.load_full()
    }

    pub fn forest(&self) -> Arc<Forest> {
        self.current.load().forest.clone()
    }

    /// The statistics of the version in use.
    pub fn stats(&self) -> Arc<ScoreStats> {
        self.current.load().stats.clone()
    }

    /// The statistics of every version this slot has held, oldest first.
    pub fn all_stats(&self) -> Vec<Arc<ScoreStats>> {
        lock(&self.versions).clone()
    }

    /// Whether `candidate` can replace the current model: the same features in the same
    /// order (the SQL calls pass them by position).
    pub fn check(&self, candidate: &Forest) -> Result<(), Refused> {
        let current = self.forest();
        if candidate.features() != current.features() {
            return Err(Refused::Features {
                got: candidate.features().join(", "),
                want: current.features().join(", "),
            });
        }
        Ok(())
    }

    /// Stages `candidate` to replace the current model at the next epoch boundary (replacing
    /// a candidate staged before and not yet applied). A refusal is counted
    /// ([`Self::refused`]) and kept as the last reason.
    pub fn stage(&self, candidate: Arc<Forest>) -> Result<Staged, Refused> {
        if let Err(e) = self.check(&candidate) {
            self.refuse(e.to_string());
            return Err(e);
        }
        let mut pending = lock(&self.pending);
        if candidate.version() == self.forest().version() {
            // A pending swap to another version is called off: the source is back to this one.
            *pending = None;
            return Ok(Staged::Unchanged);
        }
        let version = candidate.version().to_string();
        *pending = Some(candidate);
        Ok(Staged::Pending { version })
    }

    /// The version staged and not yet applied.
    pub fn pending_version(&self) -> Option<String> {
        lock(&self.pending)
            .as_ref()
            .map(|f| f.version().to_string())
    }

    /// Counts a candidate that could not be used (unreadable, corrupt, other features).
    pub fn refuse(&self, reason: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_refusal) = Some(reason);
    }

    /// Makes the staged candidate current, if any: `(old version, new version)`. Call only
    /// where no batch is being scored (the runtime's epoch boundary).
    pub fn apply_pending(&self) -> Option<(String, String)> {
        let next = lock(&self.pending).take()?;
        let old = self.forest().version().to_string();
        let stats = {
            let mut versions = lock(&self.versions);
            match versions.iter().find(|s| s.version == next.version()) {
                Some(s) => s.clone(),
                None => {
                    let s = Arc::new(ScoreStats::new(&self.name, &next));
                    if let Some((slices, recent)) = *lock(&self.drift_slices) {
                        s.set_drift_slices(slices, recent);
                    }
                    versions.push(s.clone());
                    s
                }
            }
        };
        let new = next.version().to_string();
        self.current.store(Arc::new(Active {
            forest: next,
            stats,
        }));
        self.swaps.fetch_add(1, Ordering::Relaxed);
        Some((old, new))
    }

    /// Swaps applied so far.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// Candidates refused so far, and the reason of the last.
    pub fn refused(&self) -> (u64, Option<String>) {
        (
            self.refused.load(Ordering::Relaxed),
            lock(&self.last_refusal).clone(),
        )
    }

    /// Shapes every version's drift window ([`ScoreStats::set_drift_slices`]), now and for
    /// versions swapped in later.
    pub fn set_drift_slices(&self, slices: usize, recent: usize) {
        *lock(&self.drift_slices) = Some((slices, recent));
        for s in lock(&self.versions).iter() {
            s.set_drift_slices(slices, recent);
        }
    }
}
