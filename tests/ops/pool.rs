//! avg_pool2d (window = stride) and global average pooling, forward, backward, finite differences.

use crate::common::*;
use engine::ops::pool::{avg_pool2d, global_avg_pool};
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn avg_pool_matches_reference() {
    let rt = rt();
    let mut r = rng(51);
    // 9x7 with k = 2: the last row and column belong to no window (floor), as in PyTorch.
    let xs = [2, 3, 9, 7];
    let x = r.uniform_vec(xs.iter().product(), -1.0, 1.0);
    let xt = Tensor::leaf(&rt, &xs, &x).unwrap();
    let y = avg_pool2d(&rt, &xt, 2).unwrap();
    assert_eq!(y.shape(), &[2, 3, 4, 3]);
    assert_close("avg_pool2d", &y.to_vec(&rt).unwrap(), &cpu::avg_pool2d(&to_f64(&x), xs, 2), tol::FWD);
    let g = r.uniform_vec(y.numel(), -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &g).unwrap()).unwrap();
    let mut want = vec![0.0; x.len()];
    for p in 0..6 {
        for y in 0..8 {
            for xx in 0..6 {
                want[p * 63 + y * 7 + xx] = g[(p * 4 + y / 2) * 3 + xx / 2] as f64 / 4.0;
            }
        }
    }
    assert_close("avg_pool2d backward", &grads.get(&xt).unwrap().to_vec(&rt).unwrap(), &want, tol::BWD);
}

#[test]
fn global_avg_pool_is_spatial_mean() {
    let rt = rt();
    let mut r = rng(52);
    let x = r.uniform_vec(2 * 3 * 16, -1.0, 1.0);
    let y = global_avg_pool(&rt, &Tensor::from_f32(&rt, &[2, 3, 4, 4], &x).unwrap()).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
    let want: Vec<f64> = x.chunks(16).map(|c| c.iter().map(|v| *v as f64).sum::<f64>() / 16.0).collect();
    assert_close("gap", &y.to_vec(&rt).unwrap(), &want, tol::FWD);
    grad_check(&rt, 53, &[(vec![2, 2, 4, 4], r.uniform_vec(64, -1.0, 1.0))], 10, |g, t| global_avg_pool(g, &t[0]));
}
