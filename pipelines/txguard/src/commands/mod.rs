//! One module per subcommand.

pub mod model;
pub mod score;
pub mod train;
