//! The single-step attacks of fast adversarial training: one signed-gradient step from a random
//! start: one forward and one backward pass where PGD-10 takes ten of each.
//!
//! - FGSM with a random start (Wong, Rice and Kolter, "Fast is better than free", 2020):
//!   `δ₀ ~ U(-ε, ε)`, kept so that `x + δ₀` is in [0, 1]; `δ = clip_ε(δ₀ + 1.25 ε sign(∇))`, then
//!   `x + δ` clipped to [0, 1].
//! - N-FGSM (de Jorge et al., "Make some noise", 2022): `δ₀ ~ U(-2ε, 2ε)`, kept so that `x + δ₀`
//!   is in [0, 1] (their code clamps the noise to the image range before the step);
//!   `δ = δ₀ + ε sign(∇)`, then `x + δ` clipped to [0, 1] only: no projection back to the
//!   ε-ball, so the training images lie up to 3ε from `x`.
//!
//! Both are one step of the PGD machinery ([`Pgd`]): the gradient is that of the attack's loss
//! in evaluation mode with frozen parameters, as in PGD-AT, and the step and projections are
//! PGD's kernels. "No projection" is a projection radius of 1, the whole image range: for a
//! pixel x in [0, 1], a perturbation outside [-1, 1] puts x + δ outside [0, 1] either way, so
//! after the clamp to the image range the result is the same bits as with no radius at all (and
//! the radius stays a fraction of the pixel range, as every attack's must).

use engine::{Rng, Runtime, Tensor};

use crate::attacks::pgd::{AttackLoss, Pgd, Start};
use crate::error::{check_setting, Result};
use crate::models::Model;

/// One signed-gradient step from a uniform random start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SingleStep {
    /// The start is `U(-noise, noise)` per pixel.
    pub noise: f32,
    /// The step along the gradient's sign.
    pub step: f32,
    /// The L-inf radius the step is projected back onto; `None`: the image range only.
    pub radius: Option<f32>,
    /// The loss the step ascends.
    pub loss: AttackLoss,
}

impl SingleStep {
    /// FGSM-RS with Wong et al.'s step of 1.25 ε.
    pub fn fgsm_rs(eps: f32, loss: AttackLoss) -> SingleStep {
        SingleStep { noise: eps, step: 1.25 * eps, radius: Some(eps), loss }
    }

    /// N-FGSM with de Jorge et al.'s defaults: noise 2ε (k = 2ε), step ε, no projection.
    pub fn n_fgsm(eps: f32, loss: AttackLoss) -> SingleStep {
        SingleStep { noise: 2.0 * eps, step: eps, radius: None, loss }
    }

    /// Refuses a negative or non-finite noise, step or radius (and what [`Pgd`] refuses).
    pub fn validate(&self) -> Result<()> {
        check_setting(
            self.noise.is_finite() && self.noise >= 0.0,
            "noise",
            self.noise,
            "the start's radius must be finite and at least 0",
        )?;
        if let Some(r) = self.radius {
            check_setting(r.is_finite() && r >= 0.0, "radius", r, "the projection radius must be finite and at least 0")?;
        }
        self.pgd().validate()
    }

    /// The step as one PGD iteration.
    fn pgd(&self) -> Pgd {
        Pgd { eps: self.radius.unwrap_or(1.0), step: self.step, steps: 1, loss: self.loss }
    }

    /// The random start `U(-noise, noise)` of `shape`, drawn on the GPU from a seed drawn from
    /// `rng` (one draw), as PGD draws its start.
    pub fn random_start(&self, rt: &Runtime, shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
        Ok(engine::ops::random::uniform(rt, shape, -self.noise, self.noise, rng.next_u64())?)
    }

    /// The adversarial images for `x` (N, C, H, W) in [0, 1] with labels (N,). `start`: `Random`
    /// draws [`random_start`](Self::random_start); `Given` is used as it is (a start of another
    /// origin, e.g. each rank's share of a global batch's start); `Zero` is FGSM without a
    /// random start. The start is clamped so that `x + δ₀` is in [0, 1] (and into the radius,
    /// where there is one) before the gradient is taken.
    pub fn attack(&self, rt: &Runtime, model: &Model, x: &Tensor, labels: &Tensor, start: Start) -> Result<Tensor> {
        self.validate()?;
        let pgd = self.pgd();
        match start {
            Start::Random(rng) => {
                let delta = self.random_start(rt, x.shape(), rng)?;
                pgd.attack(rt, model, x, labels, Start::Given(&delta))
            }
            other => pgd.attack(rt, model, x, labels, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_settings() {
        let eps = 8.0 / 255.0;
        let loss = AttackLoss::Joint { beta: 2.0 };
        assert_eq!(SingleStep::fgsm_rs(eps, loss), SingleStep { noise: eps, step: 1.25 * eps, radius: Some(eps), loss });
        assert_eq!(SingleStep::n_fgsm(eps, loss), SingleStep { noise: 2.0 * eps, step: eps, radius: None, loss });
        assert!(SingleStep::n_fgsm(eps, loss).validate().is_ok());
        assert_eq!(SingleStep::n_fgsm(eps, loss).pgd().eps, 1.0);
    }

    #[test]
    fn refuses_settings_that_mean_nothing() {
        let ok = SingleStep::fgsm_rs(0.03, AttackLoss::Ce);
        assert!(ok.validate().is_ok());
        assert!(SingleStep { noise: -0.1, ..ok }.validate().is_err());
        assert!(SingleStep { noise: f32::INFINITY, ..ok }.validate().is_err());
        assert!(SingleStep { step: f32::NAN, ..ok }.validate().is_err());
        assert!(SingleStep { radius: Some(-1.0), ..ok }.validate().is_err());
        assert!(SingleStep { loss: AttackLoss::Joint { beta: -1.0 }, ..ok }.validate().is_err());
    }
}
