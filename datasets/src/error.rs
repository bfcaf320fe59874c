//! Dataset errors: each names the file and what is wrong with it, so the CLI can print one line.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("{what} not found in {dir}{hint}")]
    Missing { what: String, dir: PathBuf, hint: String },

    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    #[error("the batch loader failed after {served} of {expected} batches: {reason}")]
    LoaderFailed { served: usize, expected: usize, reason: String },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, DatasetError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DatasetError {
    let path = path.into();
    move |source| DatasetError::Io { path, source }
}

pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> DatasetError {
    DatasetError::Corrupt { path: path.into(), reason: reason.into() }
}
