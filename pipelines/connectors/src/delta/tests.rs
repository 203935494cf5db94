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
/// Data files in the table's current version (committed), as a reader sees them.
async fn committed_files(loc: &str) -> usize {
    let url = deltalake::ensure_table_uri(loc).expect("uri");
    let mut t = deltalake::DeltaTable::try_from_url(url)
        .await
        .expect("table");
    t.load().await.expect("load");
    t.get_file_uris().expect("files").count()
}

/// The sink of table `name` at `loc`, writer `test`, local (no storage options).
async fn open_sink(name: &str, loc: &str) -> Result<DeltaSink, ConnectorError> {
    DeltaSink::open_at(
        name,
        loc,
        SinkContext::new(schema()).with_writer("test"),
        Vec::new(),
    )
    .await
}

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
    let mut s = open_sink("scored", &loc).await.expect("open");
    assert_eq!(s.last_epoch(), None);
    s.write(batch(&["a", "b"])).await.expect("write");
    s.write(batch(&["c"])).await.expect("write");
    s.commit_now(1).await.expect("commit 1");
    s.commit_now(2)
        .await
        .expect("empty epoch: nothing to commit");
    s.write(batch(&["d"])).await.expect("write");
    s.commit_now(3).await.expect("commit 3");
    assert_eq!(parquet_rows(&path), 4);
    let log: Vec<_> = std::fs::read_dir(path.join("_delta_log"))
        .expect("log")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(log.len(), 3, "create + two commits");

    // A new run sees the last epoch and does not commit an old one again.
    let mut again = open_sink("scored", &loc).await.expect("reopen");
    assert_eq!(again.last_epoch(), Some(3));
    again.write(batch(&["e"])).await.expect("write");
    again.commit_now(3).await.expect("skipped");
    assert_eq!(
        parquet_rows(&path) - 4,
        1,
        "the file is written but never committed"
    );
    again.write(batch(&["f"])).await.expect("write");
    again.commit_now(4).await.expect("commit 4");
    assert_eq!(again.last_epoch(), Some(4));
}

#[tokio::test]
async fn a_prepared_epoch_is_committed_after_a_restart_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scored");
    let loc = path.to_string_lossy().to_string();
    let mut s = open_sink("scored", &loc).await.expect("open");
    s.write(batch(&["a", "b"])).await.expect("write");
    let p1 = s.prepare(1).await.expect("prepare");
    assert!(!p1.meta.is_null(), "the add actions, for the checkpoint");
    assert_eq!(parquet_rows(&path), 2, "the data file is written");
    // Killed before the commit: nothing is visible, and the table has no epoch.
    drop(s);
    let mut again = open_sink("scored", &loc).await.expect("reopen");
    assert_eq!(again.last_epoch(), None);
    // The restart commits what the checkpoint kept, then the next epoch; a second commit
    // of the same epoch (another restart) does nothing.
    again.commit(1, p1.clone()).await.expect("commit 1");
    again.commit(1, p1).await.expect("again: skipped");
    again.write(batch(&["c"])).await.expect("write");
    again.commit_now(2).await.expect("commit 2");
    assert_eq!(committed_files(&loc).await, 2, "two files, each once");
    assert_eq!(again.last_epoch(), Some(2));
}

#[tokio::test]
async fn two_writers_of_one_table_each_keep_their_own_epochs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scored");
    let loc = path.to_string_lossy().to_string();
    let open = |writer: Option<&str>| {
        let mut ctx = SinkContext::new(schema());
        ctx.writer = writer.map(str::to_string);
        DeltaSink::open_at("scored", &loc, ctx, Vec::new())
    };
    let mut a = open(Some("a")).await.expect("open a");
    let mut b = open(Some("b")).await.expect("open b");
    for epoch in 1..=2 {
        a.write(batch(&["a"])).await.expect("write");
        a.commit_now(epoch).await.expect("commit a");
        // b sees a's commits before its own (as a member would, reopening)
        b.table.update_state().await.expect("update");
        b.write(batch(&["b", "b"])).await.expect("write");
        b.commit_now(epoch).await.expect("commit b");
        a.table.update_state().await.expect("update");
    }
    let reopened = open(Some("b")).await.expect("reopen b");
    assert_eq!(reopened.last_epoch(), Some(2));
    let mut plain = open(None).await.expect("open without a writer");
    assert_eq!((plain.last_epoch(), plain.exactly_once()), (None, false));
    plain.write(batch(&["c"])).await.expect("write");
    plain.commit_now(1).await.expect("commit");
    assert_eq!(
        committed_files(&loc).await,
        5,
        "every epoch of both writers, and the one without"
    );
}

#[tokio::test]
async fn refuses_a_table_with_other_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let loc = dir.path().join("t").to_string_lossy().to_string();
    open_sink("t", &loc).await.expect("create");
    let other = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let e = DeltaSink::open_at(
        "t",
        &loc,
        SinkContext::new(other).with_writer("test"),
        Vec::new(),
    )
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

/// An object store server for a test, on a free port, with a bucket (container) `lake`;
/// stopped when dropped: moto's standalone S3 server (Python) or Azurite's blob service
/// (npm), both installed by scripts/setup.sh.
struct StoreServer {
    child: std::process::Child,
    /// Azurite's data directory (removed when dropped).
    dir: Option<tempfile::TempDir>,
    options: Vec<(String, String)>,
    /// [`python_bin`].
    py: String,
}

/// Azurite's well-known development account key (public, in Azure's documentation).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The Python with moto, azure-storage-blob and delta-rs (`TXGUARD_PYTHON`, default
/// `python3`).
fn python_bin() -> String {
    std::env::var("TXGUARD_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl StoreServer {
    fn spawn(program: &str, args: &[&str], port: u16, what: &str) -> StoreServer {
        let child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} ({program}: {e}; run scripts/setup.sh)"));
        let server = StoreServer {
            child,
            dir: None,
            options: Vec::new(),
            py: python_bin(),
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        server
    }

    fn s3() -> StoreServer {
        let port = free_port();
        let mut server = StoreServer::spawn(
            &python_bin(),
            &[
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ],
            port,
            "python3 -m moto.server",
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        server.python(&format!(
            "import boto3; boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='test', \
             aws_secret_access_key='test', region_name='us-east-1').create_bucket(Bucket='lake')"
        ));
        server.options = [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_CONDITIONAL_PUT", "etag"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        server
    }

    fn azure() -> StoreServer {
        let bin = std::env::var("TXGUARD_AZURITE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/txguard/azurite/node_modules/.bin/azurite-blob",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = StoreServer::spawn(
            &bin,
            &[
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port.to_string(),
                "--location",
                &dir.path().to_string_lossy(),
                "--silent",
                "--skipApiVersionCheck",
            ],
            port,
            "Azurite's blob service",
        );
        server.dir = Some(dir);
        let endpoint = format!("http://127.0.0.1:{port}/devstoreaccount1");
        server.python(&format!(
            "from azure.storage.blob import BlobServiceClient\n\
             BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
             AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};')\
             .create_container('lake')"
        ));
        server.options = [
            ("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1"),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY),
            ("AZURE_STORAGE_ENDPOINT", endpoint.as_str()),
            ("AZURE_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        server
    }

    /// The storage options of a table in the server's bucket.
    fn options(&self) -> Vec<(String, String)> {
        self.options.clone()
    }

    /// Runs Python code and returns what it printed.
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

    /// A table at `loc` on this store: created under an empty prefix, appended by a sink,
    /// reopened by a second sink that learns the first's epoch from the log and (with
    /// `second_epoch`) appends again, then read back by delta-rs's Python package.
    async fn round_trip(&self, loc: &str, second_epoch: bool) {
        let mut s = DeltaSink::open_at(
            "scored",
            loc,
            SinkContext::new(schema()).with_writer("test"),
            self.options(),
        )
        .await
        .expect("open on the store");
        assert_eq!(s.last_epoch(), None);
        s.write(batch(&["a", "b", "c"])).await.expect("write");
        s.commit_now(1).await.expect("commit 1");
        drop(s);

        let mut again = DeltaSink::open_at(
            "scored",
            loc,
            SinkContext::new(schema()).with_writer("test"),
            self.options(),
        )
        .await
        .expect("reopen on the store");
        assert_eq!(again.last_epoch(), Some(1));
        if second_epoch {
            again.write(batch(&["d", "e"])).await.expect("write");
            again.commit_now(2).await.expect("commit 2");
        }

        let opts: Vec<String> = self
            .options()
            .iter()
            .map(|(k, v)| format!("'{k}': '{v}'"))
            .collect();
        let read = self.python(&format!(
            "from deltalake import DeltaTable, QueryBuilder\n\
             dt = DeltaTable('{loc}', storage_options={{{}}})\n\
             t = QueryBuilder().register('t', dt).execute(\
             'SELECT COUNT(*), COUNT(DISTINCT transaction_id) FROM t').read_all()\n\
             print(dt.version(), t.column(0)[0].as_py(), t.column(1)[0].as_py())",
            opts.join(", ")
        ));
        // Version 0 creates the table; epochs 1 and 2 are versions 1 and 2.
        assert_eq!(read, if second_epoch { "2 5 5" } else { "1 3 3" });
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A table on an S3-compatible store (moto).
#[tokio::test]
async fn writes_a_table_to_an_s3_compatible_store() {
    StoreServer::s3()
        .round_trip("s3://lake/tables/scored", true)
        .await;
}

/// A table on Azure Blob Storage (Azurite, the Azure SDK's emulator), through an `az://`
/// URL and an account endpoint in `storage_options`. One epoch only: Azurite ignores the
/// `startFrom` parameter of a blob listing, which delta-rs uses to find versions after the
/// one it holds, so a second commit there fails with "Invalid table version: 1" (delta-rs's
/// own Python writer does the same against Azurite; Azure itself supports the parameter).
#[tokio::test]
async fn writes_a_table_to_azure_blob_storage() {
    StoreServer::azure()
        .round_trip("az://lake/tables/scored", false)
        .await;
}
