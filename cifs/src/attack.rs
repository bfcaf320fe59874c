//! L-inf attacks (DESIGN §5): PGD with or without a random start on the joint loss, FGSM (one
//! PGD step of size eps from zero), and CW-inf (PGD on the Carlini-Wagner margin loss). The model runs in eval mode with frozen parameters, so each iteration's
//! backward computes the input gradient only.

use datasets::Rng;
use engine::ops::attack::{pgd_project, pgd_step};
use engine::ops::margin_loss::margin_loss;
use engine::{autodiff, Gpu, Tensor};

use crate::error::{CifsError, Result};
use crate::loss::joint_loss;
use crate::resnet::{Mode, ResNet18};

/// The loss an attack ascends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttackLoss {
    /// The training objective: joint loss with this beta (plain CE for a model without probes).
    Joint { beta: f32 },
    /// CW margin loss on the final logits: `-max(real - best other + confidence, 0)`.
    CwMargin { confidence: f32 },
}

#[derive(Debug, Clone, Copy)]
pub struct Pgd {
    pub eps: f32,
    pub step: f32,
    pub steps: usize,
    pub loss: AttackLoss,
}

/// Where the perturbation starts.
pub enum Start<'a> {
    Zero,
    /// A given perturbation (N, 3, H, W); it is projected first.
    Given(&'a Tensor),
    /// U(-eps, eps) drawn from the generator.
    Random(&'a mut Rng),
}

impl Pgd {
    /// The adversarial images for `x` (N, 3, H, W) in [0, 1] with labels (N,).
    pub fn attack(&self, gpu: &Gpu, model: &ResNet18, x: &Tensor, labels: &Tensor, start: Start) -> Result<Tensor> {
        let delta = Tensor::empty(gpu, x.shape())?;
        match start {
            Start::Zero => engine::ops::arith::fill_into(gpu, &delta, 0.0),
            Start::Given(d) => {
                if d.shape() != x.shape() {
                    return Err(CifsError::Invalid(format!("PGD start {:?} for images {:?}", d.shape(), x.shape())));
                }
                gpu.copy(d.buffer(), delta.buffer(), d.numel() as u64 * 4);
            }
            Start::Random(rng) => delta.write_f32(gpu, &rng.uniform_vec(x.numel(), -self.eps as f64, self.eps as f64))?,
        }
        let mut adv = pgd_project(gpu, x, &delta, self.eps)?;
        for _ in 0..self.steps {
            let leaf = adv.requiring_grad(gpu);
            let out = model.forward(gpu, &leaf, Some(labels), Mode::Eval)?;
            let loss = match self.loss {
                AttackLoss::Joint { beta } => joint_loss(gpu, &out, labels, beta)?,
                AttackLoss::CwMargin { confidence } => margin_loss(gpu, &out.logits, labels, confidence)?,
            };
            let grads = autodiff::backward(gpu, &loss)?;
            let g = grads.get(&leaf).ok_or_else(|| CifsError::Invalid("attack loss does not depend on the input".into()))?;
            adv = pgd_step(gpu, x, g, &delta, self.eps, self.step)?;
        }
        Ok(adv)
    }
}

/// FGSM: `clamp(x + eps sign(grad), 0, 1)`.
pub fn fgsm(gpu: &Gpu, model: &ResNet18, x: &Tensor, labels: &Tensor, eps: f32, beta: f32) -> Result<Tensor> {
    Pgd { eps, step: eps, steps: 1, loss: AttackLoss::Joint { beta } }.attack(gpu, model, x, labels, Start::Zero)
}

/// CW-inf as the reference evaluates it: `steps` PGD steps of `step` on the margin loss from zero.
pub fn cw_inf(gpu: &Gpu, model: &ResNet18, x: &Tensor, labels: &Tensor, eps: f32, step: f32, steps: usize, confidence: f32) -> Result<Tensor> {
    Pgd { eps, step, steps, loss: AttackLoss::CwMargin { confidence } }.attack(gpu, model, x, labels, Start::Zero)
}
