//! The training methods: which [`Objective`] each configured [`Method`] trains with. A new method
//! is its own file implementing the trait, a variant of [`Method`] and one arm here.

use crate::training::config::{Method, Phase, TrainConfig};
use crate::training::objective::{Clean, Objective};
use crate::training::pgd_at::PgdAt;
use crate::training::single_step::SingleStepAt;
use crate::training::trades::TradesAt;

/// The objective epochs of `phase` train `cfg` with: clean epochs the joint loss on the images
/// themselves, adversarial epochs the configured method.
pub fn objective(cfg: &TrainConfig, phase: Phase) -> Box<dyn Objective> {
    match (phase, cfg.method, cfg.single_step()) {
        (Phase::Warmup | Phase::Clean, _, _) => Box::new(Clean { beta: cfg.beta }),
        // fgsm-rs and n-fgsm: the methods with a single-step attack.
        (Phase::Adversarial, _, Some(attack)) => Box::new(SingleStepAt { attack, beta: cfg.beta }),
        (Phase::Adversarial, Method::Trades, None) => Box::new(TradesAt { trades: cfg.trades(), beta: cfg.beta }),
        (Phase::Adversarial, _, None) => Box::new(PgdAt { attack: cfg.attack(), beta: cfg.beta }),
    }
}
