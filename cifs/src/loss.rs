//! Losses (DESIGN §5). Joint loss of ResNet18-CIFS:
//! `L = 3 / (beta + 1) * (CE(final) + beta / K * sum_k CE(p_k))`, K probes; plain ResNet: CE(final).

use engine::ops::{arith, cross_entropy::cross_entropy};
use engine::{Runtime, Tensor};

use crate::error::Result;
use crate::resnet::Output;

pub fn joint_loss(rt: &Runtime, out: &Output, labels: &Tensor, beta: f32) -> Result<Tensor> {
    let ce = cross_entropy(rt, &out.logits, labels)?;
    if out.probes.is_empty() {
        return Ok(ce);
    }
    let mut probe_sum = cross_entropy(rt, &out.probes[0], labels)?;
    for p in &out.probes[1..] {
        probe_sum = arith::add(rt, &probe_sum, &cross_entropy(rt, p, labels)?)?;
    }
    let k = out.probes.len() as f32;
    let total = arith::add(rt, &ce, &arith::scale(rt, &probe_sum, beta / k)?)?;
    Ok(arith::scale(rt, &total, 3.0 / (beta + 1.0))?)
}
