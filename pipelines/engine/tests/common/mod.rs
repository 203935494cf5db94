//! Shared test input: generator transactions in arrival order, decoded to Arrow.

use arrow::array::RecordBatch;
use txguard_connectors::generator::{Generator, GeneratorConfig, transaction_schema};
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
    let mut d = Decoder::new(transaction_schema(), &Default::default()).expect("decoder");
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
