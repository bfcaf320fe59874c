//! The Carlini-Wagner margin loss (`shaders/margin_loss.wgsl`), summed over the batch:
//! `-sum_r max(logit[r, y] - max_{j != y} logit[r, j] + confidence, 0)`.
//! logits (N, K) f32, labels (N,) u32 -> loss (1,).

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
    pub confidence: f32,
    pub _p: u32,
}

fn params(logits: &Tensor, labels: &Tensor, confidence: f32) -> Result<Params> {
    let s = logits.shape();
    if s.len() != 2 || s[1] < 2 || labels.shape() != [s[0]] || labels.dtype() != DType::U32 {
        return Err(shape_err("margin_loss", &[s, labels.shape()], "logits (N, K >= 2) and u32 labels (N,)"));
    }
    Ok(Params { rows: s[0] as u32, cols: s[1] as u32, confidence, _p: 0 })
}

pub fn margin_loss(rt: &Runtime, logits: &Tensor, labels: &Tensor, confidence: f32) -> Result<Tensor> {
    let p = params(logits, labels, confidence)?;
    let loss = Tensor::empty(rt, &[1])?;
    // One workgroup sums the whole batch (deterministic: no atomics).
    rt.dispatch(Shader::MarginLoss, "margin_loss_fwd", &[logits.buffer(), labels.buffer(), loss.buffer()], &p, Work::Groups([1, 1, 1]))?;
    Ok(Tensor::from_op(loss, &[logits], || MarginLoss { logits: logits.clone(), labels: labels.clone(), confidence }))
}

struct MarginLoss {
    logits: Tensor,
    labels: Tensor,
    confidence: f32,
}

impl Backward for MarginLoss {
    fn name(&self) -> &'static str {
        "margin_loss"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.logits]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.logits, margin_loss_backward(rt, &self.logits, &self.labels, self.confidence, g)?)
    }
}

/// `-g` at the true class and `+g` at the best other class of every row whose margin term is
/// positive; 0 elsewhere.
fn margin_loss_backward(rt: &Runtime, logits: &Tensor, labels: &Tensor, confidence: f32, g: &Tensor) -> Result<Tensor> {
    let p = params(logits, labels, confidence)?;
    let d = Tensor::empty(rt, logits.shape())?;
    let bufs = [logits.buffer(), labels.buffer(), g.buffer(), d.buffer()];
    rt.dispatch(Shader::MarginLoss, "margin_loss_bwd", &bufs, &p, Work::Items(p.rows as u64))?;
    Ok(d)
}
