//! What every pipeline shares whatever its sources' schemas: the dead-letter schema, rows as
//! dead letters, and time formatting.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

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

/// Schema of the dead-letter sink: where a bad message came from, why, and its raw bytes
/// (lossy UTF-8).
pub fn dead_letter_schema() -> SchemaRef {
    DEAD_LETTER_SCHEMA.clone()
}

/// Formats UTC microseconds since the epoch as RFC 3339 with microseconds and `Z`.
pub fn format_micros(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => micros.to_string(),
    }
}

/// Rows that cannot go on (late, failing a CHECK, or breaking a sink's NOT NULL column) as
/// dead letters: the row as JSON for `raw`, its reason, and `position` (where the source was
/// when it gave the batch that held the row).
pub fn rows_as_dead_letters(
    source: &str,
    rows: &arrow::array::RecordBatch,
    reasons: &[String],
    position: &str,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{StringArray, TimestampMicrosecondArray};
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(rows)?;
        w.finish()?;
    }
    let text = String::from_utf8_lossy(&buf);
    let raws: Vec<&str> = text.lines().collect();
    let n = rows.num_rows();
    let now = chrono::Utc::now().timestamp_micros();
    arrow::array::RecordBatch::try_new(
        dead_letter_schema(),
        vec![
            Arc::new(StringArray::from(vec![source; n])),
            Arc::new(StringArray::from(vec![position; n])),
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
