//! SGD with momentum and weight decay over a model's parameters (PyTorch semantics;
//! docs/DESIGN.md, section 4).

use engine::{Gradients, Runtime, Tensor};

use crate::error::{CifsError, Result};
use crate::models::Model;

pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// One momentum buffer per parameter, in `Model::params` order; zero before the first step.
    pub velocity: Vec<Tensor>,
}

impl Sgd {
    pub fn new(rt: &Runtime, model: &Model, lr: f32, momentum: f32, weight_decay: f32) -> Result<Sgd> {
        let velocity = model.params().iter().map(|p| Tensor::zeros(rt, p.leaf().shape())).collect::<engine::Result<_>>()?;
        Ok(Sgd { lr, momentum, weight_decay, velocity })
    }

    /// Updates every parameter in place from `grads` (all must be present).
    pub fn step(&self, rt: &Runtime, model: &Model, grads: &Gradients) -> Result<()> {
        for (p, v) in model.params().into_iter().zip(&self.velocity) {
            let g = grads.get(p.leaf()).ok_or_else(|| CifsError::NoGradient { name: p.name.clone() })?;
            engine::ops::optim::sgd_step(rt, p.leaf(), v, g, self.lr, self.momentum, self.weight_decay)?;
        }
        Ok(())
    }
}
