//! One data-parallel training step on this rank's share of a global batch: the step of
//! `training::step::train_step` (attack in eval mode, train-mode forward, joint loss, backward, SGD) with
//! the all-reduce between the backward and the optimizer step, and the random start of the
//! one-process run.

use datasets::loader::Batch;
use engine::ops::index::gather_rows;
use engine::ops::random::uniform;
use engine::{autodiff, Rng, Runtime, Tensor};

use super::exchange::{all_reduce, Exchange};
use super::{shard, Collective, Parallel};
use crate::attacks::pgd::{Pgd, Start};
use crate::error::Result;
use crate::loss::joint_loss;
use crate::models::{Mode, Model, Output};
use crate::training::optim::Sgd;
use crate::training::step::StepResult;

/// Where this rank's share sits in the global batch.
#[derive(Debug, Clone)]
pub struct Share {
    /// Images of the global batch.
    pub global: usize,
    /// This rank's images: `first..first + len` of the global batch.
    pub first: usize,
}

/// This rank's share of a global batch, and where it sits (one process: the whole batch).
pub fn share_of(batch: Batch, coll: &dyn Collective) -> (Batch, Share) {
    let mine = shard::share(batch.len(), coll.rank(), coll.size());
    let share = Share { global: batch.len(), first: mine.start };
    match coll.size() {
        1 => (batch, share),
        _ => (shard::take_share(batch, mine), share),
    }
}

/// The PGD random start of the share's images: the one-process run draws U(-eps, eps) for the
/// whole batch from one seed (value i a function of the seed and i alone); here the whole
/// batch's start is generated on the GPU and the share's rows are kept, so each image starts
/// where it would in one process.
fn random_start(rt: &Runtime, x: &Tensor, share: &Share, eps: f32, seed: u64) -> Result<Tensor> {
    let s = x.shape();
    let per = s[1..].iter().product::<usize>();
    let whole = uniform(rt, &[share.global, per], -eps, eps, seed)?;
    let rows: Vec<u32> = (share.first..share.first + s[0]).map(|i| i as u32).collect();
    let idx = Tensor::from_u32(rt, &[rows.len()], &rows)?;
    Ok(gather_rows(rt, &whole, &idx)?.reshape(s)?)
}

/// One step on the share `x` (n, C, H, W) with labels (n,). `attack` and `rng` as in
/// `training::step::train_step`: the seed of the random start is drawn from `rng` exactly when the
/// one-process step draws it.
///
/// Per-rank batch norm: each rank's gradient is that of its share's mean loss, and the ranks'
/// gradients are averaged weighted by share size. With `sync_bn` the batch norms of the
/// training forward and backward sum over the ranks, each rank's backward is seeded with its
/// share of the global batch (so the summed sums are those of the global mean loss), and the
/// gradients are summed: the gradient of one process at the global batch.
#[allow(clippy::too_many_arguments)]
pub fn train_step_share(
    rt: &Runtime,
    par: &Parallel,
    model: &Model,
    sgd: &Sgd,
    x: &Tensor,
    labels: &Tensor,
    share: &Share,
    attack: Option<&Pgd>,
    beta: f32,
    rng: &mut Rng,
    timing: &mut Exchange,
) -> Result<StepResult> {
    let (output, loss, grads, grad_weight, part) = rt.weights_frozen(|| -> Result<_> {
        let input = match attack {
            Some(pgd) => {
                let start = random_start(rt, x, share, pgd.eps, rng.next_u64())?;
                pgd.attack(rt, model, x, labels, Start::Given(&start))?
            }
            None => x.clone(),
        };
        let part = x.shape()[0] as f32 / share.global as f32;
        if !par.sync_bn {
            let output = model.forward(rt, &input, Some(labels), Mode::Train)?;
            let loss = joint_loss(rt, &output, labels, beta)?;
            let grads = autodiff::backward(rt, &loss)?;
            return Ok((output, loss, grads, part, part));
        }
        rt.with_replica_sum(par.coll.replica_sum(), || {
            let output = model.forward(rt, &input, Some(labels), Mode::Train)?;
            let loss = joint_loss(rt, &output, labels, beta)?;
            let grads = autodiff::backward_with(rt, &loss, Tensor::from_f32(rt, &[1], &[part])?)?;
            Ok((output, loss, grads, 1.0, part))
        })
    })?;
    all_reduce(rt, par.coll, model, &grads, grad_weight, part, timing)?;
    sgd.step(rt, model, &grads)?;
    Ok(StepResult {
        loss: loss.detach(),
        output: Output { logits: output.logits.detach(), probes: output.probes.iter().map(|p| p.detach()).collect() },
    })
}
