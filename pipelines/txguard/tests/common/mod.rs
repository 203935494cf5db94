//! Helpers the end-to-end tests share: the repository root, running the `txguard` binary,
//! and reading Delta tables back with delta-rs's Python package.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `txguard args` in `dir`: (success, stdout, stderr).
pub fn txguard(dir: &Path, args: &[&str]) -> (bool, String, String) {
    txguard_with(dir, args, &[])
}

/// [`txguard`] with extra environment variables.
pub fn txguard_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run txguard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a Python test helper (`pipelines/txguard/tests/<script>`, dependencies from
/// scripts/setup.sh) and parses the JSON it prints.
pub fn python_json(script: &str, args: &[&str]) -> serde_json::Value {
    let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(py)
        .arg(repo().join("pipelines/txguard/tests").join(script))
        .args(args)
        .output()
        .expect("python3 (run scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The tables a pipeline wrote under `data`, as tests/delta/read_tables.py reports them.
pub fn read_tables(data: &Path) -> serde_json::Value {
    python_json("delta/read_tables.py", &[data.to_str().expect("utf8")])
}

/// `txguard run sql/<pipeline> --model models/default.json --no-ui --quiet --set …` in `dir`.
pub fn run_pipeline(dir: &Path, pipeline: &str, sets: &[String]) -> (bool, String, String) {
    let pipeline = repo().join("sql").join(pipeline);
    let model = repo().join("models/default.json");
    let mut args = vec![
        "run",
        pipeline.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
        "--no-ui",
        "--quiet",
    ];
    for s in sets {
        args.extend(["--set", s.as_str()]);
    }
    txguard(dir, &args)
}
