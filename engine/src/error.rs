//! The engine's one error type. Variants carry what went wrong as data (the op, the shapes, the
//! sizes), so a caller can act on them and a message read at the command line says what happened
//! without a debugger.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("no GPU adapter matches `{wanted}` (available: {}); see `cifs-wgpu info`", available.join(", "))]
    AdapterNotFound { wanted: String, available: Vec<String> },

    #[error(
        "no GPU adapter found. Install a GPU driver with Vulkan, Metal or DX12 support, or on a \
         CPU-only Linux machine install Mesa's lavapipe (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`). \
         In an NVIDIA container where nvidia-smi works, the Vulkan ICD may need to name libEGL_nvidia.so.0 \
         (README, Requirements)"
    )]
    NoAdapter,

    #[error("adapter `{adapter}` lacks the feature {feature}, which cifs-wgpu needs")]
    MissingFeature { adapter: String, feature: &'static str },

    #[error("could not open the GPU device: {0}")]
    RequestDevice(String),

    /// An environment variable holds a value the engine does not know (`crate::options`).
    #[error("{variable}=`{value}`: expected {expected}")]
    Setting { variable: &'static str, value: String, expected: &'static str },

    /// An op's inputs do not have shapes it accepts. `shapes` are the offending inputs' shapes,
    /// in the order `expected` names them.
    #[error("{op}: got shapes {shapes:?}, expected {expected}")]
    Shape { op: &'static str, shapes: Vec<Vec<usize>>, expected: &'static str },

    #[error("a buffer of {bytes} bytes exceeds the adapter's storage-buffer limit of {limit} bytes; use a smaller batch")]
    TooLarge { bytes: u64, limit: u64 },

    #[error("a write of {bytes} bytes does not fit a buffer of {size} bytes")]
    WriteTooLong { bytes: u64, size: u64 },

    #[error("a grid of {groups:?} workgroups exceeds the limit of {limit} per dimension")]
    GridTooLarge { groups: [u64; 3], limit: u32 },

    #[error("tile configuration {tile} cannot run here: {why}")]
    TileNotRunnable { tile: String, why: String },

    /// A kernel uses more workgroup memory than the device allows (wgpu does not check this
    /// itself; a driver would fail or misbehave).
    #[error("kernel {file}::{entry} needs {bytes} bytes of workgroup memory; this device allows {limit}")]
    WorkgroupMemory { file: &'static str, entry: String, bytes: u32, limit: u32 },

    #[error("kernel `{entry}` has no literal 1-D workgroup size; dispatch it with explicit groups")]
    NotOneDimensional { entry: &'static str },

    #[error("{file}: no entry point `{entry}`")]
    NoEntryPoint { file: &'static str, entry: String },

    #[error("{file} does not compile: {reason}")]
    Shader { file: &'static str, reason: String },

    #[error("reading a buffer back from the GPU failed: {0}")]
    Readback(String),

    #[error("GPU error: {0}")]
    Gpu(String),

    #[error("backward: the loss must have one element, it has shape {shape:?}")]
    LossNotScalar { shape: Vec<usize> },

    #[error("backward: the loss does not depend on anything that requires grad")]
    NothingRequiresGrad,

    #[error("backward of {op}: gradient of shape {got:?} for an input of shape {want:?}")]
    GradShape { op: &'static str, got: Vec<usize>, want: Vec<usize> },

    #[error("backward of {op}: a gradient for a tensor that is not one of its inputs")]
    GradNotForInput { op: &'static str },
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// Builds a [`EngineError::Shape`] error; used by every op's argument checks.
pub fn shape_err(op: &'static str, shapes: &[&[usize]], expected: &'static str) -> EngineError {
    EngineError::Shape { op, shapes: shapes.iter().map(|s| s.to_vec()).collect(), expected }
}
