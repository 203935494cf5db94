//! Cost of explaining one row (exact TreeSHAP) on the default model, by algorithm:
//!
//!     cargo bench -p txguard-iforest --bench explain [-- --rows N] [-- --model PATH]
//!
//! Rows are drawn uniformly over each feature's split thresholds, so both sides of the
//! splits are taken. Prints µs per row for what `Forest::explain_row` runs (Fast TreeSHAP v2
//! tables on the default model), Linear TreeSHAP and Algorithm 2 (shap's), and checks they
//! agree.

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
    // Each row's contributions folded into one number, so every feature's value is checked.
    let fold = |c: &[f64]| c.iter().enumerate().map(|(i, v)| v * (i + 1) as f64).sum();
    let (used, a) = time(&|r| fold(&forest.explain_row(r).expect("finite").contributions));
    let (linear, b) = time(&|r| fold(&forest.explain_row_linear(r).expect("finite").contributions));
    let (reference, c) = time(&|r| {
        fold(
            &forest
                .explain_row_reference(r)
                .expect("finite")
                .contributions,
        )
    });
    // The same rows through `explain_rows` (blocks of rows a tree at a time; spread over
    // rayon's threads: set RAYON_NUM_THREADS=1 for one core), folded alike.
    let mut best = f64::INFINITY;
    let mut d = 0.0;
    for _ in 0..3 {
        let t = Instant::now();
        d = forest
            .explain_rows(black_box(&x))
            .iter()
            .map(|e| fold(&e.as_ref().expect("finite").contributions))
            .sum::<f64>();
        best = best.min(t.elapsed().as_secs_f64());
    }
    let many = best / rows as f64 * 1e6;
    println!(
        "explain_rows on {} thread(s): {many:.1} µs/row",
        rayon::current_num_threads()
    );
    println!(
        "{}: {} trees, {nf} features, {rows} rows: {} {used:.1} µs/row, \
         Linear TreeSHAP {linear:.1} µs/row, Algorithm 2 {reference:.1} µs/row",
        model.display(),
        forest.n_estimators(),
        forest.explain_algorithm(),
    );

    for (name, v) in [
        ("explain_row", a),
        ("Linear TreeSHAP", b),
        ("explain_rows", d),
    ] {
        assert!(
            (v - c).abs() <= 1e-9 * rows as f64,
            "{name} disagrees with Algorithm 2: {v} vs {c}"
        );
    }
}
