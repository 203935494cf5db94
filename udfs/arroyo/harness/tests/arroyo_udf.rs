//! The generated Arroyo UDFs, compiled as cdylibs against crates.io arroyo-udf-plugin 0.2.0
//! and called through Arroyo's FFI, return exactly the native scorer's values, including the
//! NULL policy.

use std::path::PathBuf;
use std::sync::Arc;

use arroyo_udf_plugin::arrow::array::{Array, ArrayRef, Float64Array};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txguard_arroyo_harness::{LoadedUdf, build_udf};
use txguard_iforest::arroyo::{UdfKind, udf_source};
use txguard_iforest::{Contamination, FitParams, Forest, TrainingSet, fit};

const FEATURES: usize = 6;

fn model() -> Forest {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let x = Array2::from_shape_fn((5000, FEATURES), |(_, j)| {
        rng.random::<f64>() * 10f64.powi(j as i32 - 2)
    });
    let names: Vec<String> = (0..FEATURES).map(|j| format!("feature {j}")).collect();
    fit(
        TrainingSet {
            x: x.view(),
            features: &names,
            labels: None,
            source: None,
        },
        &FitParams {
            n_estimators: 60,
            contamination: Contamination::Fraction(0.05),
            random_state: 5,
            ..Default::default()
        },
    )
    .expect("fit")
}

/// Rows to score: in range, outliers, and rows with a NULL, NaN or infinity.
fn rows(n: usize) -> (Vec<Vec<Option<f64>>>, Vec<ArrayRef>) {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let rows: Vec<Vec<Option<f64>>> = (0..n)
        .map(|r| {
            (0..FEATURES)
                .map(|j| {
                    let scale = 10f64.powi(j as i32 - 2);
                    match (r % 50, j) {
                        (7, 1) => None,
                        (8, 2) => Some(f64::NAN),
                        (9, 0) => Some(f64::INFINITY),
                        (10, 3) => Some(1e300),
                        _ => {
                            Some(rng.random::<f64>() * scale * if r % 13 == 0 { 3.0 } else { 1.0 })
                        }
                    }
                })
                .collect()
        })
        .collect();
    let arrays = (0..FEATURES)
        .map(|j| Arc::new(Float64Array::from_iter(rows.iter().map(|r| r[j]))) as ArrayRef)
        .collect();
    (rows, arrays)
}

#[test]
fn generated_udfs_match_the_native_scorer() {
    let forest = model();
    // Build where this harness was built, so the arrow 51 artifacts are reused.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let (rows, arrays) = rows(20_000);
    for (kind, name) in [
        (UdfKind::Score, "iforest_score"),
        (UdfKind::Decision, "iforest_decision"),
    ] {
        let src = udf_source(&forest, kind, name);
        let lib = build_udf(&src, name, &target.join("udf-crates").join(name), &target)
            .unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: built just above from a generated #[udf] file.
        let udf = unsafe { LoadedUdf::load(&lib) }.expect("load");
        let out = udf.call(&arrays).expect("call");
        assert_eq!(out.len(), rows.len());
        let (mut scored, mut nulls, mut flagged) = (0, 0, 0);
        for (r, row) in rows.iter().enumerate() {
            let native = row
                .iter()
                .map(|v| v.ok_or(()))
                .collect::<Result<Vec<f64>, ()>>()
                .ok()
                .and_then(|vals| forest.score_row(&vals));
            match (kind, native) {
                (_, None) => {
                    assert!(out.is_null(r), "{name}: row {r} {row:?} must be NULL");
                    nulls += 1;
                }
                (UdfKind::Score, Some(s)) => {
                    let got = out.as_any().downcast_ref::<Float64Array>().expect("f64");
                    assert_eq!(got.value(r), s.anomaly_score(), "{name}: row {r}");
                    scored += 1;
                }
                (UdfKind::Decision, Some(s)) => {
                    let got = out.as_any().downcast_ref::<Float64Array>().expect("f64");
                    assert_eq!(got.value(r), s.decision, "{name}: row {r}");
                    // `iforest_decision(...) < 0` is the Arroyo spelling of iforest_is_anomaly
                    assert_eq!(got.value(r) < 0.0, s.is_anomaly(), "{name}: row {r}");
                    flagged += usize::from(s.is_anomaly());
                    scored += 1;
                }
            }
        }
        assert_eq!(nulls, 4 * rows.len() / 50, "{name}: NULL rows");
        if kind == UdfKind::Decision {
            assert!(flagged > 0, "some rows must be anomalies");
        }
        eprintln!("{name}: {scored} rows equal to the native scorer, {nulls} NULL");
    }
}

#[test]
fn header_is_parsed_like_arroyo() {
    let deps = txguard_arroyo_harness::header_dependencies(
        "/*\n[dependencies]\nserde = \"1\"\n*/\nfn x() {}",
    )
    .expect("header");
    assert_eq!(deps, "serde = \"1\"");
    assert!(txguard_arroyo_harness::header_dependencies("fn x() {}").is_err());
}
