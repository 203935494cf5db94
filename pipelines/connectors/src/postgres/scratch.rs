//! Throwaway databases on a server, for the tests and the benchmark: each gets a fresh,
//! uniquely named database and drops it when done (`DROP DATABASE … WITH (FORCE)`).

use std::sync::atomic::{AtomicU32, Ordering};

use super::{ConnectError, config, connect, db_message, quote_ident};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A database created for one test or run.
#[derive(Debug)]
pub struct ScratchDb {
    /// Connection string of the server's maintenance database.
    admin: String,
    pub name: String,
}

impl ScratchDb {
    /// Creates `txguard_scratch_<pid>_<n>` through `admin` (a connection string to any
    /// database on the server, e.g. `dbname=postgres`).
    pub async fn create(admin: &str) -> Result<Self, String> {
        let name = format!(
            "txguard_scratch_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let client = admin_client(admin).await?;
        // One statement per call: several in one simple query run as one transaction,
        // which DROP/CREATE DATABASE refuse.
        for sql in [
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            ),
            format!("CREATE DATABASE {}", quote_ident(&name)),
        ] {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("creating database {name}: {}", db_message(&e)))?;
        }
        Ok(ScratchDb {
            admin: admin.to_string(),
            name,
        })
    }

    /// A connection string for the scratch database (the admin one with its dbname).
    pub fn connection(&self) -> String {
        match url::Url::parse(&self.admin) {
            Ok(mut u) if u.scheme().starts_with("postgres") => {
                u.set_path(&self.name);
                u.to_string()
            }
            // libpq keywords: a later dbname overrides an earlier one.
            _ => format!("{} dbname={}", self.admin, self.name),
        }
    }

    /// Drops the database, ending its sessions.
    pub async fn drop_db(self) -> Result<(), String> {
        let client = admin_client(&self.admin).await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ))
            .await
            .map_err(|e| format!("dropping database {}: {}", self.name, db_message(&e)))
    }
}

async fn admin_client(admin: &str) -> Result<tokio_postgres::Client, String> {
    let cfg = config(admin, None, "txguard scratch").map_err(|e| e.to_string())?;
    connect(&cfg)
        .await
        .map_err(|e: ConnectError| format!("{e} (a Postgres server is needed here)"))
}
