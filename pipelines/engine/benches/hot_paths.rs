//! Throughput of the engine's hot paths on generator data, one thread:
//! generate → JSON, generate → Arrow (the pipeline's source), JSON → Arrow (decode), event-time
//! buffer, OVER windows, TUMBLE aggregation.
//!
//!     cargo bench -p txguard-engine --bench hot_paths [-- --rows N]

use std::hint::black_box;
use std::time::Instant;

use arrow::array::RecordBatch;
use txguard_connectors::generator::transaction_schema;
use txguard_connectors::generator::{Generator, GeneratorConfig};
use txguard_engine::decode::Decoder;
use txguard_engine::over::{OverAgg, OverFn, OverWindows};
use txguard_engine::time::EventTimeBuffer;
use txguard_engine::window::{GroupAgg, GroupFn, WindowAggregate, WindowKind};

const HOUR: i64 = 3_600_000_000;
const BATCH: usize = 8192;

fn rate(n: usize, secs: f64) -> String {
    format!("{:.2} M rows/s", n as f64 / secs / 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000usize);
    let users = 100_000;

    let cfg = GeneratorConfig {
        users,
        count: Some(rows as u64),
        events_per_second: 50.0,
        ..Default::default()
    };
    let t = Instant::now();
    let lines: Vec<Vec<u8>> = Generator::new(cfg.clone())
        .expect("generator")
        .map(|e| serde_json::to_vec(&e.transaction).expect("json"))
        .collect();
    let t_gen = t.elapsed().as_secs_f64();

    // What the generator source does on its thread.
    let (t_arrow, ()) = best_of(|| {
        let mut g = Generator::new(cfg.clone()).expect("generator");
        while let Some(b) = g.next_batch(BATCH) {
            black_box(b.expect("batch"));
        }
    });

    let (t_decode, batches) = best_of(|| {
        let mut d = Decoder::new(transaction_schema(), &Default::default()).expect("decoder");
        let mut batches: Vec<RecordBatch> = Vec::new();
        for chunk in lines.chunks(BATCH) {
            for (i, l) in chunk.iter().enumerate() {
                d.push(l, "bench", &i);
            }
            let (b, _) = d.flush().expect("flush");
            batches.push(b);
        }
        batches
    });

    let (t_buffer, released) = best_of(|| {
        let mut buf = EventTimeBuffer::new(transaction_schema(), 3, 3_000_000);
        let mut released = Vec::new();
        for b in &batches {
            buf.push(b.clone()).expect("push");
            if let Some(r) = buf.release().expect("release") {
                released.push(r);
            }
        }
        if let Some(r) = buf.flush().expect("flush") {
            released.push(r);
        }
        released
    });

    let agg = |name: &str, func, range_micros| OverAgg {
        name: name.into(),
        func,
        input: 2,
        range_micros,
    };
    let (t_over, ()) = best_of(|| {
        let mut over = OverWindows::new(
            &transaction_schema(),
            1,
            3,
            vec![
                agg("count_1h", OverFn::CountRows, HOUR),
                agg("count_24h", OverFn::Count, 24 * HOUR),
                agg("avg_24h", OverFn::Avg, 24 * HOUR),
                agg("std_24h", OverFn::Stddev, 24 * HOUR),
                agg("max_24h", OverFn::Max, 24 * HOUR),
                agg("prev", OverFn::Lag, 0),
            ],
        )
        .expect("over");
        for b in &released {
            black_box(over.process(b).expect("process"));
        }
    });

    let (t_tumble, ()) = best_of(|| tumble_pass(&released));

    println!(
        "{rows} generator transactions, {users} users, batches of {BATCH}, one thread, best of 3\n"
    );
    println!("| stage | throughput |");
    println!("|---|---|");
    println!("| generate + serialise JSON | {} |", rate(rows, t_gen));
    println!(
        "| generate → Arrow batches (incl. making {users} users) | {} |",
        rate(rows, t_arrow)
    );
    println!(
        "| decode JSON → Arrow (dead-letter checks) | {} |",
        rate(rows, t_decode)
    );
    println!(
        "| event-time buffer (watermark, reorder) | {} |",
        rate(rows, t_buffer)
    );
    println!(
        "| OVER windows: 6 functions, 1 h / 24 h frames | {} |",
        rate(rows, t_over)
    );
    println!("| TUMBLE 1 min: count, sum | {} |", rate(rows, t_tumble));
}

fn best_of<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..3 {
        let t = Instant::now();
        let v = f();
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(v);
    }
    (best, out.expect("ran"))
}

fn tumble_pass(released: &[RecordBatch]) {
    let mut tumble = WindowAggregate::new(
        &transaction_schema(),
        WindowKind::Tumble { width: 60_000_000 },
        1,
        3,
        vec![
            GroupAgg {
                name: "n".into(),
                func: GroupFn::CountRows,
                input: 2,
            },
            GroupAgg {
                name: "total".into(),
                func: GroupFn::Sum,
                input: 2,
            },
        ],
    )
    .expect("tumble");
    for b in released {
        tumble.process(b).expect("process");
        let ts = b
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::TimestampMicrosecondArray>();
        if let Some(w) = ts.and_then(|a| a.values().last().copied()) {
            black_box(tumble.advance(w - 3_000_000).expect("advance"));
        }
    }
    black_box(tumble.flush().expect("flush"));
}
