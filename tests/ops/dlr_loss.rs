//! DLR loss (APGD-DLR, APGD-T): value and gradient vs the CPU, untargeted and targeted, and
//! finite differences where no perturbation reorders the logits.

use crate::common::*;
use engine::ops::dlr_loss::dlr_loss;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

fn check(targeted: bool, seed: u64) {
    let rt = rt();
    let mut r = rng(seed);
    let (n, k) = (300, 10);
    let logits = r.uniform_vec(n * k, -5.0, 5.0);
    let labels: Vec<u32> = (0..n).map(|_| r.below(k as u64) as u32).collect();
    let targets: Vec<u32> = labels.iter().map(|&y| (y + 1 + r.below(k as u64 - 1) as u32) % k as u32).collect();
    let lt = Tensor::leaf(&rt, &[n, k], &logits).unwrap();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    let tt = Tensor::from_u32(&rt, &[n], &targets).unwrap();
    let t = targeted.then_some(&tt);
    let loss = dlr_loss(&rt, &lt, &yt, t).unwrap();
    let (want, dwant) = cpu::dlr_loss(&to_f64(&logits), k, &labels, targeted.then_some(targets.as_slice()));
    assert_close("dlr loss", &loss.to_vec(&rt).unwrap(), &[want], tol::FWD);
    let grads = autodiff::backward(&rt, &loss).unwrap();
    assert_close("dlr loss backward", &grads.get(&lt).unwrap().to_vec(&rt).unwrap(), &dwant, tol::BWD);
}

#[test]
fn dlr_loss_matches_reference() {
    check(false, 141);
}

#[test]
fn targeted_dlr_loss_matches_reference() {
    check(true, 142);
}

#[test]
fn dlr_loss_finite_differences() {
    let rt = rt();
    let labels = Tensor::from_u32(&rt, &[3], &[0, 2, 4]).unwrap();
    let targets = Tensor::from_u32(&rt, &[3], &[1, 0, 2]).unwrap();
    // Logits at least 0.1 apart in every row: a step of 1e-2 never reorders them. Row 0's label
    // is its top class (the other class is the second), row 1's is not.
    let logits = vec![3.0, 1.0, -1.0, 0.5, 2.0, 1.5, -2.0, 0.0, 4.0, -1.0, 0.3, 2.2, -0.7, 1.1, 3.3];
    grad_check(&rt, 143, &[(vec![3, 5], logits.clone())], 15, |g, t| dlr_loss(g, &t[0], &labels, None));
    grad_check(&rt, 144, &[(vec![3, 5], logits)], 15, |g, t| dlr_loss(g, &t[0], &labels, Some(&targets)));
}
