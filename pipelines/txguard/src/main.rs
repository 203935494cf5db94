//! `txguard`: the command line. Parses arguments, sets up logging and dispatches to the
//! subcommands in [`commands`].

/// Prints a line to standard output. A closed stdout (`txguard validate FILE | head`) is the
/// end of the output, as ripgrep treats it: the process exits 0 at once and quietly. Any other
/// write error exits 2 naming it. Every command prints through this, never `println!` (which
/// panics when the reader has gone).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod commands;
mod hot_swap;
mod mlflow;
mod tabular;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Real-time transaction anomaly detection: streaming SQL features and an isolation forest
/// that scores exactly like scikit-learn, in one Rust binary.
#[derive(Debug, Parser)]
#[command(name = "txguard", version, propagate_version = true)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `txguard_engine=debug,deltalake=info` (or set
    /// RUST_LOG). The default keeps the libraries' chatter (deltalake, datafusion) at warnings.
    #[arg(
        long,
        global = true,
        env = "TXGUARD_LOG",
        default_value = "warn,txguard=info,txguard_engine=info,txguard_connectors=info"
    )]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a pipeline file (default sql/pipeline.sql: generator -> features -> forest -> Delta
    /// tables under ./data) until its sources end or Ctrl-C.
    Run(commands::run::RunArgs),
    /// Write the built-in generator's synthetic transactions (with labelled fraud) as JSON lines.
    Generate(commands::generate::GenerateArgs),
    /// Send the built-in generator's transactions to a Kafka topic as JSON, keyed by user_id.
    Produce(commands::produce::ProduceArgs),
    /// Score a CSV or Parquet file offline: the output is the input plus `score` and `is_anomaly`.
    Score(commands::score::ScoreArgs),
    /// Parse and plan a pipeline file without running it; print its dataflow graph.
    Validate(commands::validate::ValidateArgs),
    /// Fit an isolation forest on the feature columns of a CSV or Parquet file.
    Train(commands::train::TrainArgs),
    /// Postgres: create, inspect or reset the default pipeline's tables and views.
    Db(commands::db::DbArgs),
    /// Show a pipeline's checkpoints: epochs, sizes, source positions, watermarks.
    Checkpoints {
        #[command(subcommand)]
        command: commands::checkpoints::CheckpointsCommand,
    },
    /// Provision dashboards as code (dashboards/).
    Dashboards {
        #[command(subcommand)]
        command: DashboardsCommand,
    },
    /// Inspect and convert model files.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Print a model's card: features, parameters, training data, metrics.
    Info {
        /// Model file (JSON), e.g. models/default.json, or models:/NAME@ALIAS or
        /// models:/NAME/VERSION (MLflow registry, at MLFLOW_TRACKING_URI).
        model: String,
        /// Print the card as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write the model as a single-file Arroyo Rust UDF with the model embedded.
    ExportArroyo(commands::model::ExportArroyoArgs),
    /// Score a pipeline's feature view over labelled history and write an evaluation report
    /// (HTML with SVG figures, and JSON): ROC and PR curves, score distributions by label,
    /// precision/recall at the threshold and at top-k, confusion counts, recall per group.
    Evaluate(commands::evaluate::EvaluateArgs),
}

#[derive(Debug, Subcommand)]
enum DashboardsCommand {
    /// Create or update the Postgres connection, questions and dashboard in Metabase
    /// (dashboards/metabase/) through its REST API; re-running updates, never duplicates.
    Metabase(commands::dashboards::MetabaseArgs),
}

/// Turns transparent huge pages off for this process (Linux), unless `TXGUARD_HUGEPAGES=1`.
/// With the kernel's THP in `madvise` mode, mimalloc's arenas get huge pages, and each purge
/// and re-touch of a 2 MB range zeroes a whole one: on the default pipeline that was 55–100
/// MB more peak RSS and ~17% of the CPU time in page clearing, for no throughput gain
/// (docs/benchmarks.md).
fn no_transparent_hugepages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("TXGUARD_HUGEPAGES").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes integers only; it sets a flag on this process's
        // memory map for future faults and touches no memory of ours. On failure (an old
        // kernel) nothing changes, which is harmless.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Where [`outln!`] goes when a write to stdout fails.
#[cold]
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to standard output: {e}");
    std::process::exit(2);
}

fn main() -> ExitCode {
    no_transparent_hugepages();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();

    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Produce(args) => commands::produce::run(args),
        Command::Score(args) => commands::score::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Validate(args) => commands::validate::run(args),
        Command::Db(args) => commands::db::run(args),
        Command::Checkpoints { command } => commands::checkpoints::run(command),
        Command::Dashboards { command } => match command {
            DashboardsCommand::Metabase(args) => commands::dashboards::run(args),
        },
        Command::Model { command } => match command {
            ModelCommand::Info { model, json } => commands::model::info(&model, json),
            ModelCommand::ExportArroyo(args) => commands::model::export_arroyo(args),
            ModelCommand::Evaluate(args) => commands::evaluate::run(args),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
