//! txguard's connectors, one folder per connector with its options (`options.rs`: the
//! declared `WITH` keys and the struct they parse into), code and tests: [`generator`]
//! (synthetic transactions with labelled fraud), [`file`] (JSON, text, Avro or Parquet
//! replay), [`delta`] (Delta Lake tables, written or replayed), [`postgres`] (tables over
//! binary COPY, upserted on their key), [`kafka`] (a topic, read as a consumer group or
//! written) and [`stdout`]. Each implements the engine's
//! [`Connector`](txguard_engine::connector::Connector) once and is listed in [`CONNECTORS`];
//! [`open_source`] and [`open_sink`] build the connector a pipeline table declares.

pub mod delta;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod postgres;
pub mod read_ahead;
pub mod stdout;

use txguard_engine::connector::{Connector, ConnectorError, Sink, SinkContext, Source};
use txguard_engine::sql::{ConnectorSpec, TableDef};

/// Every connector, once: a new connector is a folder and a line here.
pub const CONNECTORS: &[&dyn Connector] = &[
    &generator::GeneratorConnector,
    &file::FileConnector,
    &delta::DeltaConnector,
    &postgres::PostgresConnector,
    &kafka::KafkaConnector,
    &stdout::StdoutConnector,
];

/// The connector called `name`.
pub fn connector(name: &str) -> Option<&'static dyn Connector> {
    CONNECTORS.iter().copied().find(|c| c.spec().name == name)
}

fn named(table: &TableDef) -> Result<&'static dyn Connector, ConnectorError> {
    connector(&table.connector).ok_or_else(|| {
        ConnectorError::new(
            &table.name,
            format!("there is no connector {}", table.connector),
        )
    })
}

/// Every connector's `WITH (...)` specification, for validating pipeline files.
pub fn specs() -> Vec<ConnectorSpec> {
    CONNECTORS.iter().map(|c| c.spec()).collect()
}

/// The source a source table declares, at its start or at `resume` (its position in the
/// checkpoint being restored).
pub async fn open_source(
    table: &TableDef,
    resume: Option<&serde_json::Value>,
) -> Result<Box<dyn Source>, ConnectorError> {
    named(table)?.open_source(table, resume).await
}

/// `resume` as the position type `T` a source saves, or an error naming the table.
pub(crate) fn resume_at<T: serde::de::DeserializeOwned>(
    table: &TableDef,
    resume: Option<&serde_json::Value>,
) -> Result<Option<T>, ConnectorError> {
    resume
        .map(|v| {
            serde_json::from_value(v.clone()).map_err(|e| {
                ConnectorError::new(
                    &table.name,
                    format!(
                        "the checkpoint's position {v} is not one this {} source saves: {e}",
                        table.connector
                    ),
                )
            })
        })
        .transpose()
}

/// Where a table's rows go, for the run summary and the web UI: a Delta table's path, a
/// Postgres table with its server and database (never the password).
pub fn sink_location(table: &TableDef) -> Option<String> {
    connector(&table.connector)?.location(table)
}

/// The sink a sink table declares, for rows of `ctx.schema`.
pub async fn open_sink(
    table: &TableDef,
    ctx: SinkContext,
) -> Result<Box<dyn Sink>, ConnectorError> {
    named(table)?.open_sink(table, ctx).await
}
