//! L-inf attacks (docs/DESIGN.md, section 4): PGD with or without a random start, FGSM (one PGD step of size eps
//! from zero), and CW-inf (PGD on the Carlini-Wagner margin loss). The model runs in eval mode
//! with frozen parameters, so each iteration's backward computes the input gradient only. The
//! loss an attack ascends is selectable ([`AttackLoss`]): adaptive attacks on CIFS models need
//! more than the training objective.

use engine::ops::attack::{pgd_project, pgd_step};
use engine::ops::{cross_entropy::cross_entropy, dlr_loss::dlr_loss, margin_loss::margin_loss};
use engine::{autodiff, Rng, Runtime, Tensor};

use crate::error::{check_image_fraction, check_setting, CifsError, Result};
use crate::loss::joint_loss;
use crate::models::{Mode, Model, Output};

/// The loss an attack ascends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttackLoss {
    /// Cross-entropy of the final logits.
    Ce,
    /// The training objective: joint loss with this beta (plain CE for a model without probes).
    Joint { beta: f32 },
    /// CW margin loss on the final logits: `-max(real - best other + confidence, 0)`.
    CwMargin { confidence: f32 },
    /// The DLR loss of Croce and Hein on the final logits (untargeted).
    Dlr,
}

impl AttackLoss {
    /// The name reported beside each result.
    pub fn describe(&self) -> String {
        match self {
            AttackLoss::Ce => "ce".into(),
            AttackLoss::Joint { beta } => format!("joint (beta {beta})"),
            AttackLoss::CwMargin { confidence } => format!("cw margin (confidence {confidence})"),
            AttackLoss::Dlr => "dlr".into(),
        }
    }

    /// The loss of `out` as a scalar tensor whose gradient points where the loss of every image
    /// rises (a sum or mean over the batch: attacks step by the sign, so the scale is moot).
    pub fn of(&self, rt: &Runtime, out: &Output, labels: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            AttackLoss::Ce => cross_entropy(rt, &out.logits, labels)?,
            AttackLoss::Joint { beta } => joint_loss(rt, out, labels, beta)?,
            AttackLoss::CwMargin { confidence } => margin_loss(rt, &out.logits, labels, confidence)?,
            AttackLoss::Dlr => dlr_loss(rt, &out.logits, labels, None)?,
        })
    }

    fn validate(&self) -> Result<()> {
        match *self {
            AttackLoss::Joint { beta } => {
                check_setting(beta.is_finite() && beta >= 0.0, "beta", beta, "the probe-loss weight must be finite and at least 0")
            }
            AttackLoss::CwMargin { confidence } => {
                check_setting(confidence.is_finite(), "confidence", confidence, "the CW margin must be finite")
            }
            AttackLoss::Ce | AttackLoss::Dlr => Ok(()),
        }
    }
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
    /// U(-eps, eps), generated on the GPU from a seed drawn from the generator.
    Random(&'a mut Rng),
}

impl Pgd {
    /// Refuses settings that would run but mean nothing: a negative or non-finite radius or
    /// step, no steps, a negative or non-finite loss weight.
    pub fn validate(&self) -> Result<()> {
        check_image_fraction("eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_image_fraction("step size", self.step, "the attack step must be finite and at least 0")?;
        check_setting(self.steps >= 1, "attack steps", self.steps, "an attack needs at least one step")?;
        self.loss.validate()
    }

    /// The adversarial images for `x` (N, 3, H, W) in [0, 1] with labels (N,).
    pub fn attack(&self, rt: &Runtime, model: &Model, x: &Tensor, labels: &Tensor, start: Start) -> Result<Tensor> {
        self.validate()?;
        let delta = Tensor::empty(rt, x.shape())?;
        match start {
            Start::Zero => engine::ops::arith::fill_into(rt, &delta, 0.0)?,
            Start::Given(d) => {
                if d.shape() != x.shape() {
                    return Err(CifsError::InputShape {
                        shape: d.shape().to_vec(),
                        expected: format!("a start of the images' shape {:?}", x.shape()),
                    });
                }
                delta.copy_from(rt, d)?;
            }
            Start::Random(rng) => engine::ops::random::uniform_into(rt, &delta, -self.eps, self.eps, rng.next_u64())?,
        }
        let mut adv = pgd_project(rt, x, &delta, self.eps)?;
        // The weights stay as they are for the whole attack: their backward-data layouts are
        // made once, not once per step.
        rt.weights_frozen(|| {
            for _ in 0..self.steps {
                let leaf = adv.requiring_grad();
                let out = model.forward(rt, &leaf, Some(labels), Mode::Eval)?;
                let grads = autodiff::backward(rt, &self.loss.of(rt, &out, labels)?)?;
                let g = grads.get(&leaf).ok_or(engine::EngineError::NothingRequiresGrad)?;
                adv = pgd_step(rt, x, g, &delta, self.eps, self.step)?;
            }
            Ok(adv)
        })
    }
}

/// FGSM: `clamp(x + eps sign(grad), 0, 1)`.
pub fn fgsm(rt: &Runtime, model: &Model, x: &Tensor, labels: &Tensor, eps: f32, loss: AttackLoss) -> Result<Tensor> {
    Pgd { eps, step: eps, steps: 1, loss }.attack(rt, model, x, labels, Start::Zero)
}

/// CW-inf as the reference evaluates it: `steps` PGD steps of `step` on the margin loss from zero.
#[allow(clippy::too_many_arguments)]
pub fn cw_inf(
    rt: &Runtime,
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    eps: f32,
    step: f32,
    steps: usize,
    confidence: f32,
) -> Result<Tensor> {
    Pgd { eps, step, steps, loss: AttackLoss::CwMargin { confidence } }.attack(rt, model, x, labels, Start::Zero)
}
