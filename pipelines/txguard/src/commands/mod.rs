//! One module per subcommand.

pub mod checkpoints;
pub mod dashboards;
pub mod db;
pub mod evaluate;
pub mod generate;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod run;
pub mod score;
pub mod train;
pub mod train_pipeline;
pub mod validate;

/// Runs a command's async body on a single-threaded runtime (commands that only talk to a
/// server and need no parallelism).
pub fn block_on<T>(
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    use anyhow::Context;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?
        .block_on(body)
}
