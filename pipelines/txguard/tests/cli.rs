//! The `txguard` binary as a user runs it: train, score (CSV and Parquet), model info,
//! export-arroyo, and the errors for bad input.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use txguard_iforest::Forest;

fn txguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run txguard")
}

fn ok(args: &[&str]) -> String {
    let out = txguard(args);
    assert!(
        out.status.success(),
        "txguard {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = txguard(args);
    assert!(!out.status.success(), "txguard {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deterministic transactions: amount, count_1h, hour; every 97th is an outlier.
fn write_csv(path: &Path, rows: usize, with_null: bool) {
    let mut s = String::from("id,amount,count_1h,hour,is_fraud\n");
    for i in 0..rows {
        let outlier = i % 97 == 0;
        let amount = if outlier {
            5000.0 + i as f64
        } else {
            20.0 + (i * 37 % 100) as f64
        };
        let count = if outlier { 40 } else { i % 5 };
        let hour = if outlier { 3 } else { 9 + i % 10 };
        if with_null && i == 5 {
            let _ = writeln!(s, "{i},,{count},{hour},{}", outlier as u8);
        } else {
            let _ = writeln!(s, "{i},{amount},{count},{hour},{}", outlier as u8);
        }
    }
    std::fs::write(path, s).expect("write csv");
}

#[test]
fn train_score_info_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    write_csv(&dir.path().join("train.csv"), 3000, false);
    write_csv(&dir.path().join("score.csv"), 500, true);

    ok(&[
        "train",
        "--input",
        &d("train.csv"),
        "--features",
        "amount,count_1h,hour",
        "--label",
        "is_fraud",
        "--contamination",
        "0.02",
        "--n-estimators",
        "50",
        "--name",
        "cli_test",
        "-o",
        &d("model.json"),
    ]);
    let forest = Forest::load(d("model.json")).expect("trained model loads");
    assert_eq!(forest.features(), ["amount", "count_1h", "hour"]);
    assert_eq!(forest.n_estimators(), 50);
    let metrics = forest.card().metrics.clone().expect("labels give metrics");
    assert_eq!(metrics.labelled_rows, 3000);
    assert!(
        metrics.roc_auc.expect("auc") > 0.9,
        "outliers are easy: {metrics:?}"
    );

    let info = ok(&["model", "info", &d("model.json")]);
    assert!(info.contains(forest.version()), "{info}");
    assert!(
        info.contains("features     3 (amount, count_1h, hour)"),
        "{info}"
    );
    assert!(info.contains("ROC AUC"), "{info}");
    // The kernel that scores batches here, as the library reports it.
    let scoring = format!("scoring      {} kernel", forest.kernel_in_use().name());
    assert!(info.contains(&scoring), "{info}");

    // CSV out: every row scored like the library does; the NULL row has no score.
    ok(&[
        "score",
        "--model",
        &d("model.json"),
        "--input",
        &d("score.csv"),
        "--output",
        &d("out.csv"),
    ]);
    let text = std::fs::read_to_string(d("out.csv")).expect("out.csv");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("id,amount,count_1h,hour,is_fraud,score,is_anomaly")
    );
    let mut n = 0;
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 7, "{line}");
        if f[1].is_empty() {
            assert_eq!(
                (f[5], f[6]),
                ("", ""),
                "NULL feature gives no score: {line}"
            );
        } else {
            let row: Vec<f64> = f[1..4].iter().map(|v| v.parse().expect("number")).collect();
            let want = forest.score_row(&row).expect("score");
            let got: f64 = f[5].parse().expect("score");
            assert_eq!(got, want.anomaly_score(), "{line}");
            assert_eq!(f[6] == "true", want.is_anomaly(), "{line}");
        }
        n += 1;
    }
    assert_eq!(n, 500);

    // Parquet in and out.
    ok(&[
        "score",
        "--model",
        &d("model.json"),
        "--input",
        &d("score.csv"),
        "--output",
        &d("out.parquet"),
    ]);
    ok(&[
        "score",
        "--model",
        &d("model.json"),
        "--input",
        &d("train.csv"),
        "--output",
        &d("train_scored.parquet"),
    ]);
    let file = std::fs::File::open(d("out.parquet")).expect("parquet");
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("reader");
    let schema = reader.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "amount",
            "count_1h",
            "hour",
            "is_fraud",
            "score",
            "is_anomaly"
        ]
    );
    let rows: usize = reader
        .build()
        .expect("build")
        .map(|b| b.expect("batch").num_rows())
        .sum();
    assert_eq!(rows, 500);

    // Arroyo UDF export.
    ok(&[
        "model",
        "export-arroyo",
        &d("model.json"),
        "--function",
        "decision",
        "-o",
        &d("udf.rs"),
    ]);
    let udf = std::fs::read_to_string(d("udf.rs")).expect("udf.rs");
    assert!(udf.starts_with("/*\n[dependencies]\n*/\n"));
    assert!(udf.contains("use arroyo_udf_plugin::udf;"));
    assert!(udf.contains("#[udf]\npub fn iforest_decision(amount_0: f64, count_1h_1: f64, hour_2: f64) -> Option<f64>"));
    assert_eq!(udf.matches("#[udf]").count(), 1);
}

#[test]
fn errors_name_the_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    write_csv(&dir.path().join("t.csv"), 300, false);
    ok(&[
        "train",
        "--input",
        &d("t.csv"),
        "--features",
        "amount,hour",
        "-o",
        &d("m.json"),
    ]);

    let e = fails(&[
        "train",
        "--input",
        &d("t.csv"),
        "--features",
        "amount,nope",
        "-o",
        &d("x.json"),
    ]);
    assert!(
        e.contains("no column \"nope\"; the file has: id, amount, count_1h, hour, is_fraud"),
        "{e}"
    );

    std::fs::write(d("other.csv"), "amount,speed\n1,2\n").expect("write");
    let e = fails(&[
        "score",
        "--model",
        &d("m.json"),
        "--input",
        &d("other.csv"),
        "--output",
        &d("o.csv"),
    ]);
    assert!(e.contains("missing column(s) hour"), "{e}");

    let e = fails(&[
        "score",
        "--model",
        &d("m.json"),
        "--input",
        &d("t.txt"),
        "--output",
        &d("o.csv"),
    ]);
    assert!(e.contains("no such file"), "{e}");
    std::fs::write(d("t.txt"), "x").expect("write");
    let e = fails(&[
        "score",
        "--model",
        &d("m.json"),
        "--input",
        &d("t.txt"),
        "--output",
        &d("o.csv"),
    ]);
    assert!(
        e.contains("unknown file type; use a .csv or .parquet file"),
        "{e}"
    );

    let text = std::fs::read_to_string(d("m.json")).expect("model");
    std::fs::write(d("trunc.json"), &text[..100]).expect("write");
    let e = fails(&["model", "info", &d("trunc.json")]);
    assert!(
        e.contains("trunc.json: not a txguard forest model: the file ends early"),
        "{e}"
    );

    let e = fails(&[
        "train",
        "--input",
        &d("t.csv"),
        "--features",
        "amount",
        "--contamination",
        "0.9",
        "-o",
        &d("x.json"),
    ]);
    assert!(e.contains("contamination"), "{e}");

    let e = fails(&["model", "export-arroyo", &d("m.json"), "--name", "Bad-Name"]);
    assert!(e.contains("--name \"Bad-Name\""), "{e}");
}

#[test]
fn help_describes_commands() {
    let h = ok(&["--help"]);
    for cmd in ["score", "train", "model"] {
        assert!(h.contains(cmd), "{h}");
    }
    let h = ok(&["score", "--help"]);
    assert!(
        h.contains("columns are matched to the model's features by name"),
        "{h}"
    );
}

#[test]
fn generate_writes_contract_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("tx.jsonl");
    let p = out.to_string_lossy().into_owned();
    ok(&[
        "generate", "--count", "2000", "--users", "100", "--seed", "9", "-o", &p,
    ]);
    let first = std::fs::read_to_string(&out).expect("jsonl");
    assert_eq!(first.lines().count(), 2000);
    // The generator's own schema reads every line back.
    let mut d = txguard_engine::decode::Decoder::new(
        txguard_connectors::generator::transaction_schema(),
        &Default::default(),
    )
    .expect("decoder");
    for (i, line) in first.lines().enumerate() {
        assert!(d.push(line.as_bytes(), "file", &i), "line {i}: {line}");
    }
    // same seed, same stream; to stdout too
    let again = ok(&[
        "generate", "--count", "2000", "--users", "100", "--seed", "9",
    ]);
    assert_eq!(again, first);
    let e = fails(&["generate", "--fraud-rate", "1.5"]);
    assert!(
        e.contains("generator option fraud_rate: 1.5 is not between 0 and 1"),
        "{e}"
    );
    let e = fails(&["generate", "--start", "yesterday"]);
    assert!(e.contains("--start \"yesterday\": use RFC 3339"), "{e}");
}

#[test]
fn validate_prints_the_dataflow_or_the_exact_mistake() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/examples/features_to_stdout.sql"
    );
    let out = ok(&["validate", example]);
    assert!(out.contains(": valid"), "{out}");
    assert!(
        out.contains("source transactions [generator, event time ts (allowed lateness 5000 ms)]"),
        "{out}"
    );
    assert!(out.contains("view   features <- transactions\n"), "{out}");
    assert!(out.contains("insert user_minute <- transactions"), "{out}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.sql");
    let text = std::fs::read_to_string(example).expect("example");
    std::fs::write(&bad, text.replace("format = 'json'", "format = 'yaml'")).expect("write");
    let e = fails(&["validate", &bad.to_string_lossy()]);
    assert!(
        e.contains("bad.sql:28:31: option format = 'yaml': expected one of json, table"),
        "{e}"
    );
}

/// `txguard … | head`: a reader that goes away is the end of the output, as ripgrep treats
/// it — exit 0, no panic, nothing on stderr. The read end is closed before the command
/// writes, so its first write meets a closed pipe every time.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pipeline = repo.join("sql/pipeline.sql");
    let model = repo.join("models/default.json");
    let (pipeline, model) = (
        pipeline.to_str().expect("utf8"),
        model.to_str().expect("utf8"),
    );
    for args in [
        vec!["validate", pipeline, "--model", model],
        vec!["model", "info", model],
        vec!["model", "info", model, "--json"],
        vec!["generate", "--count", "100000", "--output", "-"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
            .args(&args)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "txguard {args:?}: {:?}\n{stderr}",
            out.status
        );
    }
}
