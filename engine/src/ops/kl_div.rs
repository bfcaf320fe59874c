//! KL divergence between row softmaxes (`shaders/kl_div.wgsl`), TRADES's robustness term:
//! `(1/N) sum_r KL(softmax(a_r) || softmax(b_r))`, PyTorch's `KLDivLoss(reduction='batchmean')`
//! of `log_softmax(b)` against `softmax(a)`. a, b (N, K) f32 -> loss (1,).

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub rows: u32,
    pub cols: u32,
    pub want: u32,
    pub _p: u32,
}

fn params(a: &Tensor, b: &Tensor, want: u32) -> Result<Params> {
    let s = a.shape();
    if s.len() != 2 || b.shape() != s {
        return Err(shape_err("kl_div", &[s, b.shape()], "two logit matrices of one shape (N, K)"));
    }
    Ok(Params { rows: s[0] as u32, cols: s[1] as u32, want, _p: 0 })
}

/// `(1/N) sum_r KL(softmax(a_r) || softmax(b_r))`.
pub fn kl_div(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let p = params(a, b, 0)?;
    let loss = Tensor::empty(rt, &[1])?;
    // One workgroup sums the whole batch (deterministic: no atomics).
    rt.dispatch(Shader::KlDiv, "kl_div_fwd", &[a.buffer(), b.buffer(), loss.buffer()], &p, Work::Groups([1, 1, 1]))?;
    Ok(Tensor::from_op(loss, &[a, b], || KlDiv { a: a.clone(), b: b.clone() }))
}

/// KL(softmax(a) || softmax(b)), batch mean.
struct KlDiv {
    a: Tensor,
    b: Tensor,
}

impl Backward for KlDiv {
    fn name(&self) -> &'static str {
        "kl_div"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        kl_div_backward(rt, &self.a, &self.b, g, sink)
    }
}

/// With p = softmax(a), q = softmax(b), d = log p - log q: `da = g/N p (d - sum_j p_j d_j)` and
/// `db = g/N (q - p)`, each only if wanted, in one dispatch.
fn kl_div_backward(rt: &Runtime, a: &Tensor, b: &Tensor, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    let (wa, wb) = (grads.wants(a), grads.wants(b));
    let p = params(a, b, wa as u32 | (wb as u32) << 1)?;
    let stand_in = || Tensor::empty(rt, &[1]);
    let da = if wa { Tensor::empty(rt, a.shape())? } else { stand_in()? };
    let db = if wb { Tensor::empty(rt, b.shape())? } else { stand_in()? };
    let bufs = [a.buffer(), b.buffer(), g.buffer(), da.buffer(), db.buffer()];
    rt.dispatch(Shader::KlDiv, "kl_div_bwd", &bufs, &p, Work::Items(p.rows as u64))?;
    if wa {
        grads.add(a, da)?;
    }
    if wb {
        grads.add(b, db)?;
    }
    Ok(())
}
