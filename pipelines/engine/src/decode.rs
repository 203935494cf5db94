//! JSON → Arrow decoding of transaction events, with dead letters.
//!
//! Accepts what producers in the wild send: `datetime.isoformat()` timestamps (no zone = UTC,
//! microseconds, `T` or space), RFC 3339 with any offset, epoch seconds or milliseconds
//! (numbers or numeric strings: below 1e11 they are seconds, else milliseconds), amounts as
//! numbers or numeric strings, ids as strings or integers, the aliases `ts` / `event_time`,
//! any key order, missing optional fields and unknown fields (ignored).
//!
//! Everything else — not JSON, not an object, a required field missing or null, a wrong
//! type, a NaN/infinite/negative amount, an unparsable time, a message over the size limit —
//! becomes a dead letter with the raw payload, the reason and the source position. Every
//! pushed message ends up in exactly one of the two outputs.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDateTime};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::event::{dead_letter_schema, transaction_schema};

/// Default largest message accepted (bytes).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Why a message went to the dead letters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Reject(pub String);

fn reject(msg: impl Into<String>) -> Reject {
    Reject(msg.into())
}

/// A transaction id or user id: a string or an integer.
struct Id<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Id(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Id(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, or a string holding one.
struct Num(f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a numeric string")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Num, E> {
                v.trim()
                    .parse::<f64>()
                    .map(Num)
                    .map_err(|_| E::custom(format!("{v:?} is not a number")))
            }
        }
        d.deserialize_any(V)
    }
}

/// An event time: a date-time string or epoch seconds/milliseconds.
enum Time<'a> {
    Text(Cow<'a, str>),
    Epoch(f64),
}

impl<'de: 'a, 'a> Deserialize<'de> for Time<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Time<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an ISO 8601 / RFC 3339 string or epoch seconds/milliseconds")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Time::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Time::Text(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Time::Epoch(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Time::Epoch(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Time::Epoch(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// Epoch seconds (below 1e11) or milliseconds to UTC microseconds.
fn epoch_to_micros(v: f64) -> Result<i64, Reject> {
    if !v.is_finite() {
        return Err(reject(format!("timestamp {v} is not a finite number")));
    }
    let micros = if v.abs() < 1e11 { v * 1e6 } else { v * 1e3 };
    if micros.abs() > 9.0e18 {
        return Err(reject(format!("timestamp {v} is out of range")));
    }
    Ok(micros.round() as i64)
}

/// Parses an event time to UTC microseconds.
pub fn parse_time_text(s: &str) -> Result<i64, Reject> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc().timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%dT%H:%M:%S%.f%#z"] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Ok(dt.timestamp_micros());
        }
    }
    if let Ok(v) = t.parse::<f64>() {
        return epoch_to_micros(v);
    }
    Err(reject(format!(
        "timestamp {s:?} is not ISO 8601 / RFC 3339 nor epoch seconds/milliseconds"
    )))
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    transaction_id: Option<Id<'a>>,
    #[serde(borrow, default)]
    user_id: Option<Id<'a>>,
    #[serde(default)]
    amount: Option<Num>,
    #[serde(borrow, default, alias = "ts", alias = "event_time")]
    timestamp: Option<Time<'a>>,
    #[serde(borrow, default)]
    currency: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    merchant: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    category: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    location: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    country: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    device_id: Option<Id<'a>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    lat: Option<Num>,
    #[serde(default)]
    lon: Option<Num>,
    #[serde(default)]
    is_fraud: Option<Flag>,
}

/// A label: true/false or 0/1.
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true/false or 0/1")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                match v {
                    0 | 1 => Ok(Flag(v == 1)),
                    _ => Err(E::custom(format!("is_fraud {v} is not 0 or 1"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                self.visit_u64(u64::try_from(v).map_err(|_| E::custom("negative is_fraud"))?)
            }
        }
        d.deserialize_any(V)
    }
}

/// One decoded event, borrowing from its payload.
pub struct Event<'a> {
    pub transaction_id: Cow<'a, str>,
    pub user_id: Cow<'a, str>,
    pub amount: f64,
    pub ts_micros: i64,
    strings: [Option<Cow<'a, str>>; 7],
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub is_fraud: Option<bool>,
}

/// Decodes one JSON message against the event contract.
pub fn decode_event(payload: &[u8]) -> Result<Event<'_>, Reject> {
    match payload.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err(reject("empty message")),
        Some(_) if serde_json::from_slice::<de::IgnoredAny>(payload).is_err() => {
            return Err(reject(format!(
                "not valid JSON: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(40)])
            )));
        }
        Some(_) => return Err(reject("not a JSON object")),
    }
    let raw: Raw<'_> = serde_json::from_slice(payload).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof => reject(format!("not valid JSON: {e}")),
            _ => reject(format!("does not match the event contract: {e}")),
        }
    })?;
    let need = |name: &str| reject(format!("required field {name} is missing or null"));
    let transaction_id = raw.transaction_id.ok_or_else(|| need("transaction_id"))?.0;
    if transaction_id.is_empty() {
        return Err(reject("transaction_id is empty"));
    }
    let user_id = raw.user_id.ok_or_else(|| need("user_id"))?.0;
    if user_id.is_empty() {
        return Err(reject("user_id is empty"));
    }
    let amount = raw.amount.ok_or_else(|| need("amount"))?.0;
    if !amount.is_finite() || amount < 0.0 {
        return Err(reject(format!(
            "amount must be a finite number >= 0, got {amount}"
        )));
    }
    let ts_micros = match raw
        .timestamp
        .ok_or_else(|| need("timestamp (or ts, event_time)"))?
    {
        Time::Text(s) => parse_time_text(&s)?,
        Time::Epoch(v) => epoch_to_micros(v)?,
    };
    let coord = |v: Option<Num>, name: &str, limit: f64| -> Result<Option<f64>, Reject> {
        match v {
            Some(Num(x)) if !x.is_finite() || x.abs() > limit => {
                Err(reject(format!("{name} {x} is out of range")))
            }
            other => Ok(other.map(|n| n.0)),
        }
    };
    Ok(Event {
        transaction_id,
        user_id,
        amount,
        ts_micros,
        strings: [
            raw.currency,
            raw.merchant,
            raw.category,
            raw.location,
            raw.country,
            raw.device_id.map(|d| d.0),
            raw.channel,
        ],
        lat: coord(raw.lat, "lat", 90.0)?,
        lon: coord(raw.lon, "lon", 180.0)?,
        is_fraud: raw.is_fraud.map(|f| f.0),
    })
}

/// Accumulates messages into a batch of events and a batch of dead letters.
pub struct Decoder {
    max_message_bytes: usize,
    ids: StringBuilder,
    users: StringBuilder,
    amounts: Float64Builder,
    ts: TimestampMicrosecondBuilder,
    strings: Vec<StringBuilder>,
    lat: Float64Builder,
    lon: Float64Builder,
    fraud: BooleanBuilder,
    dead: DeadLetters,
}

/// Dead letters accumulated by a [`Decoder`] (or by late-data handling).
pub struct DeadLetters {
    source: StringBuilder,
    position: StringBuilder,
    reason: StringBuilder,
    raw: StringBuilder,
    received: TimestampMicrosecondBuilder,
}

impl Default for DeadLetters {
    fn default() -> Self {
        DeadLetters {
            source: StringBuilder::new(),
            position: StringBuilder::new(),
            reason: StringBuilder::new(),
            raw: StringBuilder::new(),
            received: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
        }
    }
}

impl DeadLetters {
    /// Records one dead letter.
    pub fn push(&mut self, source: &str, position: &dyn fmt::Display, reason: &str, raw: &[u8]) {
        self.source.append_value(source);
        self.position.append_value(position.to_string());
        self.reason.append_value(reason);
        self.raw.append_value(String::from_utf8_lossy(raw));
        self.received
            .append_value(chrono::Utc::now().timestamp_micros());
    }

    pub fn len(&self) -> usize {
        self.reason.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dead letters so far as a batch of [`dead_letter_schema`]; resets.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.source.finish()),
            Arc::new(self.position.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.received.finish()),
        ];
        RecordBatch::try_new(dead_letter_schema(), cols)
    }
}

impl Decoder {
    pub fn new(max_message_bytes: usize) -> Self {
        Decoder {
            max_message_bytes,
            ids: StringBuilder::new(),
            users: StringBuilder::new(),
            amounts: Float64Builder::new(),
            ts: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            strings: (0..7).map(|_| StringBuilder::new()).collect(),
            lat: Float64Builder::new(),
            lon: Float64Builder::new(),
            fraud: BooleanBuilder::new(),
            dead: DeadLetters::default(),
        }
    }

    /// Decodes one message; a bad one is recorded as a dead letter with `source` and
    /// `position` (e.g. `transactions` and `partition 3 offset 1042`). Returns whether the
    /// message became an event.
    pub fn push(&mut self, payload: &[u8], source: &str, position: &dyn fmt::Display) -> bool {
        if payload.len() > self.max_message_bytes {
            let reason = format!(
                "message of {} bytes exceeds the {}-byte limit",
                payload.len(),
                self.max_message_bytes
            );
            let keep = &payload[..payload.len().min(1024)];
            self.dead.push(source, position, &reason, keep);
            return false;
        }
        match decode_event(payload) {
            Ok(e) => {
                self.ids.append_value(&e.transaction_id);
                self.users.append_value(&e.user_id);
                self.amounts.append_value(e.amount);
                self.ts.append_value(e.ts_micros);
                for (b, s) in self.strings.iter_mut().zip(&e.strings) {
                    b.append_option(s.as_deref());
                }
                self.lat.append_option(e.lat);
                self.lon.append_option(e.lon);
                self.fraud.append_option(e.is_fraud);
                true
            }
            Err(r) => {
                self.dead.push(source, position, &r.0, payload);
                false
            }
        }
    }

    /// Events decoded since the last flush.
    pub fn pending_rows(&self) -> usize {
        self.ids.len()
    }

    /// Dead letters recorded since the last flush.
    pub fn pending_dead(&self) -> usize {
        self.dead.len()
    }

    /// The events and dead letters so far; resets.
    pub fn flush(&mut self) -> Result<(RecordBatch, RecordBatch), ArrowError> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.ids.finish()),
            Arc::new(self.users.finish()),
            Arc::new(self.amounts.finish()),
            Arc::new(self.ts.finish()),
        ];
        for b in &mut self.strings {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(self.lat.finish()));
        cols.push(Arc::new(self.lon.finish()));
        cols.push(Arc::new(self.fraud.finish()));
        let rows = RecordBatch::try_new(transaction_schema(), cols)?;
        Ok((rows, self.dead.finish()?))
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}
