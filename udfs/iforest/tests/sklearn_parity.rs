//! Parity with real scikit-learn: `tests/parity/make_cases.py` fits `IsolationForest` over
//! many configurations and exports them with `models/export_sklearn.py`; every txguard entry
//! point (batch rows, batch f64/f32 columns, single row) must reproduce `score_samples`,
//! `decision_function` and `predict` on 100k rows per case to 1e-12, and every batch kernel
//! this CPU runs must give the same scores bit for bit.
//!
//! Needs python3 with scikit-learn (installed by `scripts/setup.sh`); `TXGUARD_PYTHON`
//! overrides the interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

use txguard_iforest::drift::TrainingProfile;
use txguard_iforest::{FeatureColumn, Forest, ScoringKernel};

const TOL: f64 = 1e-12;

fn read_f64(p: &Path) -> Vec<f64> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn python() -> String {
    std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn make_cases(dir: &Path, rows: usize) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity/make_cases.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir)
        .arg("--rows")
        .arg(rows.to_string())
        .output()
        .expect("python3 must be installed (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "make_cases.py failed (is scikit-learn installed? run scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn scores_equal_scikit_learn_on_every_configuration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    make_cases(tmp.path(), 100_000);
    let listing: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json parses");
    let cases = listing.as_array().expect("a list");
    assert!(cases.len() >= 15, "expected the full case list");
    let mut report = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let nf = case["features"].as_u64().expect("features") as usize;
        let d = tmp.path().join(name);
        let mut forest = Forest::load(d.join("model.json"))
            .unwrap_or_else(|e| panic!("case {name}: model does not load: {e}"));
        // The exporter's drift profile is the one txguard train makes of the same data.
        let train = read_f64(&d.join("train.bin"));
        let (train, rows) = (&train, train.len() / nf);
        let mine = TrainingProfile::from_columns(
            (0..nf).map(|j| (0..rows).map(move |r| f64::from(train[r * nf + j] as f32))),
        );
        let theirs = forest
            .card()
            .training_profile
            .as_ref()
            .unwrap_or_else(|| panic!("case {name}: the exporter wrote no training profile"));
        assert_eq!(
            mine.features, theirs.features,
            "case {name}: export_sklearn.py's deciles differ from txguard's"
        );
        let x = read_f64(&d.join("X.bin"));
        let want_s = read_f64(&d.join("score_samples.bin"));
        let want_d = read_f64(&d.join("decision.bin"));
        let want_p: Vec<i8> = std::fs::read(d.join("predict.bin"))
            .expect("predict.bin")
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let n = want_s.len();
        assert!(n >= 100_000, "case {name}: only {n} rows");
        assert_eq!(x.len(), n * nf);

        // Batch, row-major.
        let mut got = vec![0.0; n];
        forest.score_samples_rows(&x, &mut got).expect("score rows");
        // Every other kernel: the same bits.
        let chosen = forest.kernel();
        for (kname, k) in ScoringKernel::ALL {
            if !k.is_supported() || k == chosen {
                continue;
            }
            forest.set_kernel(k).expect("supported kernel");
            let mut other = vec![0.0; n];
            forest
                .score_samples_rows(&x, &mut other)
                .expect("score rows");
            if let Some(r) = (0..n).find(|&r| other[r].to_bits() != got[r].to_bits()) {
                panic!(
                    "case {name}, row {r}: kernel {kname} gives {} where {} gives {}",
                    other[r],
                    chosen.name(),
                    got[r]
                );
            }
        }
        forest.set_kernel(chosen).expect("supported kernel");
        // Batch, f64 columns.
        let cols: Vec<Vec<f64>> = (0..nf)
            .map(|j| (0..n).map(|r| x[r * nf + j]).collect())
            .collect();
        let views: Vec<FeatureColumn<'_>> = cols.iter().map(|c| FeatureColumn::F64(c)).collect();
        let mut got_cols = vec![0.0; n];
        forest
            .score_samples_columns(&views, None, &mut got_cols)
            .expect("score columns");
        // Batch, f32 columns (the cast scikit-learn does anyway).
        let cols32: Vec<Vec<f32>> = cols
            .iter()
            .map(|c| c.iter().map(|&v| v as f32).collect())
            .collect();
        let views32: Vec<FeatureColumn<'_>> =
            cols32.iter().map(|c| FeatureColumn::F32(c)).collect();
        let mut got32 = vec![0.0; n];
        forest
            .score_samples_columns(&views32, None, &mut got32)
            .expect("score f32 columns");

        let mut max_diff = 0f64;
        for r in 0..n {
            for (what, v) in [
                ("rows", got[r]),
                ("columns", got_cols[r]),
                ("f32", got32[r]),
            ] {
                let diff = (v - want_s[r]).abs();
                assert!(
                    diff <= TOL,
                    "case {name}, row {r} ({what}): txguard {v} vs sklearn {}",
                    want_s[r]
                );
                max_diff = max_diff.max(diff);
            }
            // Single-row path on a sample of rows.
            if r % 97 == 0 {
                let s = forest
                    .score_row(&x[r * nf..(r + 1) * nf])
                    .expect("finite row scores");
                assert!(
                    (s.score_samples - want_s[r]).abs() <= TOL,
                    "case {name} row {r}"
                );
                assert!((s.decision - want_d[r]).abs() <= TOL, "case {name} row {r}");
                assert_eq!(s.is_anomaly(), want_p[r] == -1, "case {name} row {r}");
            }
            let decision = got[r] - forest.offset();
            assert!(
                (decision - want_d[r]).abs() <= TOL,
                "case {name}, row {r}: decision {decision} vs sklearn {}",
                want_d[r]
            );
            // predict follows the sign of sklearn's own decision value.
            assert_eq!(
                want_d[r] < 0.0,
                want_p[r] == -1,
                "sklearn predict/decision disagree"
            );
            if want_d[r].abs() > TOL {
                assert_eq!(
                    decision < 0.0,
                    want_p[r] == -1,
                    "case {name}, row {r}: predict"
                );
            }
        }
        report.push(format!("{name}: {n} rows, max |diff| {max_diff:e}"));
    }
    eprintln!("{}", report.join("\n"));
}
