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
    let mut s = DeltaSink::open_at("scored", &loc, schema(), Vec::new())
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
    let mut again = DeltaSink::open_at("scored", &loc, schema(), Vec::new())
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
    DeltaSink::open_at("t", &loc, schema(), Vec::new())
        .await
        .expect("create");
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let e = DeltaSink::open_at("t", &loc, other, Vec::new())
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

/// An S3-compatible server for the test: moto's standalone server (installed by
/// scripts/setup.sh), on a free port, with a bucket `lake`. Stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
    /// The Python with moto and delta-rs (`TXGUARD_PYTHON`, default `python3`).
    py: String,
}

impl S3Server {
    fn start() -> S3Server {
        let py = std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new(&py)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m moto.server (run scripts/setup.sh)");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            py,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server.python(&format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='lake')",
            server.endpoint
        ));
        server
    }

    /// The storage options of a table in the server's bucket.
    fn options(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_CONDITIONAL_PUT", "etag"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Runs Python code (with moto's boto3 and delta-rs at hand) and returns what it printed.
    fn python(&self, code: &str) -> String {
        let out = std::process::Command::new(&self.py)
            .args(["-c", code])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A table on an S3-compatible store: created under an empty prefix, appended in two epochs
/// by two sink instances (the second learns the first's epoch from the log), and read back
/// by delta-rs's Python package from the same bucket.
#[tokio::test]
async fn writes_a_table_to_an_s3_compatible_store() {
    let s3 = S3Server::start();
    let loc = "s3://lake/tables/scored";
    let mut s = DeltaSink::open_at("scored", loc, schema(), s3.options())
        .await
        .expect("open on s3");
    assert_eq!(s.last_epoch(), None);
    s.write(batch(&["a", "b", "c"])).await.expect("write");
    s.commit(1).await.expect("commit 1");
    drop(s);

    let mut again = DeltaSink::open_at("scored", loc, schema(), s3.options())
        .await
        .expect("reopen on s3");
    assert_eq!(again.last_epoch(), Some(1));
    again.write(batch(&["d", "e"])).await.expect("write");
    again.commit(2).await.expect("commit 2");

    let opts: Vec<String> = s3
        .options()
        .iter()
        .map(|(k, v)| format!("'{k}': '{v}'"))
        .collect();
    let read = s3.python(&format!(
        "from deltalake import DeltaTable, QueryBuilder\n\
         dt = DeltaTable('{loc}', storage_options={{{}}})\n\
         t = QueryBuilder().register('t', dt).execute(\
         'SELECT COUNT(*), COUNT(DISTINCT transaction_id) FROM t').read_all()\n\
         print(dt.version(), t.column(0)[0].as_py(), t.column(1)[0].as_py())",
        opts.join(", ")
    ));
    // Version 0 creates the table; epochs 1 and 2 are versions 1 and 2.
    assert_eq!(read, "2 5 5");
}
