//! Element-wise L-inf attack steps on images in [0, 1] (`shaders/attack.wgsl`).
//! `delta` is updated in place; each call returns the new adversarial image `x + delta`.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
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
    if let Some(o) = others.iter().find(|t| t.shape() != x.shape()) {
        return Err(shape_err("pgd", &[x.shape(), o.shape()], "images, gradient and perturbation of one shape"));
    }
    Ok(())
}

/// `delta = clamp(delta, -eps, eps)`, then `delta = clamp(x + delta, 0, 1) - x`; returns x + delta.
pub fn pgd_project(rt: &Runtime, x: &Tensor, delta: &Tensor, eps: f32) -> Result<Tensor> {
    check(x, &[delta])?;
    let adv = Tensor::empty(rt, x.shape())?;
    let p = Params { n: x.numel() as u32, eps, step: 0.0, _p: 0 };
    rt.dispatch(Shader::Attack, "pgd_project", &[x.buffer(), delta.buffer(), adv.buffer()], &p, Work::Items(x.numel() as u64))?;
    Ok(adv)
}

/// `delta += step * sign(grad)`, then the projection of [`pgd_project`]; returns x + delta.
pub fn pgd_step(rt: &Runtime, x: &Tensor, grad: &Tensor, delta: &Tensor, eps: f32, step: f32) -> Result<Tensor> {
    check(x, &[grad, delta])?;
    let adv = Tensor::empty(rt, x.shape())?;
    let p = Params { n: x.numel() as u32, eps, step, _p: 0 };
    rt.dispatch(Shader::Attack, "pgd_step", &[x.buffer(), grad.buffer(), delta.buffer(), adv.buffer()], &p, Work::Items(x.numel() as u64))?;
    Ok(adv)
}
