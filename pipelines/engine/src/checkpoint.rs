//! Checkpoints on disk: one consistent cut of a pipeline at an epoch — every stateful
//! operator's state ([`crate::state`]), every event-time buffer's held rows and every sink's
//! prepared epoch, each as an Arrow IPC file, plus a small JSON manifest written last
//! (atomically, by rename) that lists the files with their SHA-256 and what the runtime
//! records beside them ([`RunRecord`]: source positions, watermarks, counters). A checkpoint without its
//! manifest is incomplete and ignored; one whose manifest or files do not check out is
//! reported and skipped for the previous complete one. The newest few are kept.
//!
//! An operator that tracks its changes ([`crate::state::Snapshot::changes`]) writes only the
//! keys changed in the epoch: its entry in the manifest is then a chain — the last whole
//! state (in the folder of the checkpoint that wrote it) followed by each checkpoint's
//! changes since — that reading merges ([`crate::state::merge`]). When a chain's changes
//! outgrow its whole state (or grow long), the writer folds them into a new whole state, off
//! the pipeline's thread. Folders a kept checkpoint's chains read from are kept with it.
//!
//! Layout, after Arroyo's: `<dir>/checkpoint-0000042/operator-<id>.arrow` and
//! `<dir>/checkpoint-0000042/_manifest.json`.
//!
//! A folder has one writer at a time ([`CheckpointStore::claim`]: an exclusive lock on
//! `<dir>/_lock`, as Kafka Streams locks its state directory) and a writer id, made on first
//! use and kept in `<dir>/_writer`: the identity under which exactly-once sinks record the
//! epochs they committed, so two runs writing one table (members of one consumer group) never
//! take each other's epochs for their own, and a restarted run finds its own.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::Snapshot;

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// One operator's state file in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatorFile {
    pub id: String,
    pub file: String,
    pub rows: usize,
    pub bytes: u64,
    pub sha256: String,
    /// The checkpoint whose folder holds the file, when not this one (a chain's earlier link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Whether the file holds changes to the entry before it with the same id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changes: bool,
}

/// What a checkpoint holds: the epoch, when it was taken, its state files, and the
/// runtime's record of where every source and sink was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub epoch: u64,
    /// Unix microseconds.
    pub created_at: i64,
    pub operators: Vec<OperatorFile>,
    pub record: RunRecord,
}

impl Manifest {
    /// Bytes of the files this checkpoint wrote (not those of earlier links it reads).
    pub fn written_bytes(&self) -> u64 {
        self.operators
            .iter()
            .filter(|o| o.epoch.is_none())
            .map(|o| o.bytes)
            .sum()
    }

    /// Bytes a restore from this checkpoint reads.
    pub fn bytes(&self) -> u64 {
        self.operators.iter().map(|o| o.bytes).sum()
    }
}

/// A chain's changes are folded into a new whole state once they hold more bytes than it,
/// or once there are this many.
const MAX_CHAIN: usize = 16;

/// Where a run was at a checkpoint, beside the state files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub sources: Vec<SourceRecord>,
    pub sinks: Vec<SinkRecord>,
    /// Rows sinks refused so far (sent to the dead letters).
    pub rejected_by_sinks: u64,
    /// What else the epoch depended on ([`crate::runtime::EpochBound::record`]: the models
    /// in use), by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub extra: std::collections::BTreeMap<String, serde_json::Value>,
}

/// One source at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    /// Where it reopens ([`crate::connector::Source::checkpoint`]).
    pub position: serde_json::Value,
    /// The same for people ([`crate::connector::Source::position`]).
    pub shown: String,
    /// Its watermark (µs since the Unix epoch), and its event-time buffer's marks.
    pub watermark: Option<i64>,
    pub marks: crate::time::Marks,
    /// Rows its event-time buffer held (saved as state `buffer-<name>`).
    pub held: u64,
    pub messages_in: u64,
    pub rows: u64,
    pub dead: u64,
    /// Of `dead`, the rows that failed a CHECK (older checkpoints: 0).
    #[serde(default)]
    pub check_failed: u64,
    pub late: u64,
    pub released: u64,
    /// Whether it had ended.
    pub done: bool,
}

/// One sink at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkRecord {
    pub table: String,
    /// Its prepared epoch's metadata ([`crate::connector::Prepared::meta`]); the data, if
    /// any, is state `sink-<table>`.
    pub meta: serde_json::Value,
    /// Rows the prepared epoch holds.
    pub prepared_rows: u64,
    pub rows: u64,
    pub committed_rows: u64,
    pub commits: u64,
}

/// A checkpoint read back: its manifest and every operator's state, by id.
pub type Checkpoint = (Manifest, Vec<(String, RecordBatch)>);

const MANIFEST: &str = "_manifest.json";
const LOCK: &str = "_lock";
const WRITER: &str = "_writer";

/// A run's hold on a checkpoint folder: the folder's lock (released when dropped, or by the
/// operating system when the process dies) and its writer id.
#[derive(Debug)]
pub struct Claim {
    writer: String,
    _lock: fs::File,
}

impl Claim {
    /// The folder's writer id: 16 hex digits, made when the folder was first claimed.
    pub fn writer(&self) -> &str {
        &self.writer
    }
}
/// Manifests this build writes (2: chains of changes) and the oldest it reads.
const VERSION: u32 = 2;
const OLDEST_VERSION: u32 = 1;

/// A folder of checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn arrow(path: &Path) -> impl Fn(arrow::error::ArrowError) -> CheckpointError + '_ {
    move |source| CheckpointError::Arrow {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, message: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// A file name part for an operator id (letters, digits, `-` and `_`; anything else `_`).
fn file_part(id: &str) -> String {
    let safe: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Operator ids carry their SQL and can be long: file names stay well under the 255
    // bytes file systems allow, unique by a hash of the whole id.
    if safe.len() <= 96 {
        return safe;
    }
    format!("{}-{}", &safe[..64], &sha256(id.as_bytes())[..16])
}

/// A new writer id: 64 bits of a hash over the folder, the process, the clock and the
/// address of a fresh allocation, which tell apart runs started at once on many machines.
fn new_writer_id(dir: &Path) -> String {
    let mut h = Sha256::new();
    h.update(dir.as_os_str().as_encoded_bytes());
    h.update(std::process::id().to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.update(now.as_nanos().to_le_bytes());
    let probe = Box::new(0u8);
    h.update((&raw const *probe as usize).to_le_bytes());
    hex::encode(&h.finalize()[..8])
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CheckpointStore {
    /// Checkpoints under `dir` (created when the first is written), keeping the newest
    /// `keep` (at least one).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        CheckpointStore {
            dir: dir.into(),
            keep: keep.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the folder for this process (creating it): fails, naming the holder's process
    /// id, while another run holds it, since two runs checkpointing into one folder would
    /// restore each other's state. Reads the folder's writer id, making one on first use.
    pub fn claim(&self) -> Result<Claim, CheckpointError> {
        fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let path = self.dir.join(LOCK);
        let mut lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(invalid(
                    &self.dir,
                    format!(
                        "in use by another txguard run{}: each run, and each member of a \
                         consumer group, needs its own checkpoint folder (--checkpoint-dir)",
                        if holder.is_empty() {
                            String::new()
                        } else {
                            format!(" (process {holder})")
                        }
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        lock.set_len(0).map_err(io(&path))?;
        writeln!(lock, "{}", std::process::id()).map_err(io(&path))?;
        let writer_path = self.dir.join(WRITER);
        let writer = match fs::read_to_string(&writer_path) {
            Ok(text) => {
                let id = text.trim();
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Err(invalid(
                        &writer_path,
                        format!(
                            "not a writer id ({id:?}): restore the file, or remove the folder \
                             to start over with a new id"
                        ),
                    ));
                }
                id.to_string()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = new_writer_id(&self.dir);
                let tmp = self.dir.join(format!("{WRITER}.tmp"));
                write_synced(&tmp, format!("{id}\n").as_bytes())?;
                fs::rename(&tmp, &writer_path).map_err(io(&writer_path))?;
                id
            }
            Err(e) => return Err(io(&writer_path)(e)),
        };
        Ok(Claim {
            writer,
            _lock: lock,
        })
    }

    fn folder(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{epoch:07}"))
    }

    /// Writes checkpoint `epoch`: each state as an IPC file, then the manifest (by rename,
    /// so it appears whole or not at all), then drops checkpoints beyond the newest `keep`.
    /// A state of changes extends its chain in `base` (the previous checkpoint, which must
    /// have one for its id), or is folded with that chain into a whole state.
    pub fn write(
        &self,
        epoch: u64,
        states: &[(String, Snapshot)],
        record: RunRecord,
        base: Option<&Manifest>,
    ) -> Result<Manifest, CheckpointError> {
        let folder = self.folder(epoch);
        fs::create_dir_all(&folder).map_err(io(&folder))?;
        let mut operators = Vec::with_capacity(states.len());
        for (id, snap) in states {
            if !snap.changes {
                operators.push(write_state(&folder, id, &snap.batch, "")?);
                continue;
            }
            let chain: Vec<OperatorFile> = base
                .map(|b| {
                    b.operators
                        .iter()
                        .filter(|o| &o.id == id)
                        .map(|o| OperatorFile {
                            epoch: Some(o.epoch.unwrap_or(b.epoch)),
                            ..o.clone()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let Some(whole) = chain.first().filter(|o| !o.changes) else {
                return Err(invalid(
                    &folder,
                    format!("changes to state {id} without a previous checkpoint holding it"),
                ));
            };
            let (name, bytes) = encode(&folder, id, &snap.batch, ".changes")?;
            let changed: u64 =
                chain.iter().skip(1).map(|o| o.bytes).sum::<u64>() + bytes.len() as u64;
            if changed <= whole.bytes && chain.len() < MAX_CHAIN {
                let mut link = put_state(&folder, id, name, &snap.batch, &bytes)?;
                link.changes = true;
                operators.extend(chain);
                operators.push(link);
                continue;
            }
            // Fold the chain into a whole state.
            let mut batches = Vec::with_capacity(chain.len() + 1);
            for o in &chain {
                batches.push(self.read_state(o.epoch.unwrap_or(epoch), o)?);
            }
            batches.push(snap.batch.clone());
            let merged = crate::state::merge(&batches[0], &batches[1..])
                .map_err(arrow(&folder.join(&name)))?;
            operators.push(write_state(&folder, id, &merged, "")?);
        }
        let manifest = Manifest {
            version: VERSION,
            epoch,
            created_at: chrono::Utc::now().timestamp_micros(),
            operators,
            record,
        };
        crate::fault::point("files", epoch);
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| invalid(&folder, format!("manifest: {e}")))?;
        let tmp = folder.join(format!("{MANIFEST}.tmp"));
        write_synced(&tmp, &text)?;
        let done = folder.join(MANIFEST);
        fs::rename(&tmp, &done).map_err(io(&done))?;
        self.retain()?;
        Ok(manifest)
    }

    /// Reads and verifies one state file of checkpoint `epoch`'s folder.
    fn read_state(&self, epoch: u64, op: &OperatorFile) -> Result<RecordBatch, CheckpointError> {
        let path = self.folder(epoch).join(&op.file);
        let bytes = fs::read(&path).map_err(io(&path))?;
        if bytes.len() as u64 != op.bytes || sha256(&bytes) != op.sha256 {
            return Err(invalid(
                &path,
                format!(
                    "{} bytes whose SHA-256 does not match the manifest (torn or corrupt)",
                    bytes.len()
                ),
            ));
        }
        let reader =
            FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(arrow(&path))?;
        let schema = reader.schema();
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().map_err(arrow(&path))?;
        arrow::compute::concat_batches(&schema, &batches).map_err(arrow(&path))
    }

    /// The folder's writer id, if a run has claimed it (read without taking the lock).
    pub fn writer_id(&self) -> Option<String> {
        let id = fs::read_to_string(self.dir.join(WRITER)).ok()?;
        Some(id.trim().to_string()).filter(|id| !id.is_empty())
    }

    /// Deletes every checkpoint (the folder, its lock and writer id stay); how many there were.
    pub fn clear(&self) -> Result<usize, CheckpointError> {
        let epochs = self.epochs()?;
        for &epoch in &epochs {
            let folder = self.folder(epoch);
            fs::remove_dir_all(&folder).map_err(io(&folder))?;
        }
        Ok(epochs.len())
    }

    /// Epochs of the checkpoint folders present, newest first (complete or not).
    pub fn epochs(&self) -> Result<Vec<u64>, CheckpointError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        let mut epochs: Vec<u64> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("checkpoint-")?
                    .parse()
                    .ok()
            })
            .collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// The manifest of checkpoint `epoch`, read and checked, without its state files.
    pub fn manifest(&self, epoch: u64) -> Result<Manifest, CheckpointError> {
        let path = self.folder(epoch).join(MANIFEST);
        let text = fs::read(&path).map_err(io(&path))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| invalid(&path, format!("not a checkpoint manifest: {e}")))?;
        if !(OLDEST_VERSION..=VERSION).contains(&manifest.version) || manifest.epoch != epoch {
            return Err(invalid(
                &path,
                format!(
                    "manifest of version {} for epoch {} (this build reads version {VERSION})",
                    manifest.version, manifest.epoch
                ),
            ));
        }
        Ok(manifest)
    }

    /// Reads and verifies checkpoint `epoch`: its manifest and every state file (size and
    /// SHA-256 as the manifest says), each chain merged into the state it ends at.
    pub fn read(&self, epoch: u64) -> Result<Checkpoint, CheckpointError> {
        let folder = self.folder(epoch);
        let manifest = self.manifest(epoch)?;
        let mut chains: Vec<(String, RecordBatch, Vec<RecordBatch>)> = Vec::new();
        for op in &manifest.operators {
            let batch = self.read_state(op.epoch.unwrap_or(epoch), op)?;
            if !op.changes {
                chains.push((op.id.clone(), batch, Vec::new()));
                continue;
            }
            match chains.iter_mut().rev().find(|c| c.0 == op.id) {
                Some(c) => c.2.push(batch),
                None => {
                    return Err(invalid(
                        &folder.join(MANIFEST),
                        format!("changes to state {} follow no whole state", op.id),
                    ));
                }
            }
        }
        let mut states = Vec::with_capacity(chains.len());
        for (id, whole, changes) in chains {
            let batch = if changes.is_empty() {
                whole
            } else {
                crate::state::merge(&whole, &changes).map_err(arrow(&folder))?
            };
            states.push((id, batch));
        }
        Ok((manifest, states))
    }

    /// The newest checkpoint that reads and verifies; each newer one that does not is logged
    /// with why and skipped. `None` when there is none.
    pub fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        for epoch in self.epochs()? {
            if !self.folder(epoch).join(MANIFEST).exists() {
                tracing::warn!(
                    epoch,
                    "checkpoint {epoch} is incomplete (no manifest); skipped"
                );
                continue;
            }
            match self.read(epoch) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => {
                    tracing::warn!(epoch, "checkpoint {epoch} cannot be used, skipped: {e}");
                }
            }
        }
        Ok(None)
    }

    /// Deletes checkpoint folders beyond the newest `keep` complete ones (and incomplete ones
    /// older than the newest complete one), except those a kept checkpoint's chains read.
    fn retain(&self) -> Result<(), CheckpointError> {
        let mut complete = 0;
        let mut needed = std::collections::HashSet::new();
        let mut doomed = Vec::new();
        for epoch in self.epochs()? {
            let folder = self.folder(epoch);
            let whole = folder.join(MANIFEST).exists();
            if whole && complete < self.keep {
                complete += 1;
                if let Ok(m) = self.manifest(epoch) {
                    needed.extend(m.operators.iter().filter_map(|o| o.epoch));
                }
                continue;
            }
            if complete > 0 {
                doomed.push(epoch);
            }
        }
        for epoch in doomed.into_iter().filter(|e| !needed.contains(e)) {
            let folder = self.folder(epoch);
            fs::remove_dir_all(&folder).map_err(io(&folder))?;
        }
        Ok(())
    }
}

/// Writes one state file into `folder` (`suffix` before the extension).
fn write_state(
    folder: &Path,
    id: &str,
    batch: &RecordBatch,
    suffix: &str,
) -> Result<OperatorFile, CheckpointError> {
    let (name, bytes) = encode(folder, id, batch, suffix)?;
    put_state(folder, id, name, batch, &bytes)
}

/// Writes the encoded state `bytes` of `batch` as file `name` into `folder`.
fn put_state(
    folder: &Path,
    id: &str,
    name: String,
    batch: &RecordBatch,
    bytes: &[u8],
) -> Result<OperatorFile, CheckpointError> {
    write_synced(&folder.join(&name), bytes)?;
    Ok(OperatorFile {
        id: id.to_string(),
        file: name,
        rows: batch.num_rows(),
        bytes: bytes.len() as u64,
        sha256: sha256(bytes),
        epoch: None,
        changes: false,
    })
}

/// A state file's name (`suffix` before the extension) and its Arrow IPC bytes.
fn encode(
    folder: &Path,
    id: &str,
    batch: &RecordBatch,
    suffix: &str,
) -> Result<(String, Vec<u8>), CheckpointError> {
    let name = format!("operator-{}{suffix}.arrow", file_part(id));
    let path = folder.join(&name);
    let mut buf = Vec::new();
    {
        let mut w = FileWriter::try_new(&mut buf, &batch.schema()).map_err(arrow(&path))?;
        w.write(batch).map_err(arrow(&path))?;
        w.finish().map_err(arrow(&path))?;
    }
    Ok((name, buf))
}

/// Writes `bytes` to `path` and syncs it to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let mut f = fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Why checkpoint `epoch` cannot be read.
    fn read_error(store: &CheckpointStore, epoch: u64) -> String {
        match store.read(epoch) {
            Ok(_) => format!("checkpoint {epoch} reads"),
            Err(e) => e.to_string(),
        }
    }

    fn state(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new_with_metadata(
            vec![
                Field::new("key", DataType::Utf8, true),
                Field::new("v", DataType::Int64, false),
            ],
            [(crate::state::FINGERPRINT.to_string(), "test v1".to_string())].into(),
        ));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(Int64Array::from(vec![n, n + 1])),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn a_folder_has_one_writer_at_a_time_and_keeps_its_writer_id() {
        let dir = tempfile::tempdir().expect("dir");
        let store = CheckpointStore::new(dir.path().join("cp"), 3);
        let first = store.claim().expect("claim");
        let id = first.writer().to_string();
        assert_eq!(id.len(), 16, "{id}");
        let e = store
            .claim()
            .expect_err("a second claim while the first holds");
        let text = e.to_string();
        assert!(
            text.contains("in use by another txguard run")
                && text.contains(&std::process::id().to_string())
                && text.contains("--checkpoint-dir"),
            "{text}"
        );
        drop(first);
        let again = store.claim().expect("claim after release");
        assert_eq!(again.writer(), id, "the folder keeps its writer id");
        assert_eq!(store.writer_id().as_deref(), Some(id.as_str()));
        let other = CheckpointStore::new(dir.path().join("other"), 3)
            .claim()
            .expect("claim");
        assert_ne!(other.writer(), id, "another folder, another writer");
        assert_eq!(store.epochs().expect("epochs"), Vec::<u64>::new());
        drop(again);
        fs::write(dir.path().join("cp").join(WRITER), "not an id!\n").expect("write");
        let e = store.claim().expect_err("a damaged writer id");
        assert!(e.to_string().contains("not a writer id"), "{e}");
    }

    #[test]
    fn written_checkpoints_read_back_and_the_newest_few_are_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let store = CheckpointStore::new(dir.path().join("cp"), 2);
        assert!(store.latest().expect("latest").is_none());
        for epoch in 1..=4 {
            let m = store
                .write(
                    epoch,
                    &[("3-over".into(), Snapshot::full(state(epoch as i64)))],
                    RunRecord {
                        rejected_by_sinks: epoch * 10,
                        ..Default::default()
                    },
                    None,
                )
                .expect("write");
            assert_eq!(m.operators[0].rows, 2);
        }
        assert_eq!(
            store.epochs().expect("epochs"),
            [4, 3],
            "keeps the newest two"
        );
        let (m, states) = store.latest().expect("latest").expect("some");
        assert_eq!(m.epoch, 4);
        assert_eq!(m.record.rejected_by_sinks, 40);
        assert_eq!(states, vec![("3-over".to_string(), state(4))]);
        assert_eq!(
            states[0].1.schema().metadata()[crate::state::FINGERPRINT],
            "test v1",
            "the fingerprint survives the file"
        );
    }

    #[test]
    fn torn_corrupt_and_incomplete_checkpoints_are_skipped_for_the_previous_one() {
        let dir = tempfile::tempdir().expect("dir");
        let store = CheckpointStore::new(dir.path(), 5);
        for epoch in 1..=3 {
            store
                .write(
                    epoch,
                    &[("w".into(), Snapshot::full(state(epoch as i64)))],
                    RunRecord::default(),
                    None,
                )
                .expect("write");
        }
        // Epoch 3: one bit flipped in its state file.
        let f = dir.path().join("checkpoint-0000003/operator-w.arrow");
        let mut bytes = fs::read(&f).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        fs::write(&f, &bytes).expect("flip");
        assert!(read_error(&store, 3).contains("does not match"));
        // Epoch 2: cut short.
        let f = dir.path().join("checkpoint-0000002/operator-w.arrow");
        let bytes = fs::read(&f).expect("read");
        fs::write(&f, &bytes[..bytes.len() / 3]).expect("truncate");
        // Epoch 4: killed before its manifest.
        fs::create_dir_all(dir.path().join("checkpoint-0000004")).expect("dir");
        let (m, states) = store.latest().expect("latest").expect("epoch 1 is whole");
        assert_eq!(m.epoch, 1);
        assert_eq!(states[0].1, state(1));
        // A manifest that is not one.
        fs::write(dir.path().join("checkpoint-0000001/_manifest.json"), b"{").expect("break");
        assert!(store.latest().expect("latest").is_none());
    }

    /// Changes to state "kv" (key, v): `(key, v)` upserts and `(key, None)` removals.
    fn changes(rows: &[(Option<&str>, Option<i64>)]) -> RecordBatch {
        let full = kv(&[]).schema();
        RecordBatch::try_new(
            crate::state::changes_schema(&full),
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(
                    rows.iter().map(|r| r.1.unwrap_or(0)),
                )),
                Arc::new(arrow::array::BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.1.is_none())),
                )),
            ],
        )
        .expect("changes")
    }

    fn kv(rows: &[(Option<&str>, i64)]) -> RecordBatch {
        let schema = state(0).schema();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("batch")
    }

    #[test]
    fn chains_of_changes_read_back_merged_are_folded_and_keep_their_folders() {
        let dir = tempfile::tempdir().expect("dir");
        let store = CheckpointStore::new(dir.path(), 1);
        // Many keys, so that a few keys' changes are smaller than the whole state.
        let many: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let with_many = |rows: &[(Option<&str>, i64)]| {
            let mut all: Vec<(Option<&str>, i64)> = rows.to_vec();
            all.splice(0..0, many.iter().map(|k| (Some(k.as_str()), 7)));
            kv(&all)
        };
        let mut first: Vec<(Option<&str>, i64)> = vec![(Some("a"), 1), (None, 2), (Some("b"), 3)];
        first.extend(many.iter().map(|k| (Some(k.as_str()), 7)));
        let whole = kv(&first);
        let m1 = store
            .write(
                1,
                &[("s".into(), Snapshot::full(whole))],
                RunRecord::default(),
                None,
            )
            .expect("whole");
        let step = |epoch: u64, base: &Manifest, rows: &[(Option<&str>, Option<i64>)]| {
            store
                .write(
                    epoch,
                    &[(
                        "s".into(),
                        Snapshot {
                            batch: changes(rows),
                            changes: true,
                        },
                    )],
                    RunRecord::default(),
                    Some(base),
                )
                .expect("changes")
        };
        // b changes, the NULL key goes, c comes; then a goes and comes back, b goes.
        let m2 = step(
            2,
            &m1,
            &[(Some("b"), Some(30)), (None, None), (Some("c"), Some(4))],
        );
        assert_eq!(m2.operators.len(), 2, "whole state, then changes: {m2:?}");
        assert_eq!(m2.operators[0].epoch, Some(1));
        assert!(m2.operators[1].changes && m2.operators[1].epoch.is_none());
        let m3 = step(
            3,
            &m2,
            &[(Some("a"), None), (Some("a"), Some(10)), (Some("b"), None)],
        );
        assert_eq!(m3.operators.len(), 3);
        assert_eq!(
            store.epochs().expect("epochs"),
            [3, 2, 1],
            "keeping one checkpoint keeps the folders its chain reads"
        );
        let (_, states) = store.latest().expect("latest").expect("some");
        assert_eq!(
            states,
            vec![(
                "s".to_string(),
                with_many(&[(Some("c"), 4), (Some("a"), 10)])
            )]
        );
        // A changed link is a broken checkpoint, like a broken whole state.
        let link = dir
            .path()
            .join("checkpoint-0000002/operator-s.changes.arrow");
        let good = fs::read(&link).expect("read");
        fs::write(&link, &good[..good.len() / 2]).expect("truncate");
        assert!(read_error(&store, 3).contains("does not match"));
        fs::write(&link, &good).expect("repair");
        // Changes outgrowing the whole state are folded into a new one.
        let mut base = m3;
        let mut epoch = 4;
        while base.operators.len() > 1 {
            base = step(
                epoch,
                &base,
                &[(Some("d"), Some(epoch as i64)), (Some("e"), Some(5))],
            );
            epoch += 1;
            assert!(epoch < 4 + MAX_CHAIN as u64, "never folded: {base:?}");
        }
        assert!(!base.operators[0].changes && base.operators[0].epoch.is_none());
        let folded: Vec<String> = fs::read_dir(store.folder(epoch - 1))
            .expect("folder")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !folded.iter().any(|f| f.contains(".changes")),
            "folded changes are not written: {folded:?}"
        );
        let (m, states) = store.latest().expect("latest").expect("some");
        assert_eq!(m.epoch, epoch - 1);
        let want = with_many(&[
            (Some("c"), 4),
            (Some("a"), 10),
            (Some("d"), epoch as i64 - 1),
            (Some("e"), 5),
        ]);
        assert_eq!(states[0].1, want);
        assert_eq!(
            store.epochs().expect("epochs"),
            [epoch - 1],
            "the old chain's folders went"
        );
        // Changes with nothing to chain onto are refused.
        let e = store
            .write(
                epoch,
                &[(
                    "t".into(),
                    Snapshot {
                        batch: changes(&[]),
                        changes: true,
                    },
                )],
                RunRecord::default(),
                Some(&m),
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("without a previous checkpoint"),
            "{e}"
        );
    }
}
