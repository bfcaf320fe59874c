//! The CIFS block's probe and channel mask (docs/DESIGN.md, section 2).
//!
//! Given a block output z (N, C, H, W):
//!   g = GAP(z);  p = probe(g)  (linear: g W^T + b; nonlinear: softplus_5(g W1^T + b1) W2^T + b2)
//!   pair (a, b): train mode (label, 2nd-largest p), eval mode (top-1, top-2 of p)
//!   r = d(p_a + p_b)/dg in closed form, with g held constant (stop-gradient):
//!       linear     r[n, c] = W[a, c] + W[b, c]
//!       nonlinear  r[n, c] = sum_j (W2[a, j] + W2[b, j]) sigmoid(5 u[n, j]) W1[j, c]
//!   m = s * softmax_c(r) (s the model's mask scale);  output z * m (broadcast over H, W); the probe logits p are returned too.
//! Built from recorded ops, this gives exactly the reference's gradient flow: into z through the
//! product (m constant in z) and through p; into the probe weights through m (second-order terms:
//! sigmoid's derivative appears via the sigmoid op) and through p; never from m into z.
//!
//! The CAS baseline (Bai et al. 2021) is a probe of the same shape whose mask is
//! the raw weight row of one class: `m[n, :] = W[y_n, :]` in training, `W[argmax p_n, :]` in eval,
//! no softmax, not detached (the probe's weights train through the mask too).

use engine::ops::{activation, arith, channel_scale, index, linear, pool, softmax};
use engine::{Rng, Runtime, Tensor};

use super::layers::Linear;
use crate::error::{CifsError, Result};

/// Beta of the nonlinear probe's softplus.
pub const SOFTPLUS_BETA: f32 = 5.0;
/// Hidden width of the nonlinear probe of the ResNets (the WideResNet's is 240).
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

pub enum Kind {
    /// State-dict names `<module>.Probe.1.{weight,bias}`.
    Linear { fc: Linear },
    /// `<module>.Probe.0.fc.*` (C -> hidden, then softplus) and `<module>.Probe.1.*` (hidden -> K).
    Nonlinear { hidden: Linear, out: Linear },
    /// CAS: `<block>.CAS.fc.{weight,bias}` (C -> K); the mask is a raw weight row.
    Cas { fc: Linear },
}

/// A probe and the factor its softmax mask is scaled by (1 for ResNet18-CIFS and the WideResNet,
/// 2 for the reference's ResNet-10).
pub struct Probe {
    pub kind: Kind,
    pub mask_scale: f32,
}

impl Probe {
    /// A linear probe; `module` is the reference's name of the CIFS module (`layer4.1.Probe`,
    /// `Probe_1`), under which its layers are `Probe.1`.
    pub fn linear(rt: &Runtime, module: &str, c: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        Ok(Probe { kind: Kind::Linear { fc: Linear::new(rt, &format!("{module}.Probe.1"), c, classes, rng)? }, mask_scale: 1.0 })
    }

    /// A nonlinear probe with `hidden` units (`module` as for [`Probe::linear`]).
    pub fn nonlinear(rt: &Runtime, module: &str, c: usize, hidden: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        let kind = Kind::Nonlinear {
            hidden: Linear::new(rt, &format!("{module}.Probe.0.fc"), c, hidden, rng)?,
            out: Linear::new(rt, &format!("{module}.Probe.1"), hidden, classes, rng)?,
        };
        Ok(Probe { kind, mask_scale: 1.0 })
    }

    pub fn cas(rt: &Runtime, block: &str, c: usize, classes: usize, rng: &mut Rng) -> Result<Probe> {
        Ok(Probe { kind: Kind::Cas { fc: Linear::new(rt, &format!("{block}.CAS.fc"), c, classes, rng)? }, mask_scale: 1.0 })
    }

    /// The same probe with its softmax mask multiplied by `scale`.
    pub fn scaled(self, scale: f32) -> Probe {
        Probe { mask_scale: scale, ..self }
    }

    pub fn linears(&self) -> Vec<&Linear> {
        match &self.kind {
            Kind::Linear { fc } | Kind::Cas { fc } => vec![fc],
            Kind::Nonlinear { hidden, out } => vec![hidden, out],
        }
    }

    /// Masks the block output `z` (N, C, H, W): the masked map, the probe logits, and what the
    /// analysis looks at. `grad`: whether gradients must reach the probe's parameters (train mode).
    pub fn apply(&self, rt: &Runtime, z: &Tensor, rule: PairRule, grad: bool) -> Result<Masked> {
        let g = pool::global_avg_pool(rt, z)?;
        // The nonlinear probe's hidden pre-activation u, kept for the relevance when no gradient
        // must reach the probe's weights (eval mode and attacks): there hidden(stop_grad(g)) is u
        // with its graph cut, so the relevance need not run the hidden layer a second time.
        let mut hidden_u = None;
        let logits = match &self.kind {
            Kind::Linear { fc } | Kind::Cas { fc } => fc.forward(rt, &g, grad)?,
            Kind::Nonlinear { hidden, out } => {
                let u = hidden.forward(rt, &g, grad)?;
                let s = activation::softplus(rt, &u, SOFTPLUS_BETA)?;
                hidden_u = (!grad).then(|| u.detach());
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
        let mask = match &self.kind {
            // CAS: the raw weight row of the label (train) or the predicted class (eval).
            Kind::Cas { fc } => index::gather_rows(rt, fc.weight.get(grad), &a)?,
            _ => {
                let m = softmax::softmax(rt, &self.relevance(rt, &g.detach(), hidden_u, &a, &b, grad)?)?;
                if self.mask_scale == 1.0 {
                    m
                } else {
                    arith::scale(rt, &m, self.mask_scale)?
                }
            }
        };
        Ok(Masked { out: channel_scale::channel_scale(rt, z, &mask)?, logits, pooled: g, mask })
    }

    /// The closed-form relevance r (N, C) of the class pair, from the stop-gradient features `g`
    /// (nonlinear probe: and `u`, the hidden layer's value at `g` when already computed and no
    /// gradient must reach the hidden weights).
    fn relevance(&self, rt: &Runtime, g: &Tensor, u: Option<Tensor>, a: &Tensor, b: &Tensor, grad: bool) -> Result<Tensor> {
        let pair_rows =
            |w: &Tensor| -> Result<Tensor> { Ok(arith::add(rt, &index::gather_rows(rt, w, a)?, &index::gather_rows(rt, w, b)?)?) };
        match &self.kind {
            Kind::Linear { fc } | Kind::Cas { fc } => pair_rows(fc.weight.get(grad)),
            Kind::Nonlinear { hidden, out } => {
                let u = match u {
                    Some(u) => u,
                    None => hidden.forward(rt, g, grad)?,
                };
                let slope = activation::sigmoid(rt, &arith::scale(rt, &u, SOFTPLUS_BETA)?)?;
                let q = arith::mul(rt, &pair_rows(out.weight.get(grad))?, &slope)?;
                Ok(linear::matmul(rt, &q, hidden.weight.get(grad))?)
            }
        }
    }
}
