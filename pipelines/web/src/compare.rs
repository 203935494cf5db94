//! Champion / challenger, live: two models' verdicts on the same rows, counted from a tapped
//! relation (the console's `--console-shadow` table) straight from its Arrow columns.
//!
//! The relation names its models by its columns: the first two BOOLEAN columns whose names
//! end in `_flag` are the two verdicts (`champion_flag`, `challenger_flag`: models
//! `champion` and `challenger`), `<model>_version` TEXT columns (when present) say which
//! versions scored the row, and a BOOLEAN label column (`is_fraud` by default) gives
//! precision and recall where rows carry one. Counts are kept per pair of versions, so a hot
//! swap starts a new line rather than mixing two models' numbers.

use std::collections::BTreeMap;
use std::sync::Mutex;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use serde::Serialize;

/// Counts for one pair of versions.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct PairCounts {
    pub rows: u64,
    /// Rows where both verdicts are the same (both NULL counts as the same).
    pub agree: u64,
    pub both_flagged: u64,
    pub first_only: u64,
    pub second_only: u64,
    /// Rows with a label, and of them labelled positive.
    pub labelled: u64,
    pub positives: u64,
    /// Per model: labelled rows it flagged, and of them positive.
    pub flagged_labelled: [u64; 2],
    pub true_positives: [u64; 2],
}

/// What the console shows of one pair of versions.
#[derive(Debug, Clone, Serialize)]
pub struct PairReport {
    pub versions: [Option<String>; 2],
    #[serde(flatten)]
    pub counts: PairCounts,
    pub agreement: Option<f64>,
    /// Per model (NULL where it flagged no labelled row / nothing is positive).
    pub precision: [Option<f64>; 2],
    pub recall: [Option<f64>; 2],
}

/// The comparison of one relation.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub table: String,
    /// The two models' names (the flag columns less `_flag`), once a batch has shown them.
    pub models: Option<[String; 2]>,
    pub label: String,
    /// Why nothing is counted, when the relation's columns do not name two verdicts.
    pub problem: Option<String>,
    pub pairs: Vec<PairReport>,
}

/// Where a relation's verdicts are, found from its first batch.
#[derive(Debug, Clone)]
struct Columns {
    flags: [usize; 2],
    versions: [Option<usize>; 2],
    label: Option<usize>,
    names: [String; 2],
}

/// Counts two models' verdicts on a relation's rows.
#[derive(Debug)]
pub struct Comparison {
    table: String,
    label: String,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    columns: Option<Result<Columns, String>>,
    pairs: BTreeMap<[Option<String>; 2], PairCounts>,
}

fn find_columns(batch: &RecordBatch, label: &str) -> Result<Columns, String> {
    let schema = batch.schema();
    let flags: Vec<usize> = schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.name().ends_with("_flag") && f.data_type() == &DataType::Boolean)
        .map(|(i, _)| i)
        .take(2)
        .collect();
    let [a, b] = flags[..] else {
        return Err(format!(
            "it has {} BOOLEAN columns named <model>_flag; a comparison needs two (e.g. \
             champion_flag and challenger_flag)",
            flags.len()
        ));
    };
    let name = |i: usize| schema.field(i).name().trim_end_matches("_flag").to_string();
    let names = [name(a), name(b)];
    let version = |m: &str| schema.index_of(&format!("{m}_version")).ok();
    let label = schema
        .index_of(label)
        .ok()
        .filter(|&i| schema.field(i).data_type() == &DataType::Boolean);
    Ok(Columns {
        flags: [a, b],
        versions: [version(&names[0]), version(&names[1])],
        label,
        names,
    })
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl Comparison {
    pub fn new(table: &str, label: &str) -> Self {
        Comparison {
            table: table.to_string(),
            label: label.to_string(),
            state: Mutex::default(),
        }
    }

    /// Counts a batch of the relation.
    pub fn add(&self, batch: &RecordBatch) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let columns = st
            .columns
            .get_or_insert_with(|| find_columns(batch, &self.label))
            .clone();
        let Ok(c) = columns else { return };
        let flag = |i: usize| batch.column(i).as_any().downcast_ref::<BooleanArray>();
        let (Some(fa), Some(fb)) = (flag(c.flags[0]), flag(c.flags[1])) else {
            return;
        };
        let label = c.label.and_then(flag);
        let text = |i: Option<usize>| {
            i.and_then(|i| cast(batch.column(i), &DataType::Utf8).ok())
                .and_then(|a| a.as_any().downcast_ref::<StringArray>().cloned())
        };
        let (va, vb) = (text(c.versions[0]), text(c.versions[1]));
        let get = |a: &BooleanArray, r: usize| (!a.is_null(r)).then(|| a.value(r));
        let version = |a: &Option<StringArray>, r: usize| {
            a.as_ref()
                .filter(|a| !a.is_null(r))
                .map(|a| a.value(r).to_string())
        };
        // Consecutive rows of one version pair share an entry (versions change only at swaps).
        let mut r = 0;
        while r < batch.num_rows() {
            let key = [version(&va, r), version(&vb, r)];
            let entry = st.pairs.entry(key.clone()).or_default();
            while r < batch.num_rows() && [version(&va, r), version(&vb, r)] == key {
                let (a, b) = (get(fa, r), get(fb, r));
                let (a1, b1) = (a == Some(true), b == Some(true));
                entry.rows += 1;
                entry.agree += u64::from(a == b);
                entry.both_flagged += u64::from(a1 && b1);
                entry.first_only += u64::from(a1 && !b1);
                entry.second_only += u64::from(b1 && !a1);
                if let Some(y) = label.and_then(|l| get(l, r)) {
                    entry.labelled += 1;
                    entry.positives += u64::from(y);
                    for (k, f) in [a1, b1].into_iter().enumerate() {
                        entry.flagged_labelled[k] += u64::from(f);
                        entry.true_positives[k] += u64::from(f && y);
                    }
                }
                r += 1;
            }
        }
    }

    pub fn report(&self) -> Report {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (models, problem) = match &st.columns {
            None => (None, None),
            Some(Ok(c)) => (Some(c.names.clone()), None),
            Some(Err(e)) => (None, Some(e.clone())),
        };
        Report {
            table: self.table.clone(),
            models,
            label: self.label.clone(),
            problem,
            pairs: st
                .pairs
                .iter()
                .map(|(v, c)| PairReport {
                    versions: v.clone(),
                    agreement: ratio(c.agree, c.rows),
                    precision: [0, 1].map(|k| ratio(c.true_positives[k], c.flagged_labelled[k])),
                    recall: [0, 1].map(|k| ratio(c.true_positives[k], c.positives)),
                    counts: c.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, StringArray};

    use super::*;

    #[test]
    fn counts_agreement_and_each_models_precision_and_recall() {
        let flags = |v: &[Option<bool>]| Arc::new(BooleanArray::from(v.to_vec())) as ArrayRef;
        let text = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            (
                "is_fraud",
                flags(&[Some(false), Some(true), Some(true), None, Some(true)]),
            ),
            ("champion_version", text(&["a", "a", "a", "a", "a2"])),
            (
                "champion_flag",
                flags(&[Some(false), Some(true), Some(false), Some(true), None]),
            ),
            ("challenger_version", text(&["b", "b", "b", "b", "b"])),
            (
                "challenger_flag",
                flags(&[Some(false), Some(true), Some(true), Some(false), None]),
            ),
        ])
        .expect("batch");
        let c = Comparison::new("shadow_scores", "is_fraud");
        c.add(&batch);
        let r = c.report();
        assert_eq!(
            r.models,
            Some(["champion".to_string(), "challenger".to_string()])
        );
        assert_eq!(
            r.pairs.len(),
            2,
            "a second champion version is its own line"
        );
        let p = &r.pairs[0];
        assert_eq!(p.versions, [Some("a".into()), Some("b".into())]);
        assert_eq!(
            p.counts,
            PairCounts {
                rows: 4,
                agree: 2,
                both_flagged: 1,
                first_only: 1,
                second_only: 1,
                labelled: 3,
                positives: 2,
                flagged_labelled: [1, 2],
                true_positives: [1, 2],
            }
        );
        assert_eq!(p.agreement, Some(0.5));
        assert_eq!(p.precision, [Some(1.0), Some(1.0)]);
        assert_eq!(p.recall, [Some(0.5), Some(1.0)]);
        // Both NULL agree; no flag, no precision.
        let q = &r.pairs[1];
        assert_eq!(
            (q.counts.rows, q.counts.agree, q.counts.positives),
            (1, 1, 1)
        );
        assert_eq!(q.precision, [None, None]);
        assert_eq!(q.recall, [Some(0.0), Some(0.0)]);
    }

    #[test]
    fn a_relation_without_two_verdicts_says_why() {
        let batch = RecordBatch::try_from_iter([(
            "champion_flag",
            Arc::new(BooleanArray::from(vec![true])) as ArrayRef,
        )])
        .expect("batch");
        let c = Comparison::new("t", "is_fraud");
        c.add(&batch);
        let r = c.report();
        assert!(r.pairs.is_empty());
        assert!(r.problem.expect("problem").contains("needs two"));
    }
}
