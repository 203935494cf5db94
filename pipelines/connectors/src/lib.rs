//! txguard's connectors, one folder per connector with its options, code and tests.
//! Today: [`generator`] (synthetic transactions with labelled fraud), [`file`] (JSON-lines
//! replay) and [`stdout`]. Kafka, Parquet replay, Delta and Postgres follow.

pub mod file;
pub mod generator;
pub mod stdout;

use txguard_engine::sql::ConnectorSpec;

/// Every connector's `WITH (...)` specification, for validating pipeline files.
pub fn specs() -> Vec<ConnectorSpec> {
    vec![generator::SPEC, file::SPEC, stdout::SPEC]
}
