//! `POST /api/v1/score`: the online scoring API. A transaction (a JSON object in the source
//! table's columns), or a JSON array of them, is followed through the running pipeline to a
//! view — by default the last one the file computes row by row from that source — against the
//! live per-user state, which it does not change; the answer is the view's row (its features,
//! score, flag and model version, whatever the view's columns are), or why there is none.
//! The rows are decoded and checked here, then answered on the pipeline's thread between two
//! batches ([`txguard_engine::probe`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use txguard_engine::event::format_micros;
use txguard_engine::histogram::Histogram;
use txguard_engine::probe::{Answer, Outcome, ProbeError, Prober};

use crate::AppState;

/// Most rows one request may hold.
pub const MAX_ROWS: usize = 10_000;

/// How long a request waits for the pipeline's thread.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bounds (seconds) of the request-duration buckets: 0.5 ms to 5 s.
pub const DURATION_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// What the API has answered, for `/metrics`.
#[derive(Debug)]
pub struct ApiMetrics {
    /// Requests by HTTP status class: 2xx, 4xx, 5xx.
    pub ok: AtomicU64,
    pub client_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Rows by outcome: scored, rejected, late, filtered.
    pub scored: AtomicU64,
    pub rejected: AtomicU64,
    pub late: AtomicU64,
    pub filtered: AtomicU64,
    /// Per answered request, from its arrival to its answer.
    pub duration: Histogram,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            ok: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            late: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            duration: Histogram::new(DURATION_BOUNDS),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ScoreQuery {
    /// The view to answer with (default: the last one computed row by row from the source).
    view: Option<String>,
    /// The source table the rows are of (needed only when the pipeline has several).
    source: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

fn probe_error(e: &ProbeError) -> Response {
    let status = match e {
        ProbeError::Target(_) => StatusCode::NOT_FOUND,
        ProbeError::NotRunning | ProbeError::Busy | ProbeError::Timeout(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        ProbeError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// The view's rows as JSON objects (NULLs spelled out).
fn json_rows(answer: &Answer) -> Result<Vec<Value>, String> {
    use arrow::json::writer::{JsonArray, WriterBuilder};
    let mut buf = Vec::new();
    let mut w = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(&mut buf);
    w.write(&answer.rows).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice(&buf).map_err(|e| e.to_string())
}

pub(crate) async fn score(
    State(s): State<AppState>,
    Query(q): Query<ScoreQuery>,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let response = match &s.prober {
        Some(p) => answer(p, &s.api, q, &body).await,
        None => error(
            StatusCode::NOT_FOUND,
            "this run has no scoring API (it was started without one)",
        ),
    };
    let m = &s.api;
    let class = response.status().as_u16() / 100;
    match class {
        2 => &m.ok,
        4 => &m.client_errors,
        _ => &m.server_errors,
    }
    .fetch_add(1, Ordering::Relaxed);
    m.duration.observe_n(started.elapsed().as_secs_f64(), 1);
    response
}

async fn answer(p: &Prober, m: &Arc<ApiMetrics>, q: ScoreQuery, body: &[u8]) -> Response {
    // Each row's bytes as they came, as a source's message would be: decoded (and rejected,
    // with the reason) exactly as the pipeline's decoder does.
    let (payloads, single): (Vec<&[u8]>, bool) = if body.trim_ascii_start().first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body) {
            Ok(rows) => (rows.iter().map(|r| r.get().as_bytes()).collect(), false),
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the body is not a JSON array ({e}); send one transaction as a JSON \
                         object, or a JSON array of them"
                    ),
                );
            }
        }
    } else {
        (vec![body], true)
    };
    if payloads.len() > MAX_ROWS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} rows in one request; at most {MAX_ROWS}", payloads.len()),
        );
    }
    if payloads.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the array holds no transaction");
    }
    let target = match p.target(q.source.as_deref(), q.view.as_deref()) {
        Ok(t) => t.clone(),
        Err(e) => return probe_error(&e),
    };
    let answer = match p.score(&target, &payloads, TIMEOUT).await {
        Ok(a) => a,
        Err(e) => return probe_error(&e),
    };
    let rows = match json_rows(&answer) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let mut results = Vec::with_capacity(answer.outcomes.len());
    for o in &answer.outcomes {
        let (counter, result) = match o {
            Outcome::Row(i) => (
                &m.scored,
                json!({ "row": rows.get(*i).cloned().unwrap_or(Value::Null) }),
            ),
            Outcome::Rejected(why) => (&m.rejected, json!({ "error": why, "kind": "rejected" })),
            Outcome::Late(why) => (&m.late, json!({ "error": why, "kind": "late" })),
            Outcome::Filtered => (
                &m.filtered,
                json!({
                    "row": null,
                    "filtered": format!(
                        "a WHERE between {} and {} drops this row", answer.source, answer.view
                    ),
                }),
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        results.push(result);
    }
    let mut head = json!({
        "source": answer.source,
        "view": answer.view,
        "watermark": answer.watermark.map(format_micros),
    });
    if !single {
        head["results"] = Value::Array(results);
        return (StatusCode::OK, Json(head)).into_response();
    }
    let Some(Value::Object(one)) = results.pop() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no result for the row");
    };
    let status = if one.contains_key("error") {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    if let Value::Object(h) = &mut head {
        h.extend(one);
    }
    (status, Json(head)).into_response()
}
