//! 2-D batch normalisation (`shaders/batchnorm.wgsl`), PyTorch semantics: train mode normalises
//! with the biased batch variance and moves the running stats (unbiased variance, momentum);
//! eval mode normalises with the running stats. The residual add and the ReLU that follow a
//! ResNet block's batch norms can be fused in ([`batchnorm_act`]): `y = act(BN(x) + residual)`
//! costs the dispatches of a batch norm alone, forward and backward.
//!
//! Shapes: x, residual (N, C, H, W); gamma, beta, running_mean, running_var (C,).

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

pub const EPS: f32 = 1e-5;
pub const MOMENTUM: f32 = 0.1;

const RELU: u32 = 1;
const RESIDUAL: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub c: u32,
    pub hw: u32,
    pub flag: u32,
    pub eps: f32,
    pub momentum: f32,
    pub act: u32,
    pub chunks: u32,
    pub per: u32,
    pub inv_hw: f32,
    pub _p: [u32; 2],
}

/// Workgroups the per-channel reductions aim for in all (two waves of a large GPU).
const REDUCE_GROUPS: usize = 512;
/// Values a reduction chunk covers at least (32 per thread), so that a workgroup's loads outweigh
/// its tree sum and small layers keep one workgroup per channel and no combine pass. With 1024,
/// lavapipe's statistics at 8 channels of 8 x 32 x 32 took 2.5x as long as with one workgroup
/// per channel (8 chunks of 4 values per thread; each workgroup's barriers cost it dearly).
const MIN_CHUNK: usize = 8192;

/// How the statistics and gradient sums of an (N, C, H, W) batch norm are split: `chunks`
/// workgroups per channel, each over `per` samples (the last may have fewer, none is empty).
pub fn reduction_chunks(n: usize, c: usize, hw: usize) -> (u32, u32) {
    let want = REDUCE_GROUPS.div_ceil(c.max(1)).min(n * hw / MIN_CHUNK).clamp(1, n.max(1));
    let per = n.div_ceil(want).max(1);
    (n.div_ceil(per).max(1) as u32, per as u32)
}

/// The running statistics of one BN layer (updated in place by train-mode forwards).
pub struct RunningStats<'a> {
    pub mean: &'a Tensor,
    pub var: &'a Tensor,
}

/// What follows the normalisation: an optional residual added, then an optional ReLU.
#[derive(Clone, Copy, Default)]
pub struct Act<'a> {
    pub residual: Option<&'a Tensor>,
    pub relu: bool,
}

fn params(x: &Tensor, flag: bool, act: u32) -> Params {
    let s = x.shape();
    let hw = s[2] * s[3];
    let (chunks, per) = reduction_chunks(s[0], s[1], hw);
    Params {
        n: s[0] as u32,
        c: s[1] as u32,
        hw: hw as u32,
        flag: flag as u32,
        eps: EPS,
        momentum: MOMENTUM,
        act,
        chunks,
        per,
        inv_hw: 1.0 / hw.max(1) as f32,
        _p: [0; 2],
    }
}

/// The grid of the element-wise passes: the channel is the workgroup row (no division by it per
/// element), N*H*W values along x. N*H*W beyond 65 535 workgroups of 256 (16.7 M values per
/// channel) is a [`crate::EngineError::GridTooLarge`] error.
fn per_channel(x: &Tensor) -> Work {
    let s = x.shape();
    Work::Groups([((s[0] * s[2] * s[3]).div_ceil(256)).max(1) as u32, s[1] as u32, 1])
}

/// The family the two per-channel reductions run in: with their workgroup sums on subgroup
/// operations where the runtime uses them, else the tree in workgroup memory.
fn reducer(rt: &Runtime) -> Shader {
    if rt.uses_subgroup_reductions() {
        Shader::BatchNormSubgroups
    } else {
        Shader::BatchNorm
    }
}

/// The reduction grid: `chunks` workgroups per channel.
fn reduction(p: &Params) -> Work {
    Work::Groups([p.c, p.chunks, 1])
}

fn act_bits(relu: bool, residual: bool) -> u32 {
    (relu as u32 * RELU) | (residual as u32 * RESIDUAL)
}

fn check(x: &Tensor, per_channel: &[&Tensor], residual: Option<&Tensor>) -> Result<()> {
    if x.shape().len() != 4 {
        return Err(shape_err("batchnorm2d", &[x.shape()], "x (N, C, H, W)"));
    }
    if let Some(t) = per_channel.iter().find(|t| t.numel() != x.shape()[1]) {
        return Err(shape_err("batchnorm2d", &[x.shape(), t.shape()], "x (N, C, H, W) and per-channel tensors (C,)"));
    }
    if let Some(r) = residual.filter(|r| r.shape() != x.shape()) {
        return Err(shape_err("batchnorm2d", &[x.shape(), r.shape()], "a residual of x's shape"));
    }
    Ok(())
}

/// Batch norm forward. `train`: batch statistics, and the running stats move (in place);
/// otherwise the running stats normalise. Records its backward when anything requires grad.
pub fn batchnorm2d(rt: &Runtime, x: &Tensor, gamma: &Tensor, beta: &Tensor, running: RunningStats, train: bool) -> Result<Tensor> {
    batchnorm_act(rt, x, gamma, beta, running, train, Act::default())
}

/// The statistics a batch norm normalised with.
pub(crate) enum Stats {
    /// Train mode: this batch's (mean, rstd) per channel, (C, 2).
    Batch(Tensor),
    /// Eval mode: the running statistics, read directly (no statistics pass).
    Running { mean: Tensor, var: Tensor },
}

/// `act(BN(x) + residual)`: batch norm, then (if given) the residual added, then (if asked) ReLU,
/// in the dispatches of the batch norm alone (train mode: statistics and apply; eval mode: apply).
pub fn batchnorm_act(
    rt: &Runtime,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running: RunningStats,
    train: bool,
    act: Act,
) -> Result<Tensor> {
    check(x, &[gamma, beta, running.mean, running.var], act.residual)?;
    let c = x.shape()[1];
    let y = Tensor::empty(rt, x.shape())?;
    let residual = act.residual.unwrap_or(x);
    let p = params(x, train, act_bits(act.relu, act.residual.is_some()));
    let work = per_channel(x);
    let stats = if train {
        let stats = Tensor::empty(rt, &[c, 2])?;
        // Synced over replicas, the running statistics move on the host, with the whole batch's.
        let sync = rt.replica_sum();
        let sp = params(x, sync.is_none(), 0);
        let (running_mean, running_var) = (running.mean, running.var);
        let running = [running.mean.buffer(), running.var.buffer()];
        if sp.chunks == 1 {
            rt.dispatch(reducer(rt), "bn_stats", &[x.buffer(), stats.buffer(), running[0], running[1]], &sp, reduction(&sp))?;
        } else {
            let partials = Tensor::empty(rt, &[c, sp.chunks as usize, 2])?;
            rt.dispatch(reducer(rt), "bn_stats", &[x.buffer(), partials.buffer(), running[0], running[1]], &sp, reduction(&sp))?;
            rt.dispatch(
                Shader::BatchNorm,
                "bn_stats_combine",
                &[partials.buffer(), stats.buffer(), running[0], running[1]],
                &sp,
                Work::Items(c as u64),
            )?;
        }
        if let Some(sum) = &sync {
            super::batchnorm_sync::forward(rt, sum, (sp.n * sp.hw) as usize, &stats, running_mean, running_var)?;
        }
        let bufs = [x.buffer(), stats.buffer(), gamma.buffer(), beta.buffer(), residual.buffer(), y.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_apply", &bufs, &p, work)?;
        Stats::Batch(stats)
    } else {
        let bufs = [x.buffer(), running.mean.buffer(), running.var.buffer(), gamma.buffer(), beta.buffer(), residual.buffer(), y.buffer()];
        rt.dispatch(Shader::BatchNorm, "bn_apply_eval", &bufs, &p, work)?;
        Stats::Running { mean: running.mean.clone(), var: running.var.clone() }
    };
    let mut inputs = vec![x, gamma, beta];
    inputs.extend(act.residual);
    Ok(Tensor::from_op(y, &inputs, || BatchNorm {
        x: x.clone(),
        gamma: gamma.clone(),
        beta: beta.clone(),
        stats,
        relu: act.relu,
        residual: act.residual.cloned(),
    }))
}

/// `act(BN(x) + residual)`; backward reads the output (for the ReLU's mask) and the
/// statistics it normalised with.
struct BatchNorm {
    x: Tensor,
    gamma: Tensor,
    beta: Tensor,
    stats: Stats,
    relu: bool,
    residual: Option<Tensor>,
}

impl Backward for BatchNorm {
    fn name(&self) -> &'static str {
        "batchnorm2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.gamma, &self.beta];
        v.extend(self.residual.iter());
        v
    }
    fn backward(&self, rt: &Runtime, out: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        batchnorm_backward(rt, &self.x, &self.gamma, &self.beta, &self.stats, self.relu, self.residual.as_ref(), out, g, sink)
    }
}

/// Backward of `batchnorm_act`, from the output `y` and the gradient `g` arriving at it. With
/// g' = g (y > 0) under ReLU (else g), xhat = (x - mean) rstd and m = N H W: dresidual = g',
/// dbeta = sum g', dgamma = sum g' xhat, and in train mode (mean and rstd depend on x)
/// dx = gamma rstd (g' - dbeta/m - xhat dgamma/m); in eval mode dx = gamma rstd g'.
#[allow(clippy::too_many_arguments)]
fn batchnorm_backward(
    rt: &Runtime,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &Stats,
    relu: bool,
    residual: Option<&Tensor>,
    y: &Tensor,
    g: &Tensor,
    grads: &mut GradSink,
) -> Result<()> {
    let c = x.shape()[1];
    let train = matches!(stats, Stats::Batch(_));
    let wants_res = residual.is_some_and(|r| grads.wants(r));
    let need_sums = train && grads.wants(x) || grads.wants(gamma) || grads.wants(beta);
    let (dgamma, dbeta, coef) = (Tensor::empty(rt, &[c])?, Tensor::empty(rt, &[c])?, Tensor::empty(rt, &[c, 4])?);
    if need_sums {
        let batch = match stats {
            Stats::Batch(s) => s.clone(),
            // Eval mode with gamma or beta wanting gradients (no model of ours does this): the
            // statistics pass the forward skipped.
            Stats::Running { mean, var } => {
                let s = Tensor::empty(rt, &[c, 2])?;
                rt.dispatch(
                    Shader::BatchNorm,
                    "bn_eval_stats",
                    &[mean.buffer(), var.buffer(), s.buffer()],
                    &params(x, false, 0),
                    Work::Items(c as u64),
                )?;
                s
            }
        };
        let p = params(x, false, act_bits(relu, false));
        let sums = [batch.buffer(), gamma.buffer(), dgamma.buffer(), dbeta.buffer()];
        if p.chunks == 1 {
            let bufs = [x.buffer(), g.buffer(), y.buffer(), sums[0], sums[1], sums[2], sums[3], coef.buffer()];
            rt.dispatch(reducer(rt), "bn_bwd_reduce", &bufs, &p, reduction(&p))?;
        } else {
            let partials = Tensor::empty(rt, &[c, p.chunks as usize, 2])?;
            let bufs = [x.buffer(), g.buffer(), y.buffer(), sums[0], sums[1], sums[2], sums[3], partials.buffer()];
            rt.dispatch(reducer(rt), "bn_bwd_reduce", &bufs, &p, reduction(&p))?;
            let bufs = [partials.buffer(), sums[0], sums[1], sums[2], sums[3], coef.buffer()];
            rt.dispatch(Shader::BatchNorm, "bn_bwd_combine", &bufs, &p, Work::Items(c as u64))?;
        }
        if let (Some(sum), Stats::Batch(_), true) = (rt.replica_sum(), stats, grads.wants(x)) {
            super::batchnorm_sync::backward(rt, &sum, (p.n * p.hw) as usize, &batch, gamma, (&dgamma, &dbeta), &coef)?;
        }
    }
    if grads.wants(x) || wants_res {
        let dx = Tensor::empty(rt, x.shape())?;
        // The kernel writes dres only when asked; otherwise a one-value stand-in is bound.
        let dres = if wants_res { Tensor::empty(rt, x.shape())? } else { Tensor::empty(rt, &[1])? };
        let p = params(x, false, act_bits(relu, wants_res));
        match stats {
            Stats::Batch(_) => {
                let bufs = [x.buffer(), g.buffer(), y.buffer(), coef.buffer(), dx.buffer(), dres.buffer()];
                rt.dispatch(Shader::BatchNorm, "bn_bwd_data", &bufs, &p, per_channel(x))?;
            }
            Stats::Running { var, .. } => {
                let bufs = [g.buffer(), y.buffer(), var.buffer(), gamma.buffer(), dx.buffer(), dres.buffer()];
                rt.dispatch(Shader::BatchNorm, "bn_bwd_data_eval", &bufs, &p, per_channel(x))?;
            }
        }
        if grads.wants(x) {
            grads.add(x, dx)?;
        }
        if let Some(r) = residual.filter(|_| wants_res) {
            grads.add(r, dres)?;
        }
    }
    if grads.wants(gamma) {
        grads.add(gamma, dgamma)?;
    }
    if grads.wants(beta) {
        grads.add(beta, dbeta)?;
    }
    Ok(())
}
