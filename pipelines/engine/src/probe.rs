//! Online scoring: rows a client sends (the web server's `POST /api/v1/score`) followed through
//! a running dataflow's per-row operators to one of its views — projections, filters, OVER
//! windows and the scoring UDFs they call — against the live state, which they do not change.
//!
//! Two halves: a [`Prober`] (cloned into request handlers) decodes and checks each row off the
//! pipeline's thread, as the source table's DDL says (its columns, `NOT NULL`s and `CHECK`s);
//! the [`ProbeQueue`] it comes with goes to the runtime, which answers between two batches on
//! the pipeline's thread, where the state lives ([`crate::stream::Dataflow::probe`]). A row
//! is answered against the state as of its source's watermark: rows still held for ordering
//! (newer than the watermark, at most the allowed lateness) are not in any window yet, and a
//! row older than the watermark is refused, as the pipeline would take it as late.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef, TimestampMicrosecondType};
use tokio::sync::{mpsc, oneshot};

use crate::constraints::Constraints;
use crate::decode::{DecodeOptions, Decoder, Format};
use crate::event::format_micros;
use crate::stream::{Dataflow, ProbeTarget, Probed, StreamError};

/// Requests waiting for the pipeline's thread; more are refused as busy.
pub const QUEUE: usize = 256;

/// Why a probe got no answer at all (a row's own problems are its [`Outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The request names no view (or source) that can be probed; the message lists those
    /// that can.
    #[error("{0}")]
    Target(String),
    /// The pipeline has finished or stopped: there is no live state to answer from.
    #[error("the pipeline is not running (it finished or stopped): no live state to score against")]
    NotRunning,
    /// Too many requests wait already.
    #[error("{QUEUE} scoring requests are waiting for the pipeline already; retry shortly")]
    Busy,
    /// The pipeline's thread did not get to the request in time (it waits on a sink or a
    /// checkpoint).
    #[error(
        "the pipeline did not answer within {0:?} (it is waiting on a sink or a checkpoint); \
         retry shortly"
    )]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// What became of one probed row.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Its row in [`Answer::rows`].
    Row(usize),
    /// It does not decode, or breaks its table's constraints: the reason, as a dead letter
    /// would say.
    Rejected(String),
    /// It is older than its source's watermark: the pipeline would take it as late.
    Late(String),
    /// A `WHERE` between the source and the view dropped it.
    Filtered,
}

/// The answer to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub source: String,
    pub view: String,
    /// The source's watermark the state was read at (µs since the Unix epoch).
    pub watermark: Option<i64>,
    /// The view's rows, [`Outcome::Row`] indexes into them.
    pub rows: RecordBatch,
    /// One per row sent, in order.
    pub outcomes: Vec<Outcome>,
}

/// A source table as the prober decodes and checks it.
struct ProbeSource {
    name: String,
    index: usize,
    /// The declared columns, all nullable (the constraints say which must not be NULL).
    decode_schema: SchemaRef,
    decode: DecodeOptions,
    constraints: Constraints,
}

/// One request on its way to the pipeline's thread: checked rows of the target's source.
struct Request {
    target: ProbeTarget,
    rows: RecordBatch,
    reply: oneshot::Sender<Result<Reply, String>>,
    /// When it was queued for the pipeline's thread.
    queued: Instant,
}

/// What the pipeline's thread answers for a request's rows.
struct Reply {
    watermark: Option<i64>,
    probed: Probed,
    /// Per row sent: the reason it is late, if it is (late rows are not probed).
    late: Vec<Option<String>>,
}

/// The handlers' half: decodes and checks rows, sends them to the pipeline and waits.
#[derive(Clone)]
pub struct Prober {
    tx: mpsc::Sender<Request>,
    sources: Arc<Vec<ProbeSource>>,
    targets: Arc<Vec<ProbeTarget>>,
    /// Names of the sources, by dataflow source index.
    source_names: Arc<Vec<String>>,
}

/// The runtime's half: requests to answer between batches ([`crate::runtime::Connections`]).
pub struct ProbeQueue {
    rx: mpsc::Receiver<Request>,
    /// Taken off the channel while the runtime slept, not answered yet.
    pending: Vec<Request>,
    /// Runs the probe itself (e.g. so that the scoring UDFs do not count probed rows as
    /// scored by the pipeline).
    scope: fn(&mut dyn FnMut()),
    /// Rows a source is asked for per poll while requests come (see
    /// [`ProbeQueue::with_active_batch_rows`]).
    active_batch_rows: usize,
    /// When the last request arrived.
    last_request: Option<Instant>,
}

/// How long after a request the pipeline keeps polling in [`ProbeQueue`]'s smaller batches.
pub const ACTIVE_FOR: Duration = Duration::from_secs(2);

/// Rows per poll while the scoring API is in use, by default: a request waits for the batch
/// in progress, which smaller batches shorten. Measured (docs/benchmarks.md), 1024 or 128 rows
/// did not lower the latency of an unpaced pipeline, and 256 did not help a paced one.
pub const DEFAULT_ACTIVE_BATCH_ROWS: usize = 1024;

fn plain(f: &mut dyn FnMut()) {
    f()
}

impl Prober {
    /// A prober for `df`'s declared sources, each decoded as JSON with the options in
    /// `decode` (by table name: `json.aliases`, the message size limit; other formats are
    /// read as JSON with the same columns). Fails if a source's constraints do not plan.
    pub fn new(
        df: &Dataflow,
        decode: &[(String, DecodeOptions)],
    ) -> Result<(Prober, ProbeQueue), StreamError> {
        let mut sources = Vec::new();
        for (index, s) in df.sources().iter().enumerate() {
            if s.name == crate::stream::DEAD_LETTERS {
                continue;
            }
            let nullable = Arc::new(Schema::new(
                s.schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
            let mut opts = decode
                .iter()
                .find(|(t, _)| *t == s.name)
                .map(|(_, o)| o.clone())
                .unwrap_or_default();
            if opts.format != Format::Json {
                opts = DecodeOptions {
                    max_message_bytes: opts.max_message_bytes,
                    ..DecodeOptions::default()
                };
            }
            let constraints =
                Constraints::new(s.schema.clone(), &s.checks, s.event_time.map(|(c, _)| c))
                    .map_err(|e| StreamError::Plan(format!("table {}: {e}", s.name)))?;
            sources.push(ProbeSource {
                name: s.name.clone(),
                index,
                decode_schema: nullable,
                decode: opts,
                constraints,
            });
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        Ok((
            Prober {
                tx,
                sources: Arc::new(sources),
                targets: Arc::new(df.probe_targets()),
                source_names: Arc::new(df.sources().iter().map(|s| s.name.clone()).collect()),
            },
            ProbeQueue {
                rx,
                pending: Vec::new(),
                scope: plain,
                active_batch_rows: DEFAULT_ACTIVE_BATCH_ROWS,
                last_request: None,
            },
        ))
    }

    /// The views rows can be probed to.
    pub fn targets(&self) -> &[ProbeTarget] {
        &self.targets
    }

    fn source_name(&self, index: usize) -> &str {
        self.source_names.get(index).map_or("?", String::as_str)
    }

    fn list(&self) -> String {
        let views: Vec<String> = self
            .targets
            .iter()
            .map(|t| format!("{} (from {})", t.view, self.source_name(t.source)))
            .collect();
        if views.is_empty() {
            "this pipeline has no view computed row by row from a source".to_string()
        } else {
            format!("views that can be scored: {}", views.join(", "))
        }
    }

    /// The target a request means: the view it names, else the last view (in the file's
    /// order) computed row by row from `source`, which may be left out when there is one.
    pub fn target(
        &self,
        source: Option<&str>,
        view: Option<&str>,
    ) -> Result<&ProbeTarget, ProbeError> {
        if let Some(v) = view {
            let t = self
                .targets
                .iter()
                .find(|t| t.view.eq_ignore_ascii_case(v))
                .ok_or_else(|| {
                    ProbeError::Target(format!("no view {v} can be scored; {}", self.list()))
                })?;
            if let Some(s) = source
                && !self.source_name(t.source).eq_ignore_ascii_case(s)
            {
                return Err(ProbeError::Target(format!(
                    "view {} is computed from source {}, not {s}",
                    t.view,
                    self.source_name(t.source)
                )));
            }
            return Ok(t);
        }
        let source = match source {
            Some(s) => self
                .sources
                .iter()
                .find(|p| p.name.eq_ignore_ascii_case(s))
                .ok_or_else(|| {
                    let names: Vec<&str> = self.sources.iter().map(|p| p.name.as_str()).collect();
                    ProbeError::Target(format!(
                        "no source table {s}; the pipeline's sources are {}",
                        names.join(", ")
                    ))
                })?,
            None => match self.sources.as_slice() {
                [one] => one,
                many => {
                    let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
                    return Err(ProbeError::Target(format!(
                        "the pipeline has {} sources ({}): say which with ?source= or ?view=",
                        many.len(),
                        names.join(", ")
                    )));
                }
            },
        };
        self.targets
            .iter()
            .rev()
            .find(|t| t.source == source.index)
            .ok_or_else(|| {
                ProbeError::Target(format!(
                    "no view is computed row by row from source {}; {}",
                    source.name,
                    self.list()
                ))
            })
    }

    /// Scores `payloads` (one JSON object each, in the source table's columns) through
    /// `target`: decoded and checked here, followed through the dataflow on the pipeline's
    /// thread; waits at most `timeout` for it.
    pub async fn score(
        &self,
        target: &ProbeTarget,
        payloads: &[&[u8]],
        timeout: Duration,
    ) -> Result<Answer, ProbeError> {
        let source = self
            .sources
            .iter()
            .find(|s| s.index == target.source)
            .ok_or_else(|| ProbeError::Failed(format!("no source {}", target.source)))?;
        let failed = |e: &dyn std::fmt::Display| ProbeError::Failed(e.to_string());
        let mut decoder =
            Decoder::new(source.decode_schema.clone(), &source.decode).map_err(|e| failed(&e))?;
        let decoded: Vec<bool> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| decoder.push(p, "api", &format_args!("row {i}")))
            .collect();
        let (rows, dead) = decoder.flush().map_err(|e| failed(&e))?;
        let reasons = dead
            .column_by_name("reason")
            .and_then(|c| c.as_string_opt::<i32>().cloned());
        let (good, checks) = source
            .constraints
            .check_rows(rows.columns().to_vec())
            .map_err(|e| failed(&e))?;
        // Every row sent: rejected while decoding, by a constraint, or on to the pipeline.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(payloads.len());
        let (mut dead_at, mut row_at) = (0, 0);
        let mut sent = Vec::new();
        for ok in decoded {
            if !ok {
                let why = reasons
                    .as_ref()
                    .filter(|r| dead_at < r.len())
                    .map_or("does not decode".to_string(), |r| {
                        r.value(dead_at).to_string()
                    });
                dead_at += 1;
                outcomes.push(Some(Outcome::Rejected(why)));
                continue;
            }
            match &checks[row_at] {
                Some(why) => outcomes.push(Some(Outcome::Rejected(why.clone()))),
                None => {
                    sent.push(outcomes.len());
                    outcomes.push(None);
                }
            }
            row_at += 1;
        }
        let mut answer = Answer {
            source: source.name.clone(),
            view: target.view.clone(),
            watermark: None,
            rows: RecordBatch::new_empty(target.schema.clone()),
            outcomes: Vec::new(),
        };
        if !sent.is_empty() {
            let (reply, rx) = oneshot::channel();
            let request = Request {
                target: target.clone(),
                rows: good,
                reply,
                queued: Instant::now(),
            };
            self.tx.try_send(request).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProbeError::Busy,
                mpsc::error::TrySendError::Closed(_) => ProbeError::NotRunning,
            })?;
            let reply = match tokio::time::timeout(timeout, rx).await {
                Err(_) => return Err(ProbeError::Timeout(timeout)),
                Ok(Err(_)) => return Err(ProbeError::NotRunning),
                Ok(Ok(r)) => r.map_err(ProbeError::Failed)?,
            };
            answer.watermark = reply.watermark;
            answer.rows = reply.probed.rows;
            let mut probed = reply.probed.index.into_iter();
            for (&at, late) in sent.iter().zip(reply.late) {
                outcomes[at] = Some(match late {
                    Some(why) => Outcome::Late(why),
                    None => match probed.next().flatten() {
                        Some(i) => Outcome::Row(i),
                        None => Outcome::Filtered,
                    },
                });
            }
        }
        answer.outcomes = outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Filtered))
            .collect();
        Ok(answer)
    }
}

impl ProbeQueue {
    /// Runs every probe inside `scope` (e.g. [`txguard_iforest_datafusion`]'s `unobserved`,
    /// so that `/metrics` counts only the pipeline's own scores).
    pub fn with_scope(mut self, scope: fn(&mut dyn FnMut())) -> Self {
        self.scope = scope;
        self
    }

    /// Rows per poll while requests come (for [`ACTIVE_FOR`] after the last one): a request is
    /// answered between two batches, so it waits for the one in progress, and smaller batches
    /// answer sooner at some cost in throughput (docs/benchmarks.md). `usize::MAX` keeps the
    /// pipeline's own batch size.
    pub fn with_active_batch_rows(mut self, rows: usize) -> Self {
        self.active_batch_rows = rows.max(1);
        self
    }

    /// Rows to ask a source for now, given the pipeline's own `batch_rows`.
    pub(crate) fn batch_rows(&self, batch_rows: usize) -> usize {
        rows_per_poll(
            self.last_request,
            Instant::now(),
            batch_rows,
            self.active_batch_rows,
        )
    }

    fn take(&mut self, r: Request) {
        self.last_request = Some(Instant::now());
        self.pending.push(r);
    }

    /// Waits for the next request (cancel-safe: one taken is kept for [`ProbeQueue::serve`]).
    pub(crate) async fn wait(&mut self) {
        if let Some(r) = self.rx.recv().await {
            self.take(r);
        } else {
            // Every prober is gone: nothing will come.
            std::future::pending::<()>().await;
        }
    }

    /// Answers every request waiting, against `df`'s state now; `watermark` gives a source's
    /// current watermark (by dataflow source index); how long each waited goes into `waited`.
    /// Returns how many were answered.
    pub(crate) fn serve(
        &mut self,
        df: &Dataflow,
        watermark: impl Fn(usize) -> Option<i64>,
        waited: &crate::histogram::Histogram,
    ) -> usize {
        while let Ok(r) = self.rx.try_recv() {
            self.take(r);
        }
        let pending: Vec<Request> = std::mem::take(&mut self.pending)
            .into_iter()
            .filter(|r| !r.reply.is_closed()) // the client gave up
            .collect();
        for r in &pending {
            waited.observe_since(r.queued);
        }
        let answered = pending.len();
        // One pass through the dataflow per target for every request waiting: a batch costs
        // about as much as a row, and rows are probed each on its own anyway.
        let mut groups: Vec<Vec<Request>> = Vec::new();
        for r in pending {
            match groups.iter_mut().find(|g| {
                g[0].target.node == r.target.node && g[0].target.source == r.target.source
            }) {
                Some(g) => g.push(r),
                None => groups.push(vec![r]),
            }
        }
        for group in groups {
            let target = group[0].target.clone();
            let w = watermark(target.source);
            let event_time = df.sources().get(target.source).and_then(|s| s.event_time);
            let mut results = Vec::new();
            (self.scope)(&mut || results = answer_all(df, &target, &group, w, event_time));
            for (r, result) in group.into_iter().zip(results) {
                let _ = r.reply.send(result);
            }
        }
        answered
    }
}

/// `batch_rows`, or `active` if smaller while the last request is less than [`ACTIVE_FOR`] old.
fn rows_per_poll(
    last_request: Option<Instant>,
    now: Instant,
    batch_rows: usize,
    active: usize,
) -> usize {
    match last_request {
        Some(t) if now.saturating_duration_since(t) < ACTIVE_FOR => batch_rows.min(active),
        _ => batch_rows,
    }
}

/// The pipeline thread's part of the requests to one target: each request's late rows out,
/// the others of all of them probed in one pass and handed back per request.
fn answer_all(
    df: &Dataflow,
    target: &ProbeTarget,
    requests: &[Request],
    watermark: Option<i64>,
    event_time: Option<(usize, i64)>,
) -> Vec<Result<Reply, String>> {
    let fail = |e: String| requests.iter().map(|_| Err(e.clone())).collect();
    let mut lates = Vec::with_capacity(requests.len());
    let mut kept = Vec::with_capacity(requests.len());
    for r in requests {
        match late_rows(r, watermark, event_time) {
            Ok((late, rows)) => {
                lates.push(late);
                kept.push(rows);
            }
            Err(e) => return fail(e),
        }
    }
    let Some(first) = kept.first() else {
        return Vec::new();
    };
    let all = match arrow::compute::concat_batches(&first.schema(), &kept) {
        Ok(b) => b,
        Err(e) => return fail(e.to_string()),
    };
    let probed = match df.probe(target, &all) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let mut out = Vec::with_capacity(requests.len());
    let mut at = 0;
    for (rows, late) in kept.iter().zip(lates) {
        let own = &probed.index[at..at + rows.num_rows()];
        at += rows.num_rows();
        let picks: Vec<u32> = own.iter().flatten().map(|&i| i as u32).collect();
        let mut next = 0;
        let index = own
            .iter()
            .map(|i| {
                i.map(|_| {
                    next += 1;
                    next - 1
                })
            })
            .collect();
        out.push(
            take_record_batch(&probed.rows, &UInt32Array::from(picks))
                .map_err(|e| e.to_string())
                .map(|rows| Reply {
                    watermark,
                    probed: Probed { rows, index },
                    late,
                }),
        );
    }
    out
}

/// A request's rows behind the watermark (each with why) and the others.
fn late_rows(
    r: &Request,
    watermark: Option<i64>,
    event_time: Option<(usize, i64)>,
) -> Result<(Vec<Option<String>>, RecordBatch), String> {
    let n = r.rows.num_rows();
    let mut late = vec![None; n];
    if let (Some(w), Some((col, bound))) = (watermark, event_time) {
        let ts = r
            .rows
            .column(col)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or("the event-time column is not a timestamp")?;
        for (i, l) in late.iter_mut().enumerate() {
            if ts.is_valid(i) && ts.value(i) < w {
                *l = Some(format!(
                    "event time {} is behind the source's watermark {} (allowed lateness {} ms): \
                     the pipeline would take it as late; send a time at or after the watermark",
                    format_micros(ts.value(i)),
                    format_micros(w),
                    bound / 1000
                ));
            }
        }
    }
    let keep: Vec<u32> = (0..n as u32)
        .filter(|&i| late[i as usize].is_none())
        .collect();
    let rows = if keep.len() == n {
        r.rows.clone()
    } else {
        take_record_batch(&r.rows, &UInt32Array::from(keep)).map_err(|e| e.to_string())?
    };
    Ok((late, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_while_requests_come_and_grow_back_after() {
        let t = Instant::now();
        assert_eq!(rows_per_poll(None, t, 8192, 1024), 8192, "no request yet");
        assert_eq!(rows_per_poll(Some(t), t, 8192, 1024), 1024);
        let later = t + ACTIVE_FOR - Duration::from_millis(1);
        assert_eq!(rows_per_poll(Some(t), later, 8192, 1024), 1024);
        assert_eq!(rows_per_poll(Some(t), t + ACTIVE_FOR, 8192, 1024), 8192);
        assert_eq!(
            rows_per_poll(Some(t), t, 512, 1024),
            512,
            "never more than --batch-rows"
        );
    }
}
