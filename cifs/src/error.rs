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
}

pub type Result<T> = std::result::Result<T, CifsError>;
