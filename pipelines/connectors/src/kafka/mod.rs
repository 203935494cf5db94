//! `kafka` connector, Arroyo's options: [`source`] reads messages in the table's format as a
//! consumer-group member with offsets committed at checkpoints (plus `METADATA FROM` columns,
//! filled by the `metadata` module); [`sink`] writes rows as JSON messages to a topic, keyed by
//! a chosen field (the default pipeline's alerts). [`options`] declares the options and turns
//! them into librdkafka settings, `client_configs` passing anything else through (TLS, SASL,
//! tuning).

mod metadata;
pub mod options;
mod registry;
pub mod sink;
pub mod source;
#[cfg(test)]
mod tests;

use futures::future::BoxFuture;
use txguard_engine::connector::{Connector, ConnectorError, Sink, SinkContext, Source};
use txguard_engine::sql::{ConnectorSpec, MetadataKind, MetadataSpec, Role, TableDef};

pub use options::KafkaOptions;
pub use sink::KafkaSink;
pub use source::KafkaSource;

/// `connector = 'kafka'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "kafka",
    roles: &[Role::Sink, Role::Source],
    options: options::OPTIONS,
    metadata: &[
        MetadataSpec {
            key: "partition",
            kind: MetadataKind::Integer,
            help: "the message's partition",
        },
        MetadataSpec {
            key: "offset_id",
            kind: MetadataKind::Integer,
            help: "the message's offset in its partition",
        },
        MetadataSpec {
            key: "timestamp",
            kind: MetadataKind::Timestamp,
            help: "the message's Kafka timestamp (create or log-append time)",
        },
        MetadataSpec {
            key: "key",
            kind: MetadataKind::Text,
            help: "the message key as UTF-8 text (NULL when absent or not UTF-8)",
        },
        MetadataSpec {
            key: "topic",
            kind: MetadataKind::Text,
            help: "the topic the message came from",
        },
    ],
    decodes: true,
    check_table: Some(check_table),
};

/// The options parse, and Avro messages have their writer schema: given in the table, or
/// through a registry.
fn check_table(t: &TableDef, role: Role) -> Result<(), (txguard_engine::sql::Loc, String)> {
    let opts = KafkaOptions::from_table(t).map_err(|e| e.located())?;
    if role == Role::Sink {
        return Ok(());
    }
    use txguard_engine::decode::{AVRO_CONFLUENT, DecodeOptions, FORMAT, Format};
    let Ok(d) = DecodeOptions::from_table(t) else {
        return Ok(()); // reported by the engine's own check
    };
    if d.format == Format::Avro && d.avro_schema.is_none() && !d.avro_confluent {
        return Err((
            t.option_loc(&FORMAT),
            "format avro on a topic needs the writer schema: avro.confluent_schema_registry = \
             true with schema_registry.endpoint, or avro.schema"
                .into(),
        ));
    }
    if d.avro_confluent && opts.registry.is_none() {
        return Err((
            t.option_loc(&AVRO_CONFLUENT),
            "avro.confluent_schema_registry needs schema_registry.endpoint (the registry's URL)"
                .into(),
        ));
    }
    Ok(())
}

/// The connector.
pub struct KafkaConnector;

impl Connector for KafkaConnector {
    fn spec(&self) -> ConnectorSpec {
        SPEC
    }

    fn open_source<'a>(
        &'a self,
        table: &'a TableDef,
        resume: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<Box<dyn Source>, ConnectorError>> {
        Box::pin(async move {
            let at = crate::resume_at::<source::KafkaPosition>(table, resume)?;
            Ok(Box::new(KafkaSource::open(table, at)?) as Box<dyn Source>)
        })
    }

    fn open_sink<'a>(
        &'a self,
        table: &'a TableDef,
        ctx: SinkContext,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, ConnectorError>> {
        Box::pin(async move {
            let sink = match &ctx.writer {
                Some(w) => KafkaSink::open_exactly_once(table, &ctx.schema, w).await?,
                None => KafkaSink::open(table, &ctx.schema)?,
            };
            Ok(Box::new(sink) as Box<dyn Sink>)
        })
    }
}

/// Why librdkafka refused to create a client, with what to do when it is a feature this
/// build lacks (TLS and SASL PLAIN/SCRAM/OAUTHBEARER are compiled in; Kerberos is not).
pub fn explain_client_error(e: &rdkafka::error::KafkaError) -> String {
    let msg = e.to_string();
    if msg.contains("GSSAPI") || (msg.contains("sasl.mechanism") && msg.contains("build time")) {
        format!(
            "kafka client: {msg}; this build has TLS and SASL PLAIN, SCRAM-SHA-256/512 and \
             OAUTHBEARER, but not Kerberos (GSSAPI): use one of those mechanisms"
        )
    } else {
        format!("kafka client: {msg}")
    }
}

/// librdkafka's client-level errors (an unreachable broker, failed authentication), as
/// warnings naming the brokers, at most one every 10 s per message: librdkafka keeps
/// retrying by itself.
#[derive(Debug, Default)]
pub struct ErrorLog {
    servers: String,
    last: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl ErrorLog {
    pub fn new(servers: impl Into<String>) -> Self {
        ErrorLog {
            servers: servers.into(),
            last: std::sync::Mutex::new(None),
        }
    }

    pub fn report(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        // Reaching the end of a partition is news for the source, not an error.
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        let msg = format!("{error}: {reason}");
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if last
            .as_ref()
            .is_some_and(|(m, at)| *m == msg && at.elapsed() < std::time::Duration::from_secs(10))
        {
            return;
        }
        tracing::warn!("kafka brokers {}: {msg} (retrying)", self.servers);
        *last = Some((msg, std::time::Instant::now()));
    }
}
