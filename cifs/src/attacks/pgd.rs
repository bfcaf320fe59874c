//! L-inf attacks (docs/DESIGN.md, section 4): PGD with or without a random start, FGSM (one PGD step of size eps
//! from zero), and CW-inf (PGD on the Carlini-Wagner margin loss); as evaluation attacks, `fgsm`,
//! `pgd<steps>` and `cw<steps>`. The model runs in eval mode
//! with frozen parameters, so each iteration's backward computes the input gradient only. The
//! loss an attack ascends is selectable ([`AttackLoss`]): adaptive attacks on CIFS models need
//! more than the training objective.

use std::sync::Arc;

use engine::ops::attack::{pgd_project, pgd_step};
use engine::{autodiff, Rng, Runtime, Tensor};

use crate::attacks::attack::{judge, Attack, Batch, EvalSettings, Images};
pub use crate::attacks::loss::AttackLoss;
use crate::error::{check_image_fraction, check_setting, CifsError, Result};
use crate::models::{Mode, Model};

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

/// The white-box attacks of the evaluation on the PGD kernels: they perturb the whole batch,
/// then judge it.
fn perturb_and_judge(rt: &Runtime, model: &Model, b: &Batch, adv: Tensor, robust: &mut [bool]) -> Result<Images> {
    judge(rt, model, b, &adv, robust)?;
    Ok(Images::Device(adv))
}

/// `fgsm`: one step of eps on the evaluation's loss, from the clean images.
pub struct FgsmAttack;

impl Attack for FgsmAttack {
    fn name(&self) -> String {
        "fgsm".into()
    }
    fn loss(&self, s: &EvalSettings) -> String {
        s.loss.describe()
    }
    fn min_classes(&self, s: &EvalSettings) -> usize {
        s.loss_classes()
    }
    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        perturb_and_judge(rt, model, b, fgsm(rt, model, b.x, b.labels, s.eps, s.loss)?, robust)
    }
}

/// `pgd<steps>`: PGD on the evaluation's loss, step 0.1 eps, no random start (the reference's).
pub struct PgdAttack {
    pub steps: usize,
}

impl Attack for PgdAttack {
    fn name(&self) -> String {
        format!("pgd{}", self.steps)
    }
    fn loss(&self, s: &EvalSettings) -> String {
        s.loss.describe()
    }
    fn min_classes(&self, s: &EvalSettings) -> usize {
        s.loss_classes()
    }
    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        let pgd = Pgd { eps: s.eps, step: 0.1 * s.eps, steps: self.steps, loss: s.loss };
        perturb_and_judge(rt, model, b, pgd.attack(rt, model, b.x, b.labels, Start::Zero)?, robust)
    }
}

/// `cw<steps>`: CW-inf, PGD on the Carlini-Wagner margin (confidence from the settings), step
/// 0.1 eps, from zero.
pub struct CwAttack {
    pub steps: usize,
}

impl Attack for CwAttack {
    fn name(&self) -> String {
        format!("cw{}", self.steps)
    }
    fn loss(&self, s: &EvalSettings) -> String {
        AttackLoss::CwMargin { confidence: s.confidence }.describe()
    }
    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        let adv = cw_inf(rt, model, b.x, b.labels, s.eps, 0.1 * s.eps, self.steps, s.confidence)?;
        perturb_and_judge(rt, model, b, adv, robust)
    }
}

/// A count of steps after `prefix` (`pgd20`: 20); none for 0 or no number.
fn steps_after(name: &str, prefix: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.parse::<usize>().ok().filter(|&n| n > 0)
}

pub fn parse_fgsm(name: &str) -> Option<Arc<dyn Attack>> {
    (name == "fgsm").then(|| Arc::new(FgsmAttack) as Arc<dyn Attack>)
}

pub fn parse_pgd(name: &str) -> Option<Arc<dyn Attack>> {
    steps_after(name, "pgd").map(|steps| Arc::new(PgdAttack { steps }) as Arc<dyn Attack>)
}

pub fn parse_cw(name: &str) -> Option<Arc<dyn Attack>> {
    steps_after(name, "cw").map(|steps| Arc::new(CwAttack { steps }) as Arc<dyn Attack>)
}
