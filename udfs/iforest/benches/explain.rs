//! Cost of explaining one row (exact TreeSHAP) on the default model, by algorithm:
//!
//!     cargo bench -p txguard-iforest --bench explain [-- --rows N] [-- --model PATH]
//!
//! Rows are drawn uniformly over each feature's split thresholds, so both sides of the
//! splits are taken. Prints µs per row for
//! Linear TreeSHAP (what `Forest::explain_row` runs) and Algorithm 2 (shap's), and checks
//! they agree.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use txguard_iforest::Forest;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rows: usize = value("--rows").map_or(2000, |v| v.parse().expect("--rows N"));
    let model = value("--model").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/default.json"),
        PathBuf::from,
    );
    let forest = Forest::load(&model).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
    let nf = forest.n_features();
    // Each feature's values span its split thresholds, a little beyond either end.
    let mut range = vec![(f64::INFINITY, f64::NEG_INFINITY); nf];
    for t in &forest.model_file().trees {
        for (&f, &th) in t.feature.iter().zip(&t.threshold) {
            if f >= 0 {
                let r = &mut range[f as usize];
                *r = (r.0.min(th), r.1.max(th));
            }
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f64> = (0..rows * nf)
        .map(|i| {
            let (lo, hi) = range[i % nf];
            if lo > hi {
                return 0.0; // no split on it
            }
            let pad = (hi - lo).max(1e-9) * 0.05;
            rng.random_range(lo - pad..=hi + pad)
        })
        .collect();
    let time = |f: &dyn Fn(&[f64]) -> f64| {
        let mut best = f64::INFINITY;
        let mut check = 0.0;
        for _ in 0..3 {
            let t = Instant::now();
            check = x.chunks_exact(nf).map(|r| f(black_box(r))).sum::<f64>();
            best = best.min(t.elapsed().as_secs_f64());
        }
        (best / rows as f64 * 1e6, check)
    };
    let (linear, a) = time(&|r| forest.explain_row(r).expect("finite").contributions[0]);
    let (reference, b) = time(&|r| {
        forest
            .explain_row_reference(r)
            .expect("finite")
            .contributions[0]
    });
    println!(
        "{}: {} trees, {nf} features, {rows} rows: Linear TreeSHAP {linear:.1} µs/row, \
         Algorithm 2 {reference:.1} µs/row ({:.1}x)",
        model.display(),
        forest.n_estimators(),
        reference / linear
    );

    assert!(
        (a - b).abs() <= 1e-9 * rows as f64,
        "the algorithms disagree: {a} vs {b}"
    );
}
