//! Mean softmax cross-entropy: loss and logits gradient vs the CPU, finite differences.

use crate::common::*;
use engine::ops::cross_entropy::cross_entropy;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn cross_entropy_matches_reference() {
    let rt = rt();
    let mut r = rng(81);
    // 300 rows: more than the 256 threads of the forward's single workgroup.
    let (n, k) = (300, 10);
    let logits = r.uniform_vec(n * k, -5.0, 5.0);
    let labels: Vec<u32> = (0..n).map(|_| r.below(k as u64) as u32).collect();
    let lt = Tensor::leaf(&rt, &[n, k], &logits).unwrap();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    let loss = cross_entropy(&rt, &lt, &yt).unwrap();
    let (want, dwant) = cpu::cross_entropy(&to_f64(&logits), k, &labels);
    assert_close("cross entropy", &loss.to_vec(&rt).unwrap(), &[want], tol::FWD);
    let grads = autodiff::backward(&rt, &loss).unwrap();
    assert_close("cross entropy backward", &grads.get(&lt).unwrap().to_vec(&rt).unwrap(), &dwant, tol::BWD);
}

#[test]
fn cross_entropy_finite_differences() {
    let rt = rt();
    let labels = Tensor::from_u32(&rt, &[4], &[0, 3, 3, 1]).unwrap();
    grad_check(&rt, 82, &[(vec![4, 5], rng(83).uniform_vec(20, -2.0, 2.0))], 12, |g, t| cross_entropy(g, &t[0], &labels));
}
