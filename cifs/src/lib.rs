//! `cifs`: the science of the project on top of the engine. The paper's models (ResNet-18 and
//! ResNet-10 with CIFS or CAS, the pre-activation WideResNet), the joint loss, attacks, training
//! and evaluation loops, analysis and checkpoints. It builds everything from engine ops and
//! knows nothing about buffers or pipelines.

pub mod analyze;
pub mod apgd;
pub mod attack;
pub mod bench;
pub mod checkpoint;
pub mod error;
pub mod evaluate;
pub mod hostloss;
pub mod loss;
pub mod models;
pub mod optim;
pub mod plots;
pub mod recipe;
pub mod resume;
pub mod run;
pub mod square;
pub mod state;
pub mod trades;
pub mod train;

pub use error::{CifsError, Result};
pub use models::{Mode, Model, ModelConfig, ModelKind, Output};
