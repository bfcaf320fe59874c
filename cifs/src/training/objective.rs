//! What a training method does in one step, apart from the optimizer: make the batch's training
//! images (an attack in eval mode, or the clean images), then the loss on them in train mode.
//! Each method is a file implementing [`Objective`] (clean training here, `pgd_at`, `trades`);
//! `training::methods` maps the configured method to it.

use engine::{Rng, Runtime, Tensor};

use crate::error::Result;
use crate::loss::joint_loss;
use crate::models::{Mode, Model, Output};
use crate::training::batch::StepBatch;

/// One training method's step, without the optimizer (`training::step` runs both halves, the
/// backward and, on several ranks, the all-reduce between them).
pub trait Objective {
    /// The training images of `batch` (N, C, H, W), made with the model in eval mode; random
    /// draws come from `rng`, drawn as one process draws them for the whole global batch.
    fn inputs(&self, rt: &Runtime, model: &Model, batch: &StepBatch, rng: &mut Rng) -> Result<Tensor>;

    /// The loss to minimise on `inputs` (train mode) and the outputs whose logits the epoch's
    /// training accuracy counts.
    fn loss(&self, rt: &Runtime, model: &Model, batch: &StepBatch, inputs: &Tensor) -> Result<(Tensor, Output)>;
}

/// Clean training: the images as they are, the joint loss weighted by `beta`.
pub struct Clean {
    pub beta: f32,
}

impl Objective for Clean {
    fn inputs(&self, _: &Runtime, _: &Model, batch: &StepBatch, _: &mut Rng) -> Result<Tensor> {
        Ok(batch.x.clone())
    }

    fn loss(&self, rt: &Runtime, model: &Model, batch: &StepBatch, inputs: &Tensor) -> Result<(Tensor, Output)> {
        train_mode_joint_loss(rt, model, inputs, batch.labels, self.beta)
    }
}

/// The train-mode forward on `x` and its joint loss weighted by `beta`.
pub fn train_mode_joint_loss(rt: &Runtime, model: &Model, x: &Tensor, labels: &Tensor, beta: f32) -> Result<(Tensor, Output)> {
    let output = model.forward(rt, x, Some(labels), Mode::Train)?;
    Ok((joint_loss(rt, &output, labels, beta)?, output))
}
