//! Hot swaps: a running pipeline's models replaced without a restart.
//!
//! Each model's source — its file, or its `models:/NAME@ALIAS` URI on the MLflow registry —
//! is checked every `--model-poll` and on `POST /api/v1/models/{name}/reload`. A changed,
//! valid model is staged in the model's [`ModelSlot`] and made current by the runtime between
//! two epochs ([`EpochBound`]), so no batch is scored by two models and every row's
//! `iforest_model_version()` names the one that scored it. A model that does not parse, or
//! has other features, is refused with a warning and a metric
//! (`txguard_model_reloads_total{outcome="refused"}`) while the old one keeps scoring.
//!
//! With checkpoints, every model a run scores with is copied into
//! `<checkpoint dir>/models/<version>.json` (content-addressed) and each checkpoint names the
//! versions its epoch used (`record.extra.models`): a restart whose source cannot be read
//! (the registry down, the file gone) continues with the model its checkpoint was scored
//! with; one whose source now gives another model swaps to it from its first epoch, as the
//! run would have.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use txguard_engine::runtime::EpochBound;
use txguard_iforest::Forest;
use txguard_iforest_datafusion::{ModelSlot, Staged};

use crate::commands::validate::{Models, card_json};
use crate::mlflow::{ModelUri, Pick};

/// The key of the models' record in a checkpoint.
pub const RECORD_KEY: &str = "models";

/// Where a model comes from.
#[derive(Debug)]
enum Source {
    File(PathBuf),
    /// A registry alias: polled, it moves.
    Alias(ModelUri),
    /// A registry version: it never changes (a reload re-reads it all the same).
    Version(ModelUri),
}

/// What was last seen of a source, so that a poll reads a model only when it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Nothing,
    /// A file's length and modification time.
    File(u64, Option<SystemTime>),
    /// A registry's version number.
    Registered(String),
    /// The source could not be read: the reason (logged once, until it changes).
    Failed(String),
}

#[derive(Debug)]
struct LiveModel {
    slot: Arc<ModelSlot>,
    /// The source as given on the command line.
    spec: String,
    source: Source,
    seen: Mutex<Seen>,
    /// The card of the model in use, and of the one staged (with its registry details).
    card: Mutex<Value>,
    staged_card: Mutex<Option<Value>>,
}

/// A pipeline's models, swappable while it runs.
#[derive(Debug)]
pub struct LiveModels {
    models: Vec<LiveModel>,
    /// `<checkpoint dir>/models`, where the models scored with are kept.
    copies: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one check of a model's source did, as the reload endpoint answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The source gives the model in use.
    Unchanged { version: String },
    /// A new version is staged: it scores from the next epoch.
    Staged { version: String, previous: String },
    /// The source's model cannot be used; the old one keeps scoring.
    Refused { reason: String },
    /// The source could not be read (a registry away, a file missing).
    Unreadable { reason: String },
}

impl Outcome {
    pub fn to_json(&self, model: &str) -> Value {
        match self {
            Outcome::Unchanged { version } => {
                json!({"model": model, "outcome": "unchanged", "version": version})
            }
            Outcome::Staged { version, previous } => {
                json!({"model": model, "outcome": "staged", "version": version, "previous": previous})
            }
            Outcome::Refused { reason } => {
                json!({"model": model, "outcome": "refused", "reason": reason})
            }
            Outcome::Unreadable { reason } => {
                json!({"model": model, "outcome": "unreadable", "reason": reason})
            }
        }
    }
}

/// One model as a checkpoint records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    pub name: String,
    pub version: String,
    /// Its source as given (`--model`).
    pub source: String,
    /// Its copy, relative to the checkpoint folder.
    pub file: Option<String>,
}

/// The models a checkpoint's epoch was scored with.
pub fn recorded(extra: &std::collections::BTreeMap<String, Value>) -> Vec<Recorded> {
    extra
        .get(RECORD_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// `<checkpoint dir>/models`.
pub fn copies_dir(checkpoint_dir: &Path) -> PathBuf {
    checkpoint_dir.join("models")
}

/// The copy of model version `version` kept under `copies`, if it is there and intact.
pub fn kept_copy(copies: &Path, version: &str) -> Option<Forest> {
    let path = copies.join(format!("{version}.json"));
    let f = Forest::load(&path).ok()?;
    (f.version() == version).then_some(f)
}

impl LiveModels {
    /// The models of `models` (as loaded at start), keeping copies under `copies` when the
    /// run checkpoints.
    pub fn new(models: &Models, copies: Option<PathBuf>) -> Result<Arc<Self>> {
        let mut live = Vec::new();
        for ((slot, spec), card) in models.slots.iter().zip(&models.specs).zip(&models.cards) {
            let source = match ModelUri::parse(spec) {
                Some(uri) => {
                    let uri = uri.with_context(|| format!("--model {spec}"))?;
                    match uri.pick {
                        Pick::Alias(_) => Source::Alias(uri),
                        Pick::Version(_) => Source::Version(uri),
                    }
                }
                None => Source::File(PathBuf::from(spec)),
            };
            let seen = match &source {
                Source::File(p) => file_seen(p),
                Source::Alias(_) | Source::Version(_) => card
                    .pointer("/registry/registered_version")
                    .and_then(Value::as_str)
                    .map_or(Seen::Nothing, |v| Seen::Registered(v.to_string())),
            };
            live.push(LiveModel {
                slot: slot.clone(),
                spec: spec.clone(),
                source,
                seen: Mutex::new(seen),
                card: Mutex::new(card.clone()),
                staged_card: Mutex::new(None),
            });
        }
        let me = Arc::new(LiveModels {
            models: live,
            copies,
        });
        for m in &me.models {
            me.keep(&m.slot.forest())?;
        }
        Ok(me)
    }

    /// Copies `forest` into the checkpoint folder's models (once per version).
    fn keep(&self, forest: &Forest) -> Result<()> {
        let Some(dir) = &self.copies else {
            return Ok(());
        };
        let path = dir.join(format!("{}.json", forest.version()));
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // `save` writes whole or not at all (a temporary file renamed into place).
        forest
            .save(&path)
            .with_context(|| format!("keeping model {} in {}", forest.version(), dir.display()))?;
        Ok(())
    }

    /// The models' cards as the console shows them (the versions in use now).
    pub fn cards(&self) -> Vec<Value> {
        self.models
            .iter()
            .map(|m| {
                let mut card = lock(&m.card).clone();
                let (refused, last) = m.slot.refused();
                card["swaps"] = json!(m.slot.swaps());
                card["refused"] = json!(refused);
                card["last_refusal"] = json!(last);
                card["pending_version"] = json!(m.slot.pending_version());
                card["watched"] = json!(!matches!(m.source, Source::Version(_)));
                card
            })
            .collect()
    }

    /// Checks every watched source (a poll): a model is read only when its source changed.
    pub fn poll(&self) {
        for m in &self.models {
            if !matches!(m.source, Source::Version(_)) {
                self.check(m, false);
            }
        }
    }

    /// Re-reads model `name`'s source now (the reload endpoint); `None`: no such model.
    pub fn reload(&self, name: &str) -> Option<Outcome> {
        let m = self.models.iter().find(|m| m.slot.name() == name)?;
        Some(self.check(m, true))
    }

    /// Checks one model's source; with `force`, reads it even when it looks unchanged.
    fn check(&self, m: &LiveModel, force: bool) -> Outcome {
        let name = m.slot.name();
        let (seen, read) = match &m.source {
            Source::File(path) => {
                let seen = file_seen(path);
                if matches!(seen, Seen::Failed(_)) {
                    return self.unreadable(m, seen);
                }
                if !force && seen == *lock(&m.seen) {
                    return self.unchanged(m);
                }
                let read = crate::commands::model::load(path)
                    .map(|f| (f, None))
                    .with_context(|| format!("model file {}", path.display()));
                (seen, read)
            }
            Source::Alias(uri) | Source::Version(uri) => {
                let base = match crate::mlflow::tracking_uri(None) {
                    Ok(b) => b,
                    Err(e) => return self.unreadable(m, Seen::Failed(format!("{e:#}"))),
                };
                let registered = match crate::mlflow::resolve_version(&base, uri) {
                    Ok(v) => v,
                    Err(e) => {
                        return self.unreadable(m, Seen::Failed(format!("{uri}: {e:#}")));
                    }
                };
                let seen = Seen::Registered(registered);
                if !force && seen == *lock(&m.seen) {
                    return self.unchanged(m);
                }
                let read = crate::commands::validate::from_registry(uri)
                    .map(|(f, reg)| (f, Some(reg)))
                    .with_context(|| uri.to_string());
                (seen, read)
            }
        };
        let was_failed = matches!(*lock(&m.seen), Seen::Failed(_));
        *lock(&m.seen) = seen;
        let (forest, registry) = match read {
            Ok(got) => got,
            Err(e) => {
                let reason = format!("{e:#}");
                tracing::warn!(
                    model = name,
                    "refused a new model: {reason}; the running model ({}) keeps scoring",
                    m.slot.forest().version()
                );
                m.slot.refuse(reason.clone());
                return Outcome::Refused { reason };
            }
        };
        if was_failed {
            tracing::info!(model = name, "model source {} readable again", m.spec);
        }
        let forest = Arc::new(forest);
        let previous = m.slot.forest().version().to_string();
        match m.slot.stage(forest.clone()) {
            Err(e) => {
                let reason = format!("{} (version {}): {e}", m.spec, forest.version());
                tracing::warn!(
                    model = name,
                    "refused a new model: {reason}; the running model ({previous}) keeps scoring"
                );
                Outcome::Refused { reason }
            }
            Ok(Staged::Unchanged) => {
                *lock(&m.staged_card) = None;
                Outcome::Unchanged { version: previous }
            }
            Ok(Staged::Pending { version }) => {
                if let Err(e) = self.keep(&forest) {
                    // Without its copy a restart could not fall back on it: refuse it now.
                    let reason = format!("{e:#}");
                    tracing::warn!(model = name, "refused a new model: {reason}");
                    // Unstage by staging the running model again.
                    let _ = m.slot.stage(m.slot.forest());
                    m.slot.refuse(reason.clone());
                    return Outcome::Refused { reason };
                }
                *lock(&m.staged_card) = Some(card_json(name, &forest, &m.spec, registry.as_ref()));
                tracing::info!(
                    model = name,
                    "new model from {}: version {version} ({} trees) scores from the next epoch on (now {previous})",
                    m.spec,
                    forest.n_estimators()
                );
                Outcome::Staged { version, previous }
            }
        }
    }

    fn unchanged(&self, m: &LiveModel) -> Outcome {
        Outcome::Unchanged {
            version: m
                .slot
                .pending_version()
                .unwrap_or_else(|| m.slot.forest().version().to_string()),
        }
    }

    /// A source that cannot be read: said once per distinct reason, the model in use stays.
    fn unreadable(&self, m: &LiveModel, seen: Seen) -> Outcome {
        let Seen::Failed(reason) = &seen else {
            return self.unchanged(m);
        };
        let mut last = lock(&m.seen);
        if *last != seen {
            tracing::warn!(
                model = m.slot.name(),
                "cannot check the model's source: {reason}; the running model ({}) keeps scoring",
                m.slot.forest().version()
            );
        }
        let reason = reason.clone();
        *last = seen;
        Outcome::Unreadable { reason }
    }

    /// Polls every watched source every `every`, off the runtime's threads (reading a file
    /// or asking the registry blocks), until the task is aborted.
    pub fn watch(self: &Arc<Self>, every: Duration) -> Option<tokio::task::JoinHandle<()>> {
        if every.is_zero()
            || self
                .models
                .iter()
                .all(|m| matches!(m.source, Source::Version(_)))
        {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let me = me.clone();
                let _ = tokio::task::spawn_blocking(move || me.poll()).await;
            }
        }))
    }
}

fn file_seen(path: &Path) -> Seen {
    match std::fs::metadata(path) {
        Ok(md) => Seen::File(md.len(), md.modified().ok()),
        Err(e) => Seen::Failed(format!("model file {}: {e}", path.display())),
    }
}

impl EpochBound for LiveModels {
    fn key(&self) -> &str {
        RECORD_KEY
    }

    fn begin(&self, epoch: u64) {
        for m in &self.models {
            if let Some((old, new)) = m.slot.apply_pending() {
                if let Some(card) = lock(&m.staged_card).take() {
                    *lock(&m.card) = card;
                }
                tracing::info!(
                    model = m.slot.name(),
                    "model swapped: version {new} scores from epoch {epoch} on (was {old})"
                );
            }
        }
    }

    fn record(&self) -> Value {
        let models: Vec<Recorded> = self
            .models
            .iter()
            .map(|m| {
                let version = m.slot.forest().version().to_string();
                Recorded {
                    name: m.slot.name().to_string(),
                    file: self
                        .copies
                        .as_ref()
                        .map(|_| format!("models/{version}.json")),
                    version,
                    source: m.spec.clone(),
                }
            })
            .collect();
        serde_json::to_value(models).unwrap_or(Value::Null)
    }
}

impl txguard_web::ModelControl for LiveModels {
    fn cards(&self) -> Vec<Value> {
        LiveModels::cards(self)
    }

    fn reload(&self, name: &str) -> Option<Value> {
        LiveModels::reload(self, name).map(|o| o.to_json(name))
    }
}
