//! The Difference-of-Logits-Ratio loss (`shaders/dlr_loss.wgsl`) of Croce and Hein (2020), the
//! loss of APGD-DLR and (targeted) APGD-T, summed over the batch. With the logits of each row
//! sorted, pi_1 >= pi_2 >= ...:
//!   untargeted  `-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)`
//!   targeted    `-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)`
//! logits (N, K) f32 (K >= 3, or >= 4 targeted), labels and targets (N,) u32 -> loss (1,).

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
    pub targeted: u32,
    pub _p: u32,
}

fn params(logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Result<Params> {
    let s = logits.shape();
    let u32_rows = |t: &Tensor| t.shape() == [s[0]] && t.dtype() == DType::U32;
    let min_cols = if targets.is_some() { 4 } else { 3 };
    if s.len() != 2 || s[1] < min_cols || !u32_rows(labels) || targets.is_some_and(|t| !u32_rows(t)) {
        let ts = targets.map(|t| t.shape()).unwrap_or(&[]);
        return Err(shape_err("dlr_loss", &[s, labels.shape(), ts], "logits (N, K >= 3; >= 4 targeted), u32 labels and targets (N,)"));
    }
    Ok(Params { rows: s[0] as u32, cols: s[1] as u32, targeted: targets.is_some() as u32, _p: 0 })
}

/// The DLR loss summed over the rows; targeted towards `targets` when given.
pub fn dlr_loss(rt: &Runtime, logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
    let p = params(logits, labels, targets)?;
    let loss = Tensor::empty(rt, &[1])?;
    let t = targets.unwrap_or(labels);
    // One workgroup sums the whole batch (deterministic: no atomics).
    rt.dispatch(
        Shader::DlrLoss,
        "dlr_loss_fwd",
        &[logits.buffer(), labels.buffer(), t.buffer(), loss.buffer()],
        &p,
        Work::Groups([1, 1, 1]),
    )?;
    Ok(Tensor::from_op(loss, &[logits], || DlrLoss { logits: logits.clone(), labels: labels.clone(), targets: targets.cloned() }))
}

struct DlrLoss {
    logits: Tensor,
    labels: Tensor,
    targets: Option<Tensor>,
}

impl Backward for DlrLoss {
    fn name(&self) -> &'static str {
        "dlr_loss"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.logits]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.logits, dlr_loss_backward(rt, &self.logits, &self.labels, self.targets.as_ref(), g)?)
    }
}

/// `dL/dz_j = g (-(dnum/dz_j) / d + num / d^2 (dd/dz_j))` per row, num and d as in the loss.
fn dlr_loss_backward(rt: &Runtime, logits: &Tensor, labels: &Tensor, targets: Option<&Tensor>, g: &Tensor) -> Result<Tensor> {
    let p = params(logits, labels, targets)?;
    let d = Tensor::empty(rt, logits.shape())?;
    let t = targets.unwrap_or(labels);
    let bufs = [logits.buffer(), labels.buffer(), t.buffer(), g.buffer(), d.buffer()];
    rt.dispatch(Shader::DlrLoss, "dlr_loss_bwd", &bufs, &p, Work::Items(p.rows as u64))?;
    Ok(d)
}
