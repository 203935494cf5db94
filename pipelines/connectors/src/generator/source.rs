//! The generator as a pipeline [`Source`]: transactions straight into Arrow batches of the
//! event contract (no JSON round trip), as fast as possible or paced to `rate` per second of
//! wall-clock time.

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use txguard_engine::connector::{ConnectorError, Poll, Source};
use txguard_engine::event::transaction_schema;
use txguard_engine::sql::TableDef;

use super::{Generated, Generator, config_from, options::pace_from};

/// Generated transactions as Arrow rows of [`transaction_schema`].
pub fn to_batch(events: &[Generated]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = events.len();
    let strings = |f: &dyn Fn(&Generated) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 12);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let floats = |f: &dyn Fn(&Generated) -> Option<f64>| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(n);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let mut ts = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut fraud = BooleanBuilder::with_capacity(n);
    for e in events {
        ts.append_value(e.ts_micros);
        fraud.append_option(e.transaction.is_fraud);
    }
    let cols: Vec<ArrayRef> = vec![
        strings(&|e| Some(&e.transaction.transaction_id)),
        strings(&|e| Some(&e.transaction.user_id)),
        floats(&|e| Some(e.transaction.amount)),
        Arc::new(ts.finish()),
        strings(&|e| e.transaction.currency.as_deref()),
        strings(&|e| e.transaction.merchant.as_deref()),
        strings(&|e| e.transaction.category.as_deref()),
        strings(&|e| e.transaction.location.as_deref()),
        strings(&|e| e.transaction.country.as_deref()),
        strings(&|e| e.transaction.device_id.as_deref()),
        strings(&|e| e.transaction.channel.as_deref()),
        floats(&|e| e.transaction.lat),
        floats(&|e| e.transaction.lon),
        Arc::new(fraud.finish()),
    ];
    RecordBatch::try_new(transaction_schema(), cols)
}

/// `connector = 'generator'` in a pipeline.
pub struct GeneratorSource {
    generator: Generator,
    /// Transactions per wall-clock second, if paced.
    pace: Option<f64>,
    started: Option<Instant>,
    buf: Vec<Generated>,
}

impl GeneratorSource {
    pub fn new(generator: Generator, pace: Option<f64>) -> Self {
        GeneratorSource {
            generator,
            pace,
            started: None,
            buf: Vec::new(),
        }
    }

    /// The source a table's options describe.
    pub fn from_table(table: &TableDef) -> Result<Self, ConnectorError> {
        let err = |m: String| ConnectorError::new(&table.name, m);
        let cfg = config_from(table).map_err(err)?;
        let pace = pace_from(table).map_err(err)?;
        let generator = Generator::new(cfg).map_err(|e| err(e.to_string()))?;
        Ok(GeneratorSource::new(generator, pace))
    }
}

impl Source for GeneratorSource {
    fn schema(&self) -> SchemaRef {
        transaction_schema()
    }

    fn poll(&mut self, max_rows: usize) -> Result<Poll, ConnectorError> {
        let mut want = max_rows.max(1);
        if let Some(rate) = self.pace {
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            let ahead = due.saturating_sub(self.generator.emitted());
            if ahead == 0 {
                return Ok(Poll::Idle);
            }
            want = want.min(ahead as usize);
        }
        self.buf.clear();
        self.buf.extend(self.generator.by_ref().take(want));
        if self.buf.is_empty() {
            return Ok(Poll::End);
        }
        let rows = to_batch(&self.buf).map_err(|e| ConnectorError::new("generator", e))?;
        Ok(Poll::Data { rows, dead: None })
    }

    fn position(&self) -> String {
        format!("{} transactions generated", self.generator.emitted())
    }
}
