//! relu, sigmoid, softplus(beta): forward and backward vs the CPU, and finite differences.

use crate::common::*;
use engine::ops::activation::{relu, sigmoid, softplus};
use engine::{autodiff, Result, Tensor};
use engine_reference as cpu;

type Op = fn(&engine::Runtime, &Tensor) -> Result<Tensor>;

/// Inputs away from ReLU's kink (|x| >= 0.05) so finite differences never straddle it, and
/// wide enough (+-6) that softplus(5x) crosses its threshold of 20.
fn inputs(seed: u64, n: usize) -> Vec<f32> {
    let mut r = rng(seed);
    (0..n)
        .map(|_| {
            let v = r.uniform(0.05, 6.0) as f32;
            if r.below(2) == 0 {
                v
            } else {
                -v
            }
        })
        .collect()
}

fn check(name: &str, f: Op, fwd: fn(&[f64]) -> Vec<f64>, deriv: fn(&[f64]) -> Vec<f64>) {
    let rt = rt();
    let x = inputs(21, 1037);
    let xt = Tensor::leaf(&rt, &[1037], &x).unwrap();
    let y = f(&rt, &xt).unwrap();
    assert_close(&format!("{name} forward"), &y.to_vec(&rt).unwrap(), &fwd(&to_f64(&x)), tol::FWD);
    let g = rng(22).uniform_vec(1037, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &[1037], &g).unwrap()).unwrap();
    let want: Vec<f64> = deriv(&to_f64(&x)).iter().zip(&g).map(|(d, g)| d * *g as f64).collect();
    assert_close(&format!("{name} backward"), &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &want, tol::BWD);
    grad_check(&rt, 23, &[(vec![5, 7], inputs(24, 35))], 20, |g, t| f(g, &t[0]));
}

#[test]
fn relu_matches_reference() {
    check("relu", relu, cpu::relu, |x| x.iter().map(|v| if *v > 0.0 { 1.0 } else { 0.0 }).collect());
}

#[test]
fn sigmoid_matches_reference() {
    check("sigmoid", sigmoid, cpu::sigmoid, |x| cpu::sigmoid(x).iter().map(|s| s * (1.0 - s)).collect());
}

#[test]
fn softplus_beta5_matches_reference() {
    check("softplus", |g, x| softplus(g, x, 5.0), |x| cpu::softplus(x, 5.0), |x| cpu::softplus_grad(x, 5.0));
}
