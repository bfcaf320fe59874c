//! One module per subcommand, each with its arguments and its `run`: parse, call `cifs`, print.
//! The runtime and the dataset are opened by `crate::open` for all of them.

pub mod analyze;
pub mod bench;
pub mod card;
pub mod eval;
pub mod info;
pub mod train;
pub mod tune;
