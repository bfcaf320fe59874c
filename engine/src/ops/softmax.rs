//! Softmax over the last dimension of a (rows, cols) tensor (`shaders/softmax.wgsl`).

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
    pub _p: [u32; 2],
}

fn params(x: &Tensor) -> Result<Params> {
    let s = x.shape();
    if s.len() != 2 || s[1] == 0 {
        return Err(shape_err("softmax", &[s], "x (rows, cols)"));
    }
    Ok(Params { rows: s[0] as u32, cols: s[1] as u32, _p: [0; 2] })
}

/// `y[r, :] = softmax(x[r, :])`.
pub fn softmax(rt: &Runtime, x: &Tensor) -> Result<Tensor> {
    let p = params(x)?;
    let y = Tensor::empty(rt, x.shape())?;
    rt.dispatch(Shader::Softmax, "softmax_fwd", &[x.buffer(), y.buffer()], &p, Work::Items(p.rows as u64))?;
    Ok(Tensor::from_op(y, &[x], || Softmax { x: x.clone() }))
}

/// Softmax over the last dimension; backward reads the output.
struct Softmax {
    x: Tensor,
}

impl Backward for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, rt: &Runtime, out: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, softmax_backward(rt, out, g)?)
    }
}

/// `dx = y (g - sum_j g_j y_j)` from the forward output `y`.
fn softmax_backward(rt: &Runtime, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    let p = params(y)?;
    let dx = Tensor::empty(rt, y.shape())?;
    rt.dispatch(Shader::Softmax, "softmax_bwd", &[y.buffer(), g.buffer(), dx.buffer()], &p, Work::Items(p.rows as u64))?;
    Ok(dx)
}
