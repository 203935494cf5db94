//! txguard's connectors, one folder per connector with its options, code and tests:
//! [`generator`] (synthetic transactions with labelled fraud), [`file`] (JSON-lines replay),
//! [`delta`] (Delta Lake tables, written or replayed), [`postgres`] (tables over binary COPY,
//! upserted on their key), [`kafka`] (JSON messages to a topic) and [`stdout`]. [`open_source`] and [`open_sink`] build the
//! connector a pipeline table declares.

pub mod delta;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod postgres;
pub mod stdout;

use arrow::datatypes::SchemaRef;
use txguard_engine::connector::{ConnectorError, Sink, Source};
use txguard_engine::sql::{ConnectorSpec, TableDef};

/// The `key=value` pairs of a text option (separated by commas or semicolons), such as
/// Kafka's `client_configs` and Delta's `storage_options`; none when the option is absent.
pub fn key_value_option(
    table: &TableDef,
    option: &str,
) -> Result<Vec<(String, String)>, ConnectorError> {
    let Some(text) = table.option(option).map(|o| o.value.as_text()) else {
        return Ok(Vec::new());
    };
    text.split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConnectorError::new(&table.name, format!("{option}: {pair:?} is not key=value"))
            })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Every connector's `WITH (...)` specification, for validating pipeline files.
pub fn specs() -> Vec<ConnectorSpec> {
    vec![
        generator::SPEC,
        file::SPEC,
        delta::SPEC,
        postgres::SPEC,
        kafka::SPEC,
        stdout::SPEC,
    ]
}

/// The source a source table declares.
pub async fn open_source(table: &TableDef) -> Result<Box<dyn Source>, ConnectorError> {
    match table.connector.as_str() {
        "delta" => Ok(Box::new(delta::DeltaSource::open(table).await?)),
        "kafka" => Ok(Box::new(kafka::KafkaSource::open(table)?)),
        "generator" => Ok(Box::new(generator::GeneratorSource::from_table(table)?)),
        "file" => Ok(Box::new(
            file::FileSource::from_table(table).map_err(|e| ConnectorError::new(&table.name, e))?,
        )),
        other => Err(ConnectorError::new(
            &table.name,
            format!("connector {other} cannot be a source"),
        )),
    }
}

/// Where a table's rows go, for the run summary and the web UI: a Delta table's path, a
/// Postgres table with its server and database (never the password).
pub fn sink_location(table: &TableDef) -> Option<String> {
    match table.connector.as_str() {
        "delta" => table.option("path").map(|o| o.value.as_text()),
        "postgres" => {
            let opts = postgres::PostgresOptions::from_table(table).ok()?;
            let cfg = postgres::config(&opts.connection, None, "txguard").ok()?;
            Some(format!(
                "{} in postgres {}",
                opts.table,
                postgres::describe(&cfg)
            ))
        }
        _ => None,
    }
}

/// The sink a sink table declares, for rows of `schema`.
pub async fn open_sink(
    table: &TableDef,
    schema: SchemaRef,
) -> Result<Box<dyn Sink>, ConnectorError> {
    match table.connector.as_str() {
        "delta" => Ok(Box::new(delta::DeltaSink::open(table, schema).await?)),
        "postgres" => Ok(Box::new(postgres::PostgresSink::open(table, schema).await?)),
        "kafka" => Ok(Box::new(kafka::KafkaSink::open(table, &schema)?)),
        "stdout" => Ok(Box::new(stdout::StdoutSink::from_table(
            std::io::stdout(),
            table,
        ))),
        other => Err(ConnectorError::new(
            &table.name,
            format!("connector {other} cannot be a sink"),
        )),
    }
}
