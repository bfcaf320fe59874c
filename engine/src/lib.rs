//! `engine`: the GPU runtime of cifs-wgpu. Adapter and device setup (`gpu`), the buffer pool,
//! kernel cache and command recorder composed into a `Runtime`, tensors, a reverse-mode autodiff
//! tape and one op wrapper per WGSL kernel family, each with its backward beside its forward.
//! It knows nothing about ResNets or CIFS: models are built from these ops in the `cifs` crate.
//! docs/DESIGN.md describes the engine's shape.
//!
//! The public surface is what models, attacks, the command line and the tests need: tensors and
//! their host transfers, the ops, the tape, the runtime's counters, timing and tuning controls,
//! and the adapter's description. Buffers, pipelines, the recorder and dispatch grids are the
//! engine's own.

pub mod autodiff;
pub mod error;
pub mod gpu;
mod grid;
mod kernels;
pub mod ops;
pub mod options;
mod pipelines;
mod pool;
pub mod precision;
mod recorder;
pub mod rng;
pub mod runtime;
pub mod tensor;
mod timer;
pub mod tune;

#[cfg(test)]
mod portability_tests;
#[cfg(test)]
mod shader_tests;

pub use autodiff::{backward, no_grad, Gradients, NoGrad};
pub use error::{EngineError, Result};
pub use gpu::{AdapterSummary, DeviceLimits};
pub use options::{KernelOptions, Limits, RuntimeOptions, TuneCache, Tuning};
pub use precision::{GemmKernels, Precision, PrecisionSupport};
pub use rng::Rng;
pub use runtime::{PendingRead, Runtime, RuntimeStats, Timing};
pub use tensor::{DType, Tensor};
pub use timer::Clock;
