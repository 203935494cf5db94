use std::sync::Arc;

use arrow::array::{Float64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("transaction_id", DataType::Utf8, false),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]))
}

fn batch(ids: &[&str]) -> RecordBatch {
    let n = ids.len();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(Float64Array::from(vec![Some(0.5); n])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![1_767_225_600_000_000; n])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .expect("batch")
}

/// Rows in the table's Parquet files (read with the parquet crate, not deltalake).
fn parquet_rows(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .map(|e| {
            let f = std::fs::File::open(e.path()).expect("open");
            ParquetRecordBatchReaderBuilder::try_new(f)
                .expect("parquet")
                .metadata()
                .file_metadata()
                .num_rows() as usize
        })
        .sum()
}

#[tokio::test]
async fn creates_appends_and_remembers_its_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scored");
    let loc = path.to_string_lossy().to_string();
    let mut s = DeltaSink::open_at("scored", &loc, schema())
        .await
        .expect("open");
    assert_eq!(s.last_epoch(), None);
    s.write(batch(&["a", "b"])).await.expect("write");
    s.write(batch(&["c"])).await.expect("write");
    s.commit(1).await.expect("commit 1");
    s.commit(2).await.expect("empty epoch: nothing to commit");
    s.write(batch(&["d"])).await.expect("write");
    s.commit(3).await.expect("commit 3");
    assert_eq!(parquet_rows(&path), 4);
    let log: Vec<_> = std::fs::read_dir(path.join("_delta_log"))
        .expect("log")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(log.len(), 3, "create + two commits");

    // A new run sees the last epoch and does not commit an old one again.
    let mut again = DeltaSink::open_at("scored", &loc, schema())
        .await
        .expect("reopen");
    assert_eq!(again.last_epoch(), Some(3));
    again.write(batch(&["e"])).await.expect("write");
    again.commit(3).await.expect("skipped");
    assert_eq!(
        parquet_rows(&path) - 4,
        1,
        "the file is written but never committed"
    );
    again.write(batch(&["f"])).await.expect("write");
    again.commit(4).await.expect("commit 4");
    assert_eq!(again.last_epoch(), Some(4));
}

#[tokio::test]
async fn refuses_a_table_with_other_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = dir.path().join("t").to_string_lossy().to_string();
    DeltaSink::open_at("t", &loc, schema())
        .await
        .expect("create");
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let e = DeltaSink::open_at("t", &loc, other)
        .await
        .err()
        .expect("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("existing table has columns (transaction_id Utf8"),
        "{msg}"
    );
    assert!(msg.contains("pipeline writes (x Int64)"), "{msg}");
}
