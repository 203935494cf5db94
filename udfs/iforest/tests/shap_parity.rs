//! Explanations equal the reference: `tests/parity/make_shap_cases.py` fits scikit-learn
//! `IsolationForest`s over the parity configurations (bootstrap, feature subsets, ties,
//! constant columns, deep trees…), exports them with `models/export_sklearn.py` and explains
//! rows with the `shap` package's `TreeExplainer`; [`Forest::explain_row`] must give every
//! feature's contribution to 1e-9, the expected value must equal the cover-weighted mean leaf
//! value (shap's own `expected_value` where there is no bootstrap; with bootstrap shap reports
//! an unweighted one its contributions do not add up to, see the script), and the
//! contributions must sum to the row's mean path length minus the expected value.
//!
//! Needs python3 with scikit-learn and shap (installed by `scripts/setup.sh`);
//! `TXGUARD_PYTHON` overrides the interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

use txguard_iforest::Forest;
use txguard_iforest::tree::average_path_length;

const TOL: f64 = 1e-9;

fn read_f64(p: &Path) -> Vec<f64> {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    b.chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

#[test]
fn explanations_equal_shap_tree_explainer_on_every_configuration() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/parity/make_shap_cases.py");
    let out = Command::new(std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(&script)
        .arg(tmp.path())
        .args(["--rows", "400"])
        .output()
        .expect("python3 must be installed (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "make_shap_cases.py failed (are scikit-learn and shap installed? run scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("cases.json")).expect("cases.json"),
    )
    .expect("cases.json parses");
    let cases = listing.as_array().expect("a list");
    assert!(
        cases.len() >= 20,
        "expected the full case list, got {}",
        cases.len()
    );
    let (mut rows_checked, mut unscored) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let nf = case["features"].as_u64().expect("features") as usize;
        let expected = case["cover_expected_value"]
            .as_f64()
            .expect("cover_expected_value");
        let shap_expected = case["expected_value"].as_f64().expect("expected_value");
        if !case["bootstrap"].as_bool().expect("bootstrap") {
            assert!(
                (expected - shap_expected).abs() <= TOL,
                "case {name}: the script's cover-weighted expected value {expected} is not shap's {shap_expected}"
            );
        }
        let d = tmp.path().join(name);
        let forest = Forest::load(d.join("model.json"))
            .unwrap_or_else(|e| panic!("case {name}: model does not load: {e}"));
        let x = read_f64(&d.join("X.bin"));
        let want = read_f64(&d.join("shap.bin"));
        assert_eq!(x.len(), want.len(), "case {name}: X and shap shapes differ");
        let c = average_path_length(forest.max_samples() as f64);
        for (r, (row, shap)) in x.chunks_exact(nf).zip(want.chunks_exact(nf)).enumerate() {
            let Some(got) = forest.explain_row(row) else {
                // Values outside f32 have no score, so no explanation (shap would explain ±inf).
                assert!(
                    forest.score_row(row).is_none(),
                    "case {name} row {r}: scored but not explained"
                );
                unscored += 1;
                continue;
            };
            assert!(
                (got.expected - expected).abs() <= TOL,
                "case {name}: expected value {} vs the cover-weighted {expected}",
                got.expected
            );
            for (j, (g, w)) in got.contributions.iter().zip(shap).enumerate() {
                assert!(
                    (g - w).abs() <= TOL,
                    "case {name} row {r} feature {j}: {g} vs shap's {w}\nrow {row:?}"
                );
            }
            let sum: f64 = got.contributions.iter().sum();
            assert!(
                (got.expected + sum - got.path_length).abs() <= TOL,
                "case {name} row {r}: expected {} + contributions {sum} != path length {}",
                got.expected,
                got.path_length
            );
            // The explained path length is the one the score comes from.
            let score = forest.score_row(row).expect("explained rows score");
            let from_path = -(2f64.powf(-got.path_length / c));
            if c > 0.0 {
                assert!(
                    (score.score_samples - from_path).abs() <= 1e-12,
                    "case {name} row {r}: score {} but path length gives {from_path}",
                    score.score_samples
                );
            }
            rows_checked += 1;
        }
    }
    assert!(rows_checked > 5000, "only {rows_checked} rows compared");
    eprintln!("{rows_checked} rows equal shap's explanations ({unscored} unscored rows skipped)");
}
