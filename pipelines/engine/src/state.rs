//! Operator state as Arrow record batches, the unit a checkpoint stores: each stateful
//! operator ([`crate::over::OverWindows`], [`crate::window::WindowAggregate`]) turns its keyed
//! state into one batch ([`Stateful::snapshot`]) and back ([`Stateful::restore`]), exactly
//! (restored and continued, an operator gives bit for bit what it would have given without
//! the stop). Every row carries its key's **key group** — a stable hash of the key into one of
//! [`KEY_GROUPS`] groups, as Flink's max parallelism — so that a later scale-out can hand key
//! groups between processes without rewriting state. A snapshot's schema metadata names the
//! operator it came from ([`FINGERPRINT`]); restoring into an operator with another
//! fingerprint (a changed window, another column) is refused, never silently misapplied.
//!
//! Snapshots may be **incremental** ([`Stateful::take_snapshot`] with `changes_only`): only
//! the keys changed since the operator's last snapshot, plus a row per key whose state is
//! gone ([`REMOVED`]), so that the pause a checkpoint costs grows with what changed in the
//! epoch, not with every key ever seen. [`merge`] applies such changes to the full snapshot
//! they follow.

use std::sync::Arc;

use std::collections::HashMap;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, RecordBatch, StringArray, UInt16Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// Key groups keyed state is split into (fixed: changing it would move keys between groups).
pub const KEY_GROUPS: u16 = 128;

/// Schema metadata key of a snapshot: the operator's fingerprint (its kind, key, frames and
/// functions), compared at restore.
pub const FINGERPRINT: &str = "txguard.operator";

/// The key group of a partition key (`None`: the NULL key): FNV-1a over the key's bytes,
/// finished with MurmurHash3's 64-bit mix — stable across runs, builds and machines (unlike
/// the in-memory tables' seeded hashes) and spread evenly over the groups.
pub fn key_group(key: Option<&[u8]>) -> u16 {
    let Some(key) = key else { return 0 };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h % u64::from(KEY_GROUPS)) as u16
}

/// An operator whose state a checkpoint keeps.
pub trait Stateful {
    /// What the operator computes, as text: a snapshot restores only into an operator with
    /// the same fingerprint.
    fn fingerprint(&self) -> String;

    /// How many keys the state holds (open windows for a windowed aggregation): what the
    /// console shows, cheap to ask after every step.
    fn keys(&self) -> usize;

    /// The whole state as one batch (one row per key or open window), its schema carrying
    /// the fingerprint.
    fn snapshot(&self) -> Result<RecordBatch, ArrowError>;

    /// Replaces the state with a snapshot's (of an operator with the same fingerprint).
    /// Changes are tracked from here on (as after a snapshot).
    fn restore(&mut self, state: &RecordBatch) -> Result<(), ArrowError>;

    /// A snapshot for a checkpoint, after which changes are tracked anew. With
    /// `changes_only`, the operator may give only what changed since its last snapshot or
    /// restore (a batch with the snapshot's columns and [`REMOVED`] last, see [`merge`]);
    /// one that does not track changes gives the whole state.
    fn take_snapshot(&mut self, changes_only: bool) -> Result<Snapshot, ArrowError> {
        let _ = changes_only;
        Ok(Snapshot::full(self.snapshot()?))
    }
}

/// A snapshot taken for a checkpoint: the whole state, or the changes since the previous one.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub batch: RecordBatch,
    /// Whether `batch` holds only changes (to be [`merge`]d into the previous state).
    pub changes: bool,
}

impl Snapshot {
    /// A whole state.
    pub fn full(batch: RecordBatch) -> Self {
        Snapshot {
            batch,
            changes: false,
        }
    }
}

/// The last column of a batch of changes: `true` for a key whose state is gone (its other
/// values are empty), `false` for a key whose state replaces what came before.
pub const REMOVED: &str = "removed";

/// The schema of a batch of changes to state of schema `full`: its columns, then [`REMOVED`].
pub fn changes_schema(full: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = full.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(REMOVED, DataType::Boolean, false));
    Arc::new(Schema::new_with_metadata(fields, full.metadata().clone()))
}

/// `base` (a whole snapshot) with `changes` applied in order: per key, the newest row wins
/// and a removed key is dropped. Keys keep their place in `base`; new keys follow in the
/// order they first appear. Every batch must come from the same operator (fingerprint).
pub fn merge(base: &RecordBatch, changes: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    let want = base
        .schema()
        .metadata()
        .get(FINGERPRINT)
        .cloned()
        .unwrap_or_default();
    let width = base.num_columns();
    let mut batches: Vec<&RecordBatch> = vec![base];
    batches.extend(changes);
    for c in changes {
        check_fingerprint(c, &want)?;
        if c.num_columns() != width + 1 || c.schema().field(width).name() != REMOVED {
            return Err(ArrowError::SchemaError(format!(
                "saved state changes have {} columns, the state they change {width} and {REMOVED}",
                c.num_columns()
            )));
        }
    }
    // Per output row, (batch, row); `usize::MAX` marks a row removed since.
    let mut picks: Vec<(usize, usize)> = (0..base.num_rows()).map(|r| (0, r)).collect();
    let base_keys = keys(base)?;
    let mut place: HashMap<Option<&str>, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(base.num_rows(), Default::default());
    for r in 0..base.num_rows() {
        let k = (!base_keys.is_null(r)).then(|| base_keys.value(r));
        place.insert(k, r);
    }
    for (b, c) in changes.iter().enumerate() {
        let b = b + 1;
        let ks = keys(c)?;
        let removed = c
            .column(width)
            .as_boolean_opt()
            .ok_or_else(|| ArrowError::SchemaError(format!("{REMOVED} is not a boolean")))?;
        for r in 0..c.num_rows() {
            let k = (!ks.is_null(r)).then(|| ks.value(r));
            let gone = removed.value(r);
            match place.get(&k) {
                Some(&at) if gone => {
                    picks[at].0 = usize::MAX;
                    place.remove(&k);
                }
                Some(&at) => picks[at] = (b, r),
                None if gone => {}
                None => {
                    place.insert(k, picks.len());
                    picks.push((b, r));
                }
            }
        }
    }
    picks.retain(|p| p.0 != usize::MAX);
    let columns = (0..width)
        .map(|i| {
            let arrays: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow::compute::interleave(&arrays, &picks)
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(base.schema(), columns)
}

/// Checks that `state` was taken from an operator with fingerprint `want`.
pub fn check_fingerprint(state: &RecordBatch, want: &str) -> Result<(), ArrowError> {
    match state.schema().metadata().get(FINGERPRINT) {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(ArrowError::InvalidArgumentError(format!(
            "the saved state belongs to another operator: it was `{got}`, this pipeline has \
             `{want}` (the SQL changed since the checkpoint); start from scratch to drop it"
        ))),
        None => Err(ArrowError::InvalidArgumentError(
            "the saved state names no operator".into(),
        )),
    }
}

/// A snapshot schema: `key` (nullable text), `key_group`, then `fields`, with the
/// fingerprint in its metadata.
pub fn schema(fingerprint: &str, fields: Vec<Field>) -> SchemaRef {
    let mut all = vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("key_group", DataType::UInt16, false),
    ];
    all.extend(fields);
    Arc::new(Schema::new_with_metadata(
        all,
        [(FINGERPRINT.to_string(), fingerprint.to_string())].into(),
    ))
}

/// The `key` and `key_group` columns of keys (in order).
pub fn key_columns<'a>(keys: impl Iterator<Item = Option<&'a [u8]>> + Clone) -> Vec<ArrayRef> {
    let n = keys.size_hint().0;
    let mut text = arrow::array::StringBuilder::with_capacity(n, n * 8);
    for k in keys.clone() {
        match k {
            None => text.append_null(),
            // Keys come from text columns; anything else is kept as readably as it can be.
            Some(b) => match std::str::from_utf8(b) {
                Ok(k) => text.append_value(k),
                Err(_) => text.append_value(String::from_utf8_lossy(b)),
            },
        }
    }
    let groups: UInt16Array = keys.map(key_group).collect();
    vec![Arc::new(text.finish()), Arc::new(groups)]
}

/// A column of a snapshot by name, as `T`.
pub fn column<'a>(state: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    state
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("the saved state has no column {name}")))
}

/// The `key` column of a snapshot.
pub fn keys(state: &RecordBatch) -> Result<&StringArray, ArrowError> {
    column(state, "key")?
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError("the saved state's key is not text".into()))
}

/// A binary column of a snapshot.
pub fn binary<'a>(state: &'a RecordBatch, name: &str) -> Result<&'a BinaryArray, ArrowError> {
    column(state, name)?
        .as_binary_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("the saved state's {name} is not binary")))
}

/// Words as little-endian bytes, appended as one binary value (written straight into the
/// builder: no buffer per value).
pub fn put_words(b: &mut BinaryBuilder, words: impl Iterator<Item = u64>) {
    use std::io::Write;
    for w in words {
        // Writing into a builder's memory cannot fail.
        let _ = b.write_all(&w.to_le_bytes());
    }
    b.append_value([]);
}

/// A binary value's little-endian words.
pub fn words(bytes: &[u8]) -> Result<impl Iterator<Item = u64> + '_, ArrowError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(ArrowError::InvalidArgumentError(format!(
            "saved state of {} bytes is not whole words",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_are_stable_and_spread() {
        // Fixed values: a change here moves every key to another group.
        assert_eq!(key_group(None), 0);
        let g: Vec<u16> = ["u000001", "u000002", "card-42", ""]
            .iter()
            .map(|k| key_group(Some(k.as_bytes())))
            .collect();
        assert_eq!(g, [29, 109, 4, 38]);
        let mut counts = vec![0u32; KEY_GROUPS as usize];
        for i in 0..100_000 {
            counts[key_group(Some(format!("u{i:06}").as_bytes())) as usize] += 1;
        }
        let (lo, hi) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(lo > 650 && hi < 920, "uneven key groups: {lo}..{hi}");
    }

    #[test]
    fn words_round_trip_and_torn_values_are_refused() {
        let mut b = BinaryBuilder::new();
        put_words(&mut b, [1u64, u64::MAX, 7].into_iter());
        let a = b.finish();
        assert_eq!(
            words(a.value(0)).expect("words").collect::<Vec<_>>(),
            [1, u64::MAX, 7]
        );
        assert!(words(&a.value(0)[..5]).is_err());
    }
}
