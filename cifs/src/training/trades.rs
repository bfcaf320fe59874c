//! TRADES (Zhang et al., ICML 2019; docs/DESIGN.md, section 4):
//! `L = L_nat(f(x), y) + beta_t (1/N) sum_n KL(softmax f(x_n) || softmax f(x'_n))`, where the
//! natural part is cross-entropy (the joint loss for CIFS models) and x' comes from `steps`
//! sign-gradient steps on that KL, from x + 0.001 N(0, 1), projected to the eps-ball and [0, 1]
//! after each step, with the model in eval mode (the CIFS pair rule of eval mode) and f(x) held
//! fixed. The KL term uses the final logits.
//!
//! One difference from the published code, which runs the natural forward twice (once for the
//! natural loss, once inside the KL): here the KL reuses the natural logits, so the batch-norm
//! running statistics see the natural batch once per step, not twice. The loss and its gradients
//! are the same.

use engine::ops::attack::{pgd_project, pgd_step};
use engine::ops::kl_div::kl_div;
use engine::{autodiff, no_grad, Rng, Runtime, Tensor};

use crate::distributed::exchange::Exchange;
use crate::distributed::Parallel;
use crate::error::{check_setting, Result};
use crate::loss::joint_loss;
use crate::models::{Mode, Model, Output};
use crate::training::batch::StepBatch;
use crate::training::objective::Objective;
use crate::training::optim::Sgd;
use crate::training::step::{Learner, StepResult};

#[derive(Debug, Clone, Copy)]
pub struct Trades {
    pub eps: f32,
    pub step: f32,
    pub steps: usize,
    /// Weight of the KL term (6 in the paper).
    pub beta: f32,
}

/// `n` standard normal values (Box-Muller), as f64.
fn normals(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let u = rng.next_f64().max(f64::MIN_POSITIVE);
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * rng.next_f64()).cos()
        })
        .collect()
}

impl Trades {
    pub fn validate(&self) -> Result<()> {
        check_setting(self.eps.is_finite() && self.eps >= 0.0, "eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.step.is_finite() && self.step >= 0.0, "step size", self.step, "the attack step must be finite and at least 0")?;
        check_setting(self.steps >= 1, "attack steps", self.steps, "an attack needs at least one step")?;
        check_setting(self.beta.is_finite() && self.beta >= 0.0, "trades beta", self.beta, "the KL weight must be finite and at least 0")
    }

    /// The adversarial images: `steps` sign-gradient steps on KL(f(x) || f(x')) in eval mode.
    pub fn attack(&self, rt: &Runtime, model: &Model, x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        self.validate()?;
        let natural = no_grad(|| model.forward(rt, x, None, Mode::Eval))?.logits;
        let delta = Tensor::from_f32(rt, x.shape(), &normals(rng, x.numel()).iter().map(|v| (0.001 * v) as f32).collect::<Vec<_>>())?;
        let mut adv = pgd_project(rt, x, &delta, self.eps)?;
        for _ in 0..self.steps {
            let leaf = adv.requiring_grad();
            let out = model.forward(rt, &leaf, None, Mode::Eval)?;
            let grads = autodiff::backward(rt, &kl_div(rt, &natural, &out.logits)?)?;
            let g = grads.get(&leaf).ok_or(engine::EngineError::NothingRequiresGrad)?;
            adv = pgd_step(rt, x, g, &delta, self.eps, self.step)?;
        }
        Ok(adv)
    }

    /// The TRADES loss of the natural images `x` and their adversarial versions `adv`, both in
    /// train mode; `joint_beta` weighs the CIFS probes in the natural part. Returns the loss and
    /// the natural outputs.
    pub fn loss(
        &self,
        rt: &Runtime,
        model: &Model,
        x: &Tensor,
        adv: &Tensor,
        labels: &Tensor,
        joint_beta: f32,
    ) -> Result<(Tensor, Output)> {
        let natural = model.forward(rt, x, Some(labels), Mode::Train)?;
        let adversarial = model.forward(rt, adv, Some(labels), Mode::Train)?;
        let robust = engine::ops::arith::scale(rt, &kl_div(rt, &natural.logits, &adversarial.logits)?, self.beta)?;
        let total = engine::ops::arith::add(rt, &joint_loss(rt, &natural, labels, joint_beta)?, &robust)?;
        Ok((total, natural))
    }

    /// One TRADES training step of one process: attack (eval mode), loss (train mode), backward,
    /// SGD; `joint_beta` weighs the CIFS probes in the natural part.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &self,
        rt: &Runtime,
        model: &Model,
        sgd: &Sgd,
        x: &Tensor,
        labels: &Tensor,
        joint_beta: f32,
        rng: &mut Rng,
    ) -> Result<StepResult> {
        let learner = Learner { rt, model, sgd, par: Parallel::single() };
        let objective = TradesAt { trades: *self, beta: joint_beta };
        learner.step(&objective, &StepBatch::whole(x, labels), rng, &mut Exchange::default())
    }
}

/// TRADES as a training method: its KL attack makes the training images, its loss (the natural
/// part weighted by `beta` over the probes) is minimised. Its random start is drawn for the
/// batch a process holds, so it runs as one process only (`training::trainer` refuses ranks).
pub struct TradesAt {
    pub trades: Trades,
    pub beta: f32,
}

impl Objective for TradesAt {
    fn inputs(&self, rt: &Runtime, model: &Model, batch: &StepBatch, rng: &mut Rng) -> Result<Tensor> {
        self.trades.attack(rt, model, batch.x, rng)
    }

    fn loss(&self, rt: &Runtime, model: &Model, batch: &StepBatch, inputs: &Tensor) -> Result<(Tensor, Output)> {
        self.trades.loss(rt, model, batch.x, inputs, batch.labels, self.beta)
    }
}
