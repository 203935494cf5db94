//! txguard's connectors, one folder per connector with its options, code and tests.
//! Today: [`generator`] (synthetic transactions with labelled fraud). Kafka, file replay,
//! Delta, Postgres and stdout follow behind the same source/sink interface.

pub mod generator;
