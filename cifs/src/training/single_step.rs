//! Fast adversarial training (FGSM-RS or N-FGSM, `attacks::single_step`): the single-step
//! attack in evaluation mode makes the training images from its own random start, then the loss
//! PGD-AT takes on them (train-mode forward with labels, joint loss). Two forward and two backward
//! passes per step in all.

use engine::{Rng, Runtime, Tensor};

use crate::attacks::pgd::Start;
use crate::attacks::single_step::SingleStep;
use crate::distributed::exchange::Exchange;
use crate::distributed::Parallel;
use crate::error::Result;
use crate::models::{Model, Output};
use crate::training::batch::StepBatch;
use crate::training::objective::{train_mode_joint_loss, Objective};
use crate::training::optim::Sgd;
use crate::training::step::{Learner, StepResult};

/// A single-step method: `attack` from its uniform start, then the joint loss weighted by `beta`
/// on the adversarial images.
pub struct SingleStepAt {
    pub attack: SingleStep,
    pub beta: f32,
}

impl Objective for SingleStepAt {
    /// One process draws the start for its whole batch; a rank takes its rows of the start one
    /// process draws for the global batch (the same seed, the same values per image).
    fn inputs(&self, rt: &Runtime, model: &Model, batch: &StepBatch, rng: &mut Rng) -> Result<Tensor> {
        match batch.share.is_whole() {
            true => self.attack.attack(rt, model, batch.x, batch.labels, Start::Random(rng)),
            false => {
                let start = batch.share.uniform_start(rt, batch.x, self.attack.noise, rng.next_u64())?;
                self.attack.attack(rt, model, batch.x, batch.labels, Start::Given(&start))
            }
        }
    }

    fn loss(&self, rt: &Runtime, model: &Model, batch: &StepBatch, inputs: &Tensor) -> Result<(Tensor, Output)> {
        train_mode_joint_loss(rt, model, inputs, batch.labels, self.beta)
    }
}

/// One step of one process on images `x` (N, C, H, W) with labels (N,): `attack` from a random
/// start drawn from `rng` (one draw, as the PGD-AT step draws its start), then the training step
/// on the adversarial images; `beta` weighs the training loss's probe terms.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    rt: &Runtime,
    model: &Model,
    sgd: &Sgd,
    x: &Tensor,
    labels: &Tensor,
    attack: &SingleStep,
    beta: f32,
    rng: &mut Rng,
) -> Result<StepResult> {
    let learner = Learner { rt, model, sgd, par: Parallel::single() };
    learner.step(&SingleStepAt { attack: *attack, beta }, &StepBatch::whole(x, labels), rng, &mut Exchange::default())
}
