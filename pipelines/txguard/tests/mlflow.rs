//! The MLflow model registry for real: a `mlflow server` on a loopback port (from the
//! virtualenv scripts/setup.sh makes), `txguard train --register` logging runs and versions
//! through the REST API (read back with MLflow's own Python client), `txguard run --model
//! models:/NAME@ALIAS` scoring with the version the alias points at, and each way a registry
//! reference goes wrong failing at start with a message that says what to do.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bounded, repo};

fn venv() -> PathBuf {
    std::env::var_os("TXGUARD_MLFLOW_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/txguard/mlflow-venv")
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A `mlflow server` with a SQLite backend and proxied artifacts in `dir`; killed on drop.
struct Server {
    child: Child,
    uri: String,
}

impl Server {
    fn start(dir: &Path) -> Self {
        let mlflow = venv().join("bin/mlflow");
        assert!(
            mlflow.exists(),
            "{} is missing: run scripts/setup.sh (it installs MLflow for this test)",
            mlflow.display()
        );
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).expect("server log");
        let child = Command::new(mlflow)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: `mlflow server` starts uvicorn and a job runner, which
            // outlive it unless the whole group is killed (each ~190 MB).
            .process_group(0)
            .spawn()
            .expect("start mlflow server");
        let s = Server {
            child,
            uri: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = format!("127.0.0.1:{port}");
        while common::try_http_get(&addr, "/health").is_none() {
            assert!(
                Instant::now() < deadline,
                "mlflow server not up within 120 s:\n{}",
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The group's id is the server's pid (process_group(0)).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `txguard args` in `dir` with `env`, within the common timeout: (success, stderr).
fn txguard(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_txguard"));
    c.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("MLFLOW_TRACKING_URI")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    bounded(c)
}

fn train(dir: &Path, uri: &str, out: &str, seed: &str) -> String {
    let pipeline = repo().join("sql/pipeline.sql");
    let (ok, err) = txguard(
        dir,
        &[
            "train",
            "--pipeline",
            pipeline.to_str().expect("utf8"),
            "--set",
            "transactions.count=4000",
            "--n-estimators",
            "40",
            "--contamination",
            "0.01",
            "--seed",
            seed,
            "-o",
            out,
            "--mlflow-uri",
            uri,
            "--register",
            "fraud",
            "--alias",
            "champion",
        ],
        &[],
    );
    assert!(ok, "train --register failed:\n{err}");
    err
}

fn model_version(dir: &Path, file: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(["model", "info", file])
        .current_dir(dir)
        .output()
        .expect("model info");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("version").map(|v| v.trim().to_string()))
        .expect("model info prints the version")
}

fn registry(uri: &str) -> serde_json::Value {
    common::python_json_with(
        &venv().join("bin/python"),
        "mlflow/registry.py",
        &[uri, "fraud", "champion"],
    )
}

#[test]
fn trained_models_are_registered_in_mlflow_and_runs_score_with_the_alias_version() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = Server::start(dir);

    // Version 1, then version 2 of another seed: the alias moves to it.
    let err = train(dir, &server.uri, "m1.json", "1");
    assert!(
        err.contains("registered model \"fraud\" version 1 (alias champion); run it with --model models:/fraud@champion"),
        "{err}"
    );
    let reg = registry(&server.uri);
    assert_eq!(reg["version"], "1");
    assert_eq!(reg["status"], "FINISHED");
    assert_eq!(reg["experiment"], "txguard");
    let local = std::fs::read_to_string(dir.join("m1.json")).expect("m1.json");
    assert_eq!(
        reg["model"].as_str(),
        Some(local.as_str()),
        "the registered file is the one written"
    );
    assert_eq!(reg["params"]["n_estimators"], "40");
    assert_eq!(reg["params"]["random_state"], "1");
    assert!(
        reg["params"]["features"]
            .as_str()
            .is_some_and(|f| f.contains("log_amount"))
    );
    for m in ["training_rows", "flagged_rate", "roc_auc", "pr_auc"] {
        assert!(
            reg["metrics"][m].is_number(),
            "metric {m}: {}",
            reg["metrics"]
        );
    }
    assert_eq!(reg["metrics"]["training_rows"], 4000.0);
    let v1 = model_version(dir, "m1.json");
    assert_eq!(reg["tags"]["txguard.model_version"], v1.as_str());
    assert_eq!(
        reg["artifacts"],
        serde_json::json!(["card.json", "model", "model/model.json"])
    );

    // The evaluation report filed with the run that trained the version.
    let (ok, err) = txguard(
        dir,
        &[
            "model",
            "evaluate",
            "--model",
            "models:/fraud@champion",
            "--pipeline",
            repo().join("sql/pipeline.sql").to_str().expect("utf8"),
            "--set",
            "transactions.count=3000",
            "-o",
            "eval",
            "--mlflow-run",
            "model",
        ],
        &[("MLFLOW_TRACKING_URI", server.uri.as_str())],
    );
    assert!(ok && err.contains("report filed with MLflow run"), "{err}");
    let reg = registry(&server.uri);
    assert_eq!(
        reg["evaluation"],
        serde_json::json!([
            "evaluation/pr.svg",
            "evaluation/report.html",
            "evaluation/report.json",
            "evaluation/roc.svg",
            "evaluation/scores.svg"
        ])
    );
    let local: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("eval/report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(reg["metrics"]["eval_roc_auc"], local["roc_auc"]);
    assert_eq!(reg["metrics"]["eval_rows"], 3000.0);

    // model info reads a registry version as it reads a file.
    let out = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args(["model", "info", "models:/fraud/1"])
        .current_dir(dir)
        .env("MLFLOW_TRACKING_URI", &server.uri)
        .output()
        .expect("model info");
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        info.contains(&format!("version      {v1}")) && info.contains("registry     version 1 of"),
        "{info}"
    );

    train(dir, &server.uri, "m2.json", "2");
    let reg = registry(&server.uri);
    assert_eq!(
        reg["version"], "2",
        "the alias points at the newest version"
    );
    let v2 = model_version(dir, "m2.json");
    assert_ne!(v1, v2);

    // A run scores with what the alias points at; models:/NAME/VERSION pins one.
    let pipeline = repo().join("sql/pipeline.sql");
    let pipeline = pipeline.to_str().expect("utf8");
    let env = [("MLFLOW_TRACKING_URI", server.uri.as_str())];
    for (model, want, data) in [
        ("models:/fraud@champion", &v2, "run-alias"),
        ("models:/fraud/1", &v1, "run-v1"),
    ] {
        let run_dir = dir.join(data);
        std::fs::create_dir_all(&run_dir).expect("run dir");
        let (ok, err) = txguard(
            &run_dir,
            &[
                "run",
                pipeline,
                "--model",
                model,
                "--set",
                "transactions.count=2000",
                "--no-ui",
                "--no-checkpoints",
            ],
            &env,
        );
        assert!(ok, "run --model {model} failed:\n{err}");
        assert!(
            err.contains(&format!("model {model}: registered version")),
            "{err}"
        );
        let versions = common::python_json(
            "delta/model_versions.py",
            &[run_dir
                .join("data/transactions_scored")
                .to_str()
                .expect("utf8")],
        );
        let versions: Vec<String> = serde_json::from_value(versions).expect("strings");
        assert_eq!(versions.len(), 1, "{versions:?}");
        assert!(
            versions[0].contains(want.as_str()),
            "{model}: scored by {versions:?}, want {want}"
        );
    }
}

#[test]
fn bad_registry_references_fail_at_start_saying_what_to_do() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = Server::start(dir);
    let uri = server.uri.as_str();
    let pipeline = repo().join("sql/pipeline.sql");
    let pipeline = pipeline.to_str().expect("utf8");
    let validate = |model: &str, env: &[(&str, &str)]| {
        let (ok, err) = txguard(dir, &["validate", pipeline, "--model", model], env);
        assert!(!ok, "validate --model {model} should fail:\n{err}");
        err
    };
    train(dir, uri, "m.json", "0");
    let env = [("MLFLOW_TRACKING_URI", uri)];

    let e = validate("models:/fraud@nope", &env);
    assert!(
        e.contains("--model models:/fraud@nope: resolving alias \"nope\" of model \"fraud\"")
            && e.contains("alias nope not found"),
        "{e}"
    );
    let e = validate("models:/fraud/99", &env);
    assert!(e.contains("version 99") && e.contains("not found"), "{e}");
    let e = validate("models:/nosuch@champion", &env);
    assert!(e.contains("nosuch"), "{e}");
    let e = validate("models:/fraud", &env);
    assert!(
        e.contains("--model models:/fraud: not a model URI") && e.contains("models:/NAME@ALIAS"),
        "{e}"
    );
    let e = validate("models:/fraud@champion", &[]);
    assert!(
        e.contains("set MLFLOW_TRACKING_URI=http://HOST:PORT"),
        "{e}"
    );

    // --mlflow-run model needs a registry model.
    let (ok, e) = txguard(
        dir,
        &[
            "model",
            "evaluate",
            "--model",
            "m.json",
            "--pipeline",
            pipeline,
            "-o",
            "eval",
            "--mlflow-run",
            "model",
        ],
        &env,
    );
    assert!(
        !ok && e.contains("--mlflow-run model: the --model is not a models:/ URI"),
        "{e}"
    );

    // Nothing listens there: a clear error, not a hang.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let e = validate(
        "models:/fraud@champion",
        &[("MLFLOW_TRACKING_URI", &closed)],
    );
    assert!(
        e.contains(&format!("MLflow server at {closed}: cannot connect")),
        "{e}"
    );
    let (ok, e) = txguard(
        dir,
        &[
            "train",
            "--pipeline",
            pipeline,
            "--set",
            "transactions.count=500",
            "--n-estimators",
            "5",
            "-o",
            "x.json",
            "--mlflow-uri",
            &closed,
            "--register",
            "fraud",
        ],
        &[],
    );
    assert!(!ok && e.contains("cannot connect"), "{e}");

    // Credentials never go in the URI (they would be printed).
    let e = validate(
        "models:/fraud@champion",
        &[("MLFLOW_TRACKING_URI", "http://me:hunter2@127.0.0.1:1")],
    );
    assert!(
        e.contains("credentials in the URI") && !e.contains("hunter2"),
        "{e}"
    );
}

/// The model version a running pipeline scores with now, as `/api/v1/models` says.
fn running_version(run: &common::Run) -> serde_json::Value {
    let (_, body) = common::http_get(&run.addr, "/api/v1/models");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["models"][0]["model"]["version"].clone()
}

/// Rows the run's `transactions_scored` sink has committed.
fn committed(run: &common::Run) -> u64 {
    common::committed_rows(run, "transactions_scored")
}

/// Waits (≤ 90 s) until `f` holds.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !f() {
        assert!(Instant::now() < deadline, "not within 90 s: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A running pipeline follows its alias: moving `champion` to a new version swaps it in
/// (polled) without a restart. With the registry gone, a restart continues with the version
/// its checkpoint was scored with, from the copy kept beside the checkpoints.
#[test]
fn a_running_pipeline_follows_its_alias_and_restarts_without_the_registry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let server = Server::start(dir);
    train(dir, &server.uri, "m1.json", "1");
    let v1 = model_version(dir, "m1.json");
    let uri = Path::new("models:/fraud@champion");
    let tracking = server.uri.clone();
    let env = [("MLFLOW_TRACKING_URI", tracking.as_str())];
    let extra = ["--model-poll", "300ms", "--checkpoint-interval", "300ms"];
    let mut run = common::start_paced_model(dir, "127.0.0.1:0", uri, &extra, &env);
    assert_eq!(running_version(&run), v1.as_str());
    wait_for("rows committed by v1", || committed(&run) > 0);
    train(dir, &server.uri, "m2.json", "2");
    let v2 = model_version(dir, "m2.json");
    assert_ne!(v1, v2);
    wait_for(&format!("the run swaps to {v2}"), || {
        running_version(&run) == v2.as_str()
    });
    // Rows of both versions committed (the epochs before the swap may still be committing).
    let at_swap = committed(&run);
    wait_for("rows committed after the swap", || {
        committed(&run) > at_swap + 5000
    });
    common::wait_recorded(dir, &v2);
    let log = run.stop();
    assert!(
        log.contains(&format!(
            "new model from models:/fraud@champion: version {v2}"
        )) && log.contains(&format!("model swapped: version {v2} scores from epoch")),
        "{log}"
    );

    drop(server);
    let mut run = common::start_paced_model(dir, "127.0.0.1:0", uri, &extra, &env);
    if running_version(&run) != v2.as_str() {
        panic!(
            "the restart scores with {}:\n{}\nthe first run:\n{log}",
            running_version(&run),
            run.stop()
        );
    }
    wait_for("rows committed after the restart", || committed(&run) > 0);
    let log = run.stop();
    assert!(
        log.contains("--model models:/fraud@champion")
            && log.contains(&format!(
                "continuing with version {v2} that the last checkpoint was scored with"
            )),
        "{log}"
    );
    let versions = common::python_json(
        "delta/model_versions.py",
        &[dir.join("data/transactions_scored").to_str().expect("utf8")],
    );
    let versions: Vec<String> = serde_json::from_value(versions).expect("strings");
    assert_eq!(versions, {
        let mut v = vec![v1.clone(), v2.clone()];
        v.sort();
        v
    });
}
