//! One module per subcommand.

pub mod dashboards;
pub mod db;
pub mod generate;
pub mod model;
pub mod pipeline;
pub mod produce;
pub mod run;
pub mod score;
pub mod train;
pub mod train_pipeline;
pub mod validate;
