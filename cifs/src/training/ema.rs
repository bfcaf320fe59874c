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

use std::path::Path;

use engine::ops::optim::ema_update;
use engine::{Rng, Runtime, Tensor};

use crate::checkpoint::save_model;
use crate::checkpoint::state::{self, Entry};
use crate::error::{check_setting, io, CifsError, Result};
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

impl WeightAverage {
    /// Writes the averaged model as a model checkpoint (loadable by `eval`, under the model's
    /// names), atomically, with its decay, its update count and the epochs completed.
    pub fn save(&self, rt: &Runtime, path: &Path, epoch: usize) -> Result<()> {
        let meta = [(DECAY, self.decay.to_string()), (UPDATES, self.updates.to_string()), ("epoch", epoch.to_string())];
        save_model(rt, &self.model, path, &meta)
    }

    /// The average's tensors as a training checkpoint stores them beside the model's
    /// (`ema.<name>`), with its update count and decay for the checkpoint's metadata.
    pub fn checkpoint_part(&self, rt: &Runtime) -> Result<(Vec<Entry>, MetadataPairs)> {
        let (floats, _) = state::state_dict(rt, &self.model)?;
        let entries = floats.into_iter().map(|e| Entry { name: format!("{PREFIX}{}", e.name), ..e }).collect();
        Ok((entries, [(UPDATES, self.updates.to_string()), (DECAY, self.decay.to_string())]))
    }

    /// Restores the average stored in a training checkpoint (`path`) by
    /// [`checkpoint_part`](Self::checkpoint_part), with its update count; its batch counters are
    /// `live`'s (restored from the same checkpoint), as every update leaves them. Returns false,
    /// changing nothing, for a checkpoint without one.
    pub fn restore(&mut self, rt: &Runtime, live: &Model, path: &Path) -> Result<bool> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        let p = path.display().to_string();
        let Some(updates) = state::metadata(&bytes, &p)?.remove(UPDATES) else { return Ok(false) };
        self.updates = updates.parse().map_err(|_| CifsError::NotTrainingCheckpoint { path: p.clone(), key: UPDATES })?;
        state::load_state_dict(rt, &self.model, &bytes, PREFIX, &p)?;
        copy_counters(&self.model, live);
        Ok(true)
    }
}

/// Metadata keys and values a training checkpoint stores for the average.
pub type MetadataPairs = [(&'static str, String); 2];

/// The names of the average's tensors in a training checkpoint start with this.
const PREFIX: &str = "ema.";
/// The metadata keys of the average's update count and decay.
const UPDATES: &str = "ema_updates";
const DECAY: &str = "ema_decay";

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
