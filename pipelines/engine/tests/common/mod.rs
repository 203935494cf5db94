//! Shared test input and plumbing: generator transactions in arrival order, decoded to
//! Arrow, and a sink that keeps what it is given. (Each test binary uses part of it.)
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use futures::future::BoxFuture;
use txguard_connectors::generator::{Generator, GeneratorConfig};
use txguard_engine::connector::{ConnectorError, Sink};
use txguard_engine::decode::Decoder;

/// Largest lateness of the generated input, and the watermark bound the tests use.
pub const BOUND_MS: u64 = 3000;

/// Generator events (in arrival order, some late within the bound) decoded to Arrow.
pub fn arrivals(n: usize, events_per_second: f64) -> RecordBatch {
    let g = Generator::new(GeneratorConfig {
        users: 40,
        events_per_second,
        out_of_order: 0.05,
        max_delay_ms: BOUND_MS,
        fraud_rate: 0.01,
        count: Some(n as u64),
        ..Default::default()
    })
    .expect("generator");
    let mut d = Decoder::default();
    for e in g {
        let json = serde_json::to_vec(&e.transaction).expect("json");
        assert!(d.push(&json, "generator", &0));
    }
    let (rows, dead) = d.flush().expect("flush");
    assert_eq!(dead.num_rows(), 0);
    rows
}

/// Equal up to floating-point summation order (relative 1e-9), NULL only with NULL.
pub fn close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// A sink that keeps every batch it is given.
#[derive(Clone, Default)]
pub struct Collect(pub Arc<Mutex<Vec<RecordBatch>>>);

impl Sink for Collect {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        self.0.lock().expect("lock").push(batch);
        Box::pin(async { Ok(()) })
    }
    fn commit(&mut self, _epoch: u64) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Collect {
    /// Everything received so far.
    pub fn batches(&self) -> Vec<RecordBatch> {
        self.0.lock().expect("lock").clone()
    }
}
