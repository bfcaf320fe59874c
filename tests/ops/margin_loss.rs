//! CW margin loss: value and gradient vs the CPU (rows on both sides of the hinge), and
//! finite differences away from the hinge and ties.

use crate::common::*;
use engine::ops::margin_loss::margin_loss;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn margin_loss_matches_reference() {
    let rt = rt();
    let mut r = rng(131);
    let (n, k) = (300, 10);
    let logits = r.uniform_vec(n * k, -5.0, 5.0);
    let labels: Vec<u32> = (0..n).map(|_| r.below(k as u64) as u32).collect();
    let lt = Tensor::leaf(&rt, &[n, k], &logits).unwrap();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    // Confidence 2: some rows are past the hinge (zero gradient), most are not.
    let loss = margin_loss(&rt, &lt, &yt, 2.0).unwrap();
    let (want, dwant) = cpu::margin_loss(&to_f64(&logits), k, &labels, 2.0);
    assert!(dwant.chunks(k).any(|row| row.iter().all(|v| *v == 0.0)), "test data should cover inactive rows");
    assert_close("margin loss", &loss.to_vec(&rt).unwrap(), &[want], tol::FWD);
    let grads = autodiff::backward(&rt, &loss).unwrap();
    assert_close("margin loss backward", &grads.get(&lt).unwrap().to_vec(&rt).unwrap(), &dwant, tol::BWD);
}

#[test]
fn margin_loss_finite_differences() {
    let rt = rt();
    let labels = Tensor::from_u32(&rt, &[3], &[0, 2, 1]).unwrap();
    // Well-separated logits: no perturbation of 1e-2 changes the best other class or crosses the hinge.
    let logits = vec![1.0, 3.0, -1.0, 0.5, 2.0, -2.0, 0.0, 1.5, -3.0, 4.0, 1.0, 2.5];
    grad_check(&rt, 132, &[(vec![3, 4], logits)], 12, |g, t| margin_loss(g, &t[0], &labels, 50.0));
}
