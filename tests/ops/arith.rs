//! add, scale, mul, fill; gradient fan-out accumulation through the tape; gradient mode.

use crate::common::*;
use engine::ops::arith::{add, scale};
use engine::{autodiff, Tensor};

#[test]
fn add_scale_fill_match_reference() {
    let rt = rt();
    let mut r = rng(31);
    let a = r.uniform_vec(300, -2.0, 2.0);
    let b = r.uniform_vec(300, -2.0, 2.0);
    let at = Tensor::from_f32(&rt, &[300], &a).unwrap();
    let bt = Tensor::from_f32(&rt, &[300], &b).unwrap();
    let s = add(&rt, &at, &bt).unwrap().to_vec(&rt).unwrap();
    assert_close("add", &s, &a.iter().zip(&b).map(|(x, y)| *x as f64 + *y as f64).collect::<Vec<_>>(), tol::FWD);
    let sc = scale(&rt, &at, -1.5).unwrap().to_vec(&rt).unwrap();
    assert_close("scale", &sc, &a.iter().map(|x| -1.5 * *x as f64).collect::<Vec<_>>(), tol::FWD);
    let z = Tensor::zeros(&rt, &[70_001]).unwrap().to_vec(&rt).unwrap();
    assert!(z.iter().all(|v| *v == 0.0));
}

#[test]
fn fan_out_gradients_accumulate() {
    // y = 2a + (a + b): dy/da = 3, dy/db = 1.
    let rt = rt();
    let a = Tensor::leaf(&rt, &[4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    let b = Tensor::leaf(&rt, &[4], &[0.0; 4]).unwrap();
    let y = add(&rt, &scale(&rt, &a, 2.0).unwrap(), &add(&rt, &a, &b).unwrap()).unwrap();
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &[4], &[1.0; 4]).unwrap()).unwrap();
    assert_eq!(grads.get(&a).unwrap().to_vec(&rt).unwrap(), vec![3.0; 4]);
    assert_eq!(grads.get(&b).unwrap().to_vec(&rt).unwrap(), vec![1.0; 4]);
}

#[test]
fn add_and_scale_finite_differences() {
    let rt = rt();
    let mut r = rng(32);
    let inputs = vec![(vec![3, 4], r.uniform_vec(12, -1.0, 1.0)), (vec![3, 4], r.uniform_vec(12, -1.0, 1.0))];
    grad_check(&rt, 33, &inputs, 8, |g, t| add(g, &scale(g, &t[0], 0.7)?, &t[1]));
}

#[test]
fn no_grad_records_nothing_and_stop_gradient_cuts() {
    let rt = rt();
    let a = Tensor::leaf(&rt, &[2], &[1.0, 2.0]).unwrap();
    let y = engine::no_grad(|| scale(&rt, &a, 3.0)).unwrap();
    assert!(!y.requires_grad());
    let d = scale(&rt, &a.detach(), 3.0).unwrap();
    assert!(!d.requires_grad());
    assert!(autodiff::backward(&rt, &d.reshape(&[2]).unwrap()).is_err());
}

#[test]
fn mul_matches_reference_and_finite_differences() {
    let rt = rt();
    let mut r = rng(34);
    let a = r.uniform_vec(301, -2.0, 2.0);
    let b = r.uniform_vec(301, -2.0, 2.0);
    let p = engine::ops::arith::mul(&rt, &Tensor::from_f32(&rt, &[301], &a).unwrap(), &Tensor::from_f32(&rt, &[301], &b).unwrap()).unwrap();
    assert_close("mul", &p.to_vec(&rt).unwrap(), &a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).collect::<Vec<_>>(), tol::FWD);
    let inputs = vec![(vec![2, 5], r.uniform_vec(10, -1.0, 1.0)), (vec![2, 5], r.uniform_vec(10, -1.0, 1.0))];
    grad_check(&rt, 35, &inputs, 8, |g, t| engine::ops::arith::mul(g, &t[0], &t[1]));
}

#[test]
fn gradient_mode_is_restored_after_an_error_or_a_panic() {
    let rt = rt();
    let a = Tensor::leaf(&rt, &[2], &[1.0, 2.0]).unwrap();
    // An error inside no_grad: the `?` path leaves through the guard.
    let failed: engine::Result<Tensor> = engine::no_grad(|| add(&rt, &a, &Tensor::zeros(&rt, &[3])?));
    assert!(failed.is_err());
    assert!(autodiff::grad_enabled(), "gradient mode not restored after an error");
    // A panic inside no_grad, caught: the guard's drop runs during unwinding.
    let caught = std::panic::catch_unwind(|| engine::no_grad(|| panic!("boom")));
    assert!(caught.is_err());
    assert!(autodiff::grad_enabled(), "gradient mode not restored after a panic");
    assert!(scale(&rt, &a, 2.0).unwrap().requires_grad());
}
