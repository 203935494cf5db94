//! Scoring and training speed against scikit-learn on the same data and model, in one run:
//! 1M rows x 8 features, 100 trees, max_samples 256, one core.
//!
//!     cargo bench -p txguard-iforest --bench vs_sklearn [-- --rows N]
//!
//! Runs `benches/sklearn_bench.py` (python3 with scikit-learn; TXGUARD_PYTHON overrides) to
//! make the data, fit and time scikit-learn, then times txguard on the exported model and
//! checks the scores agree; where the `shap` package is installed, explanations are timed and
//! compared against its `TreeExplainer` too. Prints a Markdown table for docs/benchmarks.md.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ndarray::ArrayView2;
use txguard_iforest::{
    FeatureColumn, FitParams, Forest, MaxSamples, ScoringKernel, TrainingSet, fit,
};

fn read_f64(p: &Path) -> Vec<f64> {
    std::fs::read(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..n {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.expect("n >= 1"))
}

fn main() {
    let mut rows = 1_000_000usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rows") {
        rows = args[i + 1].parse().expect("--rows N");
    }
    let dir = std::env::temp_dir().join("txguard-bench-iforest");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/sklearn_bench.py");
    let python = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("running scikit-learn on {rows} rows ...");
    let out = Command::new(python)
        .arg(&script)
        .arg(&dir)
        .arg("--rows")
        .arg(rows.to_string())
        .output()
        .expect("python3 with scikit-learn (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sk: serde_json::Value =
        serde_json::from_slice(out.stdout.trim_ascii()).expect("timings JSON");
    let x = read_f64(&dir.join("X.bin"));
    let want = read_f64(&dir.join("score_samples.bin"));
    let mut forest = Forest::load(dir.join("model.json")).expect("model");
    let nf = forest.n_features();
    assert_eq!(x.len(), rows * nf);

    // Batch scoring, row-major input.
    let mut got = vec![0.0; rows];
    let (t_rows, ()) = best_of(5, || {
        forest
            .score_samples_rows(black_box(&x), &mut got)
            .expect("score")
    });
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        max_diff <= 1e-12,
        "scores differ from sklearn by {max_diff}"
    );

    // Every kernel this CPU runs, round-robin so a noisy neighbour hits them alike; each
    // must give the same scores bit for bit.
    let chosen = forest.kernel();
    let kernels: Vec<(&str, ScoringKernel)> = ScoringKernel::ALL
        .into_iter()
        .filter(|(_, k)| k.is_supported())
        .collect();
    let mut best = vec![f64::INFINITY; kernels.len()];
    let mut other = vec![0.0; rows];
    for _ in 0..5 {
        for (b, (name, k)) in best.iter_mut().zip(&kernels) {
            forest.set_kernel(*k).expect("supported kernel");
            let t = Instant::now();
            forest
                .score_samples_rows(black_box(&x), &mut other)
                .expect("score");
            *b = b.min(t.elapsed().as_secs_f64());
            assert!(
                other
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "kernel {name} gives other scores"
            );
        }
    }
    forest.set_kernel(chosen).expect("supported kernel");

    // Batch scoring, f64 columns (the Arrow/UDF path).
    let cols: Vec<Vec<f64>> = (0..nf)
        .map(|j| (0..rows).map(|r| x[r * nf + j]).collect())
        .collect();
    let views: Vec<FeatureColumn<'_>> = cols.iter().map(|c| FeatureColumn::F64(c)).collect();
    let (t_cols, ()) = best_of(5, || {
        forest
            .score_samples_columns(black_box(&views), None, &mut got)
            .expect("score")
    });

    // One row at a time.
    let k = 200_000.min(rows);
    let (t_one, acc) = best_of(5, || {
        let mut acc = 0.0;
        for r in 0..k {
            acc += forest
                .score_row(black_box(&x[r * nf..(r + 1) * nf]))
                .map_or(0.0, |s| s.score_samples);
        }
        acc
    });
    black_box(acc);
    let one_row_us = t_one / k as f64 * 1e6;

    // Explanations (TreeSHAP), one row at a time as a pipeline explains its flagged rows;
    // against shap's TreeExplainer on the same rows where shap is installed.
    let explain_rows = sk["explain_rows"]
        .as_u64()
        .map_or(2000, |n| n as usize)
        .min(rows);
    let (t_explain, explained) = best_of(3, || {
        (0..explain_rows)
            .map(|r| {
                forest
                    .explain_row(black_box(&x[r * nf..(r + 1) * nf]))
                    .expect("finite rows explain")
            })
            .collect::<Vec<_>>()
    });
    let shap_diff = sk["explain_s"].as_f64().map(|_| {
        let want = read_f64(&dir.join("shap.bin"));
        explained
            .iter()
            .flat_map(|e| e.contributions.iter())
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    });
    if let Some(d) = shap_diff {
        assert!(d <= 1e-9, "explanations differ from shap by {d}");
    }
    let explain_us = t_explain / explain_rows as f64 * 1e6;

    // Training on the same rows.
    let names: Vec<String> = forest.features().to_vec();
    let view = ArrayView2::from_shape((rows, nf), &x).expect("shape");
    let params = FitParams {
        n_estimators: 100,
        max_samples: MaxSamples::Count(256),
        n_jobs: 1,
        ..Default::default()
    };
    let ts = TrainingSet {
        x: view,
        features: &names,
        labels: None,
        source: None,
    };
    let (t_fit, _) = best_of(3, || fit(ts, &params).expect("fit"));
    let (t_fit_all, _) = best_of(3, || {
        fit(
            ts,
            &FitParams {
                n_jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
                ..params.clone()
            },
        )
        .expect("fit")
    });

    let f = |k: &str| sk[k].as_f64().expect("timing");
    let (sk_score, sk_fit, sk_one) = (f("score_s"), f("fit_s"), f("one_row_s"));
    let mrows = |t: f64| rows as f64 / t / 1e6;
    println!(
        "scikit-learn {}, {rows} rows x {nf} features, 100 trees, max_samples 256, max |score diff| {max_diff:.1e}\n",
        sk["sklearn"].as_str().unwrap_or("?")
    );
    println!("| operation | scikit-learn | txguard | speed-up |");
    println!("|---|---|---|---|");
    println!(
        "| score_samples, batch (rows/s, 1 core) | {:.3} M | {:.2} M (row-major), {:.2} M (columns) | {:.0}x / {:.0}x |",
        mrows(sk_score),
        mrows(t_rows),
        mrows(t_cols),
        sk_score / t_rows,
        sk_score / t_cols
    );
    println!(
        "| one row (latency) | {:.0} us | {:.2} us | {:.0}x |",
        sk_one * 1e6,
        one_row_us,
        sk_one * 1e6 / one_row_us
    );
    match (sk["explain_s"].as_f64(), shap_diff) {
        (Some(shap_s), Some(d)) => println!(
            "| explain one row (TreeSHAP, all {nf} features) | {:.0} us (shap {}) | {explain_us:.1} us ({:.0}x a one-row score; max |diff| {d:.1e}) | {:.0}x |",
            shap_s / explain_rows as f64 * 1e6,
            sk["shap"].as_str().unwrap_or("?"),
            explain_us / one_row_us,
            shap_s / explain_rows as f64 * 1e6 / explain_us
        ),
        _ => println!(
            "| explain one row (TreeSHAP, all {nf} features) | shap not installed | {explain_us:.1} us ({:.0}x a one-row score) | |",
            explain_us / one_row_us
        ),
    }
    println!(
        "| fit on {rows} rows | {:.3} s (n_jobs=1) | {:.3} s (1 thread), {:.3} s (all cores) | {:.1}x |",
        sk_fit,
        t_fit,
        t_fit_all,
        sk_fit / t_fit
    );
    println!(
        "\nBatch kernels on this CPU (row-major, best of 5, round-robin; the default is {}):\n",
        chosen.name()
    );
    println!("| kernel | rows/s | speed-up |");
    println!("|---|---|---|");
    for ((name, _), t) in kernels.iter().zip(&best) {
        println!("| {name} | {:.2} M | {:.0}x |", mrows(*t), sk_score / t);
    }
}
