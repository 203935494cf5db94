//! The schema the generator produces — the default pipelines' transaction — and
//! [`Transaction`], its typed form that `txguard generate` and `txguard produce` write as
//! JSON. A generator table declares any subset of these columns, by name, with these types
//! (or a type they cast to, e.g. a DOUBLE as TEXT); [`check_table`] refuses at validate a
//! column the generator cannot fill.
//!
//! | column | type | |
//! |---|---|---|
//! | transaction_id | TEXT NOT NULL | `tx-<seed>-<n>` |
//! | user_id | TEXT NOT NULL | `user_<n>` |
//! | amount | DOUBLE NOT NULL | |
//! | ts | TIMESTAMP NOT NULL | event time, out of order as configured |
//! | currency, merchant, category, location, country, device_id, channel | TEXT | |
//! | lat, lon | DOUBLE | |
//! | is_fraud | BOOLEAN | the label: true for the five fraud patterns |
//! | fraud_pattern | TEXT | which pattern a fraud is (`amount_spike`, `velocity_burst`, `impossible_travel`, `odd_hour_category`, `card_testing`); NULL for legitimate ones |

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use txguard_engine::sql::{Loc, TableDef};

/// The event-time column.
pub const TS: &str = "ts";

/// The optional text columns, in schema order.
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
    fields.push(Field::new("fraud_pattern", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

/// The generator's columns (`ts` is the event time, UTC microseconds).
pub fn transaction_schema() -> SchemaRef {
    TRANSACTION_SCHEMA.clone()
}

/// A transaction as producers write it (JSON on the topic, JSON lines in files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub user_id: String,
    pub amount: f64,
    /// RFC 3339, UTC, microseconds; written as `ts`, the column's name (read also as
    /// `timestamp` or `event_time`, what seed-style producers send).
    #[serde(rename = "ts", alias = "timestamp", alias = "event_time")]
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
    /// Which of the generator's fraud patterns a fraud is (none for legitimate ones).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fraud_pattern: Option<String>,
}

/// Whether a generated column of type `from` can fill a declared column of type `to`.
fn fills(from: &DataType, to: &DataType) -> bool {
    from == to
        || (from.is_numeric() && to.is_numeric())
        || matches!(to, DataType::Utf8)
        || (matches!(from, DataType::Timestamp(..)) && matches!(to, DataType::Timestamp(..)))
}

/// A generator table's columns must be among the generator's, with types they cast to.
pub fn check_table(t: &TableDef) -> Result<(), (Loc, String)> {
    let schema = transaction_schema();
    for c in &t.columns {
        match schema.field_with_name(&c.name) {
            Err(_) => {
                return Err((
                    c.loc,
                    format!(
                        "the generator gives no column {}; it gives {}",
                        c.name,
                        txguard_engine::decode::column_list(&schema)
                    ),
                ));
            }
            Ok(f) if !fills(f.data_type(), &c.data_type) => {
                return Err((
                    c.loc,
                    format!(
                        "the generator's column {} is {}, which cannot fill a {} column",
                        c.name,
                        f.data_type(),
                        c.data_type
                    ),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}
