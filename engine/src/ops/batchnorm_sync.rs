//! Batch norm over the replicas of a data-parallel run ("sync batch norm"). Each replica (a
//! process with its own device) holds part of the batch; while a [`ReplicaSum`] is installed on
//! the runtime ([`Runtime::with_replica_sum`]), a train-mode batch norm normalises with the
//! statistics of the values of every replica, moves the running statistics with them, and its
//! backward uses the per-channel gradient sums of every replica: what one process computes on
//! the whole batch.
//!
//! The kernels stay as they are: after the statistics pass (and after the backward's
//! reduction pass) the per-channel results make a round trip through the host, where they are
//! summed over the replicas and the normalising statistics (the dx coefficients) are recomputed
//! in float64, before the element-wise pass that uses them is recorded. That is one read-back,
//! one sum and one small write per batch norm, forward and backward.
//!
//! The gradients the backward hands to gamma and beta stay this replica's sums: the caller sums
//! parameter gradients over the replicas anyway. For the sums to be those of the whole batch's
//! loss, each replica seeds its backward with its share of the batch (a batch-mean loss).

use std::rc::Rc;

use crate::error::Result;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

use super::batchnorm::{EPS, MOMENTUM};

/// Replaces a buffer with its element-wise sum over the replicas; every replica calls it with
/// a buffer of the same length at the same point of its forward or backward.
pub type ReplicaSum = Rc<dyn Fn(&mut [f64])>;

/// After the statistics pass of a train-mode forward over `m` values per channel: `stats` (C, 2)
/// holds this replica's (mean, rstd). Replaces them with the whole batch's and moves the running
/// statistics (left untouched by the kernel) with those, as the kernel would have.
pub(crate) fn forward(rt: &Runtime, sum: &ReplicaSum, m: usize, stats: &Tensor, running_mean: &Tensor, running_var: &Tensor) -> Result<()> {
    let v = Tensor::read_all(rt, &[stats, running_mean, running_var])?;
    let c = running_mean.numel();
    let (m, eps) = (m as f64, EPS as f64);
    // Per channel: count, sum of values, sum of squared deviations from this replica's mean
    // (var = 1/rstd^2 - eps), sum of squared means, so the combined variance needs no
    // difference of large sums within a replica.
    let mut s = vec![0f64; 1 + 3 * c];
    s[0] = m;
    for ch in 0..c {
        let (mean, rstd) = (v[0][2 * ch] as f64, v[0][2 * ch + 1] as f64);
        s[1 + ch] = m * mean;
        s[1 + c + ch] = m * (1.0 / (rstd * rstd) - eps).max(0.0);
        s[1 + 2 * c + ch] = m * mean * mean;
    }
    sum(&mut s);
    let total = s[0];
    let (mut st, mut rm, mut rv) = (vec![0f32; 2 * c], v[1].clone(), v[2].clone());
    for ch in 0..c {
        let mean = s[1 + ch] / total;
        let m2 = (s[1 + c + ch] + s[1 + 2 * c + ch] - total * mean * mean).max(0.0);
        st[2 * ch] = mean as f32;
        st[2 * ch + 1] = (1.0 / (m2 / total + eps).sqrt()) as f32;
        let unbiased = (m2 / (total.max(2.0) - 1.0)) as f32;
        rm[ch] = (1.0 - MOMENTUM) * rm[ch] + MOMENTUM * mean as f32;
        rv[ch] = (1.0 - MOMENTUM) * rv[ch] + MOMENTUM * unbiased;
    }
    stats.write_f32(rt, &st)?;
    running_mean.write_f32(rt, &rm)?;
    running_var.write_f32(rt, &rv)
}

/// After the reduction pass of a train-mode backward over `m` values per channel: `dgamma` and
/// `dbeta` (C,) hold this replica's sums of g' xhat and g'. Rewrites `coef` (C, 4) from the
/// sums over the replicas, with the whole batch's count (dx = A g' + B + C x, as the kernel's
/// `channel_grads`).
pub(crate) fn backward(
    rt: &Runtime,
    sum: &ReplicaSum,
    m: usize,
    stats: &Tensor,
    gamma: &Tensor,
    (dgamma, dbeta): (&Tensor, &Tensor),
    coef: &Tensor,
) -> Result<()> {
    let v = Tensor::read_all(rt, &[stats, gamma, dgamma, dbeta])?;
    let c = gamma.numel();
    let mut s = vec![0f64; 1 + 2 * c];
    s[0] = m as f64;
    for ch in 0..c {
        s[1 + ch] = v[3][ch] as f64;
        s[1 + c + ch] = v[2][ch] as f64;
    }
    sum(&mut s);
    let total = s[0];
    let mut out = vec![0f32; 4 * c];
    for ch in 0..c {
        let (mean, rstd, g) = (v[0][2 * ch] as f64, v[0][2 * ch + 1] as f64, v[1][ch] as f64);
        let (db, dg) = (s[1 + ch], s[1 + c + ch]);
        let a = g * rstd;
        let cc = -a * rstd * dg / total;
        out[4 * ch..4 * ch + 3].copy_from_slice(&[a as f32, (-a * db / total - cc * mean) as f32, cc as f32]);
    }
    coef.write_f32(rt, &out)
}
