//! `txguard db init|stats|reset`: the default pipeline's Postgres schema (sql/postgres/),
//! created idempotently, reported on, and dropped and recreated after a confirmation.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use txguard_connectors::postgres::{self, admin};

#[derive(Debug, Args)]
pub struct DbArgs {
    /// The database: a postgres:// URL or libpq keywords. The password may come from
    /// PGPASSWORD.
    #[arg(
        long,
        global = true,
        env = postgres::CONNECTION_ENV,
        default_value = postgres::DEFAULT_CONNECTION,
        value_name = "URL"
    )]
    pub connection: String,
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the tables, indexes and dashboard views the default Postgres pipeline writes
    /// (sql/postgres/*.sql); safe to run again.
    Init,
    /// Row counts, anomaly rate, model precision/recall, and how fresh the data is.
    Stats {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Drop the tables (every row) and views, and create them empty.
    Reset {
        /// Do not ask for confirmation (for scripts).
        #[arg(long)]
        yes: bool,
    },
}

pub fn run(args: DbArgs) -> Result<()> {
    crate::commands::block_on(run_async(args))
}

async fn run_async(args: DbArgs) -> Result<()> {
    let cfg = postgres::config(&args.connection, None, "txguard db")?;
    let target = postgres::describe(&cfg);
    let connect = || async {
        postgres::connect(&cfg).await.with_context(|| {
            format!(
                "is PostgreSQL running at {target}? Pass --connection or set {}",
                postgres::CONNECTION_ENV
            )
        })
    };
    match args.command {
        DbCommand::Init => {
            let mut c = connect().await?;
            admin::init(&mut c).await?;
            outln!(
                "{target}: tables {} and views {} are ready",
                admin::TABLES.join(", "),
                admin::VIEWS.join(", ")
            );
        }
        DbCommand::Stats { json } => {
            let c = connect().await?;
            let s = admin::stats(&c).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&stats_json(&s))?);
            } else {
                print_stats(&target, &s);
            }
        }
        DbCommand::Reset { yes } => {
            let c = connect().await?;
            let s = admin::stats(&c).await?;
            let rows: i64 = s.tables.iter().filter_map(|t| t.rows).sum();
            if !yes {
                confirm(&format!(
                    "This drops {} ({rows} rows) and the dashboard views in {target}, then \
                     creates them empty.",
                    admin::TABLES.join(", ")
                ))?;
            }
            let mut c = c;
            admin::reset(&mut c).await?;
            outln!("{target}: dropped {rows} rows; tables and views recreated empty");
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses when no one can answer.
fn confirm(what: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("{what} Refusing without a terminal to confirm: pass --yes");
    }
    eprint!("{what}\nType 'yes' to continue: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

fn fmt_opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

fn print_stats(target: &str, s: &admin::Stats) {
    outln!("{target}");
    outln!("  {:<22} {:>12}  {:>12}", "table", "rows", "last write");
    for t in &s.tables {
        match t.rows {
            Some(n) => outln!(
                "  {:<22} {:>12}  {:>12}",
                t.table,
                n,
                fmt_opt(t.last_write_age_s, |a| format!("{a:.1}s ago"))
            ),
            None => outln!(
                "  {:<22} {:>12}",
                t.table,
                "missing (run `txguard db init`)"
            ),
        }
    }
    outln!(
        "  anomaly rate {}   precision {}   recall {}",
        fmt_opt(s.anomaly_rate, |r| format!("{:.3}%", r * 100.0)),
        fmt_opt(s.precision, |r| format!("{r:.3}")),
        fmt_opt(s.recall, |r| format!("{r:.3}")),
    );
    outln!(
        "  last minute: {} rows written, event time to written {}",
        fmt_opt(s.rows_last_minute, |n| n.to_string()),
        fmt_opt(s.event_lag_s, |l| format!("{l:.1}s"))
    );
}

fn stats_json(s: &admin::Stats) -> serde_json::Value {
    serde_json::json!({
        "database": s.database,
        "tables": s.tables.iter().map(|t| serde_json::json!({
            "table": t.table,
            "rows": t.rows,
            "last_write_age_s": t.last_write_age_s,
        })).collect::<Vec<_>>(),
        "anomaly_rate": s.anomaly_rate,
        "precision": s.precision,
        "recall": s.recall,
        "rows_last_minute": s.rows_last_minute,
        "event_lag_s": s.event_lag_s,
    })
}
