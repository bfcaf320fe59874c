//! One step of fast adversarial training (FGSM-RS or N-FGSM, `attacks::single_step`): the
//! single-step attack in evaluation mode makes the training images, then the step PGD-AT takes
//! on them (train-mode forward with labels, joint loss, backward, SGD; `step::train_step_on`).
//! Two forward and two backward passes in all.

use engine::{Rng, Runtime, Tensor};

use crate::attacks::pgd::Start;
use crate::attacks::single_step::SingleStep;
use crate::error::Result;
use crate::models::Model;
use crate::training::optim::Sgd;
use crate::training::step::{train_step_on, StepResult};

/// One step on images `x` (N, C, H, W) with labels (N,): `attack` from a random start drawn
/// from `rng` (one draw, as the PGD-AT step draws its start), then the training step on the
/// adversarial images; `beta` weighs the training loss's probe terms. The arguments are those
/// of `step::train_step`, with the attack always present.
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
    train_step_on(rt, model, sgd, labels, beta, || attack.attack(rt, model, x, labels, Start::Random(rng)))
}
