//! Element-wise L-inf attack steps on images in [0, 1] (`shaders/attack.wgsl`): PGD's (`delta`
//! updated in place, each call returning the new adversarial image `x + delta`) and APGD's
//! (momentum step with per-image step sizes, and per-image row selection).

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub eps: f32,
    pub step: f32,
    pub per_image: u32,
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
    let p = Params { n: x.numel() as u32, eps, step: 0.0, per_image: 0 };
    rt.dispatch(Shader::Attack, "pgd_project", &[x.buffer(), delta.buffer(), adv.buffer()], &p, Work::Items(x.numel() as u64))?;
    Ok(adv)
}

/// `delta += step * sign(grad)`, then the projection of [`pgd_project`]; returns x + delta.
pub fn pgd_step(rt: &Runtime, x: &Tensor, grad: &Tensor, delta: &Tensor, eps: f32, step: f32) -> Result<Tensor> {
    check(x, &[grad, delta])?;
    let adv = Tensor::empty(rt, x.shape())?;
    let p = Params { n: x.numel() as u32, eps, step, per_image: 0 };
    rt.dispatch(Shader::Attack, "pgd_step", &[x.buffer(), grad.buffer(), delta.buffer(), adv.buffer()], &p, Work::Items(x.numel() as u64))?;
    Ok(adv)
}

/// Elements per image of a batch `t` (N, ...), checking `per_image` tensors of (N,).
fn per_image(t: &Tensor, rows: &Tensor) -> Result<u32> {
    let n = t.shape().first().copied().unwrap_or(0);
    if n == 0 || rows.shape() != [n] {
        return Err(shape_err("apgd", &[t.shape(), rows.shape()], "images (N, ...) and one value per image (N,)"));
    }
    Ok((t.numel() / n) as u32)
}

/// One APGD step, in place on `x_adv` and `x_old`: with `z = P(x_adv + s_n sign(grad))`,
/// `x_adv = P(x_adv + a (z - x_adv) + (1 - a) (x_adv - x_old))` and `x_old = x_adv` (the value
/// before the step). P clips to the eps-ball around `x`, then to [0, 1]; `steps` (N,) holds each
/// image's step size, `a` the momentum weight.
#[allow(clippy::too_many_arguments)]
pub fn apgd_step(rt: &Runtime, x: &Tensor, grad: &Tensor, steps: &Tensor, x_adv: &Tensor, x_old: &Tensor, eps: f32, a: f32) -> Result<()> {
    check(x, &[grad, x_adv, x_old])?;
    let p = Params { n: x.numel() as u32, eps, step: a, per_image: per_image(x, steps)? };
    let bufs = [x.buffer(), grad.buffer(), steps.buffer(), x_adv.buffer(), x_old.buffer()];
    rt.dispatch(Shader::Attack, "apgd_step", &bufs, &p, Work::Items(x.numel() as u64))
}

/// `dst[n] = src[n]` for the images whose `mask[n]` (N,) u32 is non-zero; the rest of `dst` stays.
pub fn select_rows(rt: &Runtime, mask: &Tensor, src: &Tensor, dst: &Tensor) -> Result<()> {
    check(src, &[dst])?;
    let p = Params { n: src.numel() as u32, eps: 0.0, step: 0.0, per_image: per_image(src, mask)? };
    rt.dispatch(Shader::Attack, "select_rows", &[mask.buffer(), src.buffer(), dst.buffer()], &p, Work::Items(src.numel() as u64))
}
