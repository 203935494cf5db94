//! The transaction event contract: the Arrow schema every source produces, the dead-letter
//! schema, and [`Transaction`], the typed form generators and producers write as JSON.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Event-time column name in the decoded schema.
pub const TS: &str = "ts";

/// Optional string fields of the contract, in schema order.
pub const OPTIONAL_STRINGS: [&str; 7] = [
    "currency",
    "merchant",
    "category",
    "location",
    "country",
    "device_id",
    "channel",
];

static TRANSACTION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new(
            TS,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        OPTIONAL_STRINGS
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, true)),
    );
    fields.push(Field::new("lat", DataType::Float64, true));
    fields.push(Field::new("lon", DataType::Float64, true));
    fields.push(Field::new("is_fraud", DataType::Boolean, true));
    Arc::new(Schema::new(fields))
});

static DEAD_LETTER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
        Field::new(
            "received_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
});

/// Schema of decoded transactions (`ts` is the event time, UTC microseconds).
pub fn transaction_schema() -> SchemaRef {
    TRANSACTION_SCHEMA.clone()
}

/// Schema of the dead-letter sink: where a bad message came from, why, and its raw bytes
/// (lossy UTF-8).
pub fn dead_letter_schema() -> SchemaRef {
    DEAD_LETTER_SCHEMA.clone()
}

/// A transaction as producers write it (JSON on the topic, JSON lines in files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub user_id: String,
    pub amount: f64,
    /// RFC 3339, UTC, microseconds.
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub merchant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub category: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lon: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub is_fraud: Option<bool>,
}

/// Formats UTC microseconds since the epoch as RFC 3339 with microseconds and `Z`.
pub fn format_micros(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

/// Rows that cannot go on (late, or breaking a sink's NOT NULL column) as dead letters: the
/// row as JSON for `raw`, the reason, and the row's `transaction_id` (if it has one) as the
/// position.
pub fn rows_as_dead_letters(
    source: &str,
    rows: &arrow::array::RecordBatch,
    reasons: &[String],
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, AsArray, StringArray, TimestampMicrosecondArray};
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(rows)?;
        w.finish()?;
    }
    let text = String::from_utf8_lossy(&buf);
    let raws: Vec<&str> = text.lines().collect();
    let n = rows.num_rows();
    let ids = rows
        .schema()
        .index_of("transaction_id")
        .ok()
        .and_then(|i| rows.column(i).as_string_opt::<i32>().cloned());
    let position: StringArray = (0..n)
        .map(|r| {
            Some(match &ids {
                Some(a) if a.is_valid(r) => format!("transaction_id {}", a.value(r)),
                _ => String::new(),
            })
        })
        .collect();
    let now = chrono::Utc::now().timestamp_micros();
    arrow::array::RecordBatch::try_new(
        dead_letter_schema(),
        vec![
            Arc::new(StringArray::from(vec![source; n])),
            Arc::new(position),
            Arc::new(StringArray::from(reasons.to_vec())),
            Arc::new(StringArray::from(
                (0..n)
                    .map(|r| raws.get(r).copied().unwrap_or(""))
                    .collect::<Vec<_>>(),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
        ],
    )
}
