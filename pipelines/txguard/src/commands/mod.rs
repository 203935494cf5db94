//! One module per subcommand.

pub mod generate;
pub mod model;
pub mod score;
pub mod train;
pub mod validate;
