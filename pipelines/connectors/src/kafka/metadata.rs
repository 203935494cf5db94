//! Kafka metadata columns: a source table's `col TYPE GENERATED ALWAYS AS (metadata('key'))
//! STORED` columns (Arroyo's syntax), filled per message from its partition, offset, Kafka
//! timestamp, key or topic and appended after the decoded event's columns.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rdkafka::Message;
use txguard_engine::connector::ConnectorError;
use txguard_engine::sql::{TableDef, metadata_columns};

/// One metadata column being filled.
enum Filler {
    Partition(Int64Builder),
    Offset(Int64Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Key(StringBuilder),
    Topic(StringBuilder),
}

/// The metadata columns of one source table and the values gathered since the last flush.
pub struct MetadataColumns {
    fillers: Vec<Filler>,
}

impl MetadataColumns {
    /// The table's metadata columns (none is fine), and the source's schema: the event
    /// contract's columns followed by them. A metadata column may not reuse a contract name.
    pub fn of(table: &TableDef, contract: &SchemaRef) -> Result<(Self, SchemaRef), ConnectorError> {
        let mut fields: Vec<Arc<Field>> = contract.fields().iter().cloned().collect();
        let mut fillers = Vec::new();
        for (c, key) in metadata_columns(table) {
            if contract.field_with_name(&c.name).is_ok() {
                return Err(ConnectorError::new(
                    &table.name,
                    format!(
                        "metadata column {} has the name of an event field; name it otherwise \
                         (e.g. kafka_{})",
                        c.name, c.name
                    ),
                ));
            }
            let (filler, data_type) = match key {
                "partition" => (Filler::Partition(Int64Builder::new()), DataType::Int64),
                "offset_id" => (Filler::Offset(Int64Builder::new()), DataType::Int64),
                "timestamp" => (
                    Filler::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                ),
                "key" => (Filler::Key(StringBuilder::new()), DataType::Utf8),
                "topic" => (Filler::Topic(StringBuilder::new()), DataType::Utf8),
                other => {
                    return Err(ConnectorError::new(
                        &table.name,
                        format!("column {}: no Kafka metadata field '{other}'", c.name),
                    ));
                }
            };
            fillers.push(filler);
            fields.push(Arc::new(Field::new(&c.name, data_type, true)));
        }
        Ok((MetadataColumns { fillers }, Arc::new(Schema::new(fields))))
    }

    pub fn is_empty(&self) -> bool {
        self.fillers.is_empty()
    }

    /// Records the metadata of an accepted message.
    pub fn push<M: Message>(&mut self, m: &M) {
        for f in &mut self.fillers {
            match f {
                Filler::Partition(b) => b.append_value(i64::from(m.partition())),
                Filler::Offset(b) => b.append_value(m.offset()),
                Filler::Timestamp(b) => b.append_option(
                    m.timestamp()
                        .to_millis()
                        .and_then(|ms| ms.checked_mul(1000)),
                ),
                Filler::Key(b) => {
                    b.append_option(m.key().and_then(|k| std::str::from_utf8(k).ok()))
                }
                Filler::Topic(b) => b.append_value(m.topic()),
            }
        }
    }

    /// The gathered columns, in declaration order; the builders start again empty.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.fillers
            .iter_mut()
            .map(|f| -> ArrayRef {
                match f {
                    Filler::Partition(b) | Filler::Offset(b) => Arc::new(b.finish()),
                    Filler::Timestamp(b) => Arc::new(b.finish()),
                    Filler::Key(b) | Filler::Topic(b) => Arc::new(b.finish()),
                }
            })
            .collect()
    }
}
