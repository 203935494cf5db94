//! The MLflow model registry, over MLflow's REST API (no Python): `txguard train --mlflow-uri
//! … --register NAME` logs a run (params, metrics, the model file and its card as artifacts,
//! uploaded through the server's artifact proxy) and registers a model version; `--model
//! models:/NAME@ALIAS` or `models:/NAME/VERSION` resolves a version and downloads its model.
//!
//! The tracking server is `--mlflow-uri` or `MLFLOW_TRACKING_URI`; `MLFLOW_TRACKING_TOKEN`
//! (bearer) or `MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` (basic) authenticate, as
//! MLflow's own clients read them. Credentials are never logged or put in an error message.
//! Calls are blocking and made on a thread of their own, so they work from any context (the
//! CLI's async commands included).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

/// The file name of the model inside a run's `model/` artifact folder.
pub const MODEL_FILE: &str = "model.json";

/// A `models:/` URI: a registered model and either an alias or a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUri {
    pub name: String,
    pub pick: Pick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Alias(String),
    Version(u64),
}

impl ModelUri {
    /// Parses `models:/NAME@ALIAS` or `models:/NAME/VERSION`; `None` when `s` is not a
    /// `models:/` URI at all (a file path).
    pub fn parse(s: &str) -> Option<Result<Self>> {
        let rest = s.strip_prefix("models:/")?;
        Some(Self::parse_rest(rest))
    }

    fn parse_rest(rest: &str) -> Result<Self> {
        let usage = "give models:/NAME@ALIAS (e.g. models:/fraud@champion) or models:/NAME/VERSION (e.g. models:/fraud/3)";
        let (name, pick) = if let Some((name, alias)) = rest.rsplit_once('@') {
            if alias.is_empty() || alias.contains('/') {
                bail!("not a model URI: the alias after @ is empty or has a /; {usage}");
            }
            (name, Pick::Alias(alias.to_string()))
        } else if let Some((name, version)) = rest.rsplit_once('/') {
            let v = version.parse::<u64>().map_err(|_| {
                anyhow!("not a model URI: version {version:?} is not a number; {usage}")
            })?;
            (name, Pick::Version(v))
        } else {
            bail!("not a model URI: no @ALIAS or /VERSION after the name; {usage}");
        };
        if name.is_empty() || name.contains('/') {
            bail!("not a model URI: the model name is empty or has a /; {usage}");
        }
        Ok(Self {
            name: name.to_string(),
            pick,
        })
    }
}

impl std::fmt::Display for ModelUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pick {
            Pick::Alias(a) => write!(f, "models:/{}@{a}", self.name),
            Pick::Version(v) => write!(f, "models:/{}/{v}", self.name),
        }
    }
}

/// A model version fetched from the registry.
#[derive(Debug)]
pub struct Fetched {
    /// The model file's text.
    pub text: String,
    pub version: String,
    pub run_id: String,
    pub source: String,
}

/// The tracking server's URI: the flag, else `MLFLOW_TRACKING_URI`.
pub fn tracking_uri(flag: Option<&str>) -> Result<String> {
    let uri = match flag {
        Some(u) => u.to_string(),
        None => std::env::var("MLFLOW_TRACKING_URI").map_err(|_| {
            anyhow!("no MLflow tracking server: set MLFLOW_TRACKING_URI=http://HOST:PORT (or give --mlflow-uri)")
        })?,
    };
    let uri = uri.trim_end_matches('/').to_string();
    if redact(&uri) != uri {
        bail!(
            "MLflow tracking URI {}: credentials in the URI are not accepted (they would show in logs); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN",
            redact(&uri)
        );
    }
    if !(uri.starts_with("http://") || uri.starts_with("https://")) {
        bail!(
            "MLflow tracking URI {uri:?}: txguard talks to an MLflow server over HTTP; give http://HOST:PORT or https://…"
        );
    }
    Ok(uri)
}

/// The registered version `uri` names now (an alias resolved; a version as given), without
/// downloading the model: what a running pipeline polls to notice an alias moved.
pub fn resolve_version(base: &str, uri: &ModelUri) -> Result<String> {
    match &uri.pick {
        Pick::Version(v) => Ok(v.to_string()),
        Pick::Alias(a) => off_runtime(|| {
            let c = Client::new(base)?;
            let mv = c
                .get(
                    "mlflow/registered-models/alias",
                    &[("name", &uri.name), ("alias", a)],
                )
                .with_context(|| format!("resolving alias {a:?} of model {:?}", uri.name))?;
            str_field(&mv["model_version"], "version")
        }),
    }
}

/// Resolves `uri` on the server at `base` and downloads its model file.
pub fn fetch_model(base: &str, uri: &ModelUri) -> Result<Fetched> {
    off_runtime(|| {
        let c = Client::new(base)?;
        let mv = match &uri.pick {
            Pick::Alias(a) => c
                .get(
                    "mlflow/registered-models/alias",
                    &[("name", &uri.name), ("alias", a)],
                )
                .with_context(|| format!("resolving alias {a:?} of model {:?}", uri.name))?,
            Pick::Version(v) => c
                .get(
                    "mlflow/model-versions/get",
                    &[("name", &uri.name), ("version", &v.to_string())],
                )
                .with_context(|| format!("looking up version {v} of model {:?}", uri.name))?,
        };
        let mv = &mv["model_version"];
        let version = str_field(mv, "version")?;
        let run_id = mv["run_id"].as_str().unwrap_or_default().to_string();
        let source = str_field(mv, "source")?;
        let folder = artifact_path(&c, &source, &run_id)
            .with_context(|| format!("version {version}'s source {source}"))?;
        let text = match folder {
            Artifacts::Proxied(path) => c
                .download(&format!("{path}/{MODEL_FILE}"))
                .with_context(|| format!("downloading version {version}'s model"))?,
            Artifacts::Local(dir) => {
                let p = std::path::Path::new(&dir).join(MODEL_FILE);
                std::fs::read_to_string(&p).with_context(|| {
                    format!("reading version {version}'s model at {}", p.display())
                })?
            }
        };
        Ok(Fetched {
            text,
            version,
            run_id,
            source,
        })
    })
}

/// What `txguard train` logs: one run, and optionally a registered version of it.
pub struct TrainingRun<'a> {
    pub experiment: &'a str,
    pub run_name: &'a str,
    pub params: Vec<(String, String)>,
    pub metrics: Vec<(String, f64)>,
    pub tags: Vec<(String, String)>,
    /// (artifact path inside the run, bytes)
    pub artifacts: Vec<(String, Vec<u8>)>,
    /// (registered model name, alias)
    pub register: Option<(&'a str, Option<&'a str>)>,
}

/// What the server made of a [`TrainingRun`].
#[derive(Debug)]
pub struct Logged {
    pub experiment_id: String,
    pub run_id: String,
    pub version: Option<String>,
}

/// Logs `run` on the server at `base` (creating its experiment when missing) and registers a
/// version of its `model/` folder when asked.
pub fn log_training(base: &str, run: TrainingRun<'_>) -> Result<Logged> {
    off_runtime(|| log_training_blocking(base, run))
}

fn log_training_blocking(base: &str, run: TrainingRun<'_>) -> Result<Logged> {
    let c = Client::new(base)?;
    let experiment_id = match c.get(
        "mlflow/experiments/get-by-name",
        &[("experiment_name", run.experiment)],
    ) {
        Ok(e) => str_field(&e["experiment"], "experiment_id")?,
        Err(e) if is_code(&e, "RESOURCE_DOES_NOT_EXIST") => {
            let made = c
                .post(
                    "mlflow/experiments/create",
                    json!({ "name": run.experiment }),
                )
                .with_context(|| format!("creating MLflow experiment {:?}", run.experiment))?;
            str_field(&made, "experiment_id")?
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("looking up MLflow experiment {:?}", run.experiment));
        }
    };
    let now = now_ms();
    let made = c
        .post(
            "mlflow/runs/create",
            json!({ "experiment_id": experiment_id, "start_time": now, "run_name": run.run_name,
                    "tags": run.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>() }),
        )
        .context("creating the MLflow run")?;
    let info = &made["run"]["info"];
    let run_id = str_field(info, "run_id")?;
    let artifact_uri = str_field(info, "artifact_uri")?;
    let params: Vec<Value> = run
        .params
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": v }))
        .collect();
    let metrics = metrics_json(&run.metrics, now);
    c.post(
        "mlflow/runs/log-batch",
        json!({ "run_id": run_id, "params": params, "metrics": metrics }),
    )
    .context("logging the run's params and metrics")?;
    c.upload_artifacts(&run_id, &artifact_uri, run.artifacts)?;
    c.post(
        "mlflow/runs/update",
        json!({ "run_id": run_id, "status": "FINISHED", "end_time": now_ms() }),
    )
    .context("finishing the MLflow run")?;
    let mut version = None;
    if let Some((name, alias)) = run.register {
        match c.post("mlflow/registered-models/create", json!({ "name": name })) {
            Ok(_) => {}
            Err(e) if is_code(&e, "RESOURCE_ALREADY_EXISTS") => {}
            Err(e) => return Err(e).with_context(|| format!("creating registered model {name:?}")),
        }
        let mv = c
            .post(
                "mlflow/model-versions/create",
                json!({ "name": name, "source": format!("{artifact_uri}/model"), "run_id": run_id }),
            )
            .with_context(|| format!("registering a version of model {name:?}"))?;
        let v = str_field(&mv["model_version"], "version")?;
        if let Some(alias) = alias {
            c.post(
                "mlflow/registered-models/alias",
                json!({ "name": name, "alias": alias, "version": v }),
            )
            .with_context(|| {
                format!("pointing alias {alias:?} of model {name:?} at version {v}")
            })?;
        }
        version = Some(v);
    }
    Ok(Logged {
        experiment_id,
        run_id,
        version,
    })
}

/// Uploads `files` (path inside the run, bytes) into run `run_id`'s artifacts and logs
/// `metrics` on it: how `txguard model evaluate --mlflow-run` files a report with the run
/// that trained the model.
pub fn log_to_run(
    base: &str,
    run_id: &str,
    files: Vec<(String, Vec<u8>)>,
    metrics: Vec<(String, f64)>,
) -> Result<()> {
    off_runtime(|| {
        let c = Client::new(base)?;
        let r = c
            .get("mlflow/runs/get", &[("run_id", run_id)])
            .with_context(|| format!("looking up MLflow run {run_id}"))?;
        let artifact_uri = str_field(&r["run"]["info"], "artifact_uri")?;
        c.upload_artifacts(run_id, &artifact_uri, files)?;
        let metrics = metrics_json(&metrics, now_ms());
        c.post(
            "mlflow/runs/log-batch",
            json!({ "run_id": run_id, "metrics": metrics }),
        )
        .with_context(|| format!("logging metrics on run {run_id}"))?;
        Ok(())
    })
}

/// Runs a blocking client call on a thread of its own (reqwest's blocking client must not
/// run, or be dropped, inside an async runtime).
fn off_runtime<T: Send>(f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(f)
            .join()
            .map_err(|_| anyhow!("the MLflow client thread panicked"))?
    })
}

enum Artifacts {
    /// A path under the server's artifact proxy (`/api/2.0/mlflow-artifacts/artifacts/…`).
    Proxied(String),
    /// A folder on this machine (a server whose artifact store is a local path).
    Local(String),
}

/// Where a model version's files are, from its `source`.
fn artifact_path(c: &Client, source: &str, run_id: &str) -> Result<Artifacts> {
    if let Some(p) = source.strip_prefix("mlflow-artifacts:/") {
        return Ok(Artifacts::Proxied(p.trim_start_matches('/').to_string()));
    }
    if let Some(rest) = source.strip_prefix("runs:/") {
        let (run, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let run = if run.is_empty() { run_id } else { run };
        let r = c
            .get("mlflow/runs/get", &[("run_id", run)])
            .with_context(|| format!("looking up run {run}"))?;
        let root = str_field(&r["run"]["info"], "artifact_uri")?;
        let joined = format!("{}/{sub}", root.trim_end_matches('/'));
        return artifact_path(c, joined.trim_end_matches('/'), run_id);
    }
    if let Some(p) = source.strip_prefix("file://") {
        return Ok(Artifacts::Local(p.to_string()));
    }
    if source.starts_with('/') {
        return Ok(Artifacts::Local(source.to_string()));
    }
    bail!(
        "txguard reads models through MLflow's artifact proxy (mlflow-artifacts:/…), runs:/… or a local path, not {source}; start the server with --artifacts-destination so it serves artifacts"
    )
}

/// `uri` with any `user:password@` replaced by `***@`.
pub fn redact(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let host_end = rest.find('/').unwrap_or(rest.len());
    match rest[..host_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => uri.to_string(),
    }
}

/// Metrics as `runs/log-batch` takes them (MLflow refuses NaN and infinities: left out).
fn metrics_json(metrics: &[(String, f64)], now: u64) -> Vec<Value> {
    metrics
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(k, v)| json!({ "key": k, "value": v, "timestamp": now, "step": 0 }))
        .collect()
}

fn str_field(v: &Value, key: &str) -> Result<String> {
    match &v[key] {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("the MLflow server's answer has no {key:?}: {v}"),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An error answer of the server, with MLflow's error code.
#[derive(Debug, thiserror::Error)]
#[error("the MLflow server answered {status}: {code}: {message}")]
struct ServerError {
    status: u16,
    code: String,
    message: String,
}

fn is_code(e: &anyhow::Error, code: &str) -> bool {
    e.downcast_ref::<ServerError>()
        .is_some_and(|s| s.code == code)
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    auth: Auth,
}

enum Auth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl Client {
    fn new(base: &str) -> Result<Self> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        let auth = match (
            std::env::var("MLFLOW_TRACKING_TOKEN"),
            std::env::var("MLFLOW_TRACKING_USERNAME"),
        ) {
            (Ok(t), _) if !t.is_empty() => Auth::Bearer(t),
            (_, Ok(u)) if !u.is_empty() => Auth::Basic(
                u,
                std::env::var("MLFLOW_TRACKING_PASSWORD").unwrap_or_default(),
            ),
            _ => Auth::None,
        };
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth,
        })
    }

    fn send(
        &self,
        rb: reqwest::blocking::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::blocking::Response> {
        let rb = match &self.auth {
            Auth::None => rb,
            Auth::Bearer(t) => rb.bearer_auth(t),
            Auth::Basic(u, p) => rb.basic_auth(u, Some(p)),
        };
        let r = rb.send().map_err(|e| {
            // reqwest's message names the URL (no credentials are in it: they go in headers).
            let why = if e.is_connect() {
                "cannot connect"
            } else if e.is_timeout() {
                "no answer in time"
            } else {
                "request failed"
            };
            anyhow!(
                "MLflow server at {}: {why} ({what}): {}; is `mlflow server` running there, and is MLFLOW_TRACKING_URI right?",
                self.base,
                root_cause(&e)
            )
        })?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let body = r.text().unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        Err(ServerError {
            status: status.as_u16(),
            code: v["error_code"].as_str().unwrap_or("HTTP_ERROR").to_string(),
            message: v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| body.chars().take(300).collect()),
        }
        .into())
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/2.0/{path}", self.base)
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let r = self.send(self.http.get(self.api(path)).query(query), path)?;
        r.json()
            .with_context(|| format!("{path}: the answer is not JSON"))
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r = self.send(self.http.post(self.api(path)).json(&body), path)?;
        r.json()
            .with_context(|| format!("{path}: the answer is not JSON"))
    }

    /// Uploads `files` (path inside the run, bytes) under run `run_id`'s artifact root
    /// `artifact_uri`, through the server's artifact proxy.
    fn upload_artifacts(
        &self,
        run_id: &str,
        artifact_uri: &str,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<()> {
        let Some(root) = artifact_uri.strip_prefix("mlflow-artifacts:/") else {
            bail!(
                "the MLflow server stores run {run_id}'s artifacts at {artifact_uri}, which txguard cannot upload to: start the server with artifact proxying (mlflow server --artifacts-destination DIR_OR_BUCKET)"
            );
        };
        let root = root.trim_start_matches('/');
        for (path, bytes) in files {
            let url = self.api(&format!("mlflow-artifacts/artifacts/{root}/{path}"));
            self.send(self.http.put(url).body(bytes), "artifact upload")
                .with_context(|| format!("uploading artifact {path} to run {run_id}"))?;
        }
        Ok(())
    }

    fn download(&self, path: &str) -> Result<String> {
        let url = self.api(&format!("mlflow-artifacts/artifacts/{path}"));
        let r = self.send(self.http.get(url), "artifact download")?;
        r.text().context("reading the artifact")
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_uris_parse_or_say_what_is_wrong() {
        assert_eq!(
            ModelUri::parse("models:/fraud@champion").unwrap().unwrap(),
            ModelUri {
                name: "fraud".into(),
                pick: Pick::Alias("champion".into())
            }
        );
        assert_eq!(
            ModelUri::parse("models:/fraud/12").unwrap().unwrap().pick,
            Pick::Version(12)
        );
        assert!(ModelUri::parse("models/default.json").is_none());
        for bad in [
            "models:/",
            "models:/fraud",
            "models:/fraud@",
            "models:/@champion",
            "models:/fraud/latest",
            "models:/a/b/3",
        ] {
            let e = ModelUri::parse(bad).unwrap().unwrap_err().to_string();
            assert!(
                e.starts_with("not a model URI") && e.contains("models:/NAME@ALIAS"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn tracking_uris_must_be_http() {
        assert_eq!(
            tracking_uri(Some("http://127.0.0.1:5000/")).unwrap(),
            "http://127.0.0.1:5000"
        );
        assert!(tracking_uri(Some("sqlite:///mlflow.db")).is_err());
        let e = tracking_uri(Some("http://me:hunter2@127.0.0.1:5000/x"))
            .unwrap_err()
            .to_string();
        assert!(
            !e.contains("hunter2") && e.contains("***@127.0.0.1:5000/x"),
            "{e}"
        );
    }
}
