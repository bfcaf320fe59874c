//! Column sums (`shaders/reduce.wgsl`): bias gradients and the fold of split-K partials.

use bytemuck::{Pod, Zeroable};

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

/// `out[c] = sum_r x[r, c]` for `x` viewed as (rows, out.numel()).
pub fn sum_rows_into(rt: &Runtime, x: &Tensor, out: &Tensor) -> Result<()> {
    let cols = out.numel();
    if cols == 0 || !x.numel().is_multiple_of(cols) {
        return Err(shape_err("sum_rows", &[x.shape(), out.shape()], "x (rows, cols...) into out (cols...)"));
    }
    let p = Params { rows: (x.numel() / cols) as u32, cols: cols as u32, _p: [0; 2] };
    rt.dispatch(Shader::Reduce, "sum_rows", &[x.buffer(), out.buffer()], &p, Work::Items(cols as u64))
}

/// Sum over the first dimension: (rows, cols...) -> (cols...). No gradient.
pub fn sum_rows(rt: &Runtime, x: &Tensor) -> Result<Tensor> {
    if x.shape().is_empty() {
        return Err(shape_err("sum_rows", &[x.shape()], "x with at least one dimension"));
    }
    let out = Tensor::empty(rt, &x.shape()[1..])?;
    sum_rows_into(rt, x, &out)?;
    Ok(out)
}
