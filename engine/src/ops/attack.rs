//! Element-wise L-inf attack steps on images in [0, 1] (`shaders/attack.wgsl`).
//! `delta` is updated in place; each call returns the new adversarial image `x + delta`.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub eps: f32,
    pub step: f32,
    pub _p: u32,
}

fn check(x: &Tensor, others: &[&Tensor]) -> Result<()> {
    if others.iter().any(|t| t.shape() != x.shape()) {
        return Err(shape_err("pgd", format!("x {:?} vs {:?}", x.shape(), others.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>())));
    }
    Ok(())
}

/// `delta = clamp(delta, -eps, eps)`, then `delta = clamp(x + delta, 0, 1) - x`; returns x + delta.
pub fn pgd_project(gpu: &Gpu, x: &Tensor, delta: &Tensor, eps: f32) -> Result<Tensor> {
    check(x, &[delta])?;
    let adv = Tensor::empty(gpu, x.shape())?;
    let p = Params { n: x.numel() as u32, eps, step: 0.0, _p: 0 };
    gpu.dispatch(Shader::Attack, "pgd_project", &[], &[x.buffer(), delta.buffer(), adv.buffer()], &p, grid_1d(x.numel() as u64, WG_1D));
    Ok(adv)
}

/// `delta += step * sign(grad)`, then the projection of [`pgd_project`]; returns x + delta.
pub fn pgd_step(gpu: &Gpu, x: &Tensor, grad: &Tensor, delta: &Tensor, eps: f32, step: f32) -> Result<Tensor> {
    check(x, &[grad, delta])?;
    let adv = Tensor::empty(gpu, x.shape())?;
    let p = Params { n: x.numel() as u32, eps, step, _p: 0 };
    let bufs = [x.buffer(), grad.buffer(), delta.buffer(), adv.buffer()];
    gpu.dispatch(Shader::Attack, "pgd_step", &[], &bufs, &p, grid_1d(x.numel() as u64, WG_1D));
    Ok(adv)
}
