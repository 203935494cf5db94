//! Throughput of the engine's hot paths on generator data, one thread:
//! generate → JSON, generate → Arrow (the pipeline's source), JSON → Arrow (decode), event-time
//! buffer, OVER windows, TUMBLE aggregation.
//!
//!     cargo bench -p txguard-engine --bench hot_paths [-- --rows N]

use std::hint::black_box;
use std::time::Instant;

use arrow::array::{AsArray, RecordBatch};
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

    // The default Kafka pipeline's table, decoded as a user's DDL is: its 11 declared
    // columns, the `ts=timestamp|event_time` aliases, then its NOT NULL / CHECK constraints.
    let ddl = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../sql/pipeline_kafka.sql"
    ))
    .expect("sql/pipeline_kafka.sql");
    let p = txguard_engine::sql::parse("pipeline_kafka.sql", &ddl).expect("parse");
    let table = p.table("transactions").expect("transactions");
    let (t_decode_ddl, ddl_rows) = best_of(|| {
        let mut d = Decoder::for_table(table).expect("decoder");
        let mut n = 0;
        for chunk in lines.chunks(BATCH) {
            for (i, l) in chunk.iter().enumerate() {
                d.push(l, "bench", &i);
            }
            let (b, dead) = d.flush().expect("flush");
            assert_eq!(dead.num_rows(), 0);
            n += b.num_rows();
            black_box(b);
        }
        n
    });
    assert_eq!(ddl_rows, rows);
    let constraints = txguard_engine::constraints::Constraints::new(
        table.payload_schema(),
        &table.checks,
        Some(3),
    )
    .expect("constraints");
    let ddl_batches: Vec<RecordBatch> = {
        let mut d = Decoder::for_table(table).expect("decoder");
        lines
            .chunks(BATCH)
            .map(|chunk| {
                for (i, l) in chunk.iter().enumerate() {
                    d.push(l, "bench", &i);
                }
                d.flush().expect("flush").0
            })
            .collect()
    };
    let (t_checks, ()) = best_of(|| {
        for b in &ddl_batches {
            black_box(
                constraints
                    .apply(b.columns().to_vec(), Vec::new())
                    .expect("checks"),
            );
        }
    });

    // arrow-json's decoder on the same lines and columns, for comparison: it has no per-row
    // dead letters (a bad row fails the batch), no aliases, reads epoch numbers as raw
    // microseconds and 0/1 as no boolean, so it cannot replace ours; the numbers say what
    // that costs.
    let arrow_schema = table.payload_schema();
    let generator_json: Vec<Vec<u8>> = lines.clone();
    let (t_arrow_json, ()) = best_of(|| {
        let mut d = arrow::json::ReaderBuilder::new(arrow_schema.clone())
            .with_batch_size(BATCH)
            .build_decoder()
            .expect("arrow-json");
        for chunk in generator_json.chunks(BATCH) {
            for l in chunk {
                d.decode(l).expect("decode");
                d.decode(b"\n").expect("decode");
            }
            black_box(d.flush().expect("flush"));
        }
    });

    // Avro datums of the same rows (the writer schema in the table: `avro.schema`).
    let avro_schema_json = r#"{"type": "record", "name": "Transaction", "fields": [
        {"name": "transaction_id", "type": "string"}, {"name": "user_id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "merchant", "type": ["null", "string"]}, {"name": "category", "type": ["null", "string"]},
        {"name": "location", "type": ["null", "string"]}, {"name": "channel", "type": ["null", "string"]},
        {"name": "lat", "type": ["null", "double"]}, {"name": "lon", "type": ["null", "double"]},
        {"name": "is_fraud", "type": ["null", "boolean"]}]}"#;
    let avro_schema = apache_avro::Schema::parse_str(avro_schema_json).expect("schema");
    let avro: Vec<Vec<u8>> = ddl_batches
        .iter()
        .flat_map(|b| avro_datums(b, &avro_schema))
        .collect();
    let mut avro_table = table.clone();
    avro_table
        .options
        .retain(|o| o.key != "json.aliases" && o.key != "format");
    for (k, v) in [("format", "avro"), ("avro.schema", avro_schema_json)] {
        avro_table.options.push(txguard_engine::sql::TableOption {
            key: k.into(),
            value: txguard_engine::sql::OptionValue::Text(v.into()),
            loc: Default::default(),
        });
    }
    let (t_avro, avro_rows) = best_of(|| {
        let mut d = Decoder::for_table(&avro_table).expect("avro decoder");
        let mut n = 0;
        for chunk in avro.chunks(BATCH) {
            for (i, m) in chunk.iter().enumerate() {
                d.push(m, "bench", &i);
            }
            let (b, dead) = d.flush().expect("flush");
            assert_eq!(dead.num_rows(), 0, "{dead:?}");
            n += b.num_rows();
        }
        n
    });
    assert_eq!(avro_rows, rows);

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
    let over_pass = |batches: &[RecordBatch]| {
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
        for b in batches {
            black_box(over.process(b).expect("process"));
        }
    };
    let (t_over, ()) = best_of(|| over_pass(&released));
    // The same rows over 10 keys: each key's 24 h frame holds ~100k rows (hot merchants,
    // terminals, IPs); a row must cost the same as with small frames.
    let hot: Vec<RecordBatch> = released
        .iter()
        .map(|b| {
            let users = b.column(1).as_string::<i32>();
            let keys: arrow::array::StringArray = users
                .iter()
                .map(|u| u.map(|u| format!("k{}", u.bytes().last().unwrap_or(0) % 10)))
                .collect();
            let mut cols = b.columns().to_vec();
            cols[1] = std::sync::Arc::new(keys);
            RecordBatch::try_new(b.schema(), cols).expect("hot batch")
        })
        .collect();
    let (t_over_hot, ()) = best_of(|| over_pass(&hot));

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
        "| decode JSON → Arrow, the default Kafka table's DDL (11 columns, aliases) | {} |",
        rate(rows, t_decode_ddl)
    );
    println!(
        "| same lines, arrow-json's decoder (no dead letters, aliases or coercions) | {} |",
        rate(rows, t_arrow_json)
    );
    println!(
        "| decode Avro datums → Arrow, same table (`avro.schema`) | {} |",
        rate(rows, t_avro)
    );
    println!(
        "| the table's NOT NULL + 4 CHECK constraints | {} |",
        rate(rows, t_checks)
    );
    println!(
        "| event-time buffer (watermark, reorder) | {} |",
        rate(rows, t_buffer)
    );
    println!(
        "| OVER windows: 6 functions, 1 h / 24 h frames | {} |",
        rate(rows, t_over)
    );
    println!(
        "| same, the rows over 10 keys (~100k rows per 24 h frame) | {} |",
        rate(rows, t_over_hot)
    );
    println!("| TUMBLE 1 min: count, sum | {} |", rate(rows, t_tumble));
}

/// Each row of `b` (the default table's columns) as an Avro datum of `schema`.
fn avro_datums(b: &RecordBatch, schema: &apache_avro::Schema) -> Vec<Vec<u8>> {
    use apache_avro::types::Value;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
    let text = |c: usize, r: usize| {
        let a = b.column(c).as_string::<i32>();
        a.is_valid(r).then(|| a.value(r).to_string())
    };
    let f64_at = |c: usize, r: usize| {
        let a = b.column(c).as_primitive::<Float64Type>();
        a.is_valid(r).then(|| a.value(r))
    };
    let opt = |v: Option<Value>| match v {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    };
    (0..b.num_rows())
        .map(|r| {
            let ts = b
                .column(3)
                .as_primitive::<TimestampMicrosecondType>()
                .value(r);
            let fraud = b.column(10).as_boolean();
            let v = Value::Record(vec![
                (
                    "transaction_id".into(),
                    Value::String(text(0, r).unwrap_or_default()),
                ),
                (
                    "user_id".into(),
                    Value::String(text(1, r).unwrap_or_default()),
                ),
                (
                    "amount".into(),
                    Value::Double(f64_at(2, r).unwrap_or_default()),
                ),
                ("ts".into(), Value::TimestampMicros(ts)),
                ("merchant".into(), opt(text(4, r).map(Value::String))),
                ("category".into(), opt(text(5, r).map(Value::String))),
                ("location".into(), opt(text(6, r).map(Value::String))),
                ("channel".into(), opt(text(7, r).map(Value::String))),
                ("lat".into(), opt(f64_at(8, r).map(Value::Double))),
                ("lon".into(), opt(f64_at(9, r).map(Value::Double))),
                (
                    "is_fraud".into(),
                    opt(fraud.is_valid(r).then(|| Value::Boolean(fraud.value(r)))),
                ),
            ]);
            apache_avro::to_avro_datum(schema, v).expect("avro datum")
        })
        .collect()
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
