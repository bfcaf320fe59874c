//! The CIFS block's probe and channel mask (DESIGN §4).
//!
//! Given a block output z (N, C, H, W):
//!   g = GAP(z);  p = probe(g)  (linear: g W^T + b; nonlinear: softplus_5(g W1^T + b1) W2^T + b2)
//!   pair (a, b): train mode (label, 2nd-largest p), eval mode (top-1, top-2 of p)
//!   r = d(p_a + p_b)/dg in closed form, with g held constant (stop-gradient):
//!       linear     r[n, c] = W[a, c] + W[b, c]
//!       nonlinear  r[n, c] = sum_j (W2[a, j] + W2[b, j]) sigmoid(5 u[n, j]) W1[j, c]
//!   m = softmax_c(r);  output z * m (broadcast over H, W); the probe logits p are returned too.
//! Built from recorded ops, this gives exactly the reference's gradient flow: into z through the
//! product (m constant in z) and through p; into the probe weights through m (second-order terms:
//! sigmoid's derivative appears via the sigmoid op) and through p; never from m into z.
//!
//! The CAS baseline (Bai et al. 2021, DESIGN-SETUPS §5) is a probe of the same shape whose mask is
//! the raw weight row of one class: `m[n, :] = W[y_n, :]` in training, `W[argmax p_n, :]` in eval,
//! no softmax, not detached (the probe's weights train through the mask too).

use engine::ops::{activation, arith, index, linear, pool, softmax, channel_scale};
use engine::{Rng, Runtime, Tensor};

use crate::error::{CifsError, Result};
use crate::layers::Linear;

/// Beta of the nonlinear probe's softplus.
pub const SOFTPLUS_BETA: f32 = 5.0;
/// Hidden width of the nonlinear probe.
pub const PROBE_HIDDEN: usize = 128;

/// How the class pair (a, b) of each sample is chosen.
#[derive(Clone, Copy)]
pub enum PairRule<'a> {
    /// a = the true label, b = the 2nd-largest probe logit (may equal the label).
    Train(&'a Tensor),
    /// a = top-1, b = top-2 probe logit (also while attacking).
    Eval,
}

/// What a CIFS block's probe makes of its input.
pub struct Masked {
    /// z * m (N, C, H, W).
    pub out: Tensor,
    /// The probe logits (N, K).
    pub logits: Tensor,
    /// GAP(z) (N, C): the block's output before the mask, spatially averaged.
    pub pooled: Tensor,
    /// The mask m (N, C).
    pub mask: Tensor,
}

pub enum Probe {
    /// State-dict names `<block>.Probe.Probe.1.{weight,bias}`.
    Linear { fc: Linear },
    /// `<block>.Probe.Probe.0.fc.*` (C -> 128, then softplus) and `<block>.Probe.Probe.1.*` (128 -> K).
    Nonlinear { hidden: Linear, out: Linear },
    /// CAS: `<block>.CAS.fc.{weight,bias}` (C -> K); the mask is a raw weight row.
    Cas { fc: Linear },
}

impl Probe {
    pub fn linear(rt: &Runtime, block: &str, c: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        Ok(Probe::Linear { fc: Linear::new(rt, &format!("{block}.Probe.Probe.1"), c, classes, rng)? })
    }

    pub fn nonlinear(rt: &Runtime, block: &str, c: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        Ok(Probe::Nonlinear {
            hidden: Linear::new(rt, &format!("{block}.Probe.Probe.0.fc"), c, PROBE_HIDDEN, rng)?,
            out: Linear::new(rt, &format!("{block}.Probe.Probe.1"), PROBE_HIDDEN, classes, rng)?,
        })
    }

    pub fn cas(rt: &Runtime, block: &str, c: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        Ok(Probe::Cas { fc: Linear::new(rt, &format!("{block}.CAS.fc"), c, classes, rng)? })
    }

    pub fn linears(&self) -> Vec<&Linear> {
        match self {
            Probe::Linear { fc } | Probe::Cas { fc } => vec![fc],
            Probe::Nonlinear { hidden, out } => vec![hidden, out],
        }
    }

    /// Masks the block output `z` (N, C, H, W): the masked map, the probe logits, and what the
    /// analysis looks at. `grad`: whether gradients must reach the probe's parameters (train mode).
    pub fn apply(&self, rt: &Runtime, z: &Tensor, rule: PairRule, grad: bool) -> Result<Masked> {
        let g = pool::global_avg_pool(rt, z)?;
        let logits = match self {
            Probe::Linear { fc } | Probe::Cas { fc } => fc.forward(rt, &g, grad)?,
            Probe::Nonlinear { hidden, out } => {
                let s = activation::softplus(rt, &hidden.forward(rt, &g, grad)?, SOFTPLUS_BETA)?;
                out.forward(rt, &s, grad)?
            }
        };
        let (a, b) = match rule {
            PairRule::Train(labels) => {
                if labels.shape() != [z.shape()[0]] {
                    return Err(CifsError::LabelShape { labels: labels.shape().to_vec(), batch: z.shape()[0] });
                }
                (labels.clone(), index::top2(rt, &logits)?.1)
            }
            PairRule::Eval => index::top2(rt, &logits)?,
        };
        let mask = match self {
            // CAS: the raw weight row of the label (train) or the predicted class (eval).
            Probe::Cas { fc } => index::gather_rows(rt, fc.weight.get(grad), &a)?,
            _ => softmax::softmax(rt, &self.relevance(rt, &g.detach(), &a, &b, grad)?)?,
        };
        Ok(Masked { out: channel_scale::channel_scale(rt, z, &mask)?, logits, pooled: g, mask })
    }

    /// The closed-form relevance r (N, C) of the class pair, from the stop-gradient features `g`.
    fn relevance(&self, rt: &Runtime, g: &Tensor, a: &Tensor, b: &Tensor, grad: bool) -> Result<Tensor> {
        let pair_rows = |w: &Tensor| -> Result<Tensor> { Ok(arith::add(rt, &index::gather_rows(rt, w, a)?, &index::gather_rows(rt, w, b)?)?) };
        match self {
            Probe::Linear { fc } | Probe::Cas { fc } => pair_rows(fc.weight.get(grad)),
            Probe::Nonlinear { hidden, out } => {
                let u = hidden.forward(rt, g, grad)?;
                let slope = activation::sigmoid(rt, &arith::scale(rt, &u, SOFTPLUS_BETA)?)?;
                let q = arith::mul(rt, &pair_rows(out.weight.get(grad))?, &slope)?;
                Ok(linear::matmul(rt, &q, hidden.weight.get(grad))?)
            }
        }
    }
}
