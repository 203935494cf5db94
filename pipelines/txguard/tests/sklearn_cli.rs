//! The scikit-learn path a user takes: fit in Python, dump with joblib or pickle, convert with
//! `python models/export_sklearn.py`, score with `txguard score`; the scores equal sklearn's.
//! Needs python3 with scikit-learn (scripts/setup.sh); TXGUARD_PYTHON overrides.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn python() -> String {
    std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn export(args: &[&str]) -> Output {
    Command::new(python())
        .arg(repo().join("models/export_sklearn.py"))
        .args(args)
        .output()
        .expect("python3 (run scripts/setup.sh)")
}

fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sklearn/fit_and_dump.py"))
        .arg(dir.path())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "fixture failed (scikit-learn installed? scripts/setup.sh):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn joblib_and_pickle_exports_score_like_sklearn() {
    let dir = fixture();
    let d = dir.path();
    let expected: Vec<f64> = std::fs::read_to_string(d.join("expected_score.txt"))
        .expect("expected")
        .lines()
        .map(|l| l.parse().expect("float"))
        .collect();
    let predict: Vec<i32> = std::fs::read_to_string(d.join("expected_predict.txt"))
        .expect("expected")
        .lines()
        .map(|l| l.parse().expect("int"))
        .collect();
    for src in ["model.joblib", "model.pkl"] {
        let model = d.join(format!("{src}.json"));
        let out = export(&[
            &s(&d.join(src)),
            &s(&model),
            "--features",
            "amount,velocity,distance",
            "--name",
            "from_sklearn",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("40 trees"));
        let scored = d.join(format!("{src}.csv"));
        let st = Command::new(env!("CARGO_BIN_EXE_txguard"))
            .args([
                "score",
                "--model",
                &s(&model),
                "--input",
                &s(&d.join("input.csv")),
            ])
            .args(["--output", &s(&scored)])
            .output()
            .expect("txguard");
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
        let text = std::fs::read_to_string(&scored).expect("scored csv");
        let mut n = 0;
        for (i, line) in text.lines().skip(1).enumerate() {
            let f: Vec<&str> = line.split(',').collect();
            let score: f64 = f[3].parse().expect("score");
            assert!(
                (score - expected[i]).abs() <= 1e-12,
                "{src} row {i}: txguard {score} vs sklearn {}",
                expected[i]
            );
            assert_eq!(f[4] == "true", predict[i] == -1, "{src} row {i}: predict");
            n += 1;
        }
        assert_eq!(n, expected.len());
    }
}

#[test]
fn export_errors_say_what_to_do() {
    let dir = fixture();
    let d = dir.path();
    let fail = |args: &[&str]| {
        let out = export(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} must fail with exit 2");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let dst = s(&d.join("x.json"));
    let e = fail(&[&s(&d.join("model.joblib")), &dst]);
    assert!(e.contains("pass --features a,b,..."), "{e}");
    let e = fail(&[&s(&d.join("model.joblib")), &dst, "--features", "a,b"]);
    assert!(
        e.contains("2 feature names given but the model has 3 features"),
        "{e}"
    );
    let e = fail(&[&s(&d.join("unfitted.pkl")), &dst, "--features", "a,b,c"]);
    assert!(e.contains("not fitted"), "{e}");
    let e = fail(&[&s(&d.join("not_a_forest.pkl")), &dst, "--features", "a,b,c"]);
    assert!(
        e.contains("expected a fitted sklearn.ensemble.IsolationForest, got dict"),
        "{e}"
    );
    let e = fail(&[&s(&d.join("garbage.pkl")), &dst]);
    assert!(e.contains("not a joblib or pickle file"), "{e}");
    let e = fail(&[&s(&d.join("missing.pkl")), &dst]);
    assert!(e.contains("no such file"), "{e}");
}
