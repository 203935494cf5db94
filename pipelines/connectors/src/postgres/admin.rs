//! The default pipeline's Postgres schema (`sql/postgres/schema.sql` and `views.sql`, built
//! into the binary) and what `txguard db` does with it: create it idempotently, report on
//! it, and drop and recreate it.

use tokio_postgres::Client;

use super::{db_message, quote_ident};

/// The tables, keys and indexes.
pub const SCHEMA_SQL: &str = include_str!("../../../../sql/postgres/schema.sql");
/// The dashboard views.
pub const VIEWS_SQL: &str = include_str!("../../../../sql/postgres/views.sql");

/// The tables the default pipeline writes, and the champion / challenger example's.
pub const TABLES: [&str; 5] = [
    "transactions_scored",
    "anomalies",
    "dead_letters",
    "user_window_stats",
    "shadow_scores",
];

/// The views `views.sql` creates.
pub const VIEWS: [&str; 9] = [
    "anomalies_per_minute",
    "top_risky_users",
    "amount_by_location_category",
    "score_histogram",
    "model_quality",
    "dead_letters_by_reason",
    "ingest_per_minute",
    "champion_challenger",
    "recall_by_pattern",
];

/// A `txguard db` step failed.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct AdminError {
    pub what: String,
    pub message: String,
}

fn fail(what: &str) -> impl Fn(tokio_postgres::Error) -> AdminError + '_ {
    move |e| AdminError {
        what: what.to_string(),
        message: db_message(&e),
    }
}

/// Arbitrary key for the advisory lock that serialises concurrent `init`s.
const INIT_LOCK: i64 = 0x0074_7867_7561_7264;

/// Creates the tables, indexes and views that are missing and replaces the views, in one
/// transaction (concurrent runs wait for each other).
pub async fn init(client: &mut Client) -> Result<(), AdminError> {
    rebuild(client, false).await
}

/// Drops the views and tables (all their rows), then creates them afresh.
pub async fn reset(client: &mut Client) -> Result<(), AdminError> {
    rebuild(client, true).await
}

/// Under the `txguard db` lock: optionally drop everything, then run the schema and views.
async fn rebuild(client: &mut Client, drop_first: bool) -> Result<(), AdminError> {
    let tx = client
        .transaction()
        .await
        .map_err(fail("starting a transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK])
        .await
        .map_err(fail("waiting for another `txguard db` command"))?;
    if drop_first {
        let views: Vec<String> = VIEWS.iter().map(|v| quote_ident(v)).collect();
        let tables: Vec<String> = TABLES.iter().map(|t| quote_ident(t)).collect();
        tx.batch_execute(&format!(
            "DROP VIEW IF EXISTS {}; DROP TABLE IF EXISTS {}, {} CASCADE;",
            views.join(", "),
            tables.join(", "),
            // The sinks' epochs go too: a new table starts from epoch 1.
            super::EPOCHS
        ))
        .await
        .map_err(fail("dropping the tables"))?;
    }
    tx.batch_execute(SCHEMA_SQL)
        .await
        .map_err(fail("creating tables (sql/postgres/schema.sql)"))?;
    tx.batch_execute(VIEWS_SQL)
        .await
        .map_err(fail("creating views (sql/postgres/views.sql)"))?;
    tx.commit().await.map_err(fail("committing the schema"))
}

/// One table's size and freshness.
#[derive(Debug, Clone, PartialEq)]
pub struct TableStats {
    pub table: String,
    /// `None`: the table does not exist (run `txguard db init`).
    pub rows: Option<i64>,
    /// Seconds since the last row was written.
    pub last_write_age_s: Option<f64>,
}

/// What `txguard db stats` reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub database: String,
    pub tables: Vec<TableStats>,
    /// Anomalies / scored transactions.
    pub anomaly_rate: Option<f64>,
    /// Rows written to `transactions_scored` in the last minute.
    pub rows_last_minute: Option<i64>,
    /// Mean seconds from event time to being written, over the last minute's rows: the
    /// pipeline's end-to-end lag on a live stream (synthetic event times make it large).
    pub event_lag_s: Option<f64>,
    /// Precision and recall against the `is_fraud` label, where rows carry one.
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// Row counts, anomaly rate, freshness and lag of the default pipeline's tables.
pub async fn stats(client: &Client) -> Result<Stats, AdminError> {
    let database: String = client
        .query_one("SELECT current_database()::text", &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(fail("reading the database name"))?;
    let mut tables = Vec::new();
    for t in TABLES {
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quote_ident(t)])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(fail("looking up tables"))?;
        if !exists {
            tables.push(TableStats {
                table: t.to_string(),
                rows: None,
                last_write_age_s: None,
            });
            continue;
        }
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), extract(epoch FROM now() - max(inserted_at))::float8 FROM {}",
                    quote_ident(t)
                ),
                &[],
            )
            .await
            .map_err(fail(t))?;
        tables.push(TableStats {
            table: t.to_string(),
            rows: Some(row.try_get(0).map_err(fail(t))?),
            last_write_age_s: row.try_get(1).map_err(fail(t))?,
        });
    }
    let scored_exists = tables
        .first()
        .is_some_and(|t| t.table == "transactions_scored" && t.rows.is_some());
    let (mut anomaly_rate, mut rows_last_minute, mut event_lag_s, mut precision, mut recall) =
        (None, None, None, None, None);
    if scored_exists {
        let r = client
            .query_one(
                "SELECT (count(*) FILTER (WHERE is_anomaly))::float8 / nullif(count(*), 0),
                        (count(*) FILTER (WHERE is_anomaly AND is_fraud))::float8
                            / nullif(count(*) FILTER (WHERE is_anomaly), 0),
                        (count(*) FILTER (WHERE is_anomaly AND is_fraud))::float8
                            / nullif(count(*) FILTER (WHERE is_fraud), 0)
                 FROM transactions_scored",
                &[],
            )
            .await
            .map_err(fail("transactions_scored"))?;
        anomaly_rate = r.try_get(0).map_err(fail("anomaly rate"))?;
        precision = r.try_get(1).map_err(fail("precision"))?;
        recall = r.try_get(2).map_err(fail("recall"))?;
        let r = client
            .query_one(
                "SELECT count(*), avg(extract(epoch FROM inserted_at - ts))::float8
                 FROM transactions_scored WHERE inserted_at > now() - interval '1 minute'",
                &[],
            )
            .await
            .map_err(fail("transactions_scored"))?;
        rows_last_minute = Some(r.try_get(0).map_err(fail("recent rows"))?);
        event_lag_s = r.try_get(1).map_err(fail("lag"))?;
    }
    Ok(Stats {
        database,
        tables,
        anomaly_rate,
        rows_last_minute,
        event_lag_s,
        precision,
        recall,
    })
}
