//! `kafka` sink: each row becomes one JSON message (the row's columns as an object, NULLs
//! left out), keyed by `'sink.key_field'` when given.
//!
//! Exactly once (a run with checkpoints, `sink.commit_mode = 'exactly_once'`, the default):
//! the epoch's messages are held (encoded) until [`Sink::prepare`], which hands them to the
//! checkpoint; [`Sink::commit`] sends them in one Kafka transaction
//! (`transactional.id = txguard-<table>-<writer>`) that also commits the epoch as the offset
//! of the sink's topic, partition 0, in the bookkeeping group `txguard-sink-<table>-<writer>`
//! — so the epoch is recorded atomically with the messages, as Postgres records it in
//! `txguard_sink_epochs`. A restart reads that offset back ([`Sink::last_epoch`]), and
//! `init_transactions` aborts whatever the killed run left open: `read_committed` consumers
//! see each message once. The cost: messages become visible at the checkpoint's commit, and an
//! epoch's messages are held in memory until then.
//!
//! At least once (no checkpoints, or `sink.commit_mode = 'at_least_once'`): an idempotent
//! producer sends messages as they come; a checkpoint waits until every message sent so far
//! is acknowledged, and fails with the broker's reason if any could not be delivered
//! (librdkafka has retried them until `message.timeout.ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use futures::future::BoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use txguard_engine::connector::{ConnectorError, Prepared, Sink};
use txguard_engine::sql::TableDef;

/// Counts the messages the brokers did not take, and remembers why; client errors to the
/// log.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
    errors: super::ErrorLog,
}

impl Deliveries {
    pub fn new(servers: impl Into<String>) -> Self {
        Deliveries {
            errors: super::ErrorLog::new(servers),
            ..Deliveries::default()
        }
    }

    /// Messages that failed since the last [`Deliveries::take_failed`].
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The failures so far, resetting the count.
    pub fn take_failed(&self) -> u64 {
        self.failed.swap(0, Ordering::Relaxed)
    }

    /// The broker's reason for the last failure.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|l| l.clone())
    }
}

impl ClientContext for Deliveries {
    fn error(&self, error: KafkaError, reason: &str) {
        self.errors.report(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }
}

/// Writes rows to one topic.
pub struct KafkaSink {
    name: String,
    topic: String,
    key_field: Option<String>,
    producer: Arc<ThreadedProducer<Deliveries>>,
    sent: u64,
    /// Exactly once: the transactions' state.
    txn: Option<Txn>,
}

/// A transactional sink's bookkeeping and the epoch's held messages.
struct Txn {
    /// The bookkeeping group's metadata, for `send_offsets_to_transaction`.
    group: Arc<ConsumerGroupMetadata>,
    group_id: String,
    last_epoch: Option<u64>,
    /// The epoch's messages since the last prepare, framed by [`frame`].
    pending: Vec<u8>,
    pending_messages: u64,
}

/// How long a transaction's steps may take before the commit fails (the run then stops, and
/// a restart commits the epoch from the checkpoint).
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Appends one message to `buf`: key length (`u32::MAX`: no key), key, payload length,
/// payload, lengths little-endian.
fn frame(buf: &mut Vec<u8>, key: Option<&[u8]>, payload: &[u8]) {
    match key {
        Some(k) => {
            buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
            buf.extend_from_slice(k);
        }
        None => buf.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// One held message: its key (if any) and payload.
type Message<'a> = (Option<&'a [u8]>, &'a [u8]);

/// The messages [`frame`] wrote, or `None` where the bytes are cut short.
fn unframe(mut buf: &[u8]) -> Option<Vec<Message<'_>>> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = buf.split_at_checked(n)?;
        *buf = rest;
        Some(head)
    }
    fn len(buf: &mut &[u8]) -> Option<u32> {
        Some(u32::from_le_bytes(take(buf, 4)?.try_into().ok()?))
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = match len(&mut buf)? {
            u32::MAX => None,
            n => Some(take(&mut buf, n as usize)?),
        };
        let n = len(&mut buf)? as usize;
        out.push((key, take(&mut buf, n)?));
    }
    Some(out)
}

impl KafkaSink {
    /// A producer for `table`'s topic, for rows of `schema` (which must hold the key field).
    pub fn open(table: &TableDef, schema: &Schema) -> Result<Self, ConnectorError> {
        KafkaSink::open_with(table, schema, None)
    }

    /// [`KafkaSink::open`], transactional as `txn_id` unless `client_configs` names one.
    fn open_with(
        table: &TableDef,
        schema: &Schema,
        txn_id: Option<&str>,
    ) -> Result<Self, ConnectorError> {
        let opts = super::KafkaOptions::from_table(table)?;
        let mut cfg = opts.client_config();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ]
        .into_iter()
        .chain(txn_id.map(|id| ("transactional.id", id)))
        {
            if cfg.get(k).is_none() {
                cfg.set(k, v);
            }
        }
        let servers = cfg.get("bootstrap.servers").unwrap_or_default().to_string();
        let producer: ThreadedProducer<Deliveries> = cfg
            .create_with_context(Deliveries::new(servers))
            .map_err(|e| ConnectorError::new(&table.name, super::explain_client_error(&e)))?;
        let key_field = opts.key_field;
        if let Some(k) = &key_field
            && schema.field_with_name(k).is_err()
        {
            return Err(ConnectorError::new(
                &table.name,
                format!("sink.key_field {k} is not one of the table's columns"),
            ));
        }
        Ok(KafkaSink {
            name: table.name.clone(),
            topic: opts.topic,
            key_field,
            producer: Arc::new(producer),
            sent: 0,
            txn: None,
        })
    }

    /// The sink `table` declares, for a run whose checkpoints are kept under writer id
    /// `writer`: transactional unless the table says `sink.commit_mode = 'at_least_once'`.
    /// Fences any producer a killed run left with the same id (aborting its open
    /// transaction) and reads the last epoch committed; fails, saying what to do, when the
    /// brokers do not support transactions.
    pub async fn open_exactly_once(
        table: &TableDef,
        schema: &Schema,
        writer: &str,
    ) -> Result<Self, ConnectorError> {
        let opts = super::KafkaOptions::from_table(table)?;
        if opts.at_least_once {
            return KafkaSink::open(table, schema);
        }
        let txn_id = format!("txguard-{}-{writer}", table.name);
        let group_id = format!("txguard-sink-{}-{writer}", table.name);
        let mut sink = KafkaSink::open_with(table, schema, Some(&txn_id))?;
        let name = table.name.clone();
        let err = move |what: &str, e: KafkaError| {
            ConnectorError::new(
                &name,
                format!(
                    "{what}: {}; the brokers must support transactions for an exactly-once \
                     Kafka sink — or set 'sink.commit_mode' = 'at_least_once'",
                    super::explain_client_error(&e)
                ),
            )
        };
        // Unreachable brokers: retried with a log line each time (the source does the same);
        // an error retrying cannot mend (no transaction support, no authorization) fails.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let producer = sink.producer.clone();
            let done = tokio::task::spawn_blocking(move || {
                producer.init_transactions(Duration::from_secs(10))
            })
            .await
            .map_err(|e| ConnectorError::new(&table.name, format!("init task: {e}")))?;
            match done {
                Ok(()) => break,
                Err(KafkaError::Transaction(e)) if e.is_retriable() => tracing::warn!(
                    table = %table.name,
                    attempt,
                    "kafka sink {}: the brokers at {} did not answer while setting up its \
                     transactions ({e}); retrying",
                    table.name,
                    opts.bootstrap_servers
                ),
                Err(e) => return Err(err("initialising the transactional producer", e)),
            }
        }
        let consumer: BaseConsumer = opts
            .client_config()
            .set("group.id", &group_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| err("creating the bookkeeping consumer", e))?;
        let topic = opts.topic.clone();
        let (consumer, committed) = tokio::task::spawn_blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            let got = consumer.committed_offsets(tpl, TXN_TIMEOUT);
            (consumer, got)
        })
        .await
        .map_err(|e| ConnectorError::new(&table.name, format!("bookkeeping task: {e}")))?;
        let committed = committed.map_err(|e| err("reading the sink's last epoch", e))?;
        let last_epoch = committed
            .find_partition(&opts.topic, 0)
            .and_then(|p| match p.offset() {
                Offset::Offset(n) => u64::try_from(n).ok().filter(|&n| n > 0),
                _ => None,
            });
        let group = consumer.group_metadata().ok_or_else(|| {
            ConnectorError::new(
                &table.name,
                "the bookkeeping consumer has no group metadata",
            )
        })?;
        // One empty transaction that records the epoch already recorded: a broker that
        // takes transactional ids but cannot end a transaction (tansu 0.6 lacks EndTxn) is
        // found now, at start, not at the first commit.
        let (producer, topic, group) = (sink.producer.clone(), opts.topic.clone(), Arc::new(group));
        let probe_group = group.clone();
        let at = last_epoch.unwrap_or(0) as i64;
        tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
            producer.begin_transaction()?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(at))?;
            let ended = producer
                .send_offsets_to_transaction(&tpl, &probe_group, TXN_TIMEOUT)
                .and_then(|()| producer.commit_transaction(TXN_TIMEOUT));
            if ended.is_err() {
                let _ = producer.abort_transaction(TXN_TIMEOUT);
            }
            ended
        })
        .await
        .map_err(|e| ConnectorError::new(&table.name, format!("probe task: {e}")))?
        .map_err(|e| err("trying a transaction", e))?;
        tracing::info!(
            table = %table.name,
            transactional_id = %txn_id,
            last_epoch = ?last_epoch,
            "kafka sink: exactly once, one transaction per checkpoint epoch"
        );
        sink.txn = Some(Txn {
            group,
            group_id,
            last_epoch,
            pending: Vec::new(),
            pending_messages: 0,
        });
        Ok(sink)
    }

    /// Messages handed to the producer so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        let name = self.name.clone();
        let err = |m: String| ConnectorError::new(&name, m);
        let mut json = Vec::with_capacity(batch.num_rows() * 256);
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut json);
            w.write(&batch)
                .map_err(|e| err(format!("encoding JSON: {e}")))?;
            w.finish().map_err(|e| err(format!("encoding JSON: {e}")))?;
        }
        let keys = match &self.key_field {
            Some(k) => {
                let col = batch.column_by_name(k).ok_or_else(|| {
                    err(format!(
                        "sink.key_field {k} is not one of the table's columns"
                    ))
                })?;
                let strings = arrow::compute::cast(col, &DataType::Utf8)
                    .map_err(|e| err(format!("key column {k}: {e}")))?;
                Some(strings)
            }
            None => None,
        };
        let keys = keys.as_ref().map(|k| k.as_string::<i32>());
        for (row, payload) in json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .enumerate()
        {
            let key = keys
                .filter(|k| k.is_valid(row))
                .map(|k| k.value(row).as_bytes());
            if let Some(txn) = &mut self.txn {
                frame(&mut txn.pending, key, payload);
                txn.pending_messages += 1;
                self.sent += 1;
                continue;
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
            if let Some(k) = key {
                record = record.key(k);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // The local queue is full: let the background thread drain it.
                        record = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => return Err(err(format!("sending to {}: {e}", self.topic))),
                }
            }
            self.sent += 1;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let producer = self.producer.clone();
        let flushed = tokio::task::spawn_blocking(move || {
            // Waits for every outstanding message (librdkafka retries until its own timeout).
            producer.flush(Duration::from_secs(600))
        })
        .await
        .map_err(|e| ConnectorError::new(&self.name, format!("flush task: {e}")))?;
        if let Err(e) = flushed {
            return Err(ConnectorError::new(
                &self.name,
                format!("waiting for the brokers to acknowledge {}: {e}", self.topic),
            ));
        }
        let ctx = self.producer.context();
        let failed = ctx.take_failed();
        if failed > 0 {
            let why = ctx.last_error().unwrap_or_default();
            return Err(ConnectorError::new(
                &self.name,
                format!(
                    "{failed} messages could not be delivered to {}: {why}",
                    self.topic
                ),
            ));
        }
        Ok(())
    }
}

impl KafkaSink {
    /// Phase two, exactly once: the epoch's messages and its record in one transaction,
    /// unless the epoch is recorded already.
    async fn commit_epoch(&mut self, epoch: u64, prepared: Prepared) -> Result<(), ConnectorError> {
        let Some(txn) = &mut self.txn else {
            return Ok(());
        };
        if prepared.data.is_empty() {
            return Ok(());
        }
        if txn.last_epoch.is_some_and(|l| epoch <= l) {
            tracing::debug!(table = %self.name, epoch, "epoch already committed; skipped");
            return Ok(());
        }
        let producer = self.producer.clone();
        let group = txn.group.clone();
        let topic = self.topic.clone();
        let data = prepared.data;
        let done = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let messages = unframe(&data)
                .ok_or_else(|| "the epoch's held messages are cut short".to_string())?;
            let step = |what: &str, r: Result<(), KafkaError>| {
                r.map_err(|e| format!("{what}: {}", super::explain_client_error(&e)))
            };
            step("beginning a transaction", producer.begin_transaction())?;
            let sent = (|| {
                for (key, payload) in &messages {
                    let mut record = BaseRecord::<[u8], [u8]>::to(&topic).payload(*payload);
                    if let Some(k) = key {
                        record = record.key(*k);
                    }
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                record = r;
                                std::thread::sleep(Duration::from_millis(2));
                            }
                            Err((e, _)) => return Err(format!("sending to {topic}: {e}")),
                        }
                    }
                }
                let mut record = TopicPartitionList::new();
                record
                    .add_partition_offset(&topic, 0, Offset::Offset(epoch as i64))
                    .map_err(|e| e.to_string())?;
                step(
                    "recording the epoch",
                    producer.send_offsets_to_transaction(&record, &group, TXN_TIMEOUT),
                )?;
                step(
                    "committing the transaction",
                    producer.commit_transaction(TXN_TIMEOUT),
                )
            })();
            if let Err(e) = sent {
                let _ = producer.abort_transaction(TXN_TIMEOUT);
                return Err(e);
            }
            Ok(messages.len() as u64)
        })
        .await
        .map_err(|e| ConnectorError::new(&self.name, format!("commit task: {e}")))?
        .map_err(|e| {
            ConnectorError::new(
                &self.name,
                format!(
                    "epoch {epoch} to {}: {e} (a restart commits it again from the checkpoint)",
                    self.topic
                ),
            )
        })?;
        txn.last_epoch = Some(epoch);
        tracing::debug!(table = %self.name, epoch, messages = done, group = %txn.group_id, "committed");
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.write_batch(batch))
    }

    /// Exactly once: the epoch's held messages, for the checkpoint. At least once: they
    /// were sent as they came; this waits for the brokers to acknowledge them (a replay
    /// after a restart sends them again).
    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        Box::pin(async move {
            if let Some(txn) = &mut self.txn {
                let messages = std::mem::take(&mut txn.pending_messages);
                if messages == 0 {
                    return Ok(Prepared::default());
                }
                return Ok(Prepared {
                    meta: serde_json::json!({ "messages": messages }),
                    data: std::mem::take(&mut txn.pending),
                });
            }
            self.flush().await?;
            Ok(Prepared::default())
        })
    }

    fn commit(
        &mut self,
        epoch: u64,
        prepared: Prepared,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.commit_epoch(epoch, prepared))
    }

    fn last_epoch(&self) -> Option<u64> {
        self.txn.as_ref().and_then(|t| t.last_epoch)
    }

    fn exactly_once(&self) -> bool {
        self.txn.is_some()
    }
}
