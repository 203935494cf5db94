//! The web side of a running pipeline, served on localhost: a one-page UI (`/`) with live
//! counts, the same numbers as JSON (`/api/status`), and Prometheus metrics (`/metrics`, text
//! exposition format 0.0.4, named like Arroyo's where they mean the same). Everything is read
//! from the runtime's [`Metrics`]; nothing here touches the dataflow.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Json};
use axum::routing::get;
use serde::Serialize;
use txguard_engine::runtime::Metrics;

/// What the UI shows besides the counters.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub pipeline: String,
    pub model_versions: Vec<String>,
    /// Sink table → where it writes (e.g. a Delta path).
    pub sink_locations: Vec<(String, String)>,
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    info: Arc<RunInfo>,
}

/// The server could not start.
#[derive(Debug, thiserror::Error)]
#[error("web UI on {addr}: {error}")]
pub struct WebError {
    pub addr: String,
    pub error: std::io::Error,
}

/// Binds `addr` and serves until the process ends; returns the bound address (port 0 picks
/// a free one).
pub async fn serve(
    addr: &str,
    metrics: Arc<Metrics>,
    info: RunInfo,
) -> Result<SocketAddr, WebError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| WebError {
            addr: addr.to_string(),
            error,
        })?;
    let bound = listener.local_addr().map_err(|error| WebError {
        addr: addr.to_string(),
        error,
    })?;
    let app = Router::new()
        .route("/", get(index))
        .route("/api/status", get(status))
        .route("/metrics", get(prometheus))
        .with_state(AppState {
            metrics,
            info: Arc::new(info),
        });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("web UI stopped: {e}");
        }
    });
    Ok(bound)
}

async fn index() -> Html<&'static str> {
    Html(include_str!("index.html"))
}

#[derive(Serialize)]
struct SourceStatus {
    name: String,
    messages_in: u64,
    rows: u64,
    on_time: u64,
    rejected: u64,
    late: u64,
    watermark: Option<String>,
}

#[derive(Serialize)]
struct SinkStatus {
    table: String,
    location: Option<String>,
    rows: u64,
    committed_rows: u64,
    commits: u64,
}

#[derive(Serialize)]
struct Status {
    pipeline: String,
    model_versions: Vec<String>,
    running: bool,
    uptime_seconds: f64,
    epoch: u64,
    first_commit_ms: Option<f64>,
    sources: Vec<SourceStatus>,
    sinks: Vec<SinkStatus>,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn snapshot(m: &Metrics, info: &RunInfo) -> Status {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let started = m.started_micros.load(Ordering::Relaxed);
    let first = m.first_commit_micros.load(Ordering::Relaxed);
    Status {
        pipeline: info.pipeline.clone(),
        model_versions: info.model_versions.clone(),
        running: !m.finished.load(Ordering::Relaxed),
        uptime_seconds: if started > 0 {
            (now_micros() - started) as f64 / 1e6
        } else {
            0.0
        },
        epoch: load(&m.epoch),
        first_commit_ms: (first > 0 && started > 0).then(|| (first - started) as f64 / 1000.0),
        sources: m
            .sources
            .iter()
            .map(|s| {
                let w = s.watermark.load(Ordering::Relaxed);
                SourceStatus {
                    name: s.name.clone(),
                    messages_in: load(&s.messages_in),
                    rows: load(&s.rows),
                    on_time: load(&s.released),
                    rejected: load(&s.dead),
                    late: load(&s.late),
                    watermark: (w != i64::MIN).then(|| txguard_engine::event::format_micros(w)),
                }
            })
            .collect(),
        sinks: m
            .sinks
            .iter()
            .map(|s| SinkStatus {
                table: s.table.clone(),
                location: info
                    .sink_locations
                    .iter()
                    .find(|(t, _)| *t == s.table)
                    .map(|(_, l)| l.clone()),
                rows: load(&s.rows),
                committed_rows: load(&s.committed_rows),
                commits: load(&s.commits),
            })
            .collect(),
    }
}

async fn status(State(s): State<AppState>) -> Json<Status> {
    Json(snapshot(&s.metrics, &s.info))
}

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in Prometheus' text exposition format.
pub fn render_prometheus(m: &Metrics) -> String {
    let mut out = String::new();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let per_source = |f: &dyn Fn(&txguard_engine::runtime::SourceMetrics) -> f64| {
        m.sources
            .iter()
            .map(|s| (format!("{{source=\"{}\"}}", label(&s.name)), f(s)))
            .collect::<Vec<_>>()
    };
    family(
        "txguard_messages_recv_total",
        "counter",
        "Messages read from a source (decoded or rejected); Arroyo: arroyo_worker_messages_recv.",
        per_source(&|s| load(&s.messages_in) as f64),
    );
    family(
        "txguard_deserialization_errors_total",
        "counter",
        "Messages rejected by the event-contract decoder (sent to the dead letters).",
        per_source(&|s| load(&s.dead) as f64),
    );
    family(
        "txguard_late_rows_total",
        "counter",
        "Rows behind the watermark on arrival (sent to the dead letters).",
        per_source(&|s| load(&s.late) as f64),
    );
    family(
        "txguard_rows_released_total",
        "counter",
        "Rows released to the dataflow in event-time order.",
        per_source(&|s| load(&s.released) as f64),
    );
    family(
        "txguard_watermark_seconds",
        "gauge",
        "Event-time watermark (seconds since the Unix epoch).",
        m.sources
            .iter()
            .filter(|s| s.watermark.load(Ordering::Relaxed) != i64::MIN)
            .map(|s| {
                (
                    format!("{{source=\"{}\"}}", label(&s.name)),
                    s.watermark.load(Ordering::Relaxed) as f64 / 1e6,
                )
            })
            .collect(),
    );
    let per_sink = |f: &dyn Fn(&txguard_engine::runtime::SinkMetrics) -> u64| {
        m.sinks
            .iter()
            .map(|s| (format!("{{sink=\"{}\"}}", label(&s.table)), f(s) as f64))
            .collect::<Vec<_>>()
    };
    family(
        "txguard_messages_sent_total",
        "counter",
        "Rows handed to a sink; Arroyo: arroyo_worker_messages_sent.",
        per_sink(&|s| load(&s.rows)),
    );
    family(
        "txguard_sink_committed_rows_total",
        "counter",
        "Rows a sink made durable.",
        per_sink(&|s| load(&s.committed_rows)),
    );
    family(
        "txguard_sink_commits_total",
        "counter",
        "Checkpoint commits a sink completed.",
        per_sink(&|s| load(&s.commits)),
    );
    family(
        "txguard_checkpoint_epoch",
        "gauge",
        "The checkpoint epoch in progress.",
        vec![(String::new(), load(&m.epoch) as f64)],
    );
    family(
        "txguard_checkpoints_total",
        "counter",
        "Checkpoints written by this run.",
        vec![(String::new(), load(&m.checkpoints) as f64)],
    );
    family(
        "txguard_checkpoint_bytes",
        "gauge",
        "Size of the last checkpoint written.",
        vec![(String::new(), load(&m.checkpoint_bytes) as f64)],
    );
    family(
        "txguard_checkpoint_duration_seconds",
        "gauge",
        "Time the last checkpoint took, from the barrier to its durable manifest.",
        vec![(String::new(), load(&m.checkpoint_micros) as f64 / 1e6)],
    );
    family(
        "txguard_checkpoint_pause_seconds",
        "gauge",
        "Time the dataflow stood still for the last checkpoint (sinks' prepare and the \
         snapshot; the files are written meanwhile).",
        vec![(String::new(), load(&m.checkpoint_pause_micros) as f64 / 1e6)],
    );
    family(
        "txguard_restored_epoch",
        "gauge",
        "The checkpoint this run continued from (0: none).",
        vec![(String::new(), load(&m.restored_epoch) as f64)],
    );
    out
}

async fn prometheus(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_prometheus(&s.metrics),
    )
}
