//! linear (x w^T + b) on the 1x1-convolution GEMM: forward, all three gradients, finite differences.

use crate::common::*;
use engine::ops::linear::linear;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn linear_matches_reference() {
    let rt = rt();
    let mut r = rng(61);
    let (n, i, o) = (5, 70, 13);
    let x = r.uniform_vec(n * i, -1.0, 1.0);
    let w = r.uniform_vec(o * i, -0.3, 0.3);
    let b = r.uniform_vec(o, -0.3, 0.3);
    let (xt, wt, bt) =
        (Tensor::leaf(&rt, &[n, i], &x).unwrap(), Tensor::leaf(&rt, &[o, i], &w).unwrap(), Tensor::leaf(&rt, &[o], &b).unwrap());
    let y = linear(&rt, &xt, &wt, Some(&bt)).unwrap();
    assert_close("linear", &y.to_vec(&rt).unwrap(), &cpu::linear(&to_f64(&x), &to_f64(&w), Some(&to_f64(&b)), n, i, o), tol::FWD);
    let g = r.uniform_vec(n * o, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &[n, o], &g).unwrap()).unwrap();
    let (gd, xd, wd) = (to_f64(&g), to_f64(&x), to_f64(&w));
    let dx: Vec<f64> = (0..n * i).map(|e| (0..o).map(|c| gd[e / i * o + c] * wd[c * i + e % i]).sum()).collect();
    let dw: Vec<f64> = (0..o * i).map(|e| (0..n).map(|rr| gd[rr * o + e / i] * xd[rr * i + e % i]).sum()).collect();
    let db: Vec<f64> = (0..o).map(|c| (0..n).map(|rr| gd[rr * o + c]).sum()).collect();
    assert_close("linear dx", &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &dx, tol::BWD);
    assert_close("linear dw", &grads.get(&wt).unwrap().to_vec(&rt).unwrap(), &dw, tol::BWD);
    assert_close("linear db", &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &db, tol::BWD);
}

#[test]
fn linear_finite_differences() {
    let rt = rt();
    let mut r = rng(62);
    let inputs = vec![
        (vec![3, 6], r.uniform_vec(18, -1.0, 1.0)),
        (vec![4, 6], r.uniform_vec(24, -0.5, 0.5)),
        (vec![4], r.uniform_vec(4, -0.5, 0.5)),
    ];
    grad_check(&rt, 63, &inputs, 10, |g, t| linear(g, &t[0], &t[1], Some(&t[2])));
}

#[test]
fn matmul_matches_reference_and_finite_differences() {
    let rt = rt();
    let mut r = rng(64);
    let (n, m, k) = (5, 130, 67);
    let a = r.uniform_vec(n * m, -1.0, 1.0);
    let b = r.uniform_vec(m * k, -1.0, 1.0);
    let y = engine::ops::linear::matmul(&rt, &Tensor::from_f32(&rt, &[n, m], &a).unwrap(), &Tensor::from_f32(&rt, &[m, k], &b).unwrap())
        .unwrap();
    let want: Vec<f64> = (0..n * k).map(|e| (0..m).map(|j| a[e / k * m + j] as f64 * b[j * k + e % k] as f64).sum()).collect();
    assert_close("matmul", &y.to_vec(&rt).unwrap(), &want, tol::FWD);
    let inputs = vec![(vec![3, 4], r.uniform_vec(12, -1.0, 1.0)), (vec![4, 5], r.uniform_vec(20, -1.0, 1.0))];
    grad_check(&rt, 65, &inputs, 8, |g, t| engine::ops::linear::matmul(g, &t[0], &t[1]));
}
