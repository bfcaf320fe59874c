//! Errors of the model layer: engine failures, and checkpoints that do not fit the model.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CifsError {
    #[error(transparent)]
    Engine(#[from] engine::EngineError),

    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },

    #[error("{0}")]
    Invalid(String),

    #[error("training diverged: the loss became {loss} at epoch {epoch}, step {step}; {kept}")]
    Diverged { loss: f32, epoch: usize, step: usize, kept: String },

    #[error(transparent)]
    Data(#[from] datasets::DatasetError),

    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

pub type Result<T> = std::result::Result<T, CifsError>;
