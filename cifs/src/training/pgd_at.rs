//! PGD adversarial training (Madry et al. 2018), the reference's method: PGD on the joint loss
//! from a random start in eval mode, then the joint loss on the adversarial images in train mode.

use engine::{Rng, Runtime, Tensor};

use crate::attacks::pgd::{Pgd, Start};
use crate::error::Result;
use crate::models::{Model, Output};
use crate::training::batch::StepBatch;
use crate::training::objective::{train_mode_joint_loss, Objective};

/// The reference's PGD adversarial training: `attack` (its loss included) from a random start,
/// then the joint loss weighted by `beta` on the adversarial images.
pub struct PgdAt {
    pub attack: Pgd,
    pub beta: f32,
}

impl Objective for PgdAt {
    fn inputs(&self, rt: &Runtime, model: &Model, batch: &StepBatch, rng: &mut Rng) -> Result<Tensor> {
        match batch.share.is_whole() {
            true => self.attack.attack(rt, model, batch.x, batch.labels, Start::Random(rng)),
            false => {
                let start = batch.share.uniform_start(rt, batch.x, self.attack.eps, rng.next_u64())?;
                self.attack.attack(rt, model, batch.x, batch.labels, Start::Given(&start))
            }
        }
    }

    fn loss(&self, rt: &Runtime, model: &Model, batch: &StepBatch, inputs: &Tensor) -> Result<(Tensor, Output)> {
        train_mode_joint_loss(rt, model, inputs, batch.labels, self.beta)
    }
}
