//! `kafka` source: a consumer-group member reading JSON transactions from a topic through
//! the event-contract decoder; unusable messages become dead letters at `partition P offset
//! O` with the reason. Offsets are committed to the group only for input every sink has made
//! durable: at each checkpoint barrier the source records, per partition, the first offset
//! whose row may still wait in the runtime's event-time buffer, and commits those offsets
//! when the runtime reports the epoch durable. A restart (or the partition's next owner after
//! a rebalance) resumes there; rows after it may be read twice, which upserting sinks absorb.
//!
//! Per-partition event time: partitions are fetched in batches, so a backlog read from
//! several partitions interleaves far-apart event times. The source holds each row until
//! every assigned partition that is not caught up (at its end) has shown an event time at
//! least as late, so one slow partition holds time back and a caught-up one does not; the
//! runtime's bounded-out-of-orderness watermark then sees each partition's own disorder only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::decode::Decoder;
use txguard_engine::sql::TableDef;

/// Partitions taken away by a rebalance, for the source to forget; client errors to the log.
#[derive(Default)]
pub struct Rebalances {
    revoked: Mutex<Vec<i32>>,
    errors: super::ErrorLog,
}

impl ClientContext for Rebalances {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }
}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?parts, "kafka: partitions revoked");
            if let Ok(mut r) = self.revoked.lock() {
                r.extend(parts);
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            tracing::info!(partitions = ?parts, "kafka: partitions assigned");
        }
    }
}

/// Reads one topic as a member of a consumer group.
pub struct KafkaSource {
    name: String,
    topic: String,
    consumer: BaseConsumer<Rebalances>,
    decoder: Decoder,
    stop_at_end: bool,
    /// Partitions read to their end (caught up) and not heard from since.
    at_end: HashSet<i32>,
    /// (partition, offset) of the messages decoded since the last flush, in order.
    accepted: Vec<(i32, i64)>,
    /// Per partition: (offset, event time) of rows not yet known to be released.
    waiting: HashMap<i32, VecDeque<(i64, i64)>>,
    /// Per partition: the offset after the last message read.
    next: HashMap<i32, i64>,
    /// Offsets recorded at each barrier, oldest first.
    barriers: VecDeque<(u64, BTreeMap<i32, i64>)>,
    read: u64,
    /// Rows held until every active partition has caught up with them.
    held: Vec<Held>,
    /// Per partition: the latest event time read.
    max_ts: HashMap<i32, i64>,
}

impl KafkaSource {
    pub fn open(table: &TableDef) -> Result<Self, ConnectorError> {
        let text = |k: &str| table.option(k).map(|o| o.value.as_text());
        let mut cfg = super::client_config(table)?;
        let group = text("source.group_id").unwrap_or_else(|| format!("txguard-{}", table.name));
        let reset = match text("source.offset").as_deref() {
            Some("latest") => "latest",
            _ => "earliest",
        };
        let isolation = match text("source.read_mode").as_deref() {
            Some("read_uncommitted") => "read_uncommitted",
            _ => "read_committed",
        };
        let stop_at_end = text("source.stop_at_end").is_some_and(|v| v == "true");
        for (k, v) in [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", reset),
            ("isolation.level", isolation),
            // Also without stop_at_end: a caught-up partition must not hold time back.
            ("enable.partition.eof", "true"),
        ] {
            if cfg.get(k).is_none() {
                cfg.set(k, v);
            }
        }
        let topic = super::topic(table)?;
        let servers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
        let consumer: BaseConsumer<Rebalances> = cfg
            .create_with_context(Rebalances {
                revoked: Mutex::default(),
                errors: super::ErrorLog::new(servers),
            })
            .map_err(|e| ConnectorError::new(&table.name, format!("kafka consumer: {e}")))?;
        consumer.subscribe(&[&topic]).map_err(|e| {
            ConnectorError::new(&table.name, format!("subscribing to {topic}: {e}"))
        })?;
        tracing::info!(topic = %topic, group = %group, "kafka source subscribed");
        Ok(KafkaSource {
            name: table.name.clone(),
            topic,
            consumer,
            decoder: Decoder::default(),
            stop_at_end,
            at_end: HashSet::new(),
            accepted: Vec::new(),
            waiting: HashMap::new(),
            next: HashMap::new(),
            barriers: VecDeque::new(),
            read: 0,
            held: Vec::new(),
            max_ts: HashMap::new(),
        })
    }

    /// Forgets partitions a rebalance took away (their next owner resumes from the group's
    /// committed offsets).
    fn forget_revoked(&mut self) {
        let revoked: Vec<i32> = match self.consumer.context().revoked.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        for p in revoked {
            self.max_ts.remove(&p);
            self.waiting.remove(&p);
            self.next.remove(&p);
            self.at_end.remove(&p);
        }
    }

    /// Whether every assigned partition is at its end.
    fn all_at_end(&self) -> bool {
        match self.consumer.assignment() {
            Ok(a) if a.count() > 0 => a
                .elements()
                .iter()
                .all(|e| self.at_end.contains(&e.partition())),
            _ => false,
        }
    }
}

impl KafkaSource {
    /// The event time every active partition has reached: rows up to it can go on. Partitions
    /// at their end do not hold time back; one that has shown nothing yet holds everything.
    fn frontier(&self, ended: bool) -> i64 {
        if ended {
            return i64::MAX;
        }
        let Ok(assigned) = self.consumer.assignment() else {
            return i64::MIN;
        };
        assigned
            .elements()
            .iter()
            .map(|e| e.partition())
            .filter(|p| !self.at_end.contains(p))
            .map(|p| self.max_ts.get(&p).copied().unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Adds `rows` to the held rows and gives back those at or before the
    /// frontier, in event-time order. Held rows stay in the chunks they came in; a chunk whose
    /// earliest row is past the frontier is not touched, so a partition far ahead costs
    /// nothing per poll.
    fn align(
        &mut self,
        rows: Option<RecordBatch>,
        ended: bool,
    ) -> Result<Option<RecordBatch>, arrow::error::ArrowError> {
        if let Some(r) = rows.filter(|r| r.num_rows() > 0) {
            let min_ts = event_times(&r).and_then(|t| t.iter().min().copied());
            self.held.push(Held {
                rows: r,
                min_ts: min_ts.unwrap_or(i64::MIN),
            });
        }
        let frontier = self.frontier(ended);
        let mut out = Vec::new();
        let mut kept = Vec::with_capacity(self.held.len());
        for h in std::mem::take(&mut self.held) {
            if h.min_ts > frontier {
                kept.push(h);
                continue;
            }
            let Some(ts) = event_times(&h.rows) else {
                out.push(h.rows);
                continue;
            };
            let go: arrow::array::BooleanArray = ts.iter().map(|&t| Some(t <= frontier)).collect();
            if go.true_count() == h.rows.num_rows() {
                out.push(h.rows);
                continue;
            }
            let keep = arrow::compute::not(&go)?;
            let rest = arrow::compute::filter_record_batch(&h.rows, &keep)?;
            let min_ts = event_times(&rest)
                .and_then(|t| t.iter().min().copied())
                .unwrap_or(i64::MIN);
            out.push(arrow::compute::filter_record_batch(&h.rows, &go)?);
            kept.push(Held { rows: rest, min_ts });
        }
        self.held = kept;
        let out: Vec<RecordBatch> = out.into_iter().filter(|b| b.num_rows() > 0).collect();
        let Some(first) = out.first() else {
            return Ok(None);
        };
        let all = arrow::compute::concat_batches(&first.schema(), &out)?;
        sorted(&all).map(Some)
    }
}

/// Rows the source holds back, as they arrived in one poll.
struct Held {
    rows: RecordBatch,
    /// The earliest event time among them.
    min_ts: i64,
}

/// The event-time values of a batch of transactions.
fn event_times(rows: &RecordBatch) -> Option<&[i64]> {
    rows.column_by_name("ts")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .map(|a| a.values().as_ref())
}

/// `rows` in event-time order: rows from several partitions arrive interleaved, and the
/// runtime's watermark advances row by row.
fn sorted(rows: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let Some(ts) = rows.column_by_name("ts") else {
        return Ok(rows.clone());
    };
    let order = arrow::compute::sort_to_indices(ts, None, None)?;
    arrow::compute::take_record_batch(rows, &order)
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        txguard_engine::event::transaction_schema()
    }

    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
        self.forget_revoked();
        let mut timeout = Duration::from_millis(50);
        while self.decoder.pending_rows() + self.decoder.pending_dead() < max_rows {
            match self.consumer.poll(timeout) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    self.at_end.insert(p);
                    if self.stop_at_end && self.all_at_end() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    self.consumer.context().errors.report(&e, &self.topic);
                    break;
                }
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    self.at_end.remove(&p);
                    self.next.insert(p, o + 1);
                    self.read += 1;
                    let position = format!("partition {p} offset {o}");
                    if self
                        .decoder
                        .push(m.payload().unwrap_or_default(), &self.topic, &position)
                    {
                        self.accepted.push((p, o));
                    }
                }
            }
            timeout = Duration::ZERO;
        }
        let ended = self.stop_at_end && self.all_at_end();
        let (rows, dead) = if self.decoder.pending_rows() + self.decoder.pending_dead() > 0 {
            let (rows, dead) = self
                .decoder
                .flush()
                .map_err(|e| ConnectorError::new(&self.name, e))?;
            (Some(rows), Some(dead).filter(|d| d.num_rows() > 0))
        } else {
            (None, None)
        };
        if let Some(ts) = rows.as_ref().and_then(event_times) {
            for (&(p, o), &t) in self.accepted.iter().zip(ts) {
                self.waiting.entry(p).or_default().push_back((o, t));
                let m = self.max_ts.entry(p).or_insert(t);
                *m = (*m).max(t);
            }
        }
        self.accepted.clear();
        let ready = self
            .align(rows, ended)
            .map_err(|e| ConnectorError::new(&self.name, e))?;
        match (ready, dead) {
            (None, None) => Ok(if ended && self.held.is_empty() {
                Poll::End
            } else {
                Poll::Idle
            }),
            (ready, dead) => Ok(Poll::Data {
                rows: match ready {
                    Some(r) => r,
                    None => RecordBatch::new_empty(self.schema()),
                },
                dead,
            }),
        }
    }

    fn position(&self) -> String {
        let mut parts: Vec<_> = self.next.iter().collect();
        parts.sort();
        format!(
            "{} messages read from {}; next offsets {}",
            self.read,
            self.topic,
            parts
                .iter()
                .map(|(p, o)| format!("{p}:{o}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    }

    fn barrier(&mut self, epoch: u64, released_before: Option<i64>) {
        let mut offsets = BTreeMap::new();
        for (&p, &next) in &self.next {
            let q = self.waiting.entry(p).or_default();
            while q
                .front()
                .is_some_and(|&(_, t)| released_before.is_none_or(|w| t < w))
            {
                q.pop_front();
            }
            offsets.insert(p, q.front().map_or(next, |&(o, _)| o));
        }
        self.barriers.push_back((epoch, offsets));
    }

    fn committed(&mut self, epoch: u64) -> Result<(), ConnectorError> {
        let mut latest = None;
        while self.barriers.front().is_some_and(|(e, _)| *e <= epoch) {
            latest = self.barriers.pop_front().map(|(_, o)| o);
        }
        let Some(offsets) = latest.filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(&self.topic, p, Offset::Offset(o))
                .map_err(|e| ConnectorError::new(&self.name, e))?;
        }
        match self.consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => Ok(()),
            // Nothing new to commit is success (librdkafka says NoOffset).
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => {
                // A rebalance may have moved the partitions: the next owner resumes from the
                // last commit that landed; rows after it are read again (upserts absorb them).
                tracing::warn!(source = %self.name, "kafka: committing offsets: {e}");
                Ok(())
            }
        }
    }
}

/// Leaves the group on drop, so its partitions move to the other members at once instead of
/// after the session timeout.
impl Drop for KafkaSource {
    fn drop(&mut self) {
        self.consumer.unsubscribe();
    }
}
