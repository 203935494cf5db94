//! txguard's dataflow engine. Today: the transaction event contract ([`event`]) and decoding
//! of JSON messages into Arrow with dead letters ([`decode`]). The streaming SQL planner and
//! stateful operators (event time, OVER and TUMBLE/HOP/SESSION windows) build on these.

pub mod decode;
pub mod event;
