//! Point-wise activations (`shaders/activation.wgsl`): ReLU, sigmoid, softplus, with backwards.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::Result;
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub beta: f32,
    pub _p: [u32; 2],
}

fn unary(rt: &Runtime, entry: &'static str, x: &Tensor, beta: f32) -> Result<Tensor> {
    let out = Tensor::empty(rt, x.shape())?;
    let n = x.numel();
    let p = Params { n: n as u32, beta, _p: [0; 2] };
    rt.dispatch(Shader::Activation, entry, &[x.buffer(), out.buffer()], &p, Work::Items(n as u64))?;
    Ok(out)
}

fn binary(rt: &Runtime, entry: &'static str, saved: &Tensor, g: &Tensor, beta: f32) -> Result<Tensor> {
    let out = Tensor::empty(rt, saved.shape())?;
    let n = saved.numel();
    let p = Params { n: n as u32, beta, _p: [0; 2] };
    rt.dispatch(Shader::Activation, entry, &[saved.buffer(), g.buffer(), out.buffer()], &p, Work::Items(n as u64))?;
    Ok(out)
}

/// `max(x, 0)`.
pub fn relu(rt: &Runtime, x: &Tensor) -> Result<Tensor> {
    let y = unary(rt, "relu_fwd", x, 0.0)?;
    Ok(Tensor::from_op(y, &[x], || Relu { x: x.clone() }))
}

/// Backward reads the forward output (the tape hands it over), so only the input is kept.
struct Relu {
    x: Tensor,
}

impl Backward for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    /// `dx = g * (y > 0)`, from the forward output `y`.
    fn backward(&self, rt: &Runtime, y: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, binary(rt, "relu_bwd", y, g, 0.0)?)
    }
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(rt: &Runtime, x: &Tensor) -> Result<Tensor> {
    let y = unary(rt, "sigmoid_fwd", x, 0.0)?;
    Ok(Tensor::from_op(y, &[x], || Sigmoid { x: x.clone() }))
}

struct Sigmoid {
    x: Tensor,
}

impl Backward for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    /// `dx = g * y * (1 - y)`, from the forward output `y`.
    fn backward(&self, rt: &Runtime, y: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, binary(rt, "sigmoid_bwd", y, g, 0.0)?)
    }
}

/// `log(1 + exp(beta x)) / beta` (identity where `beta x > 20`, as PyTorch's `Softplus`).
pub fn softplus(rt: &Runtime, x: &Tensor, beta: f32) -> Result<Tensor> {
    let y = unary(rt, "softplus_fwd", x, beta)?;
    Ok(Tensor::from_op(y, &[x], || Softplus { x: x.clone(), beta }))
}

struct Softplus {
    x: Tensor,
    beta: f32,
}

impl Backward for Softplus {
    fn name(&self) -> &'static str {
        "softplus"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    /// `dx = g * sigmoid(beta x)` (1 where `beta x > 20`, matching the forward's threshold).
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, binary(rt, "softplus_bwd", &self.x, g, self.beta)?)
    }
}
