//! `cifs`: the science of the project on top of the engine (docs/DESIGN.md). It builds
//! everything from engine ops and knows nothing about buffers or pipelines.
//!
//! - [`models`]: ResNet-18 and ResNet-10 with CIFS or CAS, the pre-activation WideResNet, the
//!   probes, the layers.
//! - [`loss`]: the joint loss of the final logits and the probes.
//! - [`attacks`]: PGD and FGSM, APGD, Square, and the evaluation that runs them.
//! - [`training`]: the training step, TRADES, SGD, the per-dataset recipes, the training run
//!   and its step benchmarks.
//! - [`analysis`]: the paper's channel analysis and its figures.
//! - [`checkpoint`]: weights and training state in safetensors, under PyTorch's names.

pub mod analysis;
pub mod attacks;
pub mod checkpoint;
pub mod distributed;
pub mod error;
pub mod loss;
pub mod models;
pub mod training;

pub use error::{CifsError, Result};
pub use models::{Mode, Model, ModelConfig, ModelKind, Output};
