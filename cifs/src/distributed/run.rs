//! What the training run (`training::run::run_on`) asks of the ranks beside the steps: settings that can
//! be split, the check on resume of the number of ranks `config.json` records, agreement of every
//! rank on settings and starting state, and the epoch's training counts summed.

use std::path::Path;

use engine::{Runtime, Tensor};

use super::shard::check_batches;
use super::{fingerprint, Collective, DistributedError, Parallel};
use crate::error::Result;
use crate::models::Model;
use crate::training::resume::RunRecord;
use crate::training::run::{Adversary, Method, TrainConfig};

/// Refuses, before any work, what cannot run on these ranks.
pub fn check_settings(cfg: &TrainConfig, train_len: usize, coll: &dyn Collective) -> Result<()> {
    if coll.size() > 1 && cfg.method == Method::Trades && cfg.adversary == Adversary::Pgd {
        return Err(DistributedError::Unsupported("TRADES (--method trades)").into());
    }
    Ok(check_batches(train_len, cfg.batch_size, coll.size())?)
}

/// On resume: the run recorded in `old` (read from `out`'s `config.json`) must have been trained
/// with as many ranks as this launch has and the same `--sync-bn`: the per-rank batch-norm
/// statistics make the result depend on both.
pub fn check_resume(old: &RunRecord, out: &Path, par: &Parallel) -> Result<()> {
    let out = out.display().to_string();
    if old.ranks != par.coll.size() {
        return Err(DistributedError::RanksDiffer { out, trained: old.ranks, now: par.coll.size() }.into());
    }
    if old.sync_bn != par.sync_bn {
        let word = |on: bool| if on { "with" } else { "without" };
        return Err(DistributedError::SyncBnDiffers { out, trained: word(old.sync_bn), now: word(par.sync_bn) }.into());
    }
    Ok(())
}

/// Every rank must start from rank 0's settings, epoch and model (weights, optimizer state,
/// running statistics); a rank launched with other arguments, or that could not see the
/// checkpoint rank 0 resumed from, ends the run here instead of training something else.
pub fn agree_on_start(
    rt: &Runtime,
    coll: &dyn Collective,
    config_json: &str,
    epoch: usize,
    model: &Model,
    velocity: &[Tensor],
) -> Result<()> {
    if coll.size() == 1 {
        return Ok(());
    }
    coll.agree("settings", "launch every rank with the same arguments", fingerprint(config_json.bytes()))?;
    let mut tensors: Vec<&Tensor> = model.params().into_iter().map(|p| p.leaf()).collect();
    tensors.extend(velocity);
    for bn in model.batchnorms() {
        tensors.extend([&bn.running_mean, &bn.running_var]);
    }
    let values = Tensor::read_all(rt, &tensors)?;
    let bytes = (epoch as u64).to_le_bytes().into_iter().chain(values.iter().flatten().flat_map(|v| v.to_le_bytes()));
    coll.agree("starting weights or epoch", "--out must be on a filesystem every rank sees, with the same checkpoint", fingerprint(bytes))?;
    Ok(())
}

/// Sums the epoch's training loss (times images), correct answers and images over the ranks.
pub fn reduce_epoch(coll: &dyn Collective, loss_sum: &mut f64, correct: &mut usize, seen: &mut usize) {
    if coll.size() == 1 {
        return;
    }
    let mut loss = [*loss_sum as f32];
    coll.all_reduce_sum_f32(&mut loss);
    let mut counts = [*correct as u64, *seen as u64];
    coll.all_reduce_sum_u64(&mut counts);
    (*loss_sum, *correct, *seen) = (loss[0] as f64, counts[0] as usize, counts[1] as usize);
}
