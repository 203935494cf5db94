//! txguard's dataflow engine. Today: the transaction event contract ([`event`]), decoding of
//! JSON messages into Arrow with dead letters ([`decode`]), event time with watermarks and
//! late rows ([`time`]), incremental per-event OVER windows ([`over`]) and TUMBLE / HOP /
//! SESSION windowed GROUP BY ([`window`]), and pipeline files in Arroyo's SQL dialect with
//! their validation ([`sql`]). The streaming SQL planner builds on these.

pub mod decode;
pub mod event;
pub mod over;
pub mod sql;
pub mod time;
pub mod window;
