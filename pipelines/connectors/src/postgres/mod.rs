//! `postgres` sink: rows into a PostgreSQL table over binary `COPY`, one transaction per
//! checkpoint epoch. Exactly once (in a run with checkpoints, whose writer id names the
//! sink's record): each epoch's rows land in the same transaction as the
//! sink's row in the bookkeeping table [`EPOCHS`] (`sink`, `epoch`), and an epoch at or
//! below the recorded one is skipped, so a restart that commits a checkpoint's prepared
//! epoch again (its rows kept in the checkpoint) never writes it twice. Upsert mode (the default when the table has a primary key the pipeline writes) never
//! duplicates a row: each batch is first copied straight into the table, where the key
//! refuses duplicates; a batch that meets existing keys (a replay, a retried batch) is instead
//! copied into a session-local staging table and merged with one `INSERT … ON CONFLICT (key)
//! DO UPDATE` in the same transaction. Append mode (tables without a key, or whose key the
//! database generates) copies straight in. A failing database makes the sink wait and retry
//! the same batch with backoff (the runtime's bounded channels hold the pipeline back
//! meanwhile), logging why. Identifiers are always quoted, never spliced as text. [`admin`]
//! owns the schema the default pipeline writes (`txguard db init/stats/reset`).

pub mod admin;
pub mod copy;
pub mod options;
pub mod scratch;
#[cfg(test)]
mod tests;
pub mod tls;

use std::str::FromStr;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;
use futures::future::BoxFuture;
use tls::Tls;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};
use txguard_engine::connector::{Connector, ConnectorError, Prepared, Sink, SinkContext};
use txguard_engine::sql::{ConnectorSpec, Loc, Role, TableDef};

use copy::Encoder;
pub use options::{PostgresOptions, WriteMode};

/// The environment variable that gives the connection when a table names none.
pub const CONNECTION_ENV: &str = "TXGUARD_POSTGRES";
/// The connection used when neither the table nor the environment names one.
pub const DEFAULT_CONNECTION: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

/// `connector = 'postgres'`.
pub const SPEC: ConnectorSpec = ConnectorSpec {
    name: "postgres",
    roles: &[Role::Sink],
    options: options::OPTIONS,
    metadata: &[],
    decodes: false,
    check_table: Some(check_table),
};

fn check_table(t: &TableDef, _: Role) -> Result<(), (Loc, String)> {
    PostgresOptions::from_table(t)
        .map(drop)
        .map_err(|e| e.located())
}

/// The connector.
pub struct PostgresConnector;

impl Connector for PostgresConnector {
    fn spec(&self) -> ConnectorSpec {
        SPEC
    }

    fn open_sink<'a>(
        &'a self,
        table: &'a TableDef,
        ctx: SinkContext,
    ) -> BoxFuture<'a, Result<Box<dyn Sink>, ConnectorError>> {
        Box::pin(
            async move { Ok(Box::new(PostgresSink::open(table, ctx).await?) as Box<dyn Sink>) },
        )
    }

    /// The Postgres table with its server and database (never the password).
    fn location(&self, table: &TableDef) -> Option<String> {
        let opts = PostgresOptions::from_table(table).ok()?;
        let cfg = config(&opts.connection, None, "txguard").ok()?;
        Some(format!("{} in postgres {}", opts.table, describe(&cfg)))
    }
}

/// A Postgres identifier, double-quoted (inner quotes doubled).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table` or `table`, each part quoted.
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}

/// Why a Postgres connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The string itself is not echoed: it may hold a password.
    #[error("the connection string is not a postgres:// URL or libpq keywords: {0}")]
    Parse(String),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// `message` is the whole chain of causes (tokio-postgres' own text says only "error
    /// performing TLS handshake").
    #[error("cannot connect to Postgres at {target}: {message}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Connect {
        target: String,
        message: String,
        /// What to change, when the failure was the TLS handshake.
        hint: Option<String>,
    },
}

/// The connection string a table (or command) uses: its own, else `$TXGUARD_POSTGRES`, else
/// the local default.
pub fn connection_string(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var(CONNECTION_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_CONNECTION.to_string())
}

/// A connection, parsed: tokio-postgres' settings and the TLS they are opened with.
#[derive(Debug, Clone)]
pub struct PgConfig {
    pub pg: Config,
    pub tls: Tls,
}

/// Parses `conn` (TLS keywords as libpq reads them, see [`tls`]), fills the password from
/// `password_env` (default `PGPASSWORD`) when the string has none, and names the session
/// `application_name` unless it names itself.
pub fn config(
    conn: &str,
    password_env: Option<&str>,
    application_name: &str,
) -> Result<PgConfig, ConnectError> {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let (rest, tls) = tls::split(conn, |k| std::env::var(k).ok(), home.as_deref())?;
    let mut cfg = Config::from_str(&rest).map_err(|e| ConnectError::Parse(db_message(&e)))?;
    cfg.ssl_mode(tls.mode.negotiation());
    if cfg.get_password().is_none()
        && let Ok(p) = std::env::var(password_env.unwrap_or("PGPASSWORD"))
    {
        cfg.password(p);
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(application_name);
    }
    if cfg.get_connect_timeout().is_none() {
        cfg.connect_timeout(Duration::from_secs(10));
    }
    Ok(PgConfig { pg: cfg, tls })
}

/// Where a config points, for messages (never the password), with its TLS mode unless it
/// is libpq's default.
pub fn describe(cfg: &PgConfig) -> String {
    let pg = &cfg.pg;
    let host = pg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let db = pg
        .get_dbname()
        .or(pg.get_user())
        .unwrap_or("postgres")
        .to_string();
    match cfg.tls.mode {
        tls::SslMode::Prefer => format!("{host}:{port}/{db}"),
        m => format!("{host}:{port}/{db} (sslmode={})", m.as_str()),
    }
}

/// Opens a session; its connection runs on a tokio task that ends with the client.
pub async fn connect(cfg: &PgConfig) -> Result<Client, ConnectError> {
    open_session(cfg).await.map_err(|e| {
        let message = db_message(&e);
        let hint = message
            .starts_with("error performing TLS handshake")
            .then(|| tls::hint(cfg.tls.mode, &message))
            .flatten();
        ConnectError::Connect {
            target: describe(cfg),
            message,
            hint,
        }
    })
}

async fn open_session(cfg: &PgConfig) -> Result<Client, tokio_postgres::Error> {
    let client = match &cfg.tls.connector {
        None => {
            let (client, conn) = cfg.pg.connect(NoTls).await?;
            tokio::spawn(watch(conn));
            client
        }
        Some(tls) => {
            let (client, conn) = cfg.pg.connect(tls.clone()).await?;
            tokio::spawn(watch(conn));
            client
        }
    };
    Ok(client)
}

/// Drives a session's connection until it ends, saying why if it failed.
async fn watch<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(conn: F) {
    if let Err(e) = conn.await {
        tracing::warn!("Postgres session ended: {e}");
    }
}

/// Whether an error is the database being away or busy (retry) rather than a wrong
/// statement or value (stop).
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    let Some(code) = e.code() else {
        // No SQLSTATE: I/O, a closed connection, a timeout.
        return true;
    };
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::IDLE_SESSION_TIMEOUT,
        ]
        .contains(code)
}

/// Statements prepared on one session.
struct Session {
    client: Client,
    /// `COPY target FROM STDIN`.
    direct: tokio_postgres::Statement,
    /// Upsert mode: `COPY stage FROM STDIN` and the merge from the stage.
    staged: Option<(tokio_postgres::Statement, tokio_postgres::Statement)>,
    /// With a writer id: the sink's recorded epoch (locked), and the statement that records
    /// a new one.
    epochs: Option<(tokio_postgres::Statement, tokio_postgres::Statement)>,
}

/// After a batch meets rows already in the table, this many batches go through the staging
/// table before a direct COPY is tried again (a replay tends to continue).
const UPSERT_RUN: u32 = 16;

/// Writes one sink table's rows to one Postgres table.
pub struct PostgresSink {
    name: String,
    cfg: PgConfig,
    target: String,
    columns: Vec<String>,
    mode: WriteMode,
    encoder: Encoder,
    session: Option<Session>,
    /// Encoded rows since the last prepare, behind the COPY header.
    pending: BytesMut,
    pending_rows: usize,
    written: u64,
    /// Its name in [`EPOCHS`] (with a writer id only), and the last epoch recorded there.
    sink_id: Option<String>,
    last_epoch: Option<u64>,
    /// Batches left to merge through the staging table before trying a direct COPY again.
    upsert_run: u32,
}

/// Why setting a sink up failed: worth another session, or not.
enum Setup {
    Transient(tokio_postgres::Error),
    Fatal(ConnectorError),
}

/// The session-local staging table of upsert mode.
const STAGE: &str = "\"txguard_stage\"";

/// The bookkeeping table: the last epoch each sink committed (created when missing, in the
/// connection's default schema). A sink is named `<sink table> -> <target table> @ <writer>`,
/// the writer being the run's checkpoint folder's id, so that each member of a consumer group
/// (each with its own folder) keeps its own record.
pub const EPOCHS: &str = "txguard_sink_epochs";

impl PostgresSink {
    /// Connects, checks the table's columns against `schema` and settles the write mode.
    /// Fails with what to do when the database is unreachable, the table is missing or a
    /// column does not fit.
    pub async fn open(table: &TableDef, ctx: SinkContext) -> Result<Self, ConnectorError> {
        let opts = PostgresOptions::from_table(table)?;
        PostgresSink::open_with(&table.name, &opts, ctx).await
    }

    /// The same with options already read. With a writer id ([`SinkContext::writer`]) each
    /// epoch lands with its record in [`EPOCHS`], under the sink id
    /// `<sink table> -> <target> @ <writer>`; without, epochs are copied in with no record.
    pub async fn open_with(
        name: &str,
        opts: &PostgresOptions,
        ctx: SinkContext,
    ) -> Result<Self, ConnectorError> {
        let err = |m: String| ConnectorError::new(name, m);
        let cfg = config(
            &opts.connection,
            opts.password_env.as_deref(),
            &format!("txguard {name}"),
        )
        .map_err(|e| err(e.to_string()))?;
        // An unreachable server fails at once; a session lost while setting up (a restart,
        // a terminated backend) is retried a few times.
        let mut client = connect(&cfg).await.map_err(|e| {
            err(format!(
                "{e}. Is the server running? Set the table's connection option or ${CONNECTION_ENV}"
            ))
        })?;
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match PostgresSink::setup(name, opts, &ctx, cfg.clone(), client).await {
                Ok(sink) => return Ok(sink),
                Err(Setup::Fatal(e)) => return Err(e),
                Err(Setup::Transient(e)) if attempt < 8 => {
                    tracing::warn!(
                        table = %opts.table,
                        "Postgres session lost while setting up ({}); retrying in {delay:?}",
                        db_message(&e)
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    client = loop {
                        match open_session(&cfg).await {
                            Ok(c) => break c,
                            Err(e) if is_transient(&e) && delay < Duration::from_secs(30) => {
                                tokio::time::sleep(delay).await;
                                delay *= 2;
                            }
                            Err(e) => return Err(err(db_message(&e))),
                        }
                    };
                }
                Err(Setup::Transient(e)) => return Err(err(db_message(&e))),
            }
        }
    }

    /// Checks the table and prepares the session on `client`.
    async fn setup(
        name: &str,
        opts: &PostgresOptions,
        ctx: &SinkContext,
        cfg: PgConfig,
        client: Client,
    ) -> Result<Self, Setup> {
        let schema = &ctx.schema;
        let err = |m: String| Setup::Fatal(ConnectorError::new(name, m));
        let db = |e: tokio_postgres::Error, what: &str| {
            if is_transient(&e) {
                Setup::Transient(e)
            } else {
                Setup::Fatal(ConnectorError::new(
                    name,
                    format!("{what}: {}", db_message(&e)),
                ))
            }
        };
        let target = quote_table(&opts.table);
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let exists: Option<u32> = client
            .query_one("SELECT to_regclass($1)::oid", &[&target])
            .await
            .and_then(|r| r.try_get::<_, Option<u32>>(0))
            .map_err(|e| db(e, &format!("looking up table {}", opts.table)))?;
        let Some(oid) = exists else {
            return Err(err(format!(
                "table {} does not exist in {}: create it (`txguard db init` creates the \
                 default pipeline's tables) or set the table option",
                opts.table,
                describe(&cfg)
            )));
        };
        let probe = format!(
            "SELECT {} FROM {target} LIMIT 0",
            columns
                .iter()
                .map(|c| quote_ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let stmt = client
            .prepare(&probe)
            .await
            .map_err(|e| db(e, &format!("table {}", opts.table)))?;
        let types: Vec<_> = stmt.columns().iter().map(|c| c.type_().clone()).collect();
        let encoder =
            Encoder::new(schema, &types).map_err(|e| err(format!("table {}: {e}", opts.table)))?;
        let mode = match &opts.write_mode {
            Some(m) => m.clone(),
            None => {
                let key = primary_key(&client, oid)
                    .await
                    .map_err(|e| db(e, &format!("table {}", opts.table)))?;
                if key.is_empty() {
                    WriteMode::Append
                } else if key.iter().all(|k| columns.contains(k)) {
                    WriteMode::Upsert(key)
                } else {
                    // A key the database generates (an identity column): nothing to upsert on.
                    tracing::info!(
                        table = %opts.table,
                        "primary key ({}) is not written by the pipeline: appending",
                        key.join(", ")
                    );
                    WriteMode::Append
                }
            }
        };
        if let WriteMode::Upsert(key) = &mode {
            for k in key {
                if !columns.contains(k) {
                    return Err(err(format!(
                        "upsert key column {k} is not one of the sink's columns ({})",
                        columns.join(", ")
                    )));
                }
            }
        }
        tracing::info!(
            table = %opts.table,
            at = %describe(&cfg),
            mode = ?mode,
            "postgres sink ready"
        );
        let (sink_id, last_epoch) = match &ctx.writer {
            None => (None, None),
            Some(writer) => {
                let id = format!("{name} -> {} @ {writer}", opts.table);
                let last = PostgresSink::bookkeeping(&client, &id)
                    .await
                    .map_err(|(e, what)| db(e, &what))?;
                (Some(id), last)
            }
        };
        let mut pending = BytesMut::with_capacity(1 << 20);
        pending.put_slice(copy::HEADER);
        let mut sink = PostgresSink {
            name: name.to_string(),
            cfg,
            target,
            columns,
            mode,
            encoder,
            session: None,
            pending,
            pending_rows: 0,
            written: 0,
            sink_id,
            last_epoch,
            upsert_run: 0,
        };
        sink.session = Some(
            sink.prepare_session(client)
                .await
                .map_err(|e| db(e, "preparing statements"))?,
        );
        Ok(sink)
    }

    /// Creates [`EPOCHS`] when missing and reads the last epoch recorded for `sink_id`.
    async fn bookkeeping(
        client: &Client,
        sink_id: &str,
    ) -> Result<Option<u64>, (tokio_postgres::Error, String)> {
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {EPOCHS} (sink text PRIMARY KEY, epoch bigint NOT NULL, \
                 committed_at timestamptz NOT NULL DEFAULT now())"
            ))
            .await
            .map_err(|e| {
                (
                    e,
                    format!(
                        "creating the bookkeeping table {EPOCHS} (the sink records its last \
                         epoch there; grant CREATE on the schema or create it beforehand)"
                    ),
                )
            })?;
        let last = client
            .query_opt(
                &format!("SELECT epoch FROM {EPOCHS} WHERE sink = $1"),
                &[&sink_id],
            )
            .await
            .and_then(|r| r.map(|r| r.try_get::<_, i64>(0)).transpose())
            .map_err(|e| (e, format!("reading {EPOCHS}")))?;
        Ok(last.and_then(|e| u64::try_from(e).ok()))
    }

    /// Rows this sink has written (committed in Postgres).
    pub fn written(&self) -> u64 {
        self.written
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The merge statement of upsert mode; `distinct` keeps one row per key (a batch that
    /// holds the same key twice).
    fn merge_sql(&self, key: &[String], distinct: bool) -> String {
        let cols = self.column_list();
        let key_list = key
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(c)))
            .collect();
        let action = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let select = if distinct {
            format!("SELECT DISTINCT ON ({key_list}) {cols} FROM {STAGE}")
        } else {
            format!("SELECT {cols} FROM {STAGE}")
        };
        format!(
            "INSERT INTO {} ({cols}) {select} ON CONFLICT ({key_list}) {action}",
            self.target
        )
    }

    async fn prepare_session(&self, client: Client) -> Result<Session, tokio_postgres::Error> {
        let cols = self.column_list();
        let direct = client
            .prepare(&format!(
                "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
                self.target
            ))
            .await?;
        let staged = match &self.mode {
            WriteMode::Append => None,
            WriteMode::Upsert(key) => {
                client
                    .batch_execute(&format!(
                        "CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS \
                         SELECT {cols} FROM {} WITH NO DATA",
                        self.target
                    ))
                    .await?;
                let copy = client
                    .prepare(&format!("COPY {STAGE} ({cols}) FROM STDIN (FORMAT binary)"))
                    .await?;
                let merge = client.prepare(&self.merge_sql(key, false)).await?;
                Some((copy, merge))
            }
        };
        let epochs = match &self.sink_id {
            None => None,
            Some(_) => Some((
                client
                    .prepare(&format!(
                        "SELECT epoch FROM {EPOCHS} WHERE sink = $1 FOR UPDATE"
                    ))
                    .await?,
                client
                    .prepare(&format!(
                        "INSERT INTO {EPOCHS} (sink, epoch) VALUES ($1, $2) ON CONFLICT (sink) \
                         DO UPDATE SET epoch = EXCLUDED.epoch, committed_at = now()"
                    ))
                    .await?,
            )),
        };
        Ok(Session {
            client,
            direct,
            staged,
            epochs,
        })
    }

    /// One attempt at landing epoch `epoch`'s `data` (a whole COPY stream) in one
    /// transaction with its record in [`EPOCHS`]; `false`: the epoch was there already. In
    /// upsert mode the batch is first copied straight into the table (the fast path: the
    /// primary key still refuses duplicates); only when that meets an existing key is it
    /// copied into the staging table and merged with `ON CONFLICT`, for this and the next
    /// [`UPSERT_RUN`] epochs.
    async fn try_commit(
        &mut self,
        epoch: i64,
        data: &Bytes,
    ) -> Result<bool, tokio_postgres::Error> {
        if self.session.as_ref().is_none_or(|s| s.client.is_closed()) {
            if self.session.is_some() {
                tracing::warn!(
                    table = %self.name,
                    "the Postgres session at {} was closed while idle; opening a new one",
                    describe(&self.cfg)
                );
            }
            let client = open_session(&self.cfg).await?;
            self.session = Some(self.prepare_session(client).await?);
        }
        let Some(s) = self.session.as_ref() else {
            return Ok(false);
        };
        let tx = EpochTx {
            client: &s.client,
            record: s
                .epochs
                .as_ref()
                .zip(self.sink_id.as_deref())
                .map(|((check, record), sink)| (check, record, sink)),
            epoch,
        };
        let (Some((stage_copy, merge)), WriteMode::Upsert(key)) = (&s.staged, &self.mode) else {
            return tx.copy_in(&s.direct, data, None).await;
        };
        if self.upsert_run == 0 {
            match tx.copy_in(&s.direct, data, None).await {
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    tracing::debug!(table = %self.name, "rows already present: merging on the key");
                    self.upsert_run = UPSERT_RUN;
                }
                other => return other,
            }
        }
        self.upsert_run = self.upsert_run.saturating_sub(1);
        match tx.copy_in(stage_copy, data, Some(merge)).await {
            // The same key twice in one epoch: keep one row per key.
            Err(e) if e.code() == Some(&SqlState::CARDINALITY_VIOLATION) => {
                let distinct = s.client.prepare(&self.merge_sql(key, true)).await?;
                tx.copy_in(stage_copy, data, Some(&distinct)).await
            }
            other => other,
        }
    }

    /// Phase one: the epoch's rows as a finished COPY stream, for the checkpoint.
    fn prepare_epoch(&mut self) -> Prepared {
        if self.pending_rows == 0 {
            return Prepared::default();
        }
        self.pending.put_slice(copy::TRAILER);
        let data = self.pending.split().to_vec();
        let rows = std::mem::take(&mut self.pending_rows);
        self.pending.put_slice(copy::HEADER);
        Prepared {
            meta: serde_json::json!({ "rows": rows }),
            data,
        }
    }

    /// Phase two: the prepared rows land with the epoch's record, retrying with backoff
    /// while the database is away; an epoch already recorded is skipped.
    async fn commit_epoch(&mut self, epoch: u64, prepared: Prepared) -> Result<(), ConnectorError> {
        if prepared.data.is_empty() || self.last_epoch.is_some_and(|l| epoch <= l) {
            return Ok(());
        }
        let rows = prepared
            .meta
            .get("rows")
            .and_then(|r| r.as_u64())
            .unwrap_or(0);
        let data = Bytes::from(prepared.data);
        let as_i64 = i64::try_from(epoch).unwrap_or(i64::MAX);
        let mut delay = Duration::from_millis(100);
        let mut failures = 0u32;
        let written = loop {
            match self.try_commit(as_i64, &data).await {
                Ok(w) => break w,
                Err(e) if is_transient(&e) => {
                    failures += 1;
                    self.session = None;
                    tracing::warn!(
                        table = %self.name,
                        rows,
                        epoch,
                        attempt = failures,
                        "Postgres at {} is unavailable ({}); retrying in {:?}",
                        describe(&self.cfg),
                        db_message(&e),
                        delay
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    return Err(ConnectorError::new(
                        &self.name,
                        format!(
                            "writing epoch {epoch} ({rows} rows) to {}: {}",
                            self.target,
                            db_message(&e)
                        ),
                    ));
                }
            }
        };
        if failures > 0 {
            tracing::info!(table = %self.name, rows, epoch, "Postgres is back; epoch written after {failures} failed attempts");
        }
        if written {
            self.written += rows;
        } else {
            tracing::debug!(table = %self.name, epoch, "epoch already recorded; skipped");
        }
        self.last_epoch = Some(epoch);
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<(), ConnectorError> {
        self.encoder
            .encode(&batch, &mut self.pending)
            .map_err(|e| ConnectorError::new(&self.name, e))?;
        self.pending_rows += batch.num_rows();
        Ok(())
    }
}

/// One epoch's transaction on one session.
struct EpochTx<'a> {
    client: &'a Client,
    /// With a writer id: the check and record statements and the sink id.
    record: Option<(
        &'a tokio_postgres::Statement,
        &'a tokio_postgres::Statement,
        &'a str,
    )>,
    epoch: i64,
}

impl EpochTx<'_> {
    /// One transaction: skip if the epoch is recorded, else `COPY` `data` with `copy`, run
    /// `then` (the merge), record the epoch, commit. `false`: skipped.
    async fn copy_in(
        &self,
        copy: &tokio_postgres::Statement,
        data: &Bytes,
        then: Option<&tokio_postgres::Statement>,
    ) -> Result<bool, tokio_postgres::Error> {
        let client = self.client;
        client.batch_execute("BEGIN").await?;
        let result = async {
            if let Some((check, _, sink)) = self.record {
                let done: Option<i64> = client
                    .query_opt(check, &[&sink])
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if done.is_some_and(|d| d >= self.epoch) {
                    client.batch_execute("ROLLBACK").await?;
                    return Ok(false);
                }
            }
            let sink = client.copy_in::<_, Bytes>(copy).await?;
            futures::pin_mut!(sink);
            sink.send(data.clone()).await?;
            sink.finish().await?;
            if let Some(stmt) = then {
                client.execute(stmt, &[]).await?;
            }
            if let Some((_, record, sink)) = self.record {
                client.execute(record, &[&sink, &self.epoch]).await?;
            }
            client.batch_execute("COMMIT").await?;
            Ok(true)
        }
        .await;
        if result.is_err() && !client.is_closed() {
            // Leave the session clean for the next attempt.
            let _ = client.batch_execute("ROLLBACK").await;
        }
        result
    }
}

/// The server's message with its detail and hint, or the client error.
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = db.message().to_string();
            if let Some(d) = db.detail() {
                m.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                m.push_str(&format!("; hint: {h}"));
            }
            m
        }
        None => {
            // The causes, each once (TLS errors repeat their cause in their own text).
            let mut m = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(s) = src {
                let text = s.to_string();
                if !m.contains(&text) {
                    m.push_str(&format!(": {text}"));
                }
                src = s.source();
            }
            m
        }
    }
}

/// The primary-key columns of table `oid`, in key order.
async fn primary_key(client: &Client, oid: u32) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::oid AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&oid],
        )
        .await?;
    rows.iter().map(|r| r.try_get::<_, String>(0)).collect()
}

impl Sink for PostgresSink {
    fn write(&mut self, batch: RecordBatch) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.write_batch(batch))
    }

    fn prepare(&mut self, _epoch: u64) -> BoxFuture<'_, Result<Prepared, ConnectorError>> {
        let prepared = self.prepare_epoch();
        Box::pin(async move { Ok(prepared) })
    }

    fn commit(
        &mut self,
        epoch: u64,
        prepared: Prepared,
    ) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(self.commit_epoch(epoch, prepared))
    }

    fn last_epoch(&self) -> Option<u64> {
        self.last_epoch
    }

    fn exactly_once(&self) -> bool {
        self.sink_id.is_some()
    }
}
