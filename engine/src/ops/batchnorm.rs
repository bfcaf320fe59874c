//! 2-D batch normalisation (`shaders/batchnorm.wgsl`), PyTorch semantics: train mode normalises
//! with the biased batch variance and moves the running stats (unbiased variance, momentum);
//! eval mode normalises with the running stats.
//!
//! Shapes: x (N, C, H, W); gamma, beta, running_mean, running_var (C,).

use bytemuck::{Pod, Zeroable};

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
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
    if x.shape().len() != 4 || per_channel.iter().any(|t| t.numel() != x.shape()[1]) {
        let shapes: Vec<_> = per_channel.iter().map(|t| t.shape().to_vec()).collect();
        return Err(shape_err("batchnorm2d", format!("x {:?} with per-channel tensors {shapes:?}", x.shape())));
    }
    Ok(())
}

/// Batch norm forward. `train`: batch statistics, and the running stats move (in place);
/// otherwise the running stats normalise. Records `Op::BatchNorm` when anything requires grad.
pub fn batchnorm2d(gpu: &Gpu, x: &Tensor, gamma: &Tensor, beta: &Tensor, running: RunningStats, train: bool) -> Result<Tensor> {
    check(x, &[gamma, beta, running.mean, running.var])?;
    let c = x.shape()[1];
    let mean = Tensor::empty(gpu, &[c])?;
    let rstd = Tensor::empty(gpu, &[c])?;
    if train {
        let p = params(x, true);
        let bufs = [x.buffer(), mean.buffer(), rstd.buffer(), running.mean.buffer(), running.var.buffer()];
        gpu.dispatch(Shader::BatchNorm, "bn_stats", &[], &bufs, &p, [c as u32, 1, 1]);
    } else {
        let p = params(x, false);
        let bufs = [running.mean.buffer(), running.var.buffer(), mean.buffer(), rstd.buffer()];
        gpu.dispatch(Shader::BatchNorm, "bn_eval_stats", &[], &bufs, &p, [(c as u32).div_ceil(64), 1, 1]);
    }
    let y = Tensor::empty(gpu, x.shape())?;
    let bufs = [x.buffer(), mean.buffer(), rstd.buffer(), gamma.buffer(), beta.buffer(), y.buffer()];
    gpu.dispatch(Shader::BatchNorm, "bn_apply", &[], &bufs, &params(x, false), grid_1d(x.numel() as u64, WG_1D));
    Ok(Tensor::from_op(gpu, y, &[x, gamma, beta], || Op::BatchNorm {
        x: x.clone(),
        gamma: gamma.clone(),
        beta: beta.clone(),
        mean,
        rstd,
        train,
    }))
}

/// Backward of `batchnorm2d`. With xhat = (x - mean) rstd and m = N H W:
/// dbeta = sum g, dgamma = sum g xhat, and in train mode (mean and rstd depend on x)
/// dx = gamma rstd (g - dbeta/m - xhat dgamma/m); in eval mode dx = gamma rstd g.
pub fn batchnorm_backward(
    gpu: &Gpu,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    rstd: &Tensor,
    train: bool,
    g: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let c = x.shape()[1];
    let dgamma = Tensor::empty(gpu, &[c])?;
    let dbeta = Tensor::empty(gpu, &[c])?;
    let need_sums = train && x.requires_grad() || gamma.requires_grad() || beta.requires_grad();
    if need_sums {
        let bufs = [x.buffer(), g.buffer(), mean.buffer(), rstd.buffer(), dgamma.buffer(), dbeta.buffer()];
        gpu.dispatch(Shader::BatchNorm, "bn_bwd_reduce", &[], &bufs, &params(x, false), [c as u32, 1, 1]);
    }
    let dx = if x.requires_grad() {
        let dx = Tensor::empty(gpu, x.shape())?;
        let bufs = [x.buffer(), g.buffer(), mean.buffer(), rstd.buffer(), gamma.buffer(), dgamma.buffer(), dbeta.buffer(), dx.buffer()];
        gpu.dispatch(Shader::BatchNorm, "bn_bwd_data", &[], &bufs, &params(x, train), grid_1d(x.numel() as u64, WG_1D));
        Some(dx)
    } else {
        None
    };
    Ok(vec![dx, gamma.requires_grad().then_some(dgamma), beta.requires_grad().then_some(dbeta)])
}
