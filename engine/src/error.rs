//! The engine's one error type. Variants name the op and the shapes involved so a message
//! read at the command line says what went wrong without a debugger.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("no GPU adapter matches `{wanted}` (available: {available}); see `cifs-wgpu info`")]
    AdapterNotFound { wanted: String, available: String },

    #[error(
        "no GPU adapter found{0}. Install a GPU driver with Vulkan, Metal or DX12 support, or on a \
         CPU-only Linux machine install Mesa's lavapipe (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`)"
    )]
    NoAdapter(String),

    #[error("adapter `{adapter}` lacks the feature {feature}, which cifs-wgpu needs")]
    MissingFeature { adapter: String, feature: &'static str },

    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),

    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{op}: tensor of {bytes} bytes exceeds the adapter's storage-buffer limit of {limit} bytes; use a smaller batch")]
    TooLarge { op: &'static str, bytes: u64, limit: u64 },

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("backward: {0}")]
    Backward(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Builds a [`EngineError::Shape`] error; used by every op's argument checks.
pub fn shape_err(op: &'static str, detail: impl Into<String>) -> EngineError {
    EngineError::Shape { op, detail: detail.into() }
}
