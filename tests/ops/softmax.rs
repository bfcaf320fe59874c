//! softmax over the last dimension: forward, backward, finite differences.

use crate::common::*;
use engine::ops::softmax::softmax;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn softmax_matches_reference() {
    let rt = rt();
    let mut r = rng(71);
    let (rows, cols) = (67, 37);
    let x = r.uniform_vec(rows * cols, -8.0, 8.0);
    let xt = Tensor::leaf(&rt, &[rows, cols], &x).unwrap();
    let y = softmax(&rt, &xt).unwrap();
    let want = cpu::softmax_rows(&to_f64(&x), cols);
    assert_close("softmax", &y.to_vec(&rt).unwrap(), &want, tol::FWD);
    let g = r.uniform_vec(rows * cols, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &g).unwrap()).unwrap();
    let dx: Vec<f64> = (0..rows)
        .flat_map(|rr| {
            let row = &want[rr * cols..(rr + 1) * cols];
            let gr = &g[rr * cols..(rr + 1) * cols];
            let dot: f64 = row.iter().zip(gr).map(|(y, g)| y * *g as f64).sum();
            row.iter().zip(gr).map(move |(y, g)| y * (*g as f64 - dot)).collect::<Vec<_>>()
        })
        .collect();
    assert_close("softmax backward", &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &dx, tol::BWD);
}

#[test]
fn softmax_finite_differences() {
    let rt = rt();
    grad_check(&rt, 72, &[(vec![3, 5], rng(73).uniform_vec(15, -2.0, 2.0))], 10, |g, t| softmax(g, &t[0]));
}
