//! Element-wise arithmetic (`shaders/arith.wgsl`): fill, add, mul, scale.

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
    Ok(Tensor::from_op(out, &[a, b], || Add { a: a.clone(), b: b.clone() }))
}

struct Add {
    a: Tensor,
    b: Tensor,
}

impl Backward for Add {
    fn name(&self) -> &'static str {
        "add"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, _: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        for input in [&self.a, &self.b] {
            if sink.wants(input) {
                sink.add(input, g.clone())?;
            }
        }
        Ok(())
    }
}

/// `a * b` element-wise (same shapes). Backward: `g * b` and `g * a`.
pub fn mul(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = binary(rt, "mul", "mul", a, b)?;
    Ok(Tensor::from_op(out, &[a, b], || Mul { a: a.clone(), b: b.clone() }))
}

struct Mul {
    a: Tensor,
    b: Tensor,
}

impl Backward for Mul {
    fn name(&self) -> &'static str {
        "mul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    /// `da = g * b`, `db = g * a`, each only if wanted.
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        if sink.wants(&self.a) {
            sink.add(&self.a, binary(rt, "mul", "mul", g, &self.b)?)?;
        }
        if sink.wants(&self.b) {
            sink.add(&self.b, binary(rt, "mul", "mul", g, &self.a)?)?;
        }
        Ok(())
    }
}

/// `alpha * x`. Backward: `alpha * g`.
pub fn scale(rt: &Runtime, x: &Tensor, alpha: f32) -> Result<Tensor> {
    let out = Tensor::empty(rt, x.shape())?;
    let n = x.numel();
    rt.dispatch(Shader::Arith, "scale", &[x.buffer(), out.buffer()], &params(n, alpha), Work::Items(n as u64))?;
    Ok(Tensor::from_op(out, &[x], || Scale { x: x.clone(), alpha }))
}

struct Scale {
    x: Tensor,
    alpha: f32,
}

impl Backward for Scale {
    fn name(&self) -> &'static str {
        "scale"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, scale(rt, g, self.alpha)?)
    }
}
