//! batchnorm2d: train mode (batch stats, running-stat update with the unbiased variance) and
//! eval mode (running stats), forward and backward, plus finite differences in both modes; and
//! the fused `act(BN(x) + residual)` (ReLU, residual, both) against the same reference.

use crate::common::*;
use engine::ops::batchnorm::{batchnorm2d, batchnorm_act, reduction_chunks, Act, RunningStats, EPS, MOMENTUM};
use engine::{autodiff, Tensor};
use engine_reference as cpu;

fn run(train: bool) {
    run_at(train, [3, 5, 3, 7]);
}

fn run_at(train: bool, xs: [usize; 4]) {
    run_on(&rt(), train, xs);
}

fn run_on(rt: &engine::Runtime, train: bool, xs: [usize; 4]) {
    let mut r = rng(if train { 11 } else { 12 });
    let (n, ch): (usize, usize) = (xs.iter().product(), xs[1]);
    let x = r.uniform_vec(n, -2.0, 3.0);
    let gamma = r.uniform_vec(ch, 0.5, 1.5);
    let beta = r.uniform_vec(ch, -0.5, 0.5);
    let rm0 = r.uniform_vec(ch, -0.2, 0.2);
    let rv0 = r.uniform_vec(ch, 0.5, 2.0);
    let xt = Tensor::leaf(rt, &xs, &x).unwrap();
    let gt = Tensor::leaf(rt, &[ch], &gamma).unwrap();
    let bt = Tensor::leaf(rt, &[ch], &beta).unwrap();
    let rm = Tensor::from_f32(rt, &[ch], &rm0).unwrap();
    let rv = Tensor::from_f32(rt, &[ch], &rv0).unwrap();
    let y = batchnorm2d(rt, &xt, &gt, &bt, RunningStats { mean: &rm, var: &rv }, train).unwrap();

    let (bmean, bvar) = cpu::channel_stats(&to_f64(&x), xs);
    let (mean, var) = if train { (bmean.clone(), bvar.clone()) } else { (to_f64(&rm0), to_f64(&rv0)) };
    let want = cpu::batchnorm(&to_f64(&x), xs, &mean, &var, &to_f64(&gamma), &to_f64(&beta), EPS as f64);
    assert_close("batchnorm forward", &y.to_vec(rt).unwrap(), &want, tol::FWD);

    let m = (xs[0] * xs[2] * xs[3]) as f64;
    let mom = MOMENTUM as f64;
    let (want_rm, want_rv): (Vec<f64>, Vec<f64>) = if train {
        (0..ch).map(|c| ((1.0 - mom) * rm0[c] as f64 + mom * bmean[c], (1.0 - mom) * rv0[c] as f64 + mom * bvar[c] * m / (m - 1.0))).unzip()
    } else {
        (to_f64(&rm0), to_f64(&rv0))
    };
    assert_close("running mean", &rm.to_vec(rt).unwrap(), &want_rm, tol::FWD);
    assert_close("running var (unbiased)", &rv.to_vec(rt).unwrap(), &want_rv, tol::FWD);

    let g = r.uniform_vec(n, -1.0, 1.0);
    let seed = Tensor::from_f32(rt, &xs, &g).unwrap();
    let grads = autodiff::backward_with(rt, &y, seed).unwrap();
    let (dx, dgamma, dbeta) = cpu::batchnorm_backward(&to_f64(&x), xs, &mean, &var, &to_f64(&gamma), EPS as f64, train, &to_f64(&g));
    assert_close("batchnorm dx", &grads.get(&xt).unwrap().to_vec(rt).unwrap(), &dx, tol::BWD);
    assert_close("batchnorm dgamma", &grads.get(&gt).unwrap().to_vec(rt).unwrap(), &dgamma, tol::BWD);
    assert_close("batchnorm dbeta", &grads.get(&bt).unwrap().to_vec(rt).unwrap(), &dbeta, tol::BWD);
}

#[test]
fn batchnorm_train_matches_reference() {
    run(true);
}

#[test]
fn batchnorm_eval_matches_reference() {
    run(false);
}

/// Large enough that the statistics and gradient sums run on several workgroups per channel
/// (three chunks of 3, 3 and 1 samples) and a combine pass finishes them.
const CHUNKED: [usize; 4] = [7, 2, 64, 64];

#[test]
fn batchnorm_over_several_workgroups_per_channel_matches_reference() {
    assert_eq!(reduction_chunks(CHUNKED[0], CHUNKED[1], CHUNKED[2] * CHUNKED[3]), (3, 3));
    run_at(true, CHUNKED);
    run_at(false, CHUNKED);
}

/// The per-channel sums on subgroup operations (one subgroup sum per subgroup, then their sum)
/// against the same float64 reference and tolerances as the tree, on one and on several
/// workgroups per channel, train and eval mode.
#[test]
fn batchnorm_with_subgroup_reductions_matches_reference() {
    let rt = with_kernels(&rt(), |k| k.subgroup_reductions = true);
    if !rt.uses_subgroup_reductions() {
        eprintln!("skipped: {} has no subgroup operations (wgpu's SUBGROUP feature)", rt.adapter().name);
        return;
    }
    for xs in [[3, 5, 3, 7], CHUNKED] {
        run_on(&rt, true, xs);
        run_on(&rt, false, xs);
    }
}

#[test]
fn reduction_chunks_cover_every_sample_and_none_is_empty() {
    for (n, c, hw) in [(1, 1, 1), (128, 64, 1024), (128, 512, 16), (7, 3, 512), (5, 1, 100_000), (3, 2, 0)] {
        let (chunks, per) = reduction_chunks(n, c, hw);
        assert!(
            chunks >= 1 && (chunks as usize - 1) * (per as usize) < n.max(1) && chunks as usize * per as usize >= n,
            "{n} {c} {hw}: {chunks} x {per}"
        );
    }
    // ResNet-18 at batch 128: layer1 8 workgroups per channel of 16 samples each, layer2 4 of 32,
    // layer3 (256 channels of 8 x 8) one.
    assert_eq!(reduction_chunks(128, 64, 1024), (8, 16));
    assert_eq!(reduction_chunks(128, 128, 256), (4, 32));
    assert_eq!(reduction_chunks(128, 256, 64), (1, 128));
    // lavapipe's bench size (batch 8, width 8): one per channel.
    assert_eq!(reduction_chunks(8, 8, 1024), (1, 8));
    // layer4: 512 channels already make enough workgroups.
    assert_eq!(reduction_chunks(128, 512, 16), (1, 128));
}

fn fd(train: bool) {
    let rt = rt();
    let mut r = rng(13);
    let inputs = vec![
        (vec![3, 2, 3, 3], r.uniform_vec(54, -2.0, 2.0)),
        (vec![2], r.uniform_vec(2, 0.5, 1.5)),
        (vec![2], r.uniform_vec(2, -0.5, 0.5)),
    ];
    let rm = Tensor::from_f32(&rt, &[2], &[0.1, -0.1]).unwrap();
    let rv = Tensor::from_f32(&rt, &[2], &[0.8, 1.3]).unwrap();
    grad_check(&rt, 14, &inputs, 12, |g, t| {
        // Running stats are state, not inputs: restore them so every evaluation sees the same.
        rm.write_f32(g, &[0.1, -0.1])?;
        rv.write_f32(g, &[0.8, 1.3])?;
        batchnorm2d(g, &t[0], &t[1], &t[2], RunningStats { mean: &rm, var: &rv }, train)
    });
}

#[test]
fn batchnorm_train_finite_differences() {
    fd(true);
}

#[test]
fn batchnorm_eval_finite_differences() {
    fd(false);
}

fn fused(train: bool, relu: bool, with_residual: bool, seed: u64, xs: [usize; 4]) {
    let rt = rt();
    let mut r = rng(seed);
    let (n, ch): (usize, usize) = (xs.iter().product(), xs[1]);
    let x = r.uniform_vec(n, -2.0, 3.0);
    let res = r.uniform_vec(n, -1.5, 1.5);
    let gamma = r.uniform_vec(ch, 0.5, 1.5);
    let beta = r.uniform_vec(ch, -0.5, 0.5);
    let (rm0, rv0) = (r.uniform_vec(ch, -0.2, 0.2), r.uniform_vec(ch, 0.5, 2.0));
    let xt = Tensor::leaf(&rt, &xs, &x).unwrap();
    let rt_res = Tensor::leaf(&rt, &xs, &res).unwrap();
    let (gt, bt) = (Tensor::leaf(&rt, &[ch], &gamma).unwrap(), Tensor::leaf(&rt, &[ch], &beta).unwrap());
    let (rm, rv) = (Tensor::from_f32(&rt, &[ch], &rm0).unwrap(), Tensor::from_f32(&rt, &[ch], &rv0).unwrap());
    let act = Act { residual: with_residual.then_some(&rt_res), relu };
    let y = batchnorm_act(&rt, &xt, &gt, &bt, RunningStats { mean: &rm, var: &rv }, train, act).unwrap();
    let (mean, var) = if train { cpu::channel_stats(&to_f64(&x), xs) } else { (to_f64(&rm0), to_f64(&rv0)) };
    let res64 = to_f64(&res);
    let want = cpu::batchnorm_act(
        &to_f64(&x),
        xs,
        &mean,
        &var,
        &to_f64(&gamma),
        &to_f64(&beta),
        with_residual.then_some(res64.as_slice()),
        relu,
        EPS as f64,
    );
    let what = format!("fused batch norm (train {train}, relu {relu}, residual {with_residual})");
    assert_close(&format!("{what} forward"), &y.to_vec(&rt).unwrap(), &want, tol::FWD);
    if relu {
        assert!(want.contains(&0.0) && want.iter().any(|v| *v > 0.0), "the ReLU should clip some outputs");
    }
    let g = r.uniform_vec(n, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &xs, &g).unwrap()).unwrap();
    let (dx, dgamma, dbeta, dres) =
        cpu::batchnorm_act_backward(&to_f64(&x), xs, &mean, &var, &to_f64(&gamma), EPS as f64, train, relu, &want, &to_f64(&g));
    assert_close(&format!("{what} dx"), &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &dx, tol::BWD);
    assert_close(&format!("{what} dgamma"), &grads.get(&gt).unwrap().to_vec(&rt).unwrap(), &dgamma, tol::BWD);
    assert_close(&format!("{what} dbeta"), &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &dbeta, tol::BWD);
    match grads.get(&rt_res) {
        Some(d) => assert_close(&format!("{what} dresidual"), &d.to_vec(&rt).unwrap(), &dres, tol::BWD),
        None => assert!(!with_residual, "{what}: no residual gradient"),
    }
}

#[test]
fn fused_batchnorm_relu_residual_matches_reference() {
    for (k, (train, relu, residual)) in
        [(true, true, false), (true, true, true), (true, false, true), (false, true, true), (false, true, false)].into_iter().enumerate()
    {
        fused(train, relu, residual, 20 + k as u64, [3, 4, 5, 3]);
    }
    fused(true, true, true, 30, CHUNKED);
}

#[test]
fn fused_batchnorm_finite_differences() {
    let rt = rt();
    let mut r = rng(15);
    // The ReLU has a kink: at this seed no sampled perturbation of 1e-2 moves an output across it
    // (a crossing would show as a large mismatch, not pass silently).
    let inputs = vec![
        (vec![2, 2, 3, 3], r.uniform_vec(36, -2.0, 2.0)),
        (vec![2], r.uniform_vec(2, 0.5, 1.5)),
        (vec![2], r.uniform_vec(2, -0.5, 0.5)),
        (vec![2, 2, 3, 3], r.uniform_vec(36, -1.0, 1.0)),
    ];
    let (rm, rv) = (Tensor::from_f32(&rt, &[2], &[0.1, -0.1]).unwrap(), Tensor::from_f32(&rt, &[2], &[0.8, 1.3]).unwrap());
    for train in [true, false] {
        grad_check(&rt, 16, &inputs, 12, |g, t| {
            rm.write_f32(g, &[0.1, -0.1])?;
            rv.write_f32(g, &[0.8, 1.3])?;
            batchnorm_act(g, &t[0], &t[1], &t[2], RunningStats { mean: &rm, var: &rv }, train, Act { residual: Some(&t[3]), relu: true })
        });
    }
}
