//! `kafka` sink: each row becomes one JSON message (the row's columns as an object, NULLs
//! left out), keyed by `'sink.key_field'` when given. An idempotent librdkafka producer sends
//! them in the background; a checkpoint waits until every message sent so far is
//! acknowledged by the brokers, and fails with the broker's reason if any could not be
//! delivered (librdkafka has retried them until `message.timeout.ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use futures::future::BoxFuture;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
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
}

impl KafkaSink {
    /// A producer for `table`'s topic, for rows of `schema` (which must hold the key field).
    pub fn open(table: &TableDef, schema: &Schema) -> Result<Self, ConnectorError> {
        let opts = super::KafkaOptions::from_table(table)?;
        let mut cfg = opts.client_config();
        for (k, v) in [
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("compression.type", "lz4"),
        ] {
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
        })
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
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
            if let Some(k) = keys.filter(|k| k.is_valid(row)) {
                record = record.key(k.value(row).as_bytes());
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

impl Sink for KafkaSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.write_batch(batch))
    }

    /// At least once: the epoch's messages are sent as they come; `prepare` waits for the
    /// brokers to acknowledge them, and a replay after a restart sends them again.
    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        Box::pin(async move {
            self.flush().await?;
            Ok(Prepared::default())
        })
    }

    fn commit(&mut self, _: u64, _: Prepared) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
}
