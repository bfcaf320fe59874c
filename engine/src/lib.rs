//! `engine`: the GPU runtime of cifs-wgpu. wgpu context, pooled tensors, a reverse-mode autodiff
//! tape and one op wrapper per WGSL kernel family, each with its backward beside its forward.
//! It knows nothing about ResNets or CIFS: models are built from these ops in the `cifs` crate.

pub mod autodiff;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod ops;
pub mod reference;
pub mod tensor;

pub use autodiff::{backward, Gradients};
pub use error::{EngineError, Result};
pub use gpu::Gpu;
pub use tensor::{DType, Tensor};
