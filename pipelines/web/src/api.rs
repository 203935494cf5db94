//! The console's REST API under `/api/v1/` (besides the scoring API, [`crate::score`]): the
//! dataflow with live counts, the anomalies (a table and a server-sent-event stream), dead
//! letters, the charts' samples, the models, checkpoints, the pipeline's SQL and the SQL
//! workbench. Every answer is JSON; bad input is a 4xx with `{"error": …}`. The OpenAPI
//! document ([`OPENAPI`]) describes every route of [`ROUTES`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use txguard_engine::runtime::SINK_QUEUE;
use txguard_engine::stream::DEAD_LETTERS;

use crate::AppState;
use crate::live::{Row, quantile_between};
use crate::workbench::{MAX_SQL_BYTES, PreviewRequest};

/// The OpenAPI 3.1 document of `/api/v1/` (served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route under `/api/v1/` as `(method, path)`, as the OpenAPI document names them (a
/// test checks the two agree).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/status"),
    ("get", "/api/v1/dataflow"),
    ("get", "/api/v1/pipeline"),
    ("get", "/api/v1/anomalies"),
    ("get", "/api/v1/anomalies/stream"),
    ("get", "/api/v1/dead-letters"),
    ("get", "/api/v1/history"),
    ("post", "/api/v1/models/{name}/reload"),
    ("get", "/api/v1/models"),
    ("get", "/api/v1/checkpoints"),
    ("post", "/api/v1/sql/check"),
    ("post", "/api/v1/preview"),
    ("post", "/api/v1/score"),
    ("get", "/api/v1/openapi.json"),
];

/// Most concurrent anomaly streams.
const MAX_STREAMS: usize = 16;

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub(crate) async fn status(State(s): State<AppState>) -> Response {
    Json(crate::snapshot(&s.metrics, &s.info)).into_response()
}

#[derive(Serialize)]
struct NodeView<'a> {
    #[serde(flatten)]
    node: &'a txguard_engine::stream::GraphNode,
    rows: u64,
    keys: Option<u64>,
}

/// The dataflow's graph with every node's rows so far, the sources' watermarks and
/// partitions' lag, and the sinks' queues and commits.
pub(crate) async fn dataflow(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let graph = &s.info.graph;
    let nodes: Vec<NodeView> = graph
        .nodes
        .iter()
        .map(|n| NodeView {
            node: n,
            rows: s.info.watch.as_ref().map_or(0, |w| w.rows(n.id)),
            keys: s.info.watch.as_ref().and_then(|w| w.keys(n.id)),
        })
        .collect();
    let now = crate::now_micros();
    let sources: Vec<Value> = m
        .sources
        .iter()
        .map(|src| {
            let w = src.watermark.load(Ordering::Relaxed);
            let partitions: Vec<Value> = src
                .partition_lag
                .lock()
                .map(|l| l.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|(p, lag)| json!({ "partition": p, "lag": lag }))
                .collect();
            json!({
                "name": src.name,
                "node": graph.relation(&src.name).map(|n| n.id),
                "messages_in": load(&src.messages_in),
                "on_time": load(&src.released),
                "late": load(&src.late),
                "rejected": load(&src.dead),
                "watermark": (w != i64::MIN).then(|| txguard_engine::event::format_micros(w)),
                "event_time_lag_seconds": (w != i64::MIN).then(|| (now - w) as f64 / 1e6),
                "partitions": partitions,
            })
        })
        .collect();
    let sinks: Vec<Value> = m
        .sinks
        .iter()
        .map(|k| {
            let (lat, _) = k.commit_latency.cumulative();
            let (dur, _) = k.commit_seconds.cumulative();
            let last = k.last_commit_micros.load(Ordering::Relaxed);
            json!({
                "table": k.table,
                "node": graph.relation(&k.table).map(|n| n.id),
                "location": s.info.sink_locations.iter().find(|(t, _)| *t == k.table).map(|(_, l)| l),
                "rows": load(&k.rows),
                "committed_rows": load(&k.committed_rows),
                "commits": load(&k.commits),
                "queue_fill": (load(&k.queued) as f64 / SINK_QUEUE as f64).min(1.0),
                "last_commit": (last > 0).then(|| txguard_engine::event::format_micros(last)),
                "commit_latency_p50": quantile_between(&[], &lat, 0.5),
                "commit_latency_p99": quantile_between(&[], &lat, 0.99),
                "commit_duration_p50": quantile_between(&[], &dur, 0.5),
            })
        })
        .collect();
    let steps: Vec<Value> = m
        .steps
        .all()
        .into_iter()
        .map(|(step, h)| json!({ "step": step, "seconds": h.cumulative().1 }))
        .collect();
    Json(json!({
        "t": now / 1000,
        "running": !m.finished.load(Ordering::Relaxed),
        "nodes": nodes,
        "sources": sources,
        "sinks": sinks,
        "steps": steps,
        "console_dropped_batches": s.live.dropped_batches.load(Ordering::Relaxed),
    }))
    .into_response()
}

/// Masks what a pipeline file may hold of secrets before the console shows it: the values of
/// options named like a secret (`…password…`, `…secret…`, `…token…`, `…key` but not
/// `key_field`-like names, `…credential…`), `user:password@` in URLs, and `password=…` /
/// `sasl.password=…` inside connection strings and `client_configs`.
pub fn mask_secrets(sql: &str) -> String {
    let lower_secret = |k: &str| {
        let k = k.to_ascii_lowercase();
        // `password_env` and the like name a variable, not its value.
        !k.ends_with("_env")
            && (k.contains("password")
                || k.contains("secret")
                || k.contains("token")
                || k.contains("credential")
                || k.ends_with("access_key")
                || k.ends_with("account_key")
                || k.ends_with("private_key"))
    };
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    // Walk the quoted literals: each is masked by its option's key (the word before `=`).
    while let Some(start) = rest.find('\'') {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let body = &from[1..];
        let Some(end) = body.find('\'') else {
            out.push_str(from);
            rest = "";
            break;
        };
        let literal = &body[..end];
        // The key is what `out` (the text so far, the previous literal included) ends with.
        let key: String = out
            .trim_end()
            .trim_end_matches('=')
            .trim_end()
            .rsplit(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '\''))
            .next()
            .unwrap_or("")
            .trim_matches('\'')
            .to_string();
        out.push('\'');
        if lower_secret(&key) && !literal.is_empty() {
            out.push_str("••••••");
        } else {
            out.push_str(&mask_inline(literal, &lower_secret));
        }
        out.push('\'');
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    out
}

/// `user:password@host` → `user:••••••@host`; `password=x` (and any secret-named `k=v`
/// between `;`, `&`, `?` or spaces) → `password=••••••`.
fn mask_inline(text: &str, secret: &dyn Fn(&str) -> bool) -> String {
    let mut s = text.to_string();
    if let Some(scheme) = s.find("://") {
        let after = scheme + 3;
        if let Some(at) = s[after..].find('@').map(|i| i + after)
            && let Some(colon) = s[after..at].find(':').map(|i| i + after)
        {
            s.replace_range(colon + 1..at, "••••••");
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        match token.split_once('=') {
            Some((k, v)) if secret(k) && !v.is_empty() => {
                out.push_str(k);
                out.push_str("=••••••");
            }
            _ => out.push_str(token),
        }
        token.clear();
    };
    for c in s.chars() {
        if matches!(c, ';' | '&' | '?' | ' ' | '\n' | '\t') {
            flush(&mut token, &mut out);
            out.push(c);
        } else {
            token.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

/// The pipeline's file and text (secrets masked) and the model versions.
pub(crate) async fn pipeline(State(s): State<AppState>) -> Response {
    Json(json!({
        "file": s.info.pipeline,
        "sql": mask_secrets(&s.info.sql),
        "model_versions": s.info.versions(),
        "anomalies_table": s.live.anomalies_table,
        "relations": s.info.graph.nodes.iter().filter_map(|n| n.relation.as_ref().map(|r| json!({
            "name": r, "kind": n.kind, "columns": n.columns,
        }))).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// A row filter from query parameters: `column=value` (equal, text compared
/// case-insensitively), `min_column=x` / `max_column=x` (numeric bounds), over the columns
/// of `columns`; `limit` and `after` are not filters.
#[derive(Debug, Default)]
pub struct RowFilter {
    equal: Vec<(String, String)>,
    min: Vec<(String, f64)>,
    max: Vec<(String, f64)>,
}

impl RowFilter {
    pub fn parse(params: &HashMap<String, String>, columns: &[String]) -> Result<Self, String> {
        let mut f = RowFilter::default();
        let known = |c: &str| -> Result<String, String> {
            columns
                .iter()
                .find(|k| k.eq_ignore_ascii_case(c))
                .cloned()
                .ok_or_else(|| format!("no column {c}; the columns: {}", columns.join(", ")))
        };
        for (k, v) in params {
            if matches!(k.as_str(), "limit" | "after") || v.is_empty() {
                continue;
            }
            let number = || {
                v.parse::<f64>()
                    .map_err(|_| format!("{k}={v}: not a number"))
            };
            if let Some(c) = k.strip_prefix("min_")
                && !columns.iter().any(|x| x.eq_ignore_ascii_case(k))
            {
                f.min.push((known(c)?, number()?));
            } else if let Some(c) = k.strip_prefix("max_")
                && !columns.iter().any(|x| x.eq_ignore_ascii_case(k))
            {
                f.max.push((known(c)?, number()?));
            } else {
                f.equal.push((known(k)?, v.to_ascii_lowercase()));
            }
        }
        Ok(f)
    }

    pub fn keeps(&self, row: &Map<String, Value>) -> bool {
        let text = |v: &Value| match v {
            Value::String(s) => s.to_ascii_lowercase(),
            other => other.to_string(),
        };
        self.equal
            .iter()
            .all(|(c, v)| row.get(c).is_some_and(|x| text(x) == *v))
            && self
                .min
                .iter()
                .all(|(c, v)| row.get(c).and_then(Value::as_f64).is_some_and(|x| x >= *v))
            && self
                .max
                .iter()
                .all(|(c, v)| row.get(c).and_then(Value::as_f64).is_some_and(|x| x <= *v))
    }
}

fn limit(params: &HashMap<String, String>, default: usize, most: usize) -> Result<usize, String> {
    match params.get("limit") {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map(|n| n.clamp(1, most))
            .map_err(|_| format!("limit={v}: not a whole number")),
    }
}

fn after(params: &HashMap<String, String>) -> Result<u64, String> {
    match params.get("after") {
        None => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| format!("after={v}: not a whole number")),
    }
}

fn anomaly_columns(s: &AppState) -> Vec<String> {
    s.live
        .anomalies_table
        .as_deref()
        .and_then(|t| s.info.graph.relation(t))
        .map(|n| n.columns.iter().map(|(c, _)| c.clone()).collect())
        .unwrap_or_default()
}

fn rows_json(rows: Vec<(u64, Row)>) -> Vec<Value> {
    rows.into_iter()
        .map(|(seq, row)| json!({ "seq": seq, "row": row.as_ref() }))
        .collect()
}

/// The newest anomalies (rows of the anomalies sink) that pass the filter.
pub(crate) async fn anomalies(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let columns = anomaly_columns(&s);
    let parsed = RowFilter::parse(&params, &columns).and_then(|f| {
        Ok((
            f,
            limit(&params, 100, crate::live::ANOMALIES_KEPT)?,
            after(&params)?,
        ))
    });
    let (filter, limit, after) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let ring = s.live.anomalies.lock().unwrap_or_else(|e| e.into_inner());
    let rows: Vec<(u64, Row)> = ring
        .newest()
        .filter(|(seq, r)| *seq > after && filter.keeps(r))
        .take(limit)
        .map(|(seq, r)| (*seq, r.clone()))
        .collect();
    let seen = ring.seen();
    drop(ring);
    Json(json!({
        "table": s.live.anomalies_table,
        "columns": s.live.anomalies_table.as_deref().and_then(|t| s.info.graph.relation(t)).map(|n| &n.columns),
        "seen": seen,
        "rows": rows_json(rows),
        "hint": s.live.anomalies_table.is_none().then_some(
            "this run has no anomalies table: name the sink with --console-anomalies TABLE"),
    }))
    .into_response()
}

/// Anomalies as they are scored, as server-sent events (`event: anomaly`, data `{"seq",
/// "row"}`), filtered like [`anomalies`]; a client too slow for the stream gets an
/// `event: lagged` with how many it missed.
pub(crate) async fn anomaly_stream(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let columns = anomaly_columns(&s);
    let filter = match RowFilter::parse(&params, &columns) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let open = s.streams.clone();
    if open.fetch_add(1, Ordering::AcqRel) >= MAX_STREAMS {
        open.fetch_sub(1, Ordering::AcqRel);
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_STREAMS} anomaly streams are open already: close one"),
        );
    }
    struct Open(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let rx = s.live.feed.subscribe();
    let stream = futures::stream::unfold(
        (rx, filter, Open(open)),
        |(mut rx, filter, open)| async move {
            loop {
                match rx.recv().await {
                    Ok((seq, row)) => {
                        if !filter.keeps(&row) {
                            continue;
                        }
                        let data = json!({ "seq": seq, "row": row.as_ref() }).to_string();
                        let ev = Event::default().event("anomaly").data(data);
                        return Some((Ok::<_, Infallible>(ev), (rx, filter, open)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let ev = Event::default().event("lagged").data(n.to_string());
                        return Some((Ok(ev), (rx, filter, open)));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response()
}

/// The newest dead letters and the counts by reason over the run.
pub(crate) async fn dead_letters(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let columns: Vec<String> = txguard_engine::event::dead_letter_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let parsed = RowFilter::parse(&params, &columns)
        .and_then(|f| Ok((f, limit(&params, 100, crate::live::DEAD_LETTERS_KEPT)?)));
    let (filter, limit) = match parsed {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let rows: Vec<(u64, Row)> = s
        .live
        .dead_letters
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .newest()
        .filter(|(_, r)| filter.keeps(r))
        .take(limit)
        .map(|(seq, r)| (*seq, r.clone()))
        .collect();
    let reasons = s
        .live
        .dead_reasons
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let total = crate::live::dead_letters_total(&s.metrics);
    Json(json!({
        "stream": DEAD_LETTERS,
        "total": total,
        "by_reason": reasons,
        "rows": rows_json(rows),
    }))
    .into_response()
}

/// The charts' samples (one a second, the last 15 minutes), the score histograms and the
/// anomalies grouped for the bar charts.
pub(crate) async fn history(State(s): State<AppState>) -> Response {
    let samples: Vec<crate::live::Sample> = s
        .live
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .oldest()
        .map(|(_, x)| x.clone())
        .collect();
    Json(json!({ "samples": samples })).into_response()
}

/// The loaded models: their cards, live scoring, drift and score histogram.
pub(crate) async fn models(State(s): State<AppState>) -> Response {
    let status = crate::snapshot(&s.metrics, &s.info);
    let models: Vec<Value> = s
        .info
        .cards()
        .iter()
        .map(|card| {
            let name = card.get("name").and_then(Value::as_str).unwrap_or("");
            let live = status.models.iter().find(|m| m.model == name);
            let hist = s
                .info
                .slots
                .iter()
                .find(|slot| slot.name() == name)
                .map(|slot| slot.stats().cumulative());
            json!({
                "model": card,
                "live": live,
                "score_histogram": hist,
            })
        })
        .collect();
    let comparison = s.live.comparison.as_ref().map(|c| c.report());
    Json(json!({ "models": models, "comparison": comparison })).into_response()
}

/// How long a reload waits for its staged model to be swapped in (at the next epoch
/// boundary) before answering 202 "staged".
const SWAP_WAIT: Duration = Duration::from_secs(15);

/// `POST /api/v1/models/{name}/reload`: re-reads the model's source now; a new version is
/// swapped in at the next epoch boundary, which the answer waits for (up to [`SWAP_WAIT`]).
/// 200 `swapped` or `unchanged`; 202 `staged` (not yet swapped); 422 `refused` (corrupt, or
/// other features: the running model keeps scoring); 503 `unreadable` (the source could not
/// be read); 404 for a model the run does not have.
pub(crate) async fn reload_model(
    State(s): State<AppState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let names: Vec<&str> = s.info.slots.iter().map(|m| m.name()).collect();
    let Some(slot) = s.info.slots.iter().find(|m| m.name() == name).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no model {name:?} in this run; its models: {}",
                names.join(", ")
            ),
        );
    };
    let Some(control) = s.info.model_control.clone() else {
        return error(
            StatusCode::CONFLICT,
            "this run does not reload models (started without hot swaps)",
        );
    };
    let asked = name.clone();
    let outcome = match tokio::task::spawn_blocking(move || control.reload(&asked)).await {
        Ok(Some(o)) => o,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no model {name:?}")),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reloading {name}: {e}"),
            );
        }
    };
    let mut outcome = outcome;
    let status = match outcome["outcome"].as_str() {
        Some("staged") => {
            let want = outcome["version"].as_str().unwrap_or_default().to_string();
            let waited = tokio::time::timeout(SWAP_WAIT, async {
                while slot.forest().version() != want {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            if waited.is_ok() {
                outcome["outcome"] = json!("swapped");
                outcome["epoch"] = json!(s.metrics.epoch.load(Ordering::Relaxed));
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            }
        }
        Some("refused") => StatusCode::UNPROCESSABLE_ENTITY,
        Some("unreadable") => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (status, Json(outcome)).into_response()
}

/// Checkpoints: the last one's numbers, the restore this run continued from, and the ones
/// this run wrote (the newest first).
pub(crate) async fn checkpoints(State(s): State<AppState>) -> Response {
    let m = &s.metrics;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let written: Vec<crate::live::CheckpointEntry> = s
        .live
        .checkpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .newest()
        .map(|(_, c)| c.clone())
        .collect();
    Json(json!({
        "enabled": s.info.checkpoints,
        "epoch": load(&m.epoch),
        "written": load(&m.checkpoints),
        "restored_epoch": match load(&m.restored_epoch) { 0 => None, e => Some(e) },
        "last": {
            "bytes": load(&m.checkpoint_bytes),
            "duration_ms": load(&m.checkpoint_micros) as f64 / 1000.0,
            "pause_ms": load(&m.checkpoint_pause_micros) as f64 / 1000.0,
        },
        "history": written,
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    sql: String,
}

/// The run's workbench and a workbench request's JSON body (`shape` says what is expected),
/// or the answer refusing it: no workbench, too large, not that JSON.
fn workbench_request<'a, T: serde::de::DeserializeOwned>(
    s: &'a AppState,
    body: &[u8],
    shape: &str,
) -> Result<(&'a crate::workbench::Workbench, T), (StatusCode, String)> {
    let Some(wb) = &s.info.workbench else {
        return Err((
            StatusCode::NOT_FOUND,
            "this run has no SQL workbench".into(),
        ));
    };
    if body.len() > MAX_SQL_BYTES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_SQL_BYTES} bytes of SQL"),
        ));
    }
    serde_json::from_slice(body)
        .map(|req| (wb, req))
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("expected {shape}: {e}")))
}

/// Checks the editor's text (a pipeline file or a query) with the run's planner.
pub(crate) async fn sql_check(State(s): State<AppState>, body: axum::body::Bytes) -> Response {
    let (wb, req): (_, CheckRequest) = match workbench_request(&s, &body, "{\"sql\": \"…\"}") {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    Json(wb.check(&req.sql, &s.info.graph).await).into_response()
}

/// Runs a preview of a `SELECT` over the live stream (one at a time per client address).
pub(crate) async fn preview(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: axum::body::Bytes,
) -> Response {
    let (wb, req): (_, PreviewRequest) = match workbench_request(
        &s,
        &body,
        "{\"sql\": \"SELECT …\", \"max_rows\": N, \"max_seconds\": S}",
    ) {
        Ok(r) => r,
        Err((status, message)) => return error(status, message),
    };
    if !crate::workbench::is_query(&req.sql) {
        return error(
            StatusCode::BAD_REQUEST,
            "a preview runs a query only: SELECT … FROM a source or view of the pipeline",
        );
    }
    let ip: IpAddr = peer.ip();
    {
        let mut busy = s.previews.lock().unwrap_or_else(|e| e.into_inner());
        if !busy.insert(ip) {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                "a preview from this address is running already: wait for it",
            );
        }
    }
    struct Busy(AppState, IpAddr);
    impl Drop for Busy {
        fn drop(&mut self) {
            self.0
                .previews
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.1);
        }
    }
    let _busy = Busy(s.clone(), ip);
    match wb.preview(&req, &s.info.graph, s.info.watch.as_ref()).await {
        Ok(p) => Json(p).into_response(),
        Err(d) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": d.message, "line": d.line, "column": d.column })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_describes_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for (method, path) in ROUTES {
            assert!(
                paths.get(*path).and_then(|p| p.get(*method)).is_some(),
                "{method} {path} is not in openapi.json"
            );
        }
        for (path, ops) in paths {
            for method in ops.as_object().expect("operations").keys() {
                assert!(
                    ROUTES.contains(&(method.as_str(), path.as_str())),
                    "openapi.json has {method} {path}, which the server does not route"
                );
            }
        }
        // Every reference resolves.
        let text = OPENAPI.to_string();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(doc["components"]["schemas"][name].is_object(), "{name}");
        }
    }

    #[test]
    fn secrets_in_pipeline_text_are_masked() {
        let sql = "CREATE TABLE t WITH (connector = 'postgres', \
                   connection_string = 'host=db user=app password=hunter2 sslmode=require', \
                   'sasl.password' = 'p4ss', url = 'postgres://app:s3cret@db/x', \
                   client_configs = 'security.protocol=SASL_SSL;sasl.password=k1ll;x=1', \
                   table_name = 'scores')";
        let masked = mask_secrets(sql);
        for secret in ["hunter2", "p4ss", "s3cret", "k1ll"] {
            assert!(!masked.contains(secret), "{secret} in {masked}");
        }
        assert!(masked.contains("table_name = 'scores'"), "{masked}");
        assert!(masked.contains("host=db user=app"), "{masked}");
        assert!(masked.contains("x=1"), "{masked}");
    }

    #[test]
    fn filters_know_the_columns() {
        let cols = vec!["user_id".to_string(), "score".to_string()];
        let mut p = HashMap::new();
        p.insert("min_score".to_string(), "0.6".to_string());
        p.insert("user_id".to_string(), "U1".to_string());
        let f = RowFilter::parse(&p, &cols).expect("filter");
        let row = |u: &str, s: f64| {
            let Value::Object(m) = json!({ "user_id": u, "score": s }) else {
                unreachable!()
            };
            m
        };
        assert!(f.keeps(&row("u1", 0.7)));
        assert!(!f.keeps(&row("u1", 0.5)));
        assert!(!f.keeps(&row("u2", 0.7)));
        p.insert("amount".to_string(), "3".to_string());
        let e = RowFilter::parse(&p, &cols).expect_err("unknown column");
        assert!(e.contains("no column amount"), "{e}");
        let mut bad = HashMap::new();
        bad.insert("max_score".to_string(), "high".to_string());
        assert!(RowFilter::parse(&bad, &cols).is_err());
    }
}
