//! Element-wise arithmetic (`shaders/arith.wgsl`): fill, add, scale, clamp, row-bias add.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub alpha: f32,
    pub beta: f32,
    pub cols: u32,
}

fn params(n: usize, alpha: f32, beta: f32, cols: usize) -> Params {
    Params { n: n as u32, alpha, beta, cols: cols as u32 }
}

/// Overwrites every element of `t` with `value` (no gradient: a fill makes a constant).
pub fn fill_into(gpu: &Gpu, t: &Tensor, value: f32) {
    let n = t.numel();
    gpu.dispatch(Shader::Arith, "fill", &[], &[t.buffer()], &params(n, value, 0.0, 0), grid_1d(n as u64, WG_1D));
}

/// `a + b` (same shapes). Backward: the gradient goes to both unchanged.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(shape_err("add", format!("{:?} + {:?}", a.shape(), b.shape())));
    }
    let out = Tensor::empty(gpu, a.shape())?;
    let n = a.numel();
    gpu.dispatch(Shader::Arith, "add", &[], &[a.buffer(), b.buffer(), out.buffer()], &params(n, 0.0, 0.0, 0), grid_1d(n as u64, WG_1D));
    Ok(Tensor::from_op(gpu, out, &[a, b], || Op::Add { a: a.clone(), b: b.clone() }))
}

/// `a * b` element-wise (same shapes). Backward: `g * b` and `g * a`.
pub fn mul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = mul_raw(gpu, a, b)?;
    Ok(Tensor::from_op(gpu, out, &[a, b], || Op::Mul { a: a.clone(), b: b.clone() }))
}

fn mul_raw(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(shape_err("mul", format!("{:?} * {:?}", a.shape(), b.shape())));
    }
    let out = Tensor::empty(gpu, a.shape())?;
    let n = a.numel();
    gpu.dispatch(Shader::Arith, "mul", &[], &[a.buffer(), b.buffer(), out.buffer()], &params(n, 0.0, 0.0, 0), grid_1d(n as u64, WG_1D));
    Ok(out)
}

/// Gradients of `a * b`: `(g * b, g * a)`, each only if needed.
pub fn mul_backward(gpu: &Gpu, a: &Tensor, b: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let da = if a.requires_grad() { Some(mul_raw(gpu, g, b)?) } else { None };
    let db = if b.requires_grad() { Some(mul_raw(gpu, g, a)?) } else { None };
    Ok(vec![da, db])
}

/// `alpha * x`. Backward: `alpha * g` (see `Op::Scale`).
pub fn scale(gpu: &Gpu, x: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = Tensor::empty(gpu, x.shape())?;
    let n = x.numel();
    gpu.dispatch(Shader::Arith, "scale", &[], &[x.buffer(), out.buffer()], &params(n, alpha, 0.0, 0), grid_1d(n as u64, WG_1D));
    Ok(Tensor::from_op(gpu, out, &[x], || Op::Scale { x: x.clone(), alpha }))
}

/// Element-wise clamp to `[lo, hi]`; not differentiable here (used on attack images only).
pub fn clamp(gpu: &Gpu, x: &Tensor, lo: f32, hi: f32) -> Result<Tensor> {
    let out = Tensor::empty(gpu, x.shape())?;
    let n = x.numel();
    gpu.dispatch(Shader::Arith, "clamp_values", &[], &[x.buffer(), out.buffer()], &params(n, lo, hi, 0), grid_1d(n as u64, WG_1D));
    Ok(out)
}

/// `x[r, :] + b` for a (rows, cols) `x` and a (cols,) `b`; the forward half of a linear bias.
/// Its backward lives with `linear` (a column sum of the gradient).
pub(crate) fn add_row_bias_raw(gpu: &Gpu, x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cols = *x.shape().last().unwrap_or(&1);
    if b.numel() != cols {
        return Err(shape_err("add_row_bias", format!("x {:?}, bias {:?}", x.shape(), b.shape())));
    }
    let out = Tensor::empty(gpu, x.shape())?;
    let n = x.numel();
    gpu.dispatch(Shader::Arith, "add_row_bias", &[], &[x.buffer(), b.buffer(), out.buffer()], &params(n, 0.0, 0.0, cols), grid_1d(n as u64, WG_1D));
    Ok(out)
}
