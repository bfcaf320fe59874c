//! Column sums (`shaders/reduce.wgsl`): bias gradients and the fold of split-K partials.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub _p: [u32; 2],
}

/// `out[c] = sum_r x[r, c]` for `x` viewed as (rows, out.numel()).
pub fn sum_rows_into(gpu: &Gpu, x: &Tensor, out: &Tensor) -> Result<()> {
    let cols = out.numel();
    if cols == 0 || !x.numel().is_multiple_of(cols) {
        return Err(shape_err("sum_rows", format!("{:?} into {:?}", x.shape(), out.shape())));
    }
    let p = Params { rows: (x.numel() / cols) as u32, cols: cols as u32, _p: [0; 2] };
    gpu.dispatch(Shader::Reduce, "sum_rows", &[], &[x.buffer(), out.buffer()], &p, grid_1d(cols as u64, WG_1D));
    Ok(())
}

/// Sum over the first dimension: (rows, cols...) -> (cols...). No gradient.
pub fn sum_rows(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    if x.shape().is_empty() {
        return Err(shape_err("sum_rows", "scalar input"));
    }
    let out = Tensor::empty(gpu, &x.shape()[1..])?;
    sum_rows_into(gpu, x, &out)?;
    Ok(out)
}
