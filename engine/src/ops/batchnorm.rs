//! 2-D batch normalisation (`shaders/batchnorm.wgsl`), PyTorch semantics: train mode normalises
//! with the biased batch variance and moves the running stats (unbiased variance, momentum);
//! eval mode normalises with the running stats.
//!
//! Shapes: x (N, C, H, W); gamma, beta, running_mean, running_var (C,).

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{GradSink, Op};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub flag: u32,
    pub eps: f32,
    pub momentum: f32,
    pub _p: [u32; 2],
}

/// The running statistics of one BN layer (updated in place by train-mode forwards).
pub struct RunningStats<'a> {
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
}

fn params(x: &Tensor, flag: bool) -> Params {
    let s = x.shape();
    Params { n: s[0] as u32, c: s[1] as u32, hw: (s[2] * s[3]) as u32, flag: flag as u32, eps: EPS, momentum: MOMENTUM, _p: [0; 2] }
}

fn check(x: &Tensor, per_channel: &[&Tensor]) -> Result<()> {
    if x.shape().len() != 4 {
        return Err(shape_err("batchnorm2d", &[x.shape()], "x (N, C, H, W)"));
    }
    if let Some(t) = per_channel.iter().find(|t| t.numel() != x.shape()[1]) {
        return Err(shape_err("batchnorm2d", &[x.shape(), t.shape()], "x (N, C, H, W) and per-channel tensors (C,)"));
    }
    Ok(())
}

/// Batch norm forward. `train`: batch statistics, and the running stats move (in place);
/// otherwise the running stats normalise. Records `Op::BatchNorm` when anything requires grad.
pub fn batchnorm2d(rt: &Runtime, x: &Tensor, gamma: &Tensor, beta: &Tensor, running: RunningStats, train: bool) -> Result<Tensor> {
    check(x, &[gamma, beta, running.mean, running.var])?;
    let c = x.shape()[1];
    let mean = Tensor::empty(rt, &[c])?;
    let rstd = Tensor::empty(rt, &[c])?;
    if train {
        let bufs = [x.buffer(), mean.buffer(), rstd.buffer(), running.mean.buffer(), running.var.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_stats", &bufs, &params(x, true), Work::Groups([c as u32, 1, 1]))?;
    } else {
        let bufs = [running.mean.buffer(), running.var.buffer(), mean.buffer(), rstd.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_eval_stats", &bufs, &params(x, false), Work::Items(c as u64))?;
    }
    let y = Tensor::empty(rt, x.shape())?;
    let bufs = [x.buffer(), mean.buffer(), rstd.buffer(), gamma.buffer(), beta.buffer(), y.buffer()];
    rt.dispatch(Shader::BatchNorm, "bn_apply", &bufs, &params(x, false), Work::Items(x.numel() as u64))?;
    Ok(Tensor::from_op(y, &[x, gamma, beta], || Op::BatchNorm { x: x.clone(), gamma: gamma.clone(), beta: beta.clone(), mean, rstd, train }))
}

/// Backward of `batchnorm2d`. With xhat = (x - mean) rstd and m = N H W:
/// dbeta = sum g, dgamma = sum g xhat, and in train mode (mean and rstd depend on x)
/// dx = gamma rstd (g - dbeta/m - xhat dgamma/m); in eval mode dx = gamma rstd g.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(rt: &Runtime, x: &Tensor, gamma: &Tensor, beta: &Tensor, mean: &Tensor, rstd: &Tensor, train: bool, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    let c = x.shape()[1];
    let dgamma = Tensor::empty(rt, &[c])?;
    let dbeta = Tensor::empty(rt, &[c])?;
    let need_sums = train && grads.wants(x) || grads.wants(gamma) || grads.wants(beta);
    if need_sums {
        let bufs = [x.buffer(), g.buffer(), mean.buffer(), rstd.buffer(), dgamma.buffer(), dbeta.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_bwd_reduce", &bufs, &params(x, false), Work::Groups([c as u32, 1, 1]))?;
    }
    if grads.wants(x) {
        let dx = Tensor::empty(rt, x.shape())?;
        let bufs = [x.buffer(), g.buffer(), mean.buffer(), rstd.buffer(), gamma.buffer(), dgamma.buffer(), dbeta.buffer(), dx.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_bwd_data", &bufs, &params(x, train), Work::Items(x.numel() as u64))?;
        grads.add(x, dx)?;
    }
    if grads.wants(gamma) {
        grads.add(gamma, dgamma)?;
    }
    if grads.wants(beta) {
        grads.add(beta, dbeta)?;
    }
    Ok(())
}
