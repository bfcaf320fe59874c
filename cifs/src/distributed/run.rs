//! What the training run (`training::run::run_on`) asks of the ranks beside the steps: settings that can
//! be split, the number of ranks in `config.json` and its check on resume, agreement of every
//! rank on settings and starting state, and the epoch's training counts summed.

use std::path::Path;

use engine::{Runtime, Tensor};

use super::shard::check_batches;
use super::{fingerprint, Collective, DistributedError, Parallel};
use crate::error::{CifsError, Result};
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

/// `config.json`: the run's record (its settings and the history of its resumes), the number
/// of ranks that trained it, and `sync_bn` when on.
pub fn config_json(record: &RunRecord, par: &Parallel) -> String {
    let mut v = serde_json::to_value(record).expect("the run record serialises");
    v["ranks"] = par.coll.size().into();
    if par.sync_bn {
        v["sync_bn"] = true.into();
    }
    serde_json::to_string_pretty(&v).expect("the run record serialises")
}

/// On resume: the run in `config` must have been trained with as many ranks as this launch has
/// (a `config.json` without the field is from a one-process run) and the same `--sync-bn`. The
/// per-rank batch-norm statistics make the result depend on both.
pub fn check_resume(config: &Path, par: &Parallel) -> Result<()> {
    let coll = par.coll;
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(()); // no record of the ranks: nothing to compare
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CifsError::Invalid(format!("{}: not a run's config ({e})", config.display())))?;
    let trained = v.get("ranks").and_then(|r| r.as_u64()).unwrap_or(1) as usize;
    if trained != coll.size() {
        let out = config.parent().unwrap_or(config).display().to_string();
        return Err(DistributedError::RanksDiffer { out, trained, now: coll.size() }.into());
    }
    let synced = v.get("sync_bn").and_then(|r| r.as_bool()).unwrap_or(false);
    if synced != par.sync_bn {
        let out = config.parent().unwrap_or(config).display().to_string();
        let word = |on: bool| if on { "with" } else { "without" };
        return Err(DistributedError::SyncBnDiffers { out, trained: word(synced), now: word(par.sync_bn) }.into());
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
