//! `engine`: the GPU runtime of cifs-wgpu. Adapter and device setup (`gpu`), the buffer pool,
//! kernel cache and command recorder composed into a `Runtime`, tensors, a reverse-mode autodiff
//! tape and one op wrapper per WGSL kernel family, each with its backward beside its forward.
//! It knows nothing about ResNets or CIFS: models are built from these ops in the `cifs` crate.

pub mod autodiff;
pub mod error;
pub mod gpu;
pub mod grid;
pub mod kernels;
pub mod ops;
pub mod pipelines;
pub mod pool;
pub mod recorder;
pub mod reference;
pub mod rng;
pub mod runtime;
pub mod tensor;
pub mod timer;
pub mod tune;

pub use autodiff::{backward, no_grad, Gradients, NoGrad};
pub use error::{EngineError, Result};
pub use gpu::Gpu;
pub use grid::Work;
pub use rng::Rng;
pub use runtime::Runtime;
pub use tensor::{DType, Tensor};
