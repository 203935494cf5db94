//! `kafka` source: a consumer-group member reading messages from a topic, decoded into the
//! table's declared columns (its `format`: json or raw_string); unusable messages become dead letters at `partition P offset
//! O` with the reason. Offsets are committed to the group only for input every sink has made
//! durable: at each checkpoint barrier the source records, per partition, the first offset
//! whose row may still wait in the runtime's event-time buffer, and commits those offsets
//! when the runtime reports the epoch durable. A restart (or the partition's next owner after
//! a rebalance) resumes there; rows after it may be read twice, which upserting sinks absorb.
//! A partition a rebalance hands back to the member that had it resumes after what that
//! member already read (the re-read messages are skipped), so it turns nothing late.
//!
//! A reader thread polls the consumer and decodes ahead of the pipeline into Arrow chunks
//! (bounded: back-pressure stops it), so fetching and JSON decoding use the second core.
//!
//! Per-partition event time: partitions are fetched in batches, so a backlog read from
//! several partitions interleaves far-apart event times. The source gives every row on at
//! once and reports its [`Source::frontier`]: the event time every assigned partition that is
//! not caught up (at its end) has reached. The runtime's event-time buffer holds rows past it
//! (its watermark is `min(newest seen, frontier) - lateness`), so one slow partition holds
//! time back and a caught-up one does not, and each partition's own disorder is all the
//! bounded-out-of-orderness watermark sees. Event time is kept in that one place.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::decode::Decoder;
use txguard_engine::sql::TableDef;

use super::metadata::MetadataColumns;

/// Partitions taken away by a rebalance, for the source to forget; client errors to the log;
/// the checkpoint's offsets, each applied to its partition's first assignment.
#[derive(Default)]
pub struct Rebalances {
    revoked: Mutex<Vec<i32>>,
    errors: super::ErrorLog,
    topic: String,
    resume: Mutex<BTreeMap<i32, i64>>,
    /// Each assigned partition's consumer lag, from librdkafka's latest statistics.
    lag: Mutex<BTreeMap<i32, i64>>,
}

/// Where a Kafka source is: per partition, the offset after the last message it gave. Kept
/// in the checkpoint (the group's committed offsets trail it: they are committed only once
/// the sinks have committed the epoch), and applied when the partition is first assigned
/// after a restart.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KafkaPosition {
    pub topic: String,
    pub offsets: BTreeMap<i32, i64>,
}

impl ClientContext for Rebalances {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): each partition's consumer
    /// lag. Read from the JSON directly: only these fields matter, and a broker that omits
    /// another must not make the whole document unreadable.
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let mut lag = BTreeMap::new();
        if let Some(parts) = v["topics"][&self.topic]["partitions"].as_object() {
            for (id, p) in parts {
                // Partition -1 is librdkafka's internal "unassigned" queue.
                let Some(id) = id.parse::<i32>().ok().filter(|id| *id >= 0) else {
                    continue;
                };
                let l = p["consumer_lag"].as_i64().unwrap_or(-1);
                if l >= 0 {
                    lag.insert(id, l);
                }
            }
        }
        if let Ok(mut m) = self.lag.lock() {
            *m = lag;
        }
    }
}

impl ConsumerContext for Rebalances {
    /// rdkafka's own rebalance (pre hook, assign, post hook), with the checkpoint's offsets
    /// set on the partitions being assigned for the first time since the restart.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Ok(mut resume) = self.resume.lock() {
                    let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                    for p in parts {
                        if let Some(o) = resume.remove(&p) {
                            match tpl.set_partition_offset(&self.topic, p, Offset::Offset(o)) {
                                Ok(()) => tracing::info!(
                                    partition = p,
                                    offset = o,
                                    "kafka: partition resumes at the checkpoint's offset"
                                ),
                                Err(e) => tracing::error!(
                                    partition = p,
                                    "kafka: cannot resume at the checkpoint's offset {o}: {e}"
                                ),
                            }
                        }
                    }
                }
                self.pre_rebalance(consumer, &Rebalance::Assign(tpl));
                let r = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = r {
                    tracing::error!("kafka: assigning partitions: {e}");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let r = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = r {
                    tracing::error!("kafka: revoking partitions: {e}");
                }
                self.post_rebalance(consumer, &Rebalance::Revoke(tpl));
            }
            other => {
                let code: rdkafka::types::RDKafkaErrorCode = other.into();
                tracing::error!("kafka: rebalance failed: {code}");
                let _ = consumer.unassign();
            }
        }
    }

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

/// Reads one topic as a member of a consumer group. A reader thread polls the consumer and
/// decodes messages into Arrow chunks ahead of the pipeline (so fetching and JSON decoding
/// run beside the operators, not in series with them); the source applies the chunks in the
/// order they were read.
pub struct KafkaSource {
    name: String,
    topic: String,
    consumer: Arc<BaseConsumer<Rebalances>>,
    /// Chunks from the reader thread; `None` once the source is dropped.
    chunks: Option<Receiver<Read>>,
    reader: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stop_at_end: bool,
    /// `bad_data = 'fail'`: an unusable message stops the pipeline.
    fail_on_bad: bool,
    /// Partitions read to their end (caught up) and not heard from since.
    at_end: HashSet<i32>,
    /// Per partition: (offset, event time) of rows not yet known to be released.
    waiting: HashMap<i32, VecDeque<(i64, i64)>>,
    /// Per partition: the offset after the last message read.
    next: HashMap<i32, i64>,
    /// Offsets recorded at each barrier, oldest first.
    barriers: VecDeque<(u64, BTreeMap<i32, i64>)>,
    read: u64,
    /// Per partition: the latest event time read.
    max_ts: HashMap<i32, i64>,
    /// The decoded columns, then the metadata columns.
    schema: SchemaRef,
    /// The event-time column (the table's `WATERMARK FOR`), if it has one.
    event_time: Option<String>,
    /// Whether the last poll found every partition at its end (with `source.stop_at_end`).
    ended: bool,
    /// When the partitions other members own were last checked for their end, and whether
    /// the wait for them was logged.
    others_checked: Option<Instant>,
    others_logged: bool,
    /// Since when no partition has been assigned, if none is.
    unassigned_since: Option<Instant>,
    /// Since when this member has had no partition, and when that is next logged.
    no_partition: Option<(Instant, Duration)>,
}

/// What the reader thread hands the source, in the order it read it.
enum Read {
    /// Decoded messages.
    Chunk {
        /// The accepted messages as rows (metadata columns included).
        rows: RecordBatch,
        /// The unusable ones, with reason and position.
        dead: Option<RecordBatch>,
        /// (partition, offset) of each row.
        accepted: Vec<(i32, i64)>,
        /// Per partition in the chunk: the offset after its last message.
        next: Vec<(i32, i64)>,
        /// Messages read, accepted or not.
        read: u64,
    },
    /// A partition read to its current end.
    Eof(i32),
    /// Decoding failed in a way that is not the message's fault.
    Failed(String),
}

/// How long rows are held while the member has no partition (a rebalance in progress)
/// before they go on anyway (the group gave this member nothing).
const UNASSIGNED_HOLD: Duration = Duration::from_secs(10);

/// Messages the reader decodes into one chunk at most.
const CHUNK_ROWS: usize = 8192;
/// Chunks decoded ahead of the pipeline at most (back-pressure beyond).
const CHUNKS_AHEAD: usize = 4;

/// A message's place, formatted only when it becomes a dead letter.
struct Position(i32, i64);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "partition {} offset {}", self.0, self.1)
    }
}

/// The reader thread: polls, decodes, sends chunks until `stop` or the source is gone.
fn read_ahead(
    consumer: Arc<BaseConsumer<Rebalances>>,
    (topic, source): (String, String),
    mut decoder: Decoder,
    mut metadata: MetadataColumns,
    schema: SchemaRef,
    tx: SyncSender<Read>,
    stop: Arc<AtomicBool>,
) {
    // Per partition: the offset after the last message this member read. After a rebalance
    // hands a partition back (an eager rebalance revokes every partition and re-assigns
    // some), librdkafka resumes it at the group's committed offset, behind what this member
    // already read and still holds or has processed: those re-reads are skipped, else they
    // would arrive behind the watermark as late rows.
    let mut read_upto: HashMap<i32, i64> = HashMap::new();
    let mut skipped = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut accepted = Vec::new();
        let mut next: Vec<(i32, i64)> = Vec::new();
        let mut read = 0u64;
        let mut eof = None;
        let mut timeout = Duration::from_millis(50);
        while decoder.pending_rows() + decoder.pending_dead() < CHUNK_ROWS {
            match consumer.poll(timeout) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    eof = Some(p);
                    break;
                }
                Some(Err(e)) => {
                    consumer.context().errors.report(&e, &topic);
                    break;
                }
                Some(Ok(m)) => {
                    let (p, o) = (m.partition(), m.offset());
                    let upto = read_upto.entry(p).or_insert(i64::MIN);
                    if o < *upto {
                        if skipped == 0 {
                            tracing::info!(
                                partition = p,
                                from = o,
                                to = *upto,
                                "kafka: partition re-assigned behind what this member read; \
                                 skipping the re-read messages"
                            );
                        }
                        skipped += 1;
                        timeout = Duration::ZERO;
                        continue;
                    }
                    if skipped > 0 {
                        tracing::info!(skipped, "kafka: re-read messages skipped");
                        skipped = 0;
                    }
                    *upto = o + 1;
                    match next.iter_mut().find(|(q, _)| *q == p) {
                        Some(n) => n.1 = o + 1,
                        None => next.push((p, o + 1)),
                    }
                    read += 1;
                    if decoder.push(m.payload().unwrap_or_default(), &source, &Position(p, o)) {
                        accepted.push((p, o));
                        metadata.push(&m);
                    } else if let Some(why) = decoder.take_failure() {
                        // Not the message's fault: stop here, uncommitted, so a restart
                        // reads it (and what follows) again.
                        let _ = tx.send(Read::Failed(format!(
                            "{why} (at partition {p} offset {o}; nothing from there on is \
                             committed, a restart reads it again)"
                        )));
                        return;
                    }
                }
            }
            timeout = Duration::ZERO;
        }
        if read > 0 {
            let chunk = decoder
                .flush()
                .and_then(|(rows, dead)| {
                    let rows = if metadata.is_empty() {
                        rows
                    } else {
                        let mut cols = rows.columns().to_vec();
                        cols.extend(metadata.finish());
                        RecordBatch::try_new(schema.clone(), cols)?
                    };
                    Ok(Read::Chunk {
                        rows,
                        dead: Some(dead).filter(|d| d.num_rows() > 0),
                        accepted,
                        next,
                        read,
                    })
                })
                .unwrap_or_else(|e| Read::Failed(format!("decoding: {e}")));
            if tx.send(chunk).is_err() {
                return;
            }
        }
        if let Some(p) = eof
            && tx.send(Read::Eof(p)).is_err()
        {
            return;
        }
    }
}

impl KafkaSource {
    /// The source `table` declares, resuming at `resume` (a checkpoint's position).
    pub fn open(table: &TableDef, resume: Option<KafkaPosition>) -> Result<Self, ConnectorError> {
        let opts = super::KafkaOptions::from_table(table)?;
        let mut cfg = opts.client_config();
        let group = opts.group_id.clone();
        let (stop_at_end, fail_on_bad) = (opts.stop_at_end, opts.fail_on_bad);
        for (k, v) in [
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", opts.offset_reset),
            ("isolation.level", opts.isolation),
            // Also without stop_at_end: a caught-up partition must not hold time back.
            ("enable.partition.eof", "true"),
            // Throughput on a backlog: librdkafka's 1 MB per partition and fetch left the
            // reader waiting on fetches (Kafka -> Delta 160k -> 200k tx/s measured with
            // these, docs/benchmarks.md); brokers answer at most 100 ms late when a
            // partition has nothing new. Any of them can be set in client_configs.
            ("max.partition.fetch.bytes", "10485760"),
            ("queued.min.messages", "500000"),
            ("fetch.wait.max.ms", "100"),
            // Consumer lag per partition for /metrics (ClientContext::stats_raw).
            ("statistics.interval.ms", "5000"),
        ] {
            if cfg.get(k).is_none() {
                cfg.set(k, v);
            }
        }
        let topic = opts.topic.clone();
        if let Some(r) = resume.as_ref().filter(|r| r.topic != topic) {
            return Err(ConnectorError::new(
                &table.name,
                format!(
                    "the checkpoint read topic {}, the table now names {topic}: start from \
                     scratch to read a new topic",
                    r.topic
                ),
            ));
        }
        let mut decoder =
            Decoder::for_table(table).map_err(|e| ConnectorError::new(&table.name, e))?;
        if decoder.needs_schema_registry() {
            let r = opts.registry.as_ref().ok_or_else(|| {
                ConnectorError::new(
                    &table.name,
                    "avro.confluent_schema_registry needs schema_registry.endpoint",
                )
            })?;
            let registry = super::registry::Registry::new(&r.endpoint, r.auth.clone())
                .map_err(|e| ConnectorError::new(&table.name, e))?;
            decoder.set_schema_lookup(Box::new(registry));
        }
        let (metadata, schema) = MetadataColumns::of(table, &decoder.schema())?;
        let servers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
        let consumer: BaseConsumer<Rebalances> = cfg
            .create_with_context(Rebalances {
                revoked: Mutex::default(),
                errors: super::ErrorLog::new(servers),
                topic: opts.topic.clone(),
                resume: Mutex::new(
                    resume
                        .as_ref()
                        .filter(|_| !opts.all_partitions)
                        .map(|r| r.offsets.clone())
                        .unwrap_or_default(),
                ),
                lag: Mutex::default(),
            })
            .map_err(|e| ConnectorError::new(&table.name, super::explain_client_error(&e)))?;
        if opts.all_partitions {
            // Every partition, directly: at the checkpoint's offset, else the group's
            // committed one (else source.offset).
            let parts = partitions_of(&consumer, &topic, Duration::from_secs(10)).map_err(|e| {
                ConnectorError::new(
                    &table.name,
                    format!("reading the partitions of {topic} (source.partitions = 'all'): {e}"),
                )
            })?;
            if parts.is_empty() {
                return Err(ConnectorError::new(
                    &table.name,
                    format!("topic {topic} has no partitions (does it exist?)"),
                ));
            }
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                let at = resume
                    .as_ref()
                    .and_then(|r| r.offsets.get(p))
                    .map_or(Offset::Stored, |o| Offset::Offset(*o));
                tpl.add_partition_offset(&topic, *p, at)
                    .map_err(|e| ConnectorError::new(&table.name, e))?;
            }
            consumer.assign(&tpl).map_err(|e| {
                ConnectorError::new(
                    &table.name,
                    format!("assigning the partitions of {topic}: {e}"),
                )
            })?;
            tracing::info!(topic = %topic, group = %group, partitions = parts.len(), "kafka source reads every partition");
        } else {
            consumer.subscribe(&[&topic]).map_err(|e| {
                ConnectorError::new(&table.name, format!("subscribing to {topic}: {e}"))
            })?;
            tracing::info!(topic = %topic, group = %group, "kafka source subscribed");
        }
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_AHEAD);
        let reader = {
            let (consumer, names, schema, stop) = (
                consumer.clone(),
                (topic.clone(), table.name.clone()),
                schema.clone(),
                stop.clone(),
            );
            std::thread::Builder::new()
                .name(format!("kafka-{}", table.name))
                .spawn(move || read_ahead(consumer, names, decoder, metadata, schema, tx, stop))
                .map_err(|e| {
                    ConnectorError::new(&table.name, format!("starting the reader: {e}"))
                })?
        };
        Ok(KafkaSource {
            name: table.name.clone(),
            topic,
            consumer,
            chunks: Some(rx),
            reader: Some(reader),
            stop,
            stop_at_end,
            fail_on_bad,
            at_end: HashSet::new(),
            waiting: HashMap::new(),
            // Partitions not read since the restart keep the checkpoint's offsets.
            next: resume
                .map(|r| r.offsets.into_iter().collect())
                .unwrap_or_default(),
            barriers: VecDeque::new(),
            read: 0,
            max_ts: HashMap::new(),
            schema,
            event_time: table.watermark.as_ref().map(|w| w.column.clone()),
            ended: false,
            unassigned_since: None,
            others_checked: None,
            others_logged: false,
            no_partition: None,
        })
    }

    /// Takes note of partitions a rebalance took away (their next owner resumes from the
    /// group's committed offsets).
    fn forget_revoked(&mut self) {
        let revoked: Vec<i32> = match self.consumer.context().revoked.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        // Their rows already read have gone on; the commit bookkeeping (`waiting`,
        // `next`) stays too, for when a rebalance hands the partition back, but only
        // assigned partitions are committed. Until it shows a message again, a re-assigned
        // partition is not taken to be at its end.
        for p in revoked {
            self.at_end.remove(&p);
        }
    }

    /// The partitions assigned to this member now.
    fn assigned(&self) -> Option<Vec<i32>> {
        self.consumer
            .assignment()
            .ok()
            .map(|a| a.elements().iter().map(|e| e.partition()).collect())
    }

    /// With `source.stop_at_end`, "at the end" is the whole topic's end: every partition this
    /// member does not own must have the group's committed offset at its high watermark
    /// (another member read it to its end), else this member waits — e.g. for the
    /// partitions a killed member still holds until its session expires. Checked at most
    /// once a second.
    fn others_done(&mut self) -> bool {
        if self
            .others_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        self.others_checked = Some(Instant::now());
        let timeout = Duration::from_secs(5);
        let assigned = self.assigned().unwrap_or_default();
        let partitions = match partitions_of(&self.consumer, &self.topic, timeout) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(source = %self.name, "kafka: reading the topic's partitions: {e}");
                return false;
            }
        };
        let others: Vec<i32> = partitions
            .into_iter()
            .filter(|p| !assigned.contains(p))
            .collect();
        if others.is_empty() {
            return true;
        }
        let mut tpl = TopicPartitionList::new();
        for p in &others {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = match self.consumer.committed_offsets(tpl, timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(source = %self.name, "kafka: reading the group's offsets: {e}");
                return false;
            }
        };
        let mut behind = Vec::new();
        for p in &others {
            let at = match committed
                .find_partition(&self.topic, *p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            match self.consumer.fetch_watermarks(&self.topic, *p, timeout) {
                Ok((_, high)) if at >= high => {}
                Ok((_, high)) => behind.push(format!("{p} (committed {at} of {high})")),
                Err(e) => behind.push(format!("{p} ({e})")),
            }
        }
        if behind.is_empty() {
            return true;
        }
        if !self.others_logged {
            self.others_logged = true;
            tracing::info!(
                source = %self.name,
                "source.stop_at_end: this member's partitions are at their end, but partitions \
                 {} of {} are another member's (or a stopped member's, until its session \
                 expires) and not read to their end yet; waiting",
                behind.join(", "),
                self.topic
            );
        }
        false
    }

    /// Says so when the group has given this member no partition for a while (15 s, then
    /// every 30 s): a run that reads nothing must not look like one that hangs.
    fn note_assignment(&mut self) {
        if self.assigned().is_some_and(|a| !a.is_empty()) {
            self.no_partition = None;
            return;
        }
        let (since, next) = self
            .no_partition
            .get_or_insert((Instant::now(), Duration::from_secs(15)));
        if since.elapsed() >= *next {
            *next += Duration::from_secs(30);
            tracing::warn!(
                source = %self.name,
                "kafka: no partition of {} assigned to this member for {:.0} s: the group's \
                 other members hold them all, or the coordinator is waiting for a stopped \
                 member's session to expire (session.timeout.ms; static membership with \
                 group.instance.id in client_configs avoids that wait on brokers that \
                 support it)",
                self.topic,
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Whether every assigned partition is at its end.
    fn all_at_end(&self) -> bool {
        match self.assigned() {
            Some(a) if !a.is_empty() => a.iter().all(|p| self.at_end.contains(p)),
            _ => false,
        }
    }
}

impl KafkaSource {
    /// The event time every active partition has reached: rows up to it can go on. Partitions
    /// at their end do not hold time back; one that has shown nothing yet holds everything.
    /// With no partition assigned (in the middle of a rebalance) everything is held, for up
    /// to [`UNASSIGNED_HOLD`]: releasing it all would move the watermark past the partitions
    /// about to come back.
    fn partition_frontier(&mut self, ended: bool) -> i64 {
        if ended {
            return i64::MAX;
        }
        let Some(assigned) = self.assigned() else {
            return i64::MIN;
        };
        if assigned.is_empty() {
            let since = *self.unassigned_since.get_or_insert_with(Instant::now);
            return if since.elapsed() < UNASSIGNED_HOLD {
                i64::MIN
            } else {
                i64::MAX
            };
        }
        self.unassigned_since = None;
        assigned
            .into_iter()
            .filter(|p| !self.at_end.contains(p))
            .map(|p| self.max_ts.get(&p).copied().unwrap_or(i64::MIN))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// The partitions of `topic`, from the brokers' metadata.
fn partitions_of(
    consumer: &BaseConsumer<Rebalances>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The event-time values of a batch (NULLs read as the earliest time, so they are released
/// at once and judged by the runtime).
fn event_times<'a>(rows: &'a RecordBatch, column: Option<&str>) -> Option<&'a [i64]> {
    rows.column_by_name(column?)
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .map(|a| a.values().as_ref())
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
        self.forget_revoked();
        self.note_assignment();
        let (mut rows, mut dead, mut n) = (Vec::new(), Vec::new(), 0usize);
        let mut caught_up = false;
        while n < max_rows {
            let item = match self.chunks.as_ref().map(Receiver::try_recv) {
                Some(Ok(item)) => item,
                Some(Err(TryRecvError::Empty)) => {
                    caught_up = true;
                    break;
                }
                Some(Err(TryRecvError::Disconnected)) | None => {
                    return Err(ConnectorError::new(
                        &self.name,
                        "the Kafka reader thread stopped",
                    ));
                }
            };
            match item {
                Read::Eof(p) => {
                    self.at_end.insert(p);
                }
                Read::Failed(e) => return Err(ConnectorError::new(&self.name, e)),
                Read::Chunk {
                    rows: r,
                    dead: d,
                    accepted,
                    next,
                    read,
                } => {
                    self.read += read;
                    for (p, o) in next {
                        self.at_end.remove(&p);
                        self.next.insert(p, o);
                    }
                    if let Some(ts) = event_times(&r, self.event_time.as_deref()) {
                        for (&(p, o), &t) in accepted.iter().zip(ts) {
                            self.waiting.entry(p).or_default().push_back((o, t));
                            let m = self.max_ts.entry(p).or_insert(t);
                            *m = (*m).max(t);
                        }
                    }
                    n += r.num_rows() + d.as_ref().map_or(0, RecordBatch::num_rows);
                    rows.push(r);
                    dead.extend(d);
                }
            }
        }
        // Only with nothing more waiting from the reader: its next chunk may hold rows
        // older than what ending would release.
        let ended = caught_up && self.stop_at_end && self.all_at_end() && self.others_done();
        let dead = match dead.first() {
            None => None,
            Some(first) => Some(
                arrow::compute::concat_batches(&first.schema(), &dead)
                    .map_err(|e| ConnectorError::new(&self.name, e))?,
            ),
        };
        if self.fail_on_bad
            && let Some(d) = &dead
        {
            let text = |c: &str, i: usize| {
                d.column_by_name(c)
                    .and_then(|a| a.as_string_opt::<i32>().map(|s| s.value(i).to_string()))
                    .unwrap_or_default()
            };
            return Err(ConnectorError::new(
                &self.name,
                format!(
                    "bad_data = 'fail': message at {} of {}: {} (its offset is not committed, \
                     so a restart reads it again; bad_data = 'dead_letter' sends such messages \
                     to the dead letters instead)",
                    text("position", 0),
                    self.topic,
                    text("reason", 0)
                ),
            ));
        }
        let rows: Vec<RecordBatch> = rows.into_iter().filter(|r| r.num_rows() > 0).collect();
        let ready = match rows.first() {
            None => None,
            Some(first) => Some(
                arrow::compute::concat_batches(&first.schema(), &rows)
                    .map_err(|e| ConnectorError::new(&self.name, e))?,
            ),
        };
        self.ended = ended;
        match (ready, dead) {
            (None, None) => Ok(if ended { Poll::End } else { Poll::Idle }),
            (ready, dead) => Ok(Poll::Data {
                rows: match ready {
                    Some(r) => r,
                    None => RecordBatch::new_empty(self.schema()),
                },
                dead,
            }),
        }
    }

    /// The event time every active partition has reached (see the module doc).
    fn frontier(&mut self) -> Option<i64> {
        self.event_time.as_ref()?;
        Some(self.partition_frontier(self.ended))
    }

    fn partition_lag(&self) -> Vec<(i32, i64)> {
        self.consumer
            .context()
            .lag
            .lock()
            .map(|m| m.iter().map(|(p, l)| (*p, *l)).collect())
            .unwrap_or_default()
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

    fn checkpoint(&self) -> serde_json::Value {
        let position = KafkaPosition {
            topic: self.topic.clone(),
            offsets: self.next.iter().map(|(p, o)| (*p, *o)).collect(),
        };
        serde_json::to_value(position).unwrap_or_default()
    }

    fn barrier(&mut self, epoch: u64, released_before: Option<i64>) {
        let mut offsets = BTreeMap::new();
        // Only partitions this member still owns: a revoked one's offsets are its next
        // owner's to commit.
        let assigned = self.assigned().unwrap_or_default();
        for (&p, &next) in self.next.iter().filter(|(p, _)| assigned.contains(p)) {
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
        // Stop the reader first (it polls at most 50 ms at a time; a full channel's send
        // fails once the receiver is gone), then leave the group.
        self.stop.store(true, Ordering::Relaxed);
        self.chunks = None;
        if let Some(r) = self.reader.take()
            && r.join().is_err()
        {
            tracing::warn!(source = %self.name, "the Kafka reader thread panicked");
        }
        self.consumer.unsubscribe();
    }
}
