//! add, scale, clamp, fill; gradient fan-out accumulation through the tape.

use crate::common::*;
use engine::ops::arith::{add, clamp, scale};
use engine::{autodiff, Tensor};

#[test]
fn add_scale_clamp_match_reference() {
    let gpu = gpu();
    let mut r = rng(31);
    let a = r.uniform_vec(300, -2.0, 2.0);
    let b = r.uniform_vec(300, -2.0, 2.0);
    let at = Tensor::from_f32(&gpu, &[300], &a).unwrap();
    let bt = Tensor::from_f32(&gpu, &[300], &b).unwrap();
    let s = add(&gpu, &at, &bt).unwrap().to_vec(&gpu).unwrap();
    assert_close("add", &s, &a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect::<Vec<_>>(), tol::FWD);
    let sc = scale(&gpu, &at, -1.5).unwrap().to_vec(&gpu).unwrap();
    assert_close("scale", &sc, &a.iter().map(|x| -1.5 * *x as f64).collect::<Vec<_>>(), tol::FWD);
    let c = clamp(&gpu, &at, -0.5, 0.25).unwrap().to_vec(&gpu).unwrap();
    assert_close("clamp", &c, &a.iter().map(|x| (*x as f64).clamp(-0.5, 0.25)).collect::<Vec<_>>(), tol::FWD);
    let z = Tensor::zeros(&gpu, &[70_001]).unwrap().to_vec(&gpu).unwrap();
    assert!(z.iter().all(|v| *v == 0.0));
}

#[test]
fn fan_out_gradients_accumulate() {
    // y = 2a + (a + b): dy/da = 3, dy/db = 1.
    let gpu = gpu();
    let a = Tensor::leaf(&gpu, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::leaf(&gpu, &[4], &[0.0; 4]).unwrap();
    let y = add(&gpu, &scale(&gpu, &a, 2.0).unwrap(), &add(&gpu, &a, &b).unwrap()).unwrap();
    let grads = autodiff::backward_with(&gpu, &y, Tensor::from_f32(&gpu, &[4], &[1.0; 4]).unwrap()).unwrap();
    assert_eq!(grads.get(&a).unwrap().to_vec(&gpu).unwrap(), vec![3.0; 4]);
    assert_eq!(grads.get(&b).unwrap().to_vec(&gpu).unwrap(), vec![1.0; 4]);
}

#[test]
fn add_and_scale_finite_differences() {
    let gpu = gpu();
    let mut r = rng(32);
    let inputs = vec![(vec![3, 4], r.uniform_vec(12, -1.0, 1.0)), (vec![3, 4], r.uniform_vec(12, -1.0, 1.0))];
    grad_check(&gpu, 33, &inputs, 8, |g, t| add(g, &scale(g, &t[0], 0.7)?, &t[1]));
}

#[test]
fn no_grad_records_nothing_and_stop_gradient_cuts() {
    let gpu = gpu();
    let a = Tensor::leaf(&gpu, &[2], &[1.0, 2.0]).unwrap();
    let y = gpu.no_grad(|| scale(&gpu, &a, 3.0)).unwrap();
    assert!(!y.requires_grad());
    let d = scale(&gpu, &a.detach(&gpu), 3.0).unwrap();
    assert!(!d.requires_grad());
    assert!(autodiff::backward(&gpu, &d.reshape(&gpu, &[2]).unwrap()).is_err());
}

#[test]
fn mul_matches_reference_and_finite_differences() {
    let gpu = gpu();
    let mut r = rng(34);
    let a = r.uniform_vec(301, -2.0, 2.0);
    let b = r.uniform_vec(301, -2.0, 2.0);
    let p = engine::ops::arith::mul(&gpu, &Tensor::from_f32(&gpu, &[301], &a).unwrap(), &Tensor::from_f32(&gpu, &[301], &b).unwrap()).unwrap();
    assert_close("mul", &p.to_vec(&gpu).unwrap(), &a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).collect::<Vec<_>>(), tol::FWD);
    let inputs = vec![(vec![2, 5], r.uniform_vec(10, -1.0, 1.0)), (vec![2, 5], r.uniform_vec(10, -1.0, 1.0))];
    grad_check(&gpu, 35, &inputs, 8, |g, t| engine::ops::arith::mul(g, &t[0], &t[1]));
}
