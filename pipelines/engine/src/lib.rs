//! txguard's dataflow engine. Today: the transaction event contract ([`event`]), decoding of
//! JSON messages into Arrow with dead letters ([`decode`]), event time with watermarks and
//! late rows ([`time`]), and incremental per-event OVER windows ([`over`]). The streaming SQL
//! planner and TUMBLE/HOP/SESSION operators build on these.

pub mod decode;
pub mod event;
pub mod over;
pub mod time;
