//! Streaming SQL: a pipeline's views and inserts planned ([`plan`]) into a [`Dataflow`] — a
//! tree of operators per source — and the push-based execution of that dataflow: each step
//! takes a source's batch (in event-time order) and its watermark, and returns what each sink
//! receives. Sources, sinks, checkpoints and threads are the runtime's business, not this
//! module's.

mod ops;
mod plan;
pub mod watch;

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

pub use plan::plan;
pub use watch::{Graph, GraphNode, Tap, Watch};

use ops::Op;
pub(crate) use ops::cast_to;

/// The built-in stream of rejected events (undecodable, contract-breaking or late), with the
/// dead-letter schema ([`crate::event::dead_letter_schema`]). A pipeline writes it to a sink
/// with `INSERT INTO dead_letters SELECT * FROM txguard_dead_letters`.
pub const DEAD_LETTERS: &str = "txguard_dead_letters";

/// A failure while running the dataflow.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    DataFusion(String),
    #[error("{0}")]
    Plan(String),
}

impl From<datafusion::error::DataFusionError> for StreamError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        StreamError::DataFusion(crate::sql::strip(e))
    }
}

/// One operator of the dataflow.
pub(crate) struct Node {
    pub op: Op,
    /// The node whose output this one reads (none for a source).
    pub input: Option<usize>,
    /// The source node this one descends from.
    pub root: usize,
    pub schema: SchemaRef,
    /// The column holding the source's event time, while it still does.
    pub et: Option<usize>,
    pub label: String,
}

/// Where a source's batches enter.
#[derive(Debug, Clone)]
pub struct StreamSource {
    pub name: String,
    pub node: usize,
    /// The columns the source table declares, in order.
    pub schema: SchemaRef,
    /// (event-time column, allowed lateness in µs) from `WATERMARK FOR`.
    pub event_time: Option<(usize, i64)>,
    /// The table's `CHECK` constraints, applied to every row before it enters.
    pub checks: Vec<crate::sql::CheckDef>,
}

/// What a sink table receives.
#[derive(Debug, Clone)]
pub struct StreamSink {
    pub table: String,
    pub node: usize,
    /// The sink table's declared columns; batches arrive in exactly this schema.
    pub schema: SchemaRef,
}

/// A view whose rows the online scoring API can compute for a probed row: every operator
/// between it and its source works row by row (no windowed aggregation).
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub view: String,
    /// Index of its source in [`Dataflow::sources`].
    pub source: usize,
    pub node: usize,
    pub schema: SchemaRef,
}

/// What [`Dataflow::probe`] gave: the view's rows, and for each probed row the index of its
/// row among them (`None`: a `WHERE` on the way dropped it).
#[derive(Debug, Clone)]
pub struct Probed {
    pub rows: RecordBatch,
    pub index: Vec<Option<usize>>,
}

/// A planned pipeline, ready to be fed.
pub struct Dataflow {
    nodes: Vec<Node>,
    sources: Vec<StreamSource>,
    sinks: Vec<StreamSink>,
    /// View name → its node.
    views: Vec<(String, usize)>,
    /// Dead letters of rows sinks refused, until [`Dataflow::take_rejected`].
    rejected: Vec<RecordBatch>,
    /// Rows per operator, key counts and taps, for the console.
    watch: Arc<Watch>,
}

impl Dataflow {
    pub(crate) fn new(
        nodes: Vec<Node>,
        sources: Vec<StreamSource>,
        sinks: Vec<StreamSink>,
        views: Vec<(String, usize)>,
    ) -> Self {
        let watch = Arc::new(Watch::new(nodes.iter().map(|n| n.op.stateful().is_some())));
        Dataflow {
            nodes,
            sources,
            sinks,
            views,
            rejected: Vec::new(),
            watch,
        }
    }

    /// Rows sinks refused since the last call (NULL in a NOT NULL column), as dead letters
    /// for [`DEAD_LETTERS`]; the runtime feeds them back in.
    pub fn take_rejected(&mut self) -> Vec<RecordBatch> {
        std::mem::take(&mut self.rejected)
    }

    /// Adds a sink that receives a view's rows (what `txguard train` fits on, and tests);
    /// returns its index in [`Dataflow::sinks`].
    pub fn tap(&mut self, view: &str) -> Option<usize> {
        let node = self.views.iter().find(|(v, _)| v == view)?.1;
        self.sinks.push(StreamSink {
            table: view.to_string(),
            node,
            schema: self.nodes[node].schema.clone(),
        });
        Some(self.sinks.len() - 1)
    }

    /// Every stateful operator's state, as `(operator id, state)`: the id is the node's
    /// place and label (stable for the same pipeline file), the state's schema carries the
    /// operator's fingerprint ([`crate::state`]). With `changes_only`, an operator that
    /// tracks its changes gives only those since its last snapshot or restore.
    pub fn snapshot(
        &mut self,
        changes_only: bool,
    ) -> Result<Vec<(String, crate::state::Snapshot)>, StreamError> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let id = format!("{i}-{}", n.label);
            if let Some(op) = n.op.stateful_mut() {
                out.push((id, op.take_snapshot(changes_only)?));
            }
        }
        Ok(out)
    }

    /// Whether [`Dataflow::restore`] would take `states`: every stateful operator finds its
    /// state, and every state its operator (same id and fingerprint); else an error naming
    /// the operator and what differs.
    pub fn check_restore(&self, states: &[(String, RecordBatch)]) -> Result<(), StreamError> {
        self.staged(states).map(drop)
    }

    /// Each stateful operator's node with its saved state, all checked.
    fn staged<'a>(
        &self,
        states: &'a [(String, RecordBatch)],
    ) -> Result<Vec<(usize, String, &'a RecordBatch)>, StreamError> {
        let ids: Vec<(usize, String)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op.stateful().is_some())
            .map(|(i, n)| (i, format!("{i}-{}", n.label)))
            .collect();
        for (id, _) in states {
            if !ids.iter().any(|(_, i)| i == id) {
                return Err(StreamError::Plan(format!(
                    "the saved state has operator {id}, which this pipeline does not (the SQL \
                     changed since the checkpoint)"
                )));
            }
        }
        let mut staged = Vec::with_capacity(ids.len());
        for (node, id) in ids {
            let state = states.iter().find(|(i, _)| *i == id).ok_or_else(|| {
                StreamError::Plan(format!("the saved state has nothing for operator {id}"))
            })?;
            if let Some(op) = self.nodes[node].op.stateful() {
                crate::state::check_fingerprint(&state.1, &op.fingerprint())
                    .map_err(|e| StreamError::Plan(format!("operator {id}: {e}")))?;
            }
            staged.push((node, id, &state.1));
        }
        Ok(staged)
    }

    /// Restores what [`Dataflow::snapshot`] took from the same pipeline: every stateful
    /// operator must find its state, and every state its operator (same id and fingerprint);
    /// anything else is an error naming the operator, and nothing is restored partly.
    pub fn restore(&mut self, states: &[(String, RecordBatch)]) -> Result<(), StreamError> {
        for (node, id, state) in self.staged(states)? {
            if let Some(op) = self.nodes[node].op.stateful_mut() {
                op.restore(state)
                    .map_err(|e| StreamError::Plan(format!("operator {id}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The sources (the declared source tables, then [`DEAD_LETTERS`]).
    pub fn sources(&self) -> &[StreamSource] {
        &self.sources
    }

    /// Index of a source by table name.
    pub fn source_index(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    pub fn sinks(&self) -> &[StreamSink] {
        &self.sinks
    }

    /// Feeds source `source` one batch (rows in event-time order, none behind a watermark
    /// already given) and its current watermark; returns `(sink index, rows)` for each sink
    /// that received rows.
    pub fn push(
        &mut self,
        source: usize,
        batch: Option<RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<Vec<(usize, RecordBatch)>, StreamError> {
        self.step(source, batch, watermark, false)
    }

    /// End of `source`'s input: every window still open is emitted.
    pub fn finish(&mut self, source: usize) -> Result<Vec<(usize, RecordBatch)>, StreamError> {
        self.step(source, None, Some(i64::MAX), true)
    }

    fn step(
        &mut self,
        source: usize,
        batch: Option<RecordBatch>,
        watermark: Option<i64>,
        end: bool,
    ) -> Result<Vec<(usize, RecordBatch)>, StreamError> {
        let Some(src) = self.sources.get(source) else {
            return Err(StreamError::Plan(format!("no source {source}")));
        };
        let root = src.node;
        if let Some(b) = &batch
            && b.schema().fields().len() != src.schema.fields().len()
        {
            return Err(StreamError::Plan(format!(
                "source {} gave {} columns, it declares {}",
                src.name,
                b.num_columns(),
                src.schema.fields().len()
            )));
        }
        let mut outs: Vec<Option<RecordBatch>> = vec![None; self.nodes.len()];
        if let Some(b) = &batch {
            self.watch.observe(root, b);
        }
        outs[root] = batch;
        for i in root + 1..self.nodes.len() {
            let node = &mut self.nodes[i];
            let Some(input) = node.input else { continue };
            if node.root != root {
                continue;
            }
            let out = node.op.step(
                &node.schema,
                outs[input].as_ref(),
                watermark,
                end,
                &mut self.rejected,
            )?;
            if let Some(b) = &out {
                self.watch.observe(i, b);
            }
            if let Some(s) = node.op.stateful() {
                self.watch.set_keys(i, s.keys());
            }
            outs[i] = out;
        }
        Ok(self
            .sinks
            .iter()
            .enumerate()
            .filter_map(|(s, sink)| {
                outs[sink.node]
                    .as_ref()
                    .filter(|b| b.num_rows() > 0)
                    .cloned()
                    .map(|b| (s, b))
            })
            .collect())
    }

    /// The nodes from `node`'s source down to `node`.
    fn path(&self, node: usize) -> Vec<usize> {
        let mut path = vec![node];
        let mut at = node;
        while let Some(i) = self.nodes[at].input {
            path.push(i);
            at = i;
        }
        path.reverse();
        path
    }

    /// The views a probed row of a declared source can be followed to, in the order the
    /// pipeline declares them.
    pub fn probe_targets(&self) -> Vec<ProbeTarget> {
        self.views
            .iter()
            .filter_map(|(view, node)| {
                let root = self.nodes[*node].root;
                let source = self
                    .sources
                    .iter()
                    .position(|s| s.node == root && s.name != DEAD_LETTERS)?;
                let path = self.path(*node);
                path.iter()
                    .all(|&i| self.nodes[i].op.per_row())
                    .then(|| ProbeTarget {
                        view: view.clone(),
                        source,
                        node: *node,
                        schema: self.nodes[*node].schema.clone(),
                    })
            })
            .collect()
    }

    /// `batch` (rows of the target's source, in its declared schema) followed to a
    /// [`ProbeTarget`]'s view as if each row were its key's next, each on its own, against
    /// the live state of every operator on the way, which it does not change.
    pub fn probe(&self, target: &ProbeTarget, batch: &RecordBatch) -> Result<Probed, StreamError> {
        let path = self.path(target.node);
        let through = |b: &RecordBatch| -> Result<RecordBatch, StreamError> {
            let mut b = b.clone();
            for &i in &path[1..] {
                let n = &self.nodes[i];
                b = n.op.probe(&n.schema, &b)?.ok_or_else(|| {
                    StreamError::Plan(format!("{} has no per-row output", n.label))
                })?;
            }
            Ok(b)
        };
        let filters = path
            .iter()
            .any(|&i| matches!(self.nodes[i].op, Op::Filter(_)));
        if !filters {
            let rows = through(batch)?;
            return Ok(Probed {
                index: (0..rows.num_rows()).map(Some).collect(),
                rows,
            });
        }
        // A WHERE may drop rows: each row alone, so every answer finds its row.
        let mut parts = Vec::with_capacity(batch.num_rows());
        let mut index = Vec::with_capacity(batch.num_rows());
        let mut at = 0;
        for r in 0..batch.num_rows() {
            let out = through(&batch.slice(r, 1))?;
            if out.num_rows() == 1 {
                index.push(Some(at));
                at += 1;
                parts.push(out);
            } else {
                index.push(None);
            }
        }
        let rows = arrow::compute::concat_batches(&target.schema, &parts)?;
        Ok(Probed { rows, index })
    }

    /// The live counters and taps of this dataflow's operators (shared: they stay readable
    /// while the dataflow runs on another thread).
    pub fn watch(&self) -> Arc<Watch> {
        self.watch.clone()
    }

    /// The dataflow as nodes and edges, each node named by the relation it is (if any).
    pub fn graph(&self) -> Graph {
        let relation = |i: usize| {
            self.sources
                .iter()
                .find(|s| s.node == i)
                .map(|s| s.name.clone())
                .or_else(|| {
                    self.views
                        .iter()
                        .find(|(_, n)| *n == i)
                        .map(|(v, _)| v.clone())
                })
                .or_else(|| match &self.nodes[i].op {
                    Op::Sink { table, .. } => Some(table.clone()),
                    _ => None,
                })
        };
        Graph {
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| GraphNode {
                    id: i,
                    kind: n.op.kind(),
                    label: n.label.clone(),
                    input: n.input,
                    relation: relation(i),
                    stateful: n.op.stateful().is_some(),
                    columns: n
                        .schema
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), f.data_type().to_string()))
                        .collect(),
                    schema: n.schema.clone(),
                })
                .collect(),
        }
    }

    /// The dataflow as an indented tree per source, for `txguard validate`.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        fn walk(df: &Dataflow, node: usize, depth: usize, out: &mut String) {
            let _ = writeln!(out, "{}{}", "  ".repeat(depth), df.nodes[node].label);
            for (i, n) in df.nodes.iter().enumerate() {
                if n.input == Some(node) {
                    walk(df, i, depth + 1, out);
                }
            }
        }
        for s in &self.sources {
            walk(self, s.node, 0, &mut out);
        }
        out
    }
}
