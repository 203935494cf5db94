//! A source polled on a thread of its own, a few batches ahead of the pipeline, so that
//! reading and decoding (a file's JSON, a Delta table's Parquet) run beside the operators
//! instead of in series with them; the generator and the Kafka source have threads of their
//! own already. Bounded (back-pressure stops the reader), and each batch travels with the
//! position the source had after it, so [`Source::position`] says what the pipeline has
//! been given, not how far the reader has run.

use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use arrow::datatypes::SchemaRef;
use txguard_engine::connector::{ConnectorError, Poll, Source};

/// Batches read ahead at most.
const AHEAD: usize = 4;

type Polled = (Result<Poll, ConnectorError>, String, serde_json::Value);

/// `inner`, read on a thread.
pub struct ReadAhead {
    name: String,
    schema: SchemaRef,
    rx: Option<Receiver<Polled>>,
    reader: Option<JoinHandle<()>>,
    position: String,
    checkpoint: serde_json::Value,
}

impl ReadAhead {
    /// Starts reading `inner` (table `name`) `max_rows` at a time.
    pub fn spawn(
        name: &str,
        mut inner: Box<dyn Source>,
        max_rows: usize,
    ) -> Result<Self, ConnectorError> {
        let schema = inner.schema();
        let position = inner.position();
        let checkpoint = inner.checkpoint();
        let (tx, rx) = sync_channel::<Polled>(AHEAD);
        let reader = std::thread::Builder::new()
            .name(format!("read-{name}"))
            .spawn(move || {
                loop {
                    let polled = inner.poll(max_rows);
                    let last = matches!(polled, Ok(Poll::End) | Err(_));
                    let at = (inner.position(), inner.checkpoint());
                    if tx.send((polled, at.0, at.1)).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| ConnectorError::new(name, format!("starting the reader: {e}")))?;
        Ok(ReadAhead {
            name: name.to_string(),
            schema,
            rx: Some(rx),
            reader: Some(reader),
            position,
            checkpoint,
        })
    }
}

impl Source for ReadAhead {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll(&mut self, _max_rows: usize) -> Result<Poll, ConnectorError> {
        let Some(rx) = &self.rx else {
            return Ok(Poll::End);
        };
        match rx.recv() {
            Ok((polled, position, checkpoint)) => {
                self.position = position;
                self.checkpoint = checkpoint;
                if matches!(polled, Ok(Poll::End) | Err(_)) {
                    self.rx = None;
                }
                polled
            }
            // The reader ended without saying so: it panicked.
            Err(_) => {
                self.rx = None;
                let why = match self.reader.take().map(JoinHandle::join) {
                    Some(Err(p)) => p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "a panic".into()),
                    _ => "an unknown cause".into(),
                };
                Err(ConnectorError::new(
                    &self.name,
                    format!("the reader stopped at {} with {why}", self.position),
                ))
            }
        }
    }

    fn position(&self) -> String {
        self.position.clone()
    }

    fn checkpoint(&self) -> serde_json::Value {
        self.checkpoint.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// Counts to `n` in batches of one row, then ends (or panics at `panic_at`).
    struct Counter {
        at: i64,
        n: i64,
        panic_at: Option<i64>,
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("i", DataType::Int64, false)]))
    }

    impl Source for Counter {
        fn schema(&self) -> SchemaRef {
            schema()
        }
        fn poll(&mut self, _max: usize) -> Result<Poll, ConnectorError> {
            if Some(self.at) == self.panic_at {
                panic!("disk on fire");
            }
            if self.at == self.n {
                return Ok(Poll::End);
            }
            self.at += 1;
            let rows =
                RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![self.at]))])
                    .map_err(|e| ConnectorError::new("counter", e))?;
            Ok(Poll::Data { rows, dead: None })
        }
        fn position(&self) -> String {
            format!("row {}", self.at)
        }
        fn checkpoint(&self) -> serde_json::Value {
            serde_json::json!(self.at)
        }
    }

    #[test]
    fn batches_arrive_in_order_with_their_positions_and_a_panic_is_an_error() {
        let inner = Counter {
            at: 0,
            n: 50,
            panic_at: None,
        };
        let mut r = ReadAhead::spawn("t", Box::new(inner), 10).expect("spawn");
        assert_eq!(r.position(), "row 0");
        for i in 1..=50 {
            match r.poll(10).expect("poll") {
                Poll::Data { rows, .. } => {
                    let v = rows
                        .column(0)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("i64");
                    assert_eq!(v.value(0), i);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(r.position(), format!("row {i}"), "the position handed over");
            assert_eq!(r.checkpoint(), serde_json::json!(i), "and where to resume");
        }
        assert!(matches!(r.poll(10), Ok(Poll::End)));
        assert!(matches!(r.poll(10), Ok(Poll::End)));

        let inner = Counter {
            at: 0,
            n: 50,
            panic_at: Some(3),
        };
        let mut r = ReadAhead::spawn("t", Box::new(inner), 10).expect("spawn");
        let mut got = 0;
        let e = loop {
            match r.poll(10) {
                Ok(Poll::Data { .. }) => got += 1,
                Ok(other) => panic!("{other:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(got, 3);
        assert!(
            e.to_string()
                .contains("the reader stopped at row 3 with disk on fire"),
            "{e}"
        );
    }
}
