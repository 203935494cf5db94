//! Differential test of the batch kernels: forests of many shapes (1 to 16 features, depths 3
//! to 8 and deeper, 1 to 40 trees, so tree groups of the rank kernel end anywhere), fitted by
//! txguard itself, score rows — many lying exactly on split thresholds — with the same bits
//! from every kernel this CPU runs, and within 1e-12 of scikit-learn's rule applied tree by
//! tree from the model's arrays (f32-cast input, `x <= threshold` goes left, per-leaf path
//! lengths summed in f64).

use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use txguard_iforest::{FitParams, Forest, MaxSamples, ScoringKernel, TrainingSet, fit};

/// scikit-learn's `score_samples` from the arrays, one tree at a time.
fn reference(forest: &Forest, row: &[f64]) -> f64 {
    let file = forest.model_file();
    let x: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    let sum: f64 = file
        .trees
        .iter()
        .map(|t| t.leaf_values()[t.apply(&x)])
        .sum();
    let c = txguard_iforest::tree::average_path_length(file.max_samples as f64);
    -(2f64.powf(-(sum / (file.trees.len() as f64 * c))))
}

#[test]
fn every_kernel_gives_the_same_bits_on_forests_of_every_shape() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let kernels: Vec<(&str, ScoringKernel)> = ScoringKernel::ALL
        .into_iter()
        .filter(|(_, k)| k.is_supported())
        .collect();
    let mut checked = 0;
    for &nf in &[1usize, 2, 3, 8, 9, 13, 16, 17] {
        for &(samples, trees) in &[(8usize, 1usize), (40, 9), (256, 17), (256, 40), (600, 3)] {
            let n = samples.max(300);
            // Clustered values with ties (rounded), so splits land on repeated values.
            let train = Array2::from_shape_fn((n, nf), |(r, j)| {
                let centre = ((r % 3) * 4 + j) as f64;
                (centre + rng.random::<f64>() * 2.0).round() / 4.0 + (j as f64) * 1e-3
            });
            let names: Vec<String> = (0..nf).map(|j| format!("f{j}")).collect();
            let params = FitParams {
                n_estimators: trees,
                max_samples: MaxSamples::Count(samples as u64),
                random_state: (nf * 1000 + samples) as u64,
                ..Default::default()
            };
            let mut forest = fit(
                TrainingSet {
                    x: train.view(),
                    features: &names,
                    labels: None,
                    source: None,
                },
                &params,
            )
            .expect("fit");
            // Rows: training rows, thresholds exactly, their f32 neighbours, random values.
            let thresholds: Vec<(usize, f64)> = forest
                .model_file()
                .trees
                .iter()
                .flat_map(|t| {
                    t.feature
                        .iter()
                        .zip(&t.threshold)
                        .filter(|(f, _)| **f >= 0)
                        .map(|(&f, &v)| (f as usize, v))
                        .collect::<Vec<_>>()
                })
                .collect();
            let rows = 1000;
            let mut x = vec![0f64; rows * nf];
            for r in 0..rows {
                for j in 0..nf {
                    x[r * nf + j] = match r % 4 {
                        0 => train[[r % n, j]],
                        1 | 2 if !thresholds.is_empty() => {
                            let (f, t) = thresholds[rng.random_range(0..thresholds.len())];
                            let v = if f == j { t } else { train[[r % n, j]] };
                            let v32 = v as f32;
                            f64::from(if r % 4 == 1 { v32 } else { v32.next_up() })
                        }
                        _ => rng.random::<f64>() * 6.0 - 1.0,
                    };
                }
            }
            let mut first: Option<Vec<f64>> = None;
            for (name, k) in &kernels {
                forest.set_kernel(*k).expect("supported");
                let mut got = vec![0.0; rows];
                forest.score_samples_rows(&x, &mut got).expect("scores");
                match &first {
                    None => {
                        for (r, g) in got.iter().enumerate() {
                            let want = reference(&forest, &x[r * nf..(r + 1) * nf]);
                            assert!(
                                (g - want).abs() <= 1e-12,
                                "{nf} features, {samples} samples, {trees} trees, row {r}: {g} vs {want}"
                            );
                        }
                        first = Some(got);
                    }
                    Some(f) => {
                        if let Some(r) = (0..rows).find(|&r| f[r].to_bits() != got[r].to_bits()) {
                            panic!(
                                "{nf} features, {samples} samples, {trees} trees: kernel {name} gives {} at row {r}, {} gives {}",
                                got[r], kernels[0].0, f[r]
                            );
                        }
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 40);
}
