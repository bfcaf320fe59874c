//! Element-wise arithmetic (`shaders/arith.wgsl`): fill, add, mul, scale.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{GradSink, Op};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub alpha: f32,
    pub _p: [u32; 2],
}

fn params(n: usize, alpha: f32) -> Params {
    Params { n: n as u32, alpha, _p: [0; 2] }
}

/// Overwrites every element of `t` with `value` (no gradient: a fill makes a constant).
pub fn fill_into(rt: &Runtime, t: &Tensor, value: f32) -> Result<()> {
    let n = t.numel();
    rt.dispatch(Shader::Arith, "fill", &[t.buffer()], &params(n, value), Work::Items(n as u64))
}

fn binary(rt: &Runtime, op: &'static str, entry: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(shape_err(op, &[a.shape(), b.shape()], "two tensors of the same shape"));
    }
    let out = Tensor::empty(rt, a.shape())?;
    let n = a.numel();
    rt.dispatch(Shader::Arith, entry, &[a.buffer(), b.buffer(), out.buffer()], &params(n, 0.0), Work::Items(n as u64))?;
    Ok(out)
}

/// `a + b` (same shapes). Backward: the gradient goes to both unchanged.
pub fn add(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary(rt, "add", "add", a, b)?;
    Ok(Tensor::from_op(out, &[a, b], || Op::Add { a: a.clone(), b: b.clone() }))
}

/// `a * b` element-wise (same shapes). Backward: `g * b` and `g * a`.
pub fn mul(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary(rt, "mul", "mul", a, b)?;
    Ok(Tensor::from_op(out, &[a, b], || Op::Mul { a: a.clone(), b: b.clone() }))
}

/// Gradients of `a * b`: `da = g * b`, `db = g * a`, each only if wanted.
pub(crate) fn mul_backward(rt: &Runtime, a: &Tensor, b: &Tensor, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    if grads.wants(a) {
        grads.add(a, binary(rt, "mul", "mul", g, b)?)?;
    }
    if grads.wants(b) {
        grads.add(b, binary(rt, "mul", "mul", g, a)?)?;
    }
    Ok(())
}

/// `alpha * x`. Backward: `alpha * g` (see `Op::Scale`).
pub fn scale(rt: &Runtime, x: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = Tensor::empty(rt, x.shape())?;
    let n = x.numel();
    rt.dispatch(Shader::Arith, "scale", &[x.buffer(), out.buffer()], &params(n, alpha), Work::Items(n as u64))?;
    Ok(Tensor::from_op(out, &[x], || Op::Scale { x: x.clone(), alpha }))
}
