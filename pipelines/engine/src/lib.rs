//! txguard's dataflow engine. Today: the transaction event contract ([`event`]), decoding of
//! JSON messages into Arrow with dead letters ([`decode`]), event time with watermarks and
//! late rows ([`time`]), incremental per-event OVER windows ([`over`]) and TUMBLE / HOP /
//! SESSION windowed GROUP BY ([`window`]). The streaming SQL planner builds on these.

pub mod decode;
pub mod event;
pub mod over;
pub mod time;
pub mod window;
