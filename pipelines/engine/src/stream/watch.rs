//! Live looks into a running dataflow, for the console and its API: the dataflow's graph
//! ([`Graph`]), the rows out of each operator so far and each stateful operator's key count
//! ([`Watch`]), and taps — copies of an operator's output batches sent to whoever subscribed
//! (a preview query, the anomalies page). Nothing here can hold the pipeline back: counting is
//! one relaxed atomic add per operator and step, an operator nobody taps costs one atomic
//! load, and a subscriber that falls behind loses batches (counted in [`Tap::dropped`]), it
//! never makes the dataflow wait.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use serde::Serialize;
use tokio::sync::mpsc;

/// The dataflow as nodes and edges: what `txguard validate` prints as a tree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
}

/// One operator of a [`Graph`].
#[derive(Debug, Clone, Serialize)]
pub struct GraphNode {
    /// Its index (what [`Watch`] and [`Watch::subscribe`] take).
    pub id: usize,
    /// `source`, `project`, `filter`, `over`, `window` or `sink`.
    pub kind: &'static str,
    /// What it computes, as `txguard validate` prints it.
    pub label: String,
    /// The node it reads (none for a source).
    pub input: Option<usize>,
    /// The relation it is: a source table, a view or a sink table, if any.
    pub relation: Option<String>,
    /// Whether it keeps keyed state (an OVER window or a windowed aggregation).
    pub stateful: bool,
    /// Its output's columns as `(name, type)`.
    pub columns: Vec<(String, String)>,
    /// Its output's schema.
    #[serde(skip)]
    pub schema: arrow::datatypes::SchemaRef,
}

impl Graph {
    /// The node a source table, view or sink table is (names compared case-insensitively).
    pub fn relation(&self, name: &str) -> Option<&GraphNode> {
        self.nodes.iter().find(|n| {
            n.relation
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(name))
        })
    }
}

/// One node's live counters and subscribers.
#[derive(Default)]
struct NodeWatch {
    rows: AtomicU64,
    /// Keys (or open windows) a stateful operator holds; `u64::MAX`: not stateful.
    keys: AtomicU64,
    listeners: AtomicUsize,
    subscribers: Mutex<Vec<Subscriber>>,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<RecordBatch>,
    dropped: Arc<AtomicU64>,
}

/// The live counters of a dataflow's operators and their taps; shared between the dataflow
/// (which writes) and whoever looks (the web console).
pub struct Watch {
    nodes: Box<[NodeWatch]>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl Watch {
    pub(crate) fn new(stateful: impl Iterator<Item = bool>) -> Self {
        Watch {
            nodes: stateful
                .map(|s| NodeWatch {
                    keys: AtomicU64::new(if s { 0 } else { u64::MAX }),
                    ..NodeWatch::default()
                })
                .collect(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Rows node `node` has put out so far.
    pub fn rows(&self, node: usize) -> u64 {
        self.nodes
            .get(node)
            .map_or(0, |n| n.rows.load(Ordering::Relaxed))
    }

    /// Keys (OVER windows: partition keys; windowed aggregations: open windows per key) a
    /// stateful node holds, as of its last step; `None` for a node without state.
    pub fn keys(&self, node: usize) -> Option<u64> {
        let k = self.nodes.get(node)?.keys.load(Ordering::Relaxed);
        (k != u64::MAX).then_some(k)
    }

    /// Copies of node `node`'s output batches from now on, at most `capacity` waiting (more
    /// are dropped and counted); `None` for a node the dataflow does not have. Dropping the
    /// [`Tap`] ends the subscription.
    pub fn subscribe(self: &Arc<Self>, node: usize, capacity: usize) -> Option<Tap> {
        let n = self.nodes.get(node)?;
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut subs = n.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subs.push(Subscriber {
            id,
            tx,
            dropped: dropped.clone(),
        });
        n.listeners.store(subs.len(), Ordering::Release);
        Some(Tap {
            rx,
            watch: self.clone(),
            node,
            id,
            dropped,
        })
    }

    fn unsubscribe(&self, node: usize, id: u64) {
        if let Some(n) = self.nodes.get(node) {
            let mut subs = n.subscribers.lock().unwrap_or_else(|e| e.into_inner());
            subs.retain(|s| s.id != id);
            n.listeners.store(subs.len(), Ordering::Release);
        }
    }

    /// What node `node` put out in one step.
    pub(crate) fn observe(&self, node: usize, batch: &RecordBatch) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        if batch.num_rows() == 0 {
            return;
        }
        n.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if n.listeners.load(Ordering::Acquire) == 0 {
            return;
        }
        let subs = n.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs.iter() {
            if s.tx.try_send(batch.clone()).is_err() {
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A stateful node's key count after a step.
    pub(crate) fn set_keys(&self, node: usize, keys: usize) {
        if let Some(n) = self.nodes.get(node) {
            n.keys.store(keys as u64, Ordering::Relaxed);
        }
    }
}

/// A subscription to one node's output batches ([`Watch::subscribe`]).
pub struct Tap {
    rx: mpsc::Receiver<RecordBatch>,
    watch: Arc<Watch>,
    node: usize,
    id: u64,
    dropped: Arc<AtomicU64>,
}

impl Tap {
    /// The next batch the node puts out (waits while it puts out none: callers bound the
    /// wait).
    pub async fn recv(&mut self) -> Option<RecordBatch> {
        self.rx.recv().await
    }

    /// Batches lost because this subscriber was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.watch.unsubscribe(self.node, self.id);
    }
}
