//! An exponential moving average of a model's weights (`engine::ops::optim::ema_update`), kept
//! as a second model of the same configuration and updated on the GPU after every optimizer
//! step, with no readback: one dispatch per parameter and per running statistic.
//!
//! Batch norm: the running mean and variance are averaged with the same decay as the weights
//! (as timm's ModelEmaV2/V3 average every floating-point buffer), and `num_batches_tracked` is
//! copied. The average then describes the activations of weights averaged over the same window
//! as its own weights, and is a complete state dict by itself: saved, loaded and evaluated as any
//! model. (DeepMind's adversarial-training code, Gowal et al. 2020 and Rebuffi et al. 2021,
//! averages the parameters only and evaluates them with the live model's statistics; SWA,
//! Izmailov et al. 2018, recomputes them with a pass over the training data.)
//!
//! The decay can warm up as DeepMind's code does: `min(decay, (1 + t) / (10 + t))` at the t-th
//! update (counted from 0), so that the first updates follow the weights closely instead of
//! holding on to the weights the average started from.

use engine::ops::optim::ema_update;
use engine::{Rng, Runtime, Tensor};

use crate::error::{check_setting, CifsError, Result};
use crate::models::Model;

pub struct WeightAverage {
    /// The averaged model.
    pub model: Model,
    pub decay: f32,
    /// Whether the decay warms up as `min(decay, (1 + t) / (10 + t))`.
    pub warmup: bool,
    /// Updates so far (the `t` of the warm-up); a resumed average continues from its count.
    pub updates: u64,
}

impl WeightAverage {
    /// An average that starts as a copy of `live` (weights and batch-norm state).
    pub fn new(rt: &Runtime, live: &Model, decay: f32, warmup: bool) -> Result<WeightAverage> {
        check_setting((0.0..=1.0).contains(&decay), "ema decay", decay, "the average's decay must be in [0, 1]")?;
        let model = Model::new(rt, live.config, &mut Rng::new(0))?;
        for (a, b) in tensors(&model).into_iter().zip(tensors(live)) {
            a.copy_from(rt, b)?;
        }
        copy_counters(&model, live);
        Ok(WeightAverage { model, decay, warmup, updates: 0 })
    }

    /// The decay of the next update.
    pub fn next_decay(&self) -> f32 {
        if !self.warmup {
            return self.decay;
        }
        let t = self.updates as f64;
        self.decay.min(((1.0 + t) / (10.0 + t)) as f32)
    }

    /// `avg = d avg + (1 - d) live` for every parameter and running statistic, `d` the
    /// [`next_decay`](Self::next_decay); the batch counters are copied.
    pub fn update(&mut self, rt: &Runtime, live: &Model) -> Result<()> {
        if live.config != self.model.config {
            return Err(CifsError::Invalid(format!("the average is of a {:?}, the weights of a {:?}", self.model.config, live.config)));
        }
        let d = self.next_decay();
        for (avg, w) in tensors(&self.model).into_iter().zip(tensors(live)) {
            ema_update(rt, avg, w, d)?;
        }
        copy_counters(&self.model, live);
        self.updates += 1;
        Ok(())
    }
}

/// Every parameter, then every batch norm's running mean and variance.
fn tensors(model: &Model) -> Vec<&Tensor> {
    let mut t: Vec<&Tensor> = model.params().into_iter().map(|p| p.leaf()).collect();
    for bn in model.batchnorms() {
        t.push(&bn.running_mean);
        t.push(&bn.running_var);
    }
    t
}

fn copy_counters(avg: &Model, live: &Model) {
    for (a, b) in avg.batchnorms().into_iter().zip(live.batchnorms()) {
        a.num_batches_tracked.set(b.num_batches_tracked.get());
    }
}
