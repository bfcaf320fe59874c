//! batchnorm2d: train mode (batch stats, running-stat update with the unbiased variance) and
//! eval mode (running stats), forward and backward, plus finite differences in both modes.

use crate::common::*;
use engine::ops::batchnorm::{batchnorm2d, RunningStats, EPS, MOMENTUM};
use engine::{autodiff, reference as cpu, Tensor};

fn run(train: bool) {
    let rt = rt();
    let mut r = rng(if train { 11 } else { 12 });
    let xs = [3, 5, 3, 7];
    let n: usize = xs.iter().product();
    let x = r.uniform_vec(n, -2.0, 3.0);
    let gamma = r.uniform_vec(5, 0.5, 1.5);
    let beta = r.uniform_vec(5, -0.5, 0.5);
    let rm0 = r.uniform_vec(5, -0.2, 0.2);
    let rv0 = r.uniform_vec(5, 0.5, 2.0);
    let xt = Tensor::leaf(&rt, &xs, &x).unwrap();
    let gt = Tensor::leaf(&rt, &[5], &gamma).unwrap();
    let bt = Tensor::leaf(&rt, &[5], &beta).unwrap();
    let rm = Tensor::from_f32(&rt, &[5], &rm0).unwrap();
    let rv = Tensor::from_f32(&rt, &[5], &rv0).unwrap();
    let y = batchnorm2d(&rt, &xt, &gt, &bt, RunningStats { mean: &rm, var: &rv }, train).unwrap();

    let (bmean, bvar) = cpu::channel_stats(&to_f64(&x), xs);
    let (mean, var) = if train { (bmean.clone(), bvar.clone()) } else { (to_f64(&rm0), to_f64(&rv0)) };
    let want = cpu::batchnorm(&to_f64(&x), xs, &mean, &var, &to_f64(&gamma), &to_f64(&beta), EPS as f64);
    assert_close("batchnorm forward", &y.to_vec(&rt).unwrap(), &want, tol::FWD);

    let m = (xs[0] * xs[2] * xs[3]) as f64;
    let mom = MOMENTUM as f64;
    let (want_rm, want_rv): (Vec<f64>, Vec<f64>) = if train {
        (0..5).map(|c| ((1.0 - mom) * rm0[c] as f64 + mom * bmean[c], (1.0 - mom) * rv0[c] as f64 + mom * bvar[c] * m / (m - 1.0))).unzip()
    } else {
        (to_f64(&rm0), to_f64(&rv0))
    };
    assert_close("running mean", &rm.to_vec(&rt).unwrap(), &want_rm, tol::FWD);
    assert_close("running var (unbiased)", &rv.to_vec(&rt).unwrap(), &want_rv, tol::FWD);

    let g = r.uniform_vec(n, -1.0, 1.0);
    let seed = Tensor::from_f32(&rt, &xs, &g).unwrap();
    let grads = autodiff::backward_with(&rt, &y, seed).unwrap();
    let (dx, dgamma, dbeta) = cpu::batchnorm_backward(&to_f64(&x), xs, &mean, &var, &to_f64(&gamma), EPS as f64, train, &to_f64(&g));
    assert_close("batchnorm dx", &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &dx, tol::BWD);
    assert_close("batchnorm dgamma", &grads.get(&gt).unwrap().to_vec(&rt).unwrap(), &dgamma, tol::BWD);
    assert_close("batchnorm dbeta", &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &dbeta, tol::BWD);
}

#[test]
fn batchnorm_train_matches_reference() {
    run(true);
}

#[test]
fn batchnorm_eval_matches_reference() {
    run(false);
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
