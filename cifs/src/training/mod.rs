//! Training (docs/DESIGN.md, sections 4 and 5): one adversarial step, TRADES, SGD, the
//! per-dataset recipes, the whole run with its checkpoints and resumption, and the benchmark of
//! the steps.

pub mod bench;
pub mod optim;
pub mod recipe;
pub mod resume;
pub mod run;
pub mod step;
pub mod trades;
