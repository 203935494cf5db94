//! The web side of a running pipeline, served on localhost: the console (`/`, one page with
//! no outside assets: dataflow, anomalies, charts, SQL workbench, models, dead letters and
//! checkpoints), its REST API (`/api/v1/…`, [`api`], described by `/api/v1/openapi.json`),
//! the online scoring API (`POST /api/v1/score`, [`score`]), the counters as JSON
//! (`/api/status`) and Prometheus metrics (`/metrics`, text exposition format 0.0.4, named
//! like Arroyo's where they mean the same). Counters are read from the runtime's [`Metrics`];
//! the console's rows come from the dataflow's taps ([`live`]); only the scoring API runs rows
//! through the dataflow, by its [`txguard_engine::probe::Prober`].
//!
//! Access: `/`, `/api/status` and `/metrics` are open (counters, no transaction data).
//! `/api/v1/…` needs `Authorization: Bearer <token>` when the run has a token; without one it
//! answers only on a loopback address (a server listening beyond the machine refuses it, 403,
//! until a token is set).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Serialize;
use txguard_engine::probe::Prober;
use txguard_engine::runtime::{Metrics, SINK_QUEUE};
use txguard_iforest_datafusion::{ModelSlot, ScoreStats};

pub mod api;
pub mod compare;
pub mod live;
pub mod score;
pub mod workbench;

use live::Live;
use score::ApiMetrics;
use txguard_engine::stream::{Graph, Watch};
use workbench::Workbench;

/// What the console shows besides the counters.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The pipeline file's path and text.
    pub pipeline: String,
    pub sql: String,
    /// Each model's slot: the forest in use and what each version scored (for `/metrics`).
    pub slots: Vec<Arc<ModelSlot>>,
    /// Each model's card and what it is (name, version, features, kernel, card), as JSON, as
    /// the run began ([`RunInfo::model_control`] has them as they are now).
    pub models: Vec<serde_json::Value>,
    /// Reloads models while the run goes on (`POST /api/v1/models/{name}/reload`).
    pub model_control: Option<Arc<dyn ModelControl>>,
    /// Sink table → where it writes (e.g. a Delta path).
    pub sink_locations: Vec<(String, String)>,
    /// The dataflow's graph and its live counters and taps (none: the graph is shown without
    /// rows, and nothing can be previewed).
    pub graph: Graph,
    pub watch: Option<Arc<Watch>>,
    /// The sink whose rows the anomalies page shows.
    pub anomalies_table: Option<String>,
    /// The relation whose rows hold two models' verdicts (champion / challenger), compared
    /// live on the Models page.
    pub shadow_table: Option<String>,
    /// The SQL workbench (none: the run has none).
    pub workbench: Option<Workbench>,
    /// Whether the run takes checkpoints.
    pub checkpoints: bool,
}

/// A running pipeline's models, as the console controls them: hot swaps.
pub trait ModelControl: std::fmt::Debug + Send + Sync {
    /// Each model's card as it is now (the version in use, swaps, refusals).
    fn cards(&self) -> Vec<serde_json::Value>;
    /// Re-reads model `name`'s source (blocking: a file read, a registry request) and stages
    /// what changed; the outcome as JSON (`outcome`: `unchanged`, `staged` with `version`,
    /// `refused` or `unreadable` with `reason`). `None`: no model of that name.
    fn reload(&self, name: &str) -> Option<serde_json::Value>;
}

impl RunInfo {
    /// `name version` of each model, the versions in use now.
    pub fn versions(&self) -> Vec<String> {
        self.slots
            .iter()
            .map(|s| format!("{} {}", s.name(), s.forest().version()))
            .collect()
    }

    /// The models' cards as they are now.
    pub fn cards(&self) -> Vec<serde_json::Value> {
        match &self.model_control {
            Some(c) => c.cards(),
            None => self.models.clone(),
        }
    }
}

/// The `/api/v1/` side of a run: the scoring API's prober and the token every request must
/// carry (none: loopback clients only).
#[derive(Clone, Default)]
pub struct Api {
    pub prober: Option<Prober>,
    pub token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("prober", &self.prober.is_some())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Clone)]
pub(crate) struct AppState {
    metrics: Arc<Metrics>,
    info: Arc<RunInfo>,
    prober: Option<Prober>,
    api: Arc<ApiMetrics>,
    /// The API token, or none (then loopback servers only).
    token: Option<Arc<str>>,
    /// Whether the server listens on a loopback address only.
    loopback: bool,
    live: Arc<Live>,
    /// Anomaly streams open.
    streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Client addresses with a preview running.
    previews: Arc<std::sync::Mutex<std::collections::HashSet<std::net::IpAddr>>>,
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
    api: Api,
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
    let loopback = bound.ip().is_loopback();
    if !loopback && api.token.is_none() {
        tracing::warn!(
            "the web UI listens on {bound}, beyond this machine, without an API token: \
             /api/v1/ (the console's data and the scoring API) answers 403 until one is set \
             (--ui-token or TXGUARD_UI_TOKEN)"
        );
    }
    let live = Live::start(
        &info.graph,
        info.watch.as_ref(),
        info.anomalies_table.clone(),
        info.shadow_table.clone(),
        metrics.clone(),
        info.slots.clone(),
    );
    let state = AppState {
        metrics,
        info: Arc::new(info),
        prober: api.prober,
        api: Arc::new(ApiMetrics::default()),
        token: api.token.map(Arc::from),
        loopback,
        live,
        streams: Arc::default(),
        previews: Arc::default(),
    };
    let v1 = Router::new()
        .route("/api/v1/score", post(score::score))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/dataflow", get(api::dataflow))
        .route("/api/v1/pipeline", get(api::pipeline))
        .route("/api/v1/anomalies", get(api::anomalies))
        .route("/api/v1/anomalies/stream", get(api::anomaly_stream))
        .route("/api/v1/dead-letters", get(api::dead_letters))
        .route("/api/v1/history", get(api::history))
        .route("/api/v1/models", get(api::models))
        .route("/api/v1/models/{name}/reload", post(api::reload_model))
        .route("/api/v1/checkpoints", get(api::checkpoints))
        .route("/api/v1/sql/check", post(api::sql_check))
        .route("/api/v1/preview", post(api::preview))
        .route("/api/v1/openapi.json", get(api::openapi))
        .fallback(|| async {
            api::error(
                StatusCode::NOT_FOUND,
                "no such endpoint: /api/v1/openapi.json lists them",
            )
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    let app = Router::new()
        .route("/", get(index))
        .route("/api/status", get(status))
        .route("/metrics", get(prometheus))
        .merge(v1)
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(state);
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("web UI stopped: {e}");
        }
    });
    Ok(bound)
}

/// The token rule of `/api/v1/`: the run's token as a bearer token, compared in constant
/// time; without a token, loopback servers only.
async fn authorize(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let refuse = |status: StatusCode, message: &str| {
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    };
    match &s.token {
        None if !s.loopback => refuse(
            StatusCode::FORBIDDEN,
            "this server listens beyond the machine and has no token: start the run with \
             --ui-token (also --api-token, TXGUARD_UI_TOKEN or TXGUARD_API_TOKEN) and send it \
             as Authorization: Bearer <token>",
        ),
        None => next.run(req).await,
        Some(token) => {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            use subtle::ConstantTimeEq;
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                next.run(req).await
            } else {
                let mut r = refuse(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token: send Authorization: Bearer <token> (the run's \
                     --ui-token)",
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
                r
            }
        }
    }
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

/// One model's scoring so far and its drift (models whose card has a training profile).
#[derive(Serialize)]
pub(crate) struct ModelStatus {
    pub(crate) model: String,
    version: String,
    scored: u64,
    flagged: u64,
    /// Over the flagged-rate window; the card's training rate beside it.
    flagged_rate: Option<f64>,
    trained_flagged_rate: Option<f64>,
    /// Per feature, its PSI over the drift window (absent without a training profile).
    drift: Option<Vec<FeatureDrift>>,
}

#[derive(Serialize)]
struct FeatureDrift {
    feature: String,
    psi: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct Status {
    pipeline: String,
    model_versions: Vec<String>,
    running: bool,
    uptime_seconds: f64,
    epoch: u64,
    first_commit_ms: Option<f64>,
    sources: Vec<SourceStatus>,
    sinks: Vec<SinkStatus>,
    pub(crate) models: Vec<ModelStatus>,
}

pub(crate) fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

pub(crate) fn snapshot(m: &Metrics, info: &RunInfo) -> Status {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let started = m.started_micros.load(Ordering::Relaxed);
    let first = m.first_commit_micros.load(Ordering::Relaxed);
    Status {
        pipeline: info.pipeline.clone(),
        model_versions: info.versions(),
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
        models: info
            .slots
            .iter()
            .map(|slot| {
                let st = slot.stats();
                let drift = st.drift();
                ModelStatus {
                    model: st.model.clone(),
                    version: st.version.clone(),
                    scored: st.cumulative().last().map_or(0, |(_, n)| *n),
                    flagged: st.flagged(),
                    flagged_rate: drift.as_ref().and_then(|d| d.flagged_rate()),
                    trained_flagged_rate: drift.as_ref().and_then(|d| d.trained_flagged_rate),
                    drift: drift.map(|d| {
                        d.psi
                            .into_iter()
                            .map(|(feature, psi)| FeatureDrift { feature, psi })
                            .collect()
                    }),
                }
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

/// One series of a histogram: its labels (without `le`), cumulative `(le, count)` buckets
/// and the sum.
type HistogramSeries = (String, Vec<(f64, u64)>, f64);

/// One histogram family.
fn histogram(out: &mut String, name: &str, help: &str, series: Vec<HistogramSeries>) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, buckets, sum) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut count = 0;
        for (le, n) in &buckets {
            let le = if le.is_infinite() {
                "+Inf".to_string()
            } else {
                le.to_string()
            };
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {n}");
            count = *n;
        }
        if buckets.last().is_some_and(|(le, _)| le.is_finite()) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        }
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(&labels));
        let _ = writeln!(out, "{name}_count{} {count}", braces(&labels));
    }
}

/// The metrics in Prometheus' text exposition format.
pub fn render_prometheus(m: &Metrics, info: &RunInfo) -> String {
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
    let per_sink = |f: &dyn Fn(&txguard_engine::runtime::SinkMetrics) -> f64| {
        m.sinks
            .iter()
            .map(|s| (format!("{{sink=\"{}\"}}", label(&s.table)), f(s)))
            .collect::<Vec<_>>()
    };
    family(
        "txguard_messages_sent_total",
        "counter",
        "Rows handed to a sink; Arroyo: arroyo_worker_messages_sent.",
        per_sink(&|s| load(&s.rows) as f64),
    );
    family(
        "txguard_sink_committed_rows_total",
        "counter",
        "Rows a sink made durable.",
        per_sink(&|s| load(&s.committed_rows) as f64),
    );
    family(
        "txguard_sink_commits_total",
        "counter",
        "Checkpoint commits a sink completed.",
        per_sink(&|s| load(&s.commits) as f64),
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
    family(
        "txguard_dead_letters_total",
        "counter",
        "Events sent to the dead letters, by kind: decode (not decodable into the table), \
         check (failed a CHECK), late (behind the watermark).",
        m.sources
            .iter()
            .flat_map(|s| {
                let source = label(&s.name);
                let check = load(&s.check_failed);
                [
                    ("decode", load(&s.dead).saturating_sub(check)),
                    ("check", check),
                    ("late", load(&s.late)),
                ]
                .map(|(kind, n)| (format!("{{source=\"{source}\",kind=\"{kind}\"}}"), n as f64))
            })
            .collect(),
    );
    family(
        "txguard_sink_rejected_rows_total",
        "counter",
        "Rows a sink refused (NULL in a NOT NULL column), sent to the dead letters.",
        vec![(String::new(), load(&m.rejected_by_sinks) as f64)],
    );
    let now = now_micros();
    family(
        "txguard_event_time_lag_seconds",
        "gauge",
        "Wall clock minus the source's watermark: how far event time lags behind now.",
        m.sources
            .iter()
            .filter(|s| s.watermark.load(Ordering::Relaxed) != i64::MIN)
            .map(|s| {
                (
                    format!("{{source=\"{}\"}}", label(&s.name)),
                    (now - s.watermark.load(Ordering::Relaxed)) as f64 / 1e6,
                )
            })
            .collect(),
    );
    family(
        "txguard_kafka_consumer_lag",
        "gauge",
        "Messages between a Kafka partition's end and the source's position (librdkafka \
         statistics, every 5 s; refreshed at each checkpoint).",
        m.sources
            .iter()
            .flat_map(|s| {
                let source = label(&s.name);
                s.partition_lag
                    .lock()
                    .map(|l| l.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |(p, lag)| {
                        (
                            format!("{{source=\"{source}\",partition=\"{p}\"}}"),
                            lag as f64,
                        )
                    })
            })
            .collect(),
    );
    family(
        "txguard_sink_queue_fill_ratio",
        "gauge",
        "Batches waiting for the sink over its queue's capacity: 1 = the sink holds the \
         pipeline back.",
        per_sink(&|s| load(&s.queued) as f64 / SINK_QUEUE as f64),
    );
    family(
        "txguard_sink_last_commit_timestamp_seconds",
        "gauge",
        "When the sink's last commit finished (seconds since the Unix epoch; 0: none yet).",
        per_sink(&|s| s.last_commit_micros.load(Ordering::Relaxed) as f64 / 1e6),
    );
    family(
        "txguard_start_time_seconds",
        "gauge",
        "When this run started (seconds since the Unix epoch).",
        vec![(
            String::new(),
            m.started_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )],
    );
    let sink_series = |f: &dyn Fn(
        &txguard_engine::runtime::SinkMetrics,
    ) -> &txguard_engine::histogram::Histogram| {
        m.sinks
            .iter()
            .map(|s| {
                let (b, sum) = f(s).cumulative();
                (format!("sink=\"{}\"", label(&s.table)), b, sum)
            })
            .collect::<Vec<_>>()
    };
    histogram(
        &mut out,
        "txguard_sink_commit_latency_seconds",
        "Per row: from being handed to the sink to its commit being durable (the checkpoint \
         interval plus the checkpoint and the commit).",
        sink_series(&|s| &s.commit_latency),
    );
    histogram(
        &mut out,
        "txguard_sink_commit_duration_seconds",
        "Per commit: how long the sink took to make an epoch durable.",
        sink_series(&|s| &s.commit_seconds),
    );
    histogram(
        &mut out,
        "txguard_pipeline_step_seconds",
        "Per occurrence, how long a step of the pipeline's loop took: poll (read a source \
         batch), process (the dataflow), deliver (hand output to the sinks; long when a \
         sink's queue is full), commit (end an epoch), serve (answer scoring requests), idle \
         (nothing to read). Rates of the sums are each step's share of the thread.",
        m.steps
            .all()
            .into_iter()
            .map(|(step, h)| {
                let (b, sum) = h.cumulative();
                (format!("step=\"{step}\""), b, sum)
            })
            .collect(),
    );
    let model_labels = |st: &ScoreStats| {
        format!(
            "model=\"{}\",version=\"{}\"",
            label(&st.model),
            label(&st.version)
        )
    };
    histogram(
        &mut out,
        "txguard_score",
        "Anomaly scores given by iforest_score, per model (in (0, 1]; higher = more anomalous).",
        info.slots
            .iter()
            .flat_map(|slot| slot.all_stats())
            .map(|st| (model_labels(&st), st.cumulative(), st.sum()))
            .collect(),
    );
    let _ = writeln!(
        out,
        "# HELP txguard_anomalies_total Rows iforest_score scored above the model's threshold.\n\
         # TYPE txguard_anomalies_total counter"
    );
    for st in info.slots.iter().flat_map(|slot| slot.all_stats()) {
        let _ = writeln!(
            out,
            "txguard_anomalies_total{{{}}} {}",
            model_labels(&st),
            st.flagged()
        );
    }
    render_models(&mut out, &info.slots);
    let current: Vec<Arc<ScoreStats>> = info.slots.iter().map(|s| s.stats()).collect();
    render_drift(&mut out, &current, &model_labels);
    if let Some(watch) = &info.watch {
        render_operators(&mut out, &info.graph, watch);
    }
    out
}

/// Per operator of the dataflow: rows put out, and keys held by the stateful ones.
fn render_operators(out: &mut String, graph: &Graph, watch: &Watch) {
    let labels = |n: &txguard_engine::stream::GraphNode| {
        format!(
            "operator=\"{}\",kind=\"{}\",relation=\"{}\"",
            n.id,
            n.kind,
            label(n.relation.as_deref().unwrap_or(""))
        )
    };
    let _ = writeln!(
        out,
        "# HELP txguard_operator_rows_total Rows an operator of the dataflow put out (operator: \
         its place in the plan, as /api/v1/dataflow numbers it).\n\
         # TYPE txguard_operator_rows_total counter"
    );
    for n in &graph.nodes {
        let _ = writeln!(
            out,
            "txguard_operator_rows_total{{{}}} {}",
            labels(n),
            watch.rows(n.id)
        );
    }
    let _ = writeln!(
        out,
        "# HELP txguard_operator_keys Keys a stateful operator holds (OVER windows: partition \
         keys; windowed aggregations: open windows).\n\
         # TYPE txguard_operator_keys gauge"
    );
    for n in &graph.nodes {
        if let Some(k) = watch.keys(n.id) {
            let _ = writeln!(out, "txguard_operator_keys{{{}}} {k}", labels(n));
        }
    }
}

/// The version each model scores with, and its hot swaps.
fn render_models(out: &mut String, slots: &[Arc<ModelSlot>]) {
    let _ = writeln!(
        out,
        "# HELP txguard_model_info The model version each model's functions score with now \
         (always 1).\n# TYPE txguard_model_info gauge"
    );
    for s in slots {
        let _ = writeln!(
            out,
            "txguard_model_info{{model=\"{}\",version=\"{}\"}} 1",
            label(s.name()),
            label(s.forest().version())
        );
    }
    let _ = writeln!(
        out,
        "# HELP txguard_model_reloads_total Models a running pipeline swapped in (outcome \
         swapped) or refused (outcome refused: unreadable or corrupt, or other features; the \
         running model kept scoring).\n# TYPE txguard_model_reloads_total counter"
    );
    for s in slots {
        for (outcome, n) in [("swapped", s.swaps()), ("refused", s.refused().0)] {
            let _ = writeln!(
                out,
                "txguard_model_reloads_total{{model=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(s.name())
            );
        }
    }
}

/// Drift families, for the models whose card has a training profile.
fn render_drift(
    out: &mut String,
    stats: &[Arc<ScoreStats>],
    labels: &dyn Fn(&ScoreStats) -> String,
) {
    let reports: Vec<_> = stats
        .iter()
        .filter_map(|st| Some((labels(st), st.drift()?)))
        .collect();
    if reports.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP txguard_feature_drift_psi Population stability index of each feature over the \
         drift window against the model card's training deciles (> 0.25: a significant shift).\n\
         # TYPE txguard_feature_drift_psi gauge"
    );
    for (l, r) in &reports {
        for (feature, psi) in &r.psi {
            if let Some(v) = psi {
                let _ = writeln!(
                    out,
                    "txguard_feature_drift_psi{{{l},feature=\"{}\"}} {v}",
                    label(feature)
                );
            }
        }
    }
    for (name, help, value) in [
        (
            "txguard_drift_window_rows",
            "Rows scored in the drift window (what the PSIs are of).",
            &(|r: &txguard_iforest_datafusion::DriftReport| Some(r.rows as f64))
                as &dyn Fn(&txguard_iforest_datafusion::DriftReport) -> Option<f64>,
        ),
        (
            "txguard_flagged_ratio",
            "Share of the rows of the flagged-rate window (--flagged-rate-window) flagged anomalous.",
            &|r| r.flagged_rate(),
        ),
        (
            "txguard_trained_flagged_ratio",
            "Share of the training rows the model flagged (from its card).",
            &|r| r.trained_flagged_rate,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (l, r) in &reports {
            if let Some(v) = value(r) {
                let _ = writeln!(out, "{name}{{{l}}} {v}");
            }
        }
    }
}

/// The scoring API's families.
fn render_api(out: &mut String, m: &ApiMetrics) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP txguard_score_api_requests_total Requests to POST /api/v1/score, by status class.\n\
         # TYPE txguard_score_api_requests_total counter"
    );
    for (code, n) in [
        ("2xx", &m.ok),
        ("4xx", &m.client_errors),
        ("5xx", &m.server_errors),
    ] {
        let _ = writeln!(
            out,
            "txguard_score_api_requests_total{{code=\"{code}\"}} {}",
            load(n)
        );
    }
    let _ = writeln!(
        out,
        "# HELP txguard_score_api_rows_total Rows sent to POST /api/v1/score, by outcome.\n\
         # TYPE txguard_score_api_rows_total counter"
    );
    for (outcome, n) in [
        ("scored", &m.scored),
        ("rejected", &m.rejected),
        ("late", &m.late),
        ("filtered", &m.filtered),
    ] {
        let _ = writeln!(
            out,
            "txguard_score_api_rows_total{{outcome=\"{outcome}\"}} {}",
            load(n)
        );
    }
    let (buckets, sum) = m.duration.cumulative();
    histogram(
        out,
        "txguard_score_api_request_duration_seconds",
        "Per request to POST /api/v1/score: from its arrival to its answer.",
        vec![(String::new(), buckets, sum)],
    );
}

/// How long scoring requests waited for the pipeline's thread (with the scoring API on).
fn render_request_wait(out: &mut String, m: &Metrics) {
    let (buckets, sum) = m.steps.request_wait.cumulative();
    histogram(
        out,
        "txguard_score_api_queue_seconds",
        "Per request to POST /api/v1/score: from being queued for the pipeline's thread to \
         being taken up (between two batches).",
        vec![(String::new(), buckets, sum)],
    );
}

async fn prometheus(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut out = render_prometheus(&s.metrics, &s.info);
            if s.prober.is_some() {
                render_api(&mut out, &s.api);
                render_request_wait(&mut out, &s.metrics);
            }
            out
        },
    )
}
