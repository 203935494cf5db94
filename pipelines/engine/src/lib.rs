//! txguard's dataflow engine. Today: the transaction event contract ([`event`]), decoding of
//! JSON messages into Arrow with dead letters ([`decode`]), event time with watermarks and
//! late rows ([`time`]), incremental per-event OVER windows ([`over`]) and TUMBLE / HOP /
//! SESSION windowed GROUP BY ([`window`]), and pipeline files in Arroyo's SQL dialect with
//! their validation ([`sql`]), and the streaming planner and dataflow that run them ([`stream`]).

pub mod connector;
pub mod decode;
pub mod event;
pub mod over;
pub mod runtime;
pub mod sql;
pub mod stream;
pub mod time;
pub mod window;
