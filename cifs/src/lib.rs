//! `cifs`: the science of the project on top of the engine (docs/DESIGN.md). It builds
//! everything from engine ops and knows nothing about buffers or pipelines.
//!
//! - [`models`]: the model families (ResNet-18 and ResNet-10 with CIFS or CAS, the
//!   pre-activation WideResNet) behind one `Model`, the probes, the layers.
//! - [`loss`]: the joint loss of the final logits and the probes.
//! - [`attacks`]: PGD and FGSM, APGD, Square, AutoAttack, and the evaluation that runs them.
//! - [`training`]: the settings and recipes, the training methods, the trainer (step, epoch,
//!   evaluation, checkpoint), SGD, and the step benchmarks.
//! - [`distributed`]: the seam between the ranks of a data-parallel run (one process, or MPI).
//! - [`analysis`]: the paper's channel analysis and its figures.
//! - [`card`]: a RobustBench model card from an AutoAttack evaluation of the whole test set.
//! - [`checkpoint`]: weights and training state in safetensors, under PyTorch's names.
//! - [`console`]: lines for the user on stderr, each written whole (several ranks share one stream).
//!
//! docs/DESIGN.md, section 9, says how a model family, an attack or a training method plugs in.

pub mod analysis;
pub mod attacks;
pub mod card;
pub mod checkpoint;
pub mod console;
pub mod distributed;
pub mod error;
pub mod loss;
pub mod models;
pub mod training;

pub use error::{CifsError, Result};
pub use models::{Mode, Model, ModelConfig, ModelKind, Output};
