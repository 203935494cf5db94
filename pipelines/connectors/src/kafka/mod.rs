//! `kafka` connector, Arroyo's options: [`source`] reads JSON transactions as a consumer-group
//! member with offsets committed at checkpoints (plus `metadata('…')` columns, filled by the
//! `metadata` module); [`sink`] writes rows as JSON messages to a topic, keyed by a chosen
//! field (the default pipeline's alerts). [`client_config`] turns a table's options into
//! librdkafka settings, `client_configs` passing anything else through (TLS, SASL, tuning).

mod metadata;
mod registry;
pub mod sink;
pub mod source;
#[cfg(test)]
mod tests;

use rdkafka::ClientConfig;
use txguard_engine::connector::ConnectorError;
use txguard_engine::sql::{
    ConnectorSpec, MetadataKind, MetadataSpec, OptionKind, OptionSpec, Role, TableDef,
};

pub use sink::KafkaSink;
pub use source::KafkaSource;

/// `connector = 'kafka'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "kafka",
    roles: &[Role::Sink, Role::Source],
    options: &[
        OptionSpec {
            key: "bootstrap_servers",
            kind: OptionKind::Text,
            required: true,
            help: "comma-separated host:port of the brokers",
        },
        OptionSpec {
            key: "topic",
            kind: OptionKind::Text,
            required: true,
            help: "the topic",
        },
        OptionSpec {
            key: "bad_data",
            kind: OptionKind::OneOf(&["dead_letter", "drop", "fail"]),
            required: false,
            help: "a message that cannot be used: dead_letter (default) and drop (Arroyo's \
                   name; txguard never drops silently) send it to the dead letters with the \
                   reason; fail stops the pipeline at it, uncommitted",
        },
        OptionSpec {
            key: "source.offset",
            kind: OptionKind::OneOf(&["earliest", "latest", "group"]),
            required: false,
            help: "where to start when the group has no committed offset: earliest (default; \
                   `group` is the same) or latest",
        },
        OptionSpec {
            key: "source.group_id",
            kind: OptionKind::Text,
            required: false,
            help: "consumer group (default txguard-<table>); offsets are committed to it at checkpoints",
        },
        OptionSpec {
            key: "source.read_mode",
            kind: OptionKind::OneOf(&["read_committed", "read_uncommitted"]),
            required: false,
            help: "read_committed (default) skips aborted transactional messages",
        },
        OptionSpec {
            key: "source.stop_at_end",
            kind: OptionKind::Bool,
            required: false,
            help: "end the source when every assigned partition is read to its end (backfills, tests)",
        },
        OptionSpec {
            key: "sink.key_field",
            kind: OptionKind::Text,
            required: false,
            help: "column whose value keys each message (default: no key)",
        },
        OptionSpec {
            key: "schema_registry.endpoint",
            kind: OptionKind::Text,
            required: false,
            help: "the schema registry's URL, for format = 'avro' with avro.confluent_schema_registry",
        },
        OptionSpec {
            key: "schema_registry.api_key",
            kind: OptionKind::Text,
            required: false,
            help: "user for the schema registry's basic auth",
        },
        OptionSpec {
            key: "schema_registry.api_secret",
            kind: OptionKind::Text,
            required: false,
            help: "password for the schema registry's basic auth",
        },
        OptionSpec {
            key: "client_configs",
            kind: OptionKind::Text,
            required: false,
            help: "extra librdkafka settings, 'key=value' separated by commas or semicolons \
                   (e.g. 'security.protocol=SASL_SSL;sasl.mechanism=PLAIN')",
        },
    ],
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

/// Avro messages need their writer schema: given in the table, or through a registry.
fn check_table(t: &TableDef) -> Result<(), (txguard_engine::sql::Loc, String)> {
    let at = |k: &str| t.option(k).map_or(t.loc, |o| o.loc);
    let Ok(d) = txguard_engine::decode::Decoder::for_table(t) else {
        return Ok(()); // reported by the engine's own check
    };
    if d.is_avro() && !d.reads_avro_messages() {
        return Err((
            at("format"),
            "format avro on a topic needs the writer schema: avro.confluent_schema_registry = \
             true with schema_registry.endpoint, or avro.schema"
                .into(),
        ));
    }
    if d.needs_schema_registry() && t.option("schema_registry.endpoint").is_none() {
        return Err((
            at("avro.confluent_schema_registry"),
            "avro.confluent_schema_registry needs schema_registry.endpoint (the registry's URL)"
                .into(),
        ));
    }
    Ok(())
}

/// The schema registry client a table's options describe, if it uses one.
fn registry(t: &TableDef) -> Result<Option<registry::Registry>, ConnectorError> {
    let Some(endpoint) = t
        .option("schema_registry.endpoint")
        .map(|o| o.value.as_text())
    else {
        return Ok(None);
    };
    let text = |k: &str| t.option(k).map(|o| o.value.as_text());
    let auth = text("schema_registry.api_key")
        .map(|u| (u, text("schema_registry.api_secret").unwrap_or_default()));
    registry::Registry::new(&endpoint, auth)
        .map(Some)
        .map_err(|e| ConnectorError::new(&t.name, e))
}

/// librdkafka settings from a table's `bootstrap_servers` and `client_configs`.
pub fn client_config(table: &TableDef) -> Result<ClientConfig, ConnectorError> {
    let servers = table
        .option("bootstrap_servers")
        .map(|o| o.value.as_text())
        .ok_or_else(|| ConnectorError::new(&table.name, "needs option bootstrap_servers"))?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", servers);
    for (k, v) in crate::key_value_option(table, "client_configs")? {
        cfg.set(k, v);
    }
    Ok(cfg)
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

/// A table's `topic`.
pub fn topic(table: &TableDef) -> Result<String, ConnectorError> {
    table
        .option("topic")
        .map(|o| o.value.as_text())
        .ok_or_else(|| ConnectorError::new(&table.name, "needs option topic"))
}
