//! `kafka` connector, Arroyo's options: [`sink`] writes rows as JSON messages to a topic,
//! keyed by a chosen field (the default pipeline's alerts). [`client_config`] turns a table's
//! options into librdkafka settings, `client_configs` passing anything else through (SASL,
//! SSL, tuning).

pub mod sink;
#[cfg(test)]
mod tests;

use rdkafka::ClientConfig;
use txguard_engine::connector::ConnectorError;
use txguard_engine::sql::{ConnectorSpec, OptionKind, OptionSpec, Role, TableDef};

pub use sink::KafkaSink;

/// `connector = 'kafka'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "kafka",
    roles: &[Role::Sink],
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
            key: "format",
            kind: OptionKind::OneOf(&["json"]),
            required: false,
            help: "json (one object per message; the only format)",
        },
        OptionSpec {
            key: "sink.key_field",
            kind: OptionKind::Text,
            required: false,
            help: "column whose value keys each message (default: no key)",
        },
        OptionSpec {
            key: "client_configs",
            kind: OptionKind::Text,
            required: false,
            help: "extra librdkafka settings, 'key=value' separated by commas or semicolons \
                   (e.g. 'security.protocol=SASL_SSL;sasl.mechanism=PLAIN')",
        },
    ],
};

/// librdkafka settings from a table's `bootstrap_servers` and `client_configs`.
pub fn client_config(table: &TableDef) -> Result<ClientConfig, ConnectorError> {
    let servers = table
        .option("bootstrap_servers")
        .map(|o| o.value.as_text())
        .ok_or_else(|| ConnectorError::new(&table.name, "needs option bootstrap_servers"))?;
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", servers);
    if let Some(extra) = table.option("client_configs").map(|o| o.value.as_text()) {
        for pair in extra
            .split([',', ';'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConnectorError::new(
                    &table.name,
                    format!("client_configs: {pair:?} is not key=value"),
                )
            })?;
            cfg.set(k.trim(), v.trim());
        }
    }
    Ok(cfg)
}

/// A table's `topic`.
pub fn topic(table: &TableDef) -> Result<String, ConnectorError> {
    table
        .option("topic")
        .map(|o| o.value.as_text())
        .ok_or_else(|| ConnectorError::new(&table.name, "needs option topic"))
}
