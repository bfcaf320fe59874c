//! KL divergence between row softmaxes (TRADES): value and both gradients vs the CPU, and
//! finite differences.

use crate::common::*;
use engine::ops::kl_div::kl_div;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn kl_div_matches_reference() {
    let rt = rt();
    let mut r = rng(151);
    let (n, k) = (37, 10);
    let (a, b) = (r.uniform_vec(n * k, -4.0, 4.0), r.uniform_vec(n * k, -4.0, 4.0));
    let (at, bt) = (Tensor::leaf(&rt, &[n, k], &a).unwrap(), Tensor::leaf(&rt, &[n, k], &b).unwrap());
    let loss = kl_div(&rt, &at, &bt).unwrap();
    let (want, da, db) = cpu::kl_div(&to_f64(&a), &to_f64(&b), k);
    assert_close("kl div", &loss.to_vec(&rt).unwrap(), &[want], tol::FWD);
    let grads = autodiff::backward(&rt, &loss).unwrap();
    assert_close("kl div da", &grads.get(&at).unwrap().to_vec(&rt).unwrap(), &da, tol::BWD);
    assert_close("kl div db", &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &db, tol::BWD);
    // Only the gradient asked for is computed.
    let frozen = Tensor::from_f32(&rt, &[n, k], &a).unwrap();
    let grads = autodiff::backward(&rt, &kl_div(&rt, &frozen, &bt).unwrap()).unwrap();
    assert!(grads.get(&frozen).is_none());
    assert_close("kl div db alone", &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &db, tol::BWD);
}

#[test]
fn kl_div_finite_differences() {
    let rt = rt();
    let mut r = rng(152);
    let inputs = vec![(vec![3, 4], r.uniform_vec(12, -2.0, 2.0)), (vec![3, 4], r.uniform_vec(12, -2.0, 2.0))];
    grad_check(&rt, 153, &inputs, 12, |g, t| kl_div(g, &t[0], &t[1]));
}
