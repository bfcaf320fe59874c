//! Losses (docs/DESIGN.md, section 4). Joint loss of ResNet18-CIFS:
//! `L = 3 / (beta + 1) * (CE(final) + beta / K * sum_k CE(p_k))`, K probes; plain ResNet: CE(final).

use engine::ops::{arith, cross_entropy::cross_entropy_weighted};
use engine::{Runtime, Tensor};

use crate::error::Result;
use crate::models::Output;

/// The weights go into the cross-entropy kernels themselves (`3/(beta+1)` on the final logits,
/// `3 beta / ((beta+1) K)` on each probe), so the sum costs only its additions.
pub fn joint_loss(rt: &Runtime, out: &Output, labels: &Tensor, beta: f32) -> Result<Tensor> {
    if out.probes.is_empty() {
        return Ok(cross_entropy_weighted(rt, &out.logits, labels, 1.0)?);
    }
    let k = out.probes.len() as f32;
    let mut total = cross_entropy_weighted(rt, &out.logits, labels, 3.0 / (beta + 1.0))?;
    for p in &out.probes {
        total = arith::add(rt, &total, &cross_entropy_weighted(rt, p, labels, 3.0 * beta / ((beta + 1.0) * k))?)?;
    }
    Ok(total)
}
