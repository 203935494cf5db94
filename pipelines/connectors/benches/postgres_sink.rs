//! Throughput of the postgres sink on rows shaped like the default pipeline's
//! `transactions_scored` (26 columns): Arrow → binary COPY encoding alone (one thread), then
//! the sink into a scratch database on a real server, in upsert mode on the default schema
//! (fresh keys, then the same keys again) and in append mode.
//!
//!     cargo bench -p txguard-connectors --bench postgres_sink [-- --rows N]
//!
//! The server is `$TXGUARD_TEST_POSTGRES` (default host=127.0.0.1 user=postgres
//! dbname=postgres); the bench creates and drops its own database there.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::BytesMut;
use tokio_postgres::types::Type;
use txguard_connectors::postgres::copy::Encoder;
use txguard_connectors::postgres::scratch::ScratchDb;
use txguard_connectors::postgres::{
    DEFAULT_CONNECTION, PostgresOptions, PostgresSink, WriteMode, admin, config, connect,
};
use txguard_engine::connector::{Sink, SinkContext};

const BATCH: usize = 8192;

const F64_FEATURES: [&str; 11] = [
    "log_amount",
    "amount_mean_24h",
    "amount_std_24h",
    "amount_zscore",
    "amount_to_mean",
    "seconds_since_prev",
    "km_from_prev",
    "speed_kmh",
    "hour_of_day",
    "risky_category",
    "small_amounts_1h",
];

fn schema() -> SchemaRef {
    let s = |n: &str| Field::new(n, DataType::Utf8, true);
    let f = |n: &str| Field::new(n, DataType::Float64, true);
    let i = |n: &str| Field::new(n, DataType::Int64, true);
    let mut fields = vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("amount", DataType::Float64, false),
        s("merchant"),
        s("category"),
        s("location"),
        s("channel"),
        Field::new("is_fraud", DataType::Boolean, true),
        f("log_amount"),
        i("tx_count_10m"),
        i("tx_count_1h"),
        i("tx_count_24h"),
    ];
    fields.extend(F64_FEATURES[1..].iter().map(|n| f(n)));
    fields.extend([
        f("score"),
        Field::new("is_anomaly", DataType::Boolean, true),
        s("model_version"),
    ]);
    Arc::new(Schema::new(fields))
}

/// Rows `from..from+n`, keyed `tx-<i>`.
fn batch(schema: &SchemaRef, from: usize, n: usize) -> RecordBatch {
    let idx = from..from + n;
    let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from(idx.clone().map(f).collect::<Vec<_>>()))
    };
    let num = |k: f64| -> ArrayRef {
        Arc::new(Float64Array::from(
            idx.clone()
                .map(|i| (i as f64 * k).sin().abs() * 100.0)
                .collect::<Vec<_>>(),
        ))
    };
    let int = |m: i64| -> ArrayRef {
        Arc::new(Int64Array::from(
            idx.clone().map(|i| i as i64 % m + 1).collect::<Vec<_>>(),
        ))
    };
    let boolean = |m: usize| -> ArrayRef {
        Arc::new(BooleanArray::from(
            idx.clone().map(|i| i % m == 0).collect::<Vec<_>>(),
        ))
    };
    let mut cols: Vec<ArrayRef> = vec![
        text(&|i| format!("tx-{i:09}")),
        text(&|i| format!("user-{:06}", i % 10_000)),
        Arc::new(
            TimestampMicrosecondArray::from(
                idx.clone()
                    .map(|i| 1_760_000_000_000_000 + i as i64 * 10_000)
                    .collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        num(0.37),
        text(&|i| format!("merchant-{}", i % 500)),
        text(&|i| ["food", "travel", "electronics", "fuel"][i % 4].to_string()),
        text(&|i| format!("city-{}", i % 50)),
        text(&|i| ["web", "pos", "app"][i % 3].to_string()),
        boolean(500),
        num(0.11),
        int(5),
        int(20),
        int(200),
    ];
    for k in 1..F64_FEATURES.len() {
        cols.push(num(0.05 * k as f64));
    }
    cols.extend([
        num(0.013),
        boolean(100),
        text(&|_| "default@0123abcd".to_string()),
    ]);
    RecordBatch::try_new(schema.clone(), cols).expect("batch")
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0} k rows/s", n as f64 / d.as_secs_f64() / 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rows = args
        .iter()
        .position(|a| a == "--rows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000usize);
    let schema = schema();
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(BATCH)
        .map(|from| batch(&schema, from, BATCH.min(rows - from)))
        .collect();

    // Encoding only.
    let mut types = vec![Type::TEXT, Type::TEXT, Type::TIMESTAMPTZ, Type::FLOAT8];
    types.extend([Type::TEXT; 4]);
    types.push(Type::BOOL);
    types.push(Type::FLOAT8);
    types.extend([Type::INT8; 3]);
    types.extend(vec![Type::FLOAT8; F64_FEATURES.len() - 1]);
    types.extend([Type::FLOAT8, Type::BOOL, Type::TEXT]);
    let enc = Encoder::new(&schema, &types).expect("encoder");
    let mut best = Duration::MAX;
    let mut bytes = 0;
    for _ in 0..5 {
        let mut out = BytesMut::new();
        let t = Instant::now();
        for b in &batches {
            enc.encode(b, &mut out).expect("encode");
            if out.len() > 1 << 24 {
                bytes += out.len();
                out.clear();
            }
        }
        best = best.min(t.elapsed());
        bytes += out.len();
    }
    println!(
        "encode to binary COPY: {} ({:.0} MB/s, {} bytes/row)",
        rate(rows, best),
        bytes as f64 / 5.0 / best.as_secs_f64() / 1e6,
        bytes / 5 / rows
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server =
        std::env::var("TXGUARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_CONNECTION.to_string());
    rt.block_on(async {
        let db = ScratchDb::create(&server).await.expect("scratch database");
        let cfg = config(&db.connection(), None, "bench").expect("config");
        let mut c = connect(&cfg).await.expect("connect");
        admin::init(&mut c).await.expect("schema");
        c.batch_execute("CREATE TABLE appended (LIKE transactions_scored INCLUDING DEFAULTS)")
            .await
            .expect("append table");
        let opts = |table: &str, mode: Option<WriteMode>| PostgresOptions {
            connection: db.connection(),
            password_env: None,
            table: table.into(),
            write_mode: mode,
        };
        // Epochs only grow per sink: one count across the runs.
        let mut epoch = 0u64;
        for (label, table, mode) in [
            ("upsert, new keys", "transactions_scored", None),
            ("upsert, the same keys again", "transactions_scored", None),
            (
                "append (no key, no index)",
                "appended",
                Some(WriteMode::Append),
            ),
        ] {
            let mut sink = PostgresSink::open_with(
                "bench",
                &opts(table, mode),
                SinkContext::new(schema.clone()).with_writer("bench"),
            )
            .await
            .expect("sink");
            let t = Instant::now();
            for (i, b) in batches.iter().enumerate() {
                sink.write(b.clone()).await.expect("write");
                if i % 64 == 63 {
                    epoch += 1;
                    sink.commit_now(epoch).await.expect("commit");
                }
            }
            epoch += 1;
            sink.commit_now(epoch).await.expect("commit");
            println!("sink, {label}: {}", rate(rows, t.elapsed()));
        }
        drop(c);
        db.drop_db().await.expect("drop");
    });
}
