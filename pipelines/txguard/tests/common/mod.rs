//! Helpers the end-to-end tests share: the repository root, running the `txguard` binary,
//! and reading Delta tables back with delta-rs's Python package.
#![allow(dead_code)]

pub mod broker;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    python_json_with(Path::new(&py), script, args)
}

/// [`python_json`] with another interpreter (e.g. a virtualenv's).
pub fn python_json_with(py: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(py)
        .arg(repo().join("pipelines/txguard/tests").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{} (run scripts/setup.sh): {e}", py.display()));
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

/// Runs `command` (stderr piped) to its end within 240 s; its stderr. Panics on a failure
/// or a timeout, with what the run printed.
pub fn finish(command: Command) -> String {
    let (ok, err) = bounded(command);
    assert!(ok, "{err}");
    err
}

/// Runs `command` (stderr piped) to its end within 240 s: whether it succeeded, and its
/// stderr. Panics on a timeout, with what the run printed. Stderr is read while the run
/// goes on (a full pipe would stop it).
pub fn bounded(mut command: Command) -> (bool, String) {
    use std::io::Read;
    let mut child = command.spawn().expect("spawn");
    let mut pipe = child.stderr.take().expect("stderr piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let err = reader.join().expect("stderr reader");
    match status {
        None => panic!("the run did not finish within 240 s; it printed:\n{err}"),
        Some(s) => (s.success(), err),
    }
}

/// A small deterministic sequence of kill moments (xorshift).
pub fn moments(seed: u64, n: usize, lo_ms: u64, hi_ms: u64) -> Vec<Duration> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_millis(lo_ms + x % (hi_ms - lo_ms))
        })
        .collect()
}

/// Starts `command` and SIGKILLs it `kills` times at pseudo-random moments (or until a run
/// finishes by itself); how many of the runs continued from a checkpoint.
pub fn kill_and_restart(
    command: impl Fn() -> Command,
    seed: u64,
    kills: usize,
    (lo_ms, hi_ms): (u64, u64),
) -> usize {
    let mut restored = 0;
    for (i, after) in moments(seed, kills, lo_ms, hi_ms).into_iter().enumerate() {
        let mut child = command().spawn().expect("spawn");
        std::thread::sleep(after);
        let finished = child.try_wait().expect("wait").is_some();
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("continuing from checkpoint") {
            restored += 1;
        }
        assert!(
            !err.contains("error:"),
            "kill {i} after {after:?}: the run failed before it was killed:\n{err}"
        );
        if finished {
            break;
        }
    }
    restored
}

/// Row counts, distinct keys and a SHA-256 of every row of each Delta table under `data`
/// (tests/delta/digest.py): two runs' outputs compare exactly.
pub fn delta_digests(data: &Path, tables: &[&str]) -> serde_json::Value {
    let mut args = vec![data.to_str().expect("utf8")];
    args.extend(tables);
    python_json("delta/digest.py", &args)
}

/// `txguard run <pipeline> --model models/default.json --no-ui --quiet` (the pipeline a file of
/// the repository) in `dir`, without input, stdout discarded, stderr piped: for tests that
/// start, kill and restart runs; they add their own options.
pub fn run_command(dir: &Path, pipeline: &str) -> Command {
    let pipeline = repo().join(pipeline);
    let model = repo().join("models/default.json");
    let mut c = Command::new(env!("CARGO_BIN_EXE_txguard"));
    c.args([
        "run",
        pipeline.to_str().expect("utf8"),
        "--model",
        model.to_str().expect("utf8"),
        "--no-ui",
        "--quiet",
    ])
    .current_dir(dir)
    .env("NO_COLOR", "1")
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    c
}

/// `GET path` on `addr` (one HTTP/1.1 request): the status line and the body, a chunked body
/// decoded; `None` when nothing answers there (a server shutting down).
pub fn try_http_get(addr: &str, path: &str) -> Option<(String, String)> {
    try_http(addr, "GET", path, &[], "")
}

/// One HTTP/1.1 request with `headers` and `body`: the status line and the body, a chunked
/// body decoded; `None` when nothing answers there.
pub fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if method != "GET" {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let (mut rest, mut plain) = (body, String::new());
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            plain.push_str(&tail[..n]);
            rest = tail.get(n + 2..).unwrap_or("");
        }
        plain
    } else {
        body.to_string()
    };
    Some((head.lines().next().unwrap_or("").to_string(), body))
}

/// `POST path` of a JSON `body` to a server that must answer: the status code and the body
/// as JSON.
pub fn http_post(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, text) = try_http(addr, "POST", path, headers, body)
        .unwrap_or_else(|| panic!("nothing answers POST {path} on {addr}"));
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status:?}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("POST {path}: {status}: not JSON ({e}): {text}"));
    (code, json)
}

/// [`try_http_get`] of a server that must answer.
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    try_http_get(addr, path).unwrap_or_else(|| panic!("nothing answers GET {path} on {addr}"))
}

/// A `txguard run` in the background, killed when dropped.
pub struct Run {
    pub child: Child,
    pub addr: String,
    log: Option<std::thread::JoinHandle<String>>,
}

impl Run {
    /// Ends the run; what it logged.
    pub fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log
            .take()
            .and_then(|l| l.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the default pipeline, paced (4000 tx/s of event time at the wall clock's pace), with
/// the console on `ui` and the options `extra` (e.g. `--no-checkpoints`); waits for its
/// address.
pub fn start_paced(dir: &std::path::Path, ui: &str, extra: &[&str], env: &[(&str, &str)]) -> Run {
    start_paced_model(dir, ui, &repo().join("models/default.json"), extra, env)
}

/// [`start_paced`] scoring with `model` (a file or a `models:/` URI).
pub fn start_paced_model(
    dir: &std::path::Path,
    ui: &str,
    model: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_txguard"))
        .args([
            "run",
            repo().join("sql/pipeline.sql").to_str().expect("utf8"),
            "--model",
            model.to_str().expect("utf8"),
            "--ui",
            ui,
            "--quiet",
            // Event time at the pace of the wall clock: a row a minute ahead of the
            // watermark stays ahead of it for the whole test.
            "--set",
            "transactions.rate=4000",
            "--set",
            "transactions.events_per_second=4000",
        ])
        .args(extra)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("stderr");
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("web UI: http://") {
                let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no web UI line within 60 s:\n{}",
                log.join().unwrap_or_default()
            );
        }
    };
    Run {
        child,
        addr,
        log: Some(log),
    }
}

/// The newest complete checkpoint's manifest under a default-pipeline run's checkpoint
/// folder (`<dir>/data/_checkpoints/pipeline`), if any.
pub fn newest_manifest(dir: &Path) -> Option<serde_json::Value> {
    let root = dir.join("data/_checkpoints/pipeline");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&root)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("_manifest.json"))
        .filter(|p| p.exists())
        .collect();
    manifests.sort();
    let text = std::fs::read_to_string(manifests.last()?).ok()?;
    serde_json::from_str(&text).ok()
}

/// Waits (≤ 90 s) until the newest checkpoint under `dir` was scored with model `version`
/// (a swap is durable only once a checkpoint after it is).
pub fn wait_recorded(dir: &Path, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let m = newest_manifest(dir);
        if m.as_ref()
            .is_some_and(|m| m["record"]["extra"]["models"][0]["version"] == version)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint scored with {version} within 90 s; the newest: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Rows a running pipeline's sink `table` has committed (its `/api/status`).
pub fn committed_rows(run: &Run, table: &str) -> u64 {
    let (_, body) = http_get(&run.addr, "/api/status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
    v["sinks"]
        .as_array()
        .expect("sinks")
        .iter()
        .find(|s| s["table"] == table)
        .and_then(|s| s["committed_rows"].as_u64())
        .unwrap_or(0)
}
