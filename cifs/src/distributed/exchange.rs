//! The per-step all-reduce: every parameter's gradient and every batch norm's running
//! statistics, weighted by this rank's part of the global batch, in one flattened buffer.
//!
//! The buffer makes a round trip through the host (read back, MPI all-reduce, written back):
//! wgpu exposes no device memory to MPI. What that costs is measured ([`Exchange`]'s timings,
//! `docs/DISTRIBUTED.md`).
//!
//! Why the running statistics ride along: a batch norm's running statistics are an exponential
//! average, linear in the batch statistics, so summing `w_r * running_r` over the ranks (with
//! the weights summing to 1) gives every rank the average a model trained on the weighted mean
//! of the ranks' batch statistics would hold. Every rank then holds the same model after every
//! step, so the eval-mode attack of the next step, the evaluation and the checkpoint do not
//! depend on the rank. They cost 2 floats per channel, nothing beside the gradients.

use std::time::Instant;

use engine::{Gradients, Runtime, Tensor};

use crate::distributed::collective::Collective;
use crate::error::{CifsError, Result};
use crate::models::Model;

/// Time spent in the exchanges of an epoch, in seconds, and their count.
#[derive(Debug, Default, Clone, Copy)]
pub struct Exchange {
    pub steps: usize,
    pub values: usize,
    /// Reading the gradients back (includes waiting for the step's GPU work to finish).
    pub read: f64,
    /// Weighting and flattening on the host.
    pub pack: f64,
    /// The all-reduce itself.
    pub reduce: f64,
    /// Writing the sums back to the GPU.
    pub write: f64,
}

impl Exchange {
    /// One line for the log: mean milliseconds per step of each part.
    pub fn summary(&self) -> String {
        let ms = |s: f64| 1e3 * s / self.steps.max(1) as f64;
        format!(
            "all-reduce of {} values per step: {:.1} ms (read back {:.1}, pack {:.1}, MPI {:.1}, write {:.1}); the read-back includes the wait for the step's GPU work",
            self.values,
            ms(self.reduce + self.pack + self.write) + ms(self.read),
            ms(self.read),
            ms(self.pack),
            ms(self.reduce),
            ms(self.write)
        )
    }
}

/// The tensors exchanged each step, in a fixed order, each with its weight: every parameter's
/// gradient (in `Model::params` order) weighted by `grad_weight`, then each batch norm's running
/// mean and variance weighted by this rank's part of the global batch.
fn exchanged<'a>(model: &'a Model, grads: &'a Gradients, grad_weight: f32, part: f32) -> Result<Vec<(&'a Tensor, f32)>> {
    let mut v = Vec::new();
    for p in model.params() {
        v.push((grads.get(p.leaf()).ok_or_else(|| CifsError::NoGradient { name: p.name.clone() })?, grad_weight));
    }
    for bn in model.batchnorms() {
        v.extend([(&bn.running_mean, part), (&bn.running_var, part)]);
    }
    Ok(v)
}

/// Replaces each gradient with `sum over ranks of grad_weight_r * gradient_r` and each running
/// statistic with `sum over ranks of part_r * value_r`. `part`: this rank's images over the
/// global batch; `grad_weight`: `part` for gradients of the share's mean loss, 1 for gradients
/// already scaled to the global batch (synchronised batch norm).
pub fn all_reduce(
    rt: &Runtime,
    coll: &dyn Collective,
    model: &Model,
    grads: &Gradients,
    grad_weight: f32,
    part: f32,
    timing: &mut Exchange,
) -> Result<()> {
    all_reduce_tensors(rt, coll, &exchanged(model, grads, grad_weight, part)?, timing)
}

/// Replaces each tensor with `sum over ranks of weight_r * tensor_r`, through one flattened
/// host buffer and one all-reduce.
pub fn all_reduce_tensors(rt: &Runtime, coll: &dyn Collective, tensors: &[(&Tensor, f32)], timing: &mut Exchange) -> Result<()> {
    let t0 = Instant::now();
    let parts = Tensor::read_all(rt, &tensors.iter().map(|(t, _)| *t).collect::<Vec<_>>())?;
    let t1 = Instant::now();
    let mut flat = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for (part, (_, weight)) in parts.iter().zip(tensors) {
        flat.extend(part.iter().map(|v| v * weight));
    }
    let t2 = Instant::now();
    coll.all_reduce_sum_f32(&mut flat);
    let t3 = Instant::now();
    let mut at = 0;
    for (t, _) in tensors {
        t.write_f32(rt, &flat[at..at + t.numel()])?;
        at += t.numel();
    }
    let t4 = Instant::now();
    timing.steps += 1;
    timing.values = flat.len();
    timing.read += (t1 - t0).as_secs_f64();
    timing.pack += (t2 - t1).as_secs_f64();
    timing.reduce += (t3 - t2).as_secs_f64();
    timing.write += (t4 - t3).as_secs_f64();
    Ok(())
}
