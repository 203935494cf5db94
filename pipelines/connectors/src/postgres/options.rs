//! The `postgres` connector's `WITH (...)` options, declared once and read back into
//! [`PostgresOptions`].

use txguard_engine::sql::{OptionError, OptionKind, OptionSpec, TableDef};

use super::connection_string;

pub const CONNECTION: OptionSpec = OptionSpec::optional(
    "connection",
    OptionKind::Text,
    "a postgres:// URL or libpq keywords (host=… dbname=…); default: $TXGUARD_POSTGRES, else \
     host=127.0.0.1 user=postgres dbname=postgres",
);
pub const PASSWORD_ENV: OptionSpec = OptionSpec::optional(
    "password_env",
    OptionKind::Text,
    "environment variable holding the password when the connection has none (default PGPASSWORD)",
);
pub const TABLE: OptionSpec = OptionSpec::optional(
    "table",
    OptionKind::Text,
    "the Postgres table, optionally schema-qualified (default: the sink table's name)",
);
pub const WRITE_MODE: OptionSpec = OptionSpec::optional(
    "write_mode",
    OptionKind::OneOf(&["upsert", "append"]),
    "upsert on the primary key (default when the table has one) or append",
);
pub const PRIMARY_KEY: OptionSpec = OptionSpec::optional(
    "primary_key",
    OptionKind::Text,
    "comma-separated conflict columns for upsert (default: the table's primary key)",
);
pub const BATCH_ROWS: OptionSpec = OptionSpec::optional(
    "batch_rows",
    OptionKind::Integer,
    "no longer used: each checkpoint epoch is one COPY in one transaction",
);
pub const FLUSH_INTERVAL: OptionSpec = OptionSpec::optional(
    "flush_interval",
    OptionKind::Text,
    "no longer used: rows are written at each checkpoint (--checkpoint-interval)",
);

/// Every option, as [`super::SPEC`] declares them.
pub const OPTIONS: &[OptionSpec] = &[
    CONNECTION,
    PASSWORD_ENV,
    TABLE,
    WRITE_MODE,
    PRIMARY_KEY,
    BATCH_ROWS,
    FLUSH_INTERVAL,
];

/// How rows land in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    Append,
    /// `ON CONFLICT (key columns)`.
    Upsert(Vec<String>),
}

/// The sink's options, resolved.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    pub connection: String,
    pub password_env: Option<String>,
    pub table: String,
    /// `None`: upsert on the table's primary key if it has one, else append.
    pub write_mode: Option<WriteMode>,
}

impl PostgresOptions {
    pub fn from_table(t: &TableDef) -> Result<Self, OptionError> {
        let key = t.text(&PRIMARY_KEY).map(|k| {
            k.split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        });
        let write_mode = match (t.choice(&WRITE_MODE)?, key) {
            (Some("append"), Some(_)) => {
                return Err(t.option_error(
                    &PRIMARY_KEY,
                    "is for write_mode = 'upsert'; drop one of them",
                ));
            }
            (Some("append"), None) => Some(WriteMode::Append),
            (_, Some(k)) if k.is_empty() => {
                return Err(t.option_error(&PRIMARY_KEY, "names no column"));
            }
            (_, Some(k)) => Some(WriteMode::Upsert(k)),
            _ => None,
        };
        for old in [&BATCH_ROWS, &FLUSH_INTERVAL] {
            if t.text(old).is_some() {
                tracing::warn!(
                    table = %t.name,
                    "option {} is no longer used: each checkpoint epoch is written in one \
                     transaction (set --checkpoint-interval instead)",
                    old.key
                );
            }
        }
        Ok(PostgresOptions {
            connection: connection_string(t.text(&CONNECTION)),
            password_env: t.text(&PASSWORD_ENV),
            table: t.text(&TABLE).unwrap_or_else(|| t.name.clone()),
            write_mode,
        })
    }
}
