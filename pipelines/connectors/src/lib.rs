//! txguard's connectors, one folder per connector with its options, code and tests.
//! Today: [`generator`] (synthetic transactions with labelled fraud) and [`stdout`]. Kafka,
//! file replay, Delta and Postgres follow.

pub mod generator;
pub mod stdout;

use txguard_engine::sql::ConnectorSpec;

/// Every connector's `WITH (...)` specification, for validating pipeline files.
pub fn specs() -> Vec<ConnectorSpec> {
    vec![generator::SPEC, stdout::SPEC]
}
