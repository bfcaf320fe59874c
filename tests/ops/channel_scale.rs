//! channel_scale (the CIFS mask product z * m[n, c]): forward, both gradients, finite differences.

use crate::common::*;
use engine::ops::channel_scale::channel_scale;
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn channel_scale_matches_reference() {
    let rt = rt();
    let mut r = rng(41);
    let (n, c, hw) = (3, 5, 6);
    let z = r.uniform_vec(n * c * hw, -1.0, 1.0);
    let m = r.uniform_vec(n * c, 0.0, 1.0);
    let zt = Tensor::leaf(&rt, &[n, c, 2, 3], &z).unwrap();
    let mt = Tensor::leaf(&rt, &[n, c], &m).unwrap();
    let y = channel_scale(&rt, &zt, &mt).unwrap();
    assert_close("channel_scale", &y.to_vec(&rt).unwrap(), &cpu::channel_scale(&to_f64(&z), &to_f64(&m), hw), tol::FWD);
    let g = r.uniform_vec(z.len(), -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &g).unwrap()).unwrap();
    let dz = cpu::channel_scale(&to_f64(&g), &to_f64(&m), hw);
    let dm: Vec<f64> = (0..n * c).map(|j| (0..hw).map(|s| g[j * hw + s] as f64 * z[j * hw + s] as f64).sum()).collect();
    assert_close("dz", &grads.get(&zt).unwrap().to_vec(&rt).unwrap(), &dz, tol::BWD);
    assert_close("dm", &grads.get(&mt).unwrap().to_vec(&rt).unwrap(), &dm, tol::BWD);
}

#[test]
fn channel_scale_finite_differences() {
    let rt = rt();
    let mut r = rng(42);
    let inputs = vec![(vec![2, 3, 2, 2], r.uniform_vec(24, -1.0, 1.0)), (vec![2, 3], r.uniform_vec(6, 0.0, 1.0))];
    grad_check(&rt, 43, &inputs, 10, |g, t| channel_scale(g, &t[0], &t[1]));
}
