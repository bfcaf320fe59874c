//! What a training run asks of the ranks beside the steps: agreement of every rank on the
//! settings and the starting state, and the epoch's training counts summed.

use engine::{Runtime, Tensor};

use crate::distributed::collective::{fingerprint, Collective};
use crate::error::Result;
use crate::models::Model;

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
