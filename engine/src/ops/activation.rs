//! Point-wise activations (`shaders/activation.wgsl`): ReLU, sigmoid, softplus, with backwards.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::Op;
use crate::error::Result;
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub beta: f32,
    pub _p: [u32; 2],
}

fn unary(gpu: &Gpu, entry: &'static str, x: &Tensor, beta: f32) -> Result<Tensor> {
    let out = Tensor::empty(gpu, x.shape())?;
    let n = x.numel();
    let p = Params { n: n as u32, beta, _p: [0; 2] };
    gpu.dispatch(Shader::Activation, entry, &[], &[x.buffer(), out.buffer()], &p, grid_1d(n as u64, WG_1D));
    Ok(out)
}

fn binary(gpu: &Gpu, entry: &'static str, saved: &Tensor, g: &Tensor, beta: f32) -> Result<Tensor> {
    let out = Tensor::empty(gpu, saved.shape())?;
    let n = saved.numel();
    let p = Params { n: n as u32, beta, _p: [0; 2] };
    gpu.dispatch(Shader::Activation, entry, &[], &[saved.buffer(), g.buffer(), out.buffer()], &p, grid_1d(n as u64, WG_1D));
    Ok(out)
}

/// `max(x, 0)`.
pub fn relu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let y = unary(gpu, "relu_fwd", x, 0.0)?;
    Ok(Tensor::from_op(gpu, y, &[x], || Op::Relu { x: x.clone() }))
}

/// `dx = g * (y > 0)`, from the forward output `y`.
pub fn relu_backward(gpu: &Gpu, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    binary(gpu, "relu_bwd", y, g, 0.0)
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let y = unary(gpu, "sigmoid_fwd", x, 0.0)?;
    Ok(Tensor::from_op(gpu, y, &[x], || Op::Sigmoid { x: x.clone() }))
}

/// `dx = g * y * (1 - y)`.
pub fn sigmoid_backward(gpu: &Gpu, y: &Tensor, g: &Tensor) -> Result<Tensor> {
    binary(gpu, "sigmoid_bwd", y, g, 0.0)
}

/// `log(1 + exp(beta x)) / beta` (identity where `beta x > 20`, as PyTorch's `Softplus`).
pub fn softplus(gpu: &Gpu, x: &Tensor, beta: f32) -> Result<Tensor> {
    let y = unary(gpu, "softplus_fwd", x, beta)?;
    Ok(Tensor::from_op(gpu, y, &[x], || Op::Softplus { x: x.clone(), beta }))
}

/// `dx = g * sigmoid(beta x)`.
pub fn softplus_backward(gpu: &Gpu, x: &Tensor, beta: f32, g: &Tensor) -> Result<Tensor> {
    binary(gpu, "softplus_bwd", x, g, beta)
}
