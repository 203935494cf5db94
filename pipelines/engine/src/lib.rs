//! txguard's dataflow engine: decoding of payloads into the declared columns of any source
//! table, with dead letters ([`decode`]), the row constraints of source tables (`NOT NULL`,
//! `CHECK`, [`constraints`]), the dead-letter schema ([`event`]), event time with watermarks
//! and late rows ([`time`]), incremental per-event OVER windows ([`over`]) and TUMBLE / HOP /
//! SESSION windowed GROUP BY ([`window`]), pipeline files in Arroyo's SQL dialect with their
//! validation ([`sql`]), the streaming planner and dataflow that run them ([`stream`]), rows
//! scored against a running dataflow's live state ([`probe`]), the source/sink interface
//! ([`connector`]) and the runtime that drives them ([`runtime`]); operator state as exact
//! Arrow snapshots ([`state`]) and checkpoints of them on disk ([`checkpoint`]), and the
//! crashes on purpose the fault tests inject into them ([`fault`]).

pub mod checkpoint;
pub mod connector;
pub mod constraints;
pub mod decode;
pub mod event;
pub mod fault;
pub mod histogram;
pub mod over;
pub mod probe;
pub mod runtime;
pub mod sql;
pub mod state;
pub mod stream;
pub mod time;
pub mod window;
