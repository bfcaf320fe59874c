//! Mean softmax cross-entropy (`shaders/cross_entropy.wgsl`), as `F.cross_entropy` with the
//! default mean reduction, optionally times a constant weight (so a weighted sum of losses costs
//! no scaling dispatches). logits (N, K) f32, labels (N,) u32 -> loss (1,).

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub rows: u32,
    pub cols: u32,
    pub weight: f32,
    pub _p: u32,
}

/// `mean_r (logsumexp(logits[r]) - logits[r, labels[r]])`. Labels must be < K (not checked on
/// the GPU: callers validate labels when they load them).
pub fn cross_entropy(rt: &Runtime, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy_weighted(rt, logits, labels, 1.0)
}

/// `weight` times [`cross_entropy`].
pub fn cross_entropy_weighted(rt: &Runtime, logits: &Tensor, labels: &Tensor, weight: f32) -> Result<Tensor> {
    let s = logits.shape();
    if s.len() != 2 || labels.shape() != [s[0]] || labels.dtype() != DType::U32 {
        return Err(shape_err("cross_entropy", &[s, labels.shape()], "logits (N, K) and u32 labels (N,)"));
    }
    let p = Params { rows: s[0] as u32, cols: s[1] as u32, weight, _p: 0 };
    let probs = Tensor::empty(rt, s)?;
    let loss = Tensor::empty(rt, &[1])?;
    let bufs = [logits.buffer(), labels.buffer(), probs.buffer(), loss.buffer()];
    // One workgroup sums the whole batch (deterministic: no atomics).
    rt.dispatch(Shader::CrossEntropy, "cross_entropy_fwd", &bufs, &p, Work::Groups([1, 1, 1]))?;
    Ok(Tensor::from_op(loss, &[logits], || CrossEntropy { logits: logits.clone(), labels: labels.clone(), probs, weight }))
}

struct CrossEntropy {
    logits: Tensor,
    labels: Tensor,
    probs: Tensor,
    weight: f32,
}

impl Backward for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.logits]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.logits, cross_entropy_backward(rt, &self.probs, &self.labels, self.weight, g)?)
    }
}

/// `dlogits = g weight (softmax(logits) - onehot(labels)) / N`, from the saved probabilities.
fn cross_entropy_backward(rt: &Runtime, probs: &Tensor, labels: &Tensor, weight: f32, g: &Tensor) -> Result<Tensor> {
    let s = probs.shape();
    let p = Params { rows: s[0] as u32, cols: s[1] as u32, weight, _p: 0 };
    let d = Tensor::empty(rt, s)?;
    let bufs = [probs.buffer(), labels.buffer(), g.buffer(), d.buffer()];
    rt.dispatch(Shader::CrossEntropy, "cross_entropy_bwd", &bufs, &p, Work::Items((s[0] * s[1]) as u64))?;
    Ok(d)
}
