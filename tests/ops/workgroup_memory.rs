//! Workgroup memory is not zero-initialised (see `engine::KernelOptions`): safe only
//! because every kernel writes each word before reading it. Each kernel family with workgroup
//! memory, run with wgpu's zero-initialisation and without, must give the same bits. On
//! lavapipe a workgroup's memory holds what an earlier workgroup left there, so a read before the
//! write sees those values instead of zeros: a loss reduction that skips half its writes fails
//! here (a max reduction doing the same would not: what it finds left over is its own maxima).

use crate::common::*;
use engine::ops::batchnorm::{batchnorm2d, RunningStats};
use engine::ops::conv2d::conv2d;
use engine::ops::cross_entropy::cross_entropy;
use engine::tune::{CoopTile, GemmTile, Tile};
use engine::{autodiff, Precision, Runtime, Tensor};

/// Every output of a conv (single- and double-buffered tiles, f32 and f16: the tiles and the f16
/// max-abs reduction; where tensor cores run, the smallest and the largest tensor-core tile too:
/// staging tiles and epilogue scratch), batch norm in train mode, and cross-entropy, forward and
/// backward.
fn outputs(rt: &Runtime) -> Vec<Vec<f32>> {
    let mut r = rng(101);
    let mut out = Vec::new();
    let xs = [4, 20, 9, 9];
    let x = r.uniform_vec(xs.iter().product(), -1.0, 1.0);
    let w = r.uniform_vec(12 * 20 * 9, -0.5, 0.5);
    let mut conv = |rt: &Runtime| {
        let (xt, wt) = (Tensor::leaf(rt, &xs, &x).unwrap(), Tensor::leaf(rt, &[12, 20, 3, 3], &w).unwrap());
        let y = conv2d(rt, &xt, &wt, 2, 1).unwrap();
        let g = autodiff::backward_with(rt, &y, Tensor::from_f32(rt, y.shape(), &vec![0.5; y.numel()]).unwrap()).unwrap();
        out.extend([y.to_vec(rt).unwrap(), g.get(&xt).unwrap().to_vec(rt).unwrap(), g.get(&wt).unwrap().to_vec(rt).unwrap()]);
    };
    for precision in [Precision::F32, Precision::F16] {
        for tile in [Tile::T64X64, widest_double_buffered(rt)] {
            conv(&with_kernels(rt, |k| (k.precision, k.tile) = (precision, Some(GemmTile::Simt(tile)))));
        }
    }
    let f16 = with_kernels(rt, |k| k.precision = Precision::F16);
    if let Some(tc) = f16.tensor_cores() {
        let l = rt.limits();
        let runs = |t: &CoopTile| t.valid(tc.subgroup) && t.workgroup_bytes() <= l.max_workgroup_memory;
        let tiles: Vec<CoopTile> = CoopTile::all(tc.size).into_iter().filter(runs).collect();
        let by_size = |t: &&CoopTile| t.rows() * t.cols();
        for tile in [tiles.iter().min_by_key(by_size), tiles.iter().max_by_key(by_size)].into_iter().flatten() {
            conv(&with_kernels(&f16, |k| k.tile = Some(GemmTile::TensorCores(*tile))));
        }
    }
    let (gamma, beta) = (Tensor::leaf(rt, &[20], &[1.0; 20]).unwrap(), Tensor::leaf(rt, &[20], &[0.1; 20]).unwrap());
    let (rm, rv) = (Tensor::zeros(rt, &[20]).unwrap(), Tensor::from_f32(rt, &[20], &[1.0; 20]).unwrap());
    let xt = Tensor::leaf(rt, &xs, &x).unwrap();
    let y = batchnorm2d(rt, &xt, &gamma, &beta, RunningStats { mean: &rm, var: &rv }, true).unwrap();
    let g = autodiff::backward_with(rt, &y, Tensor::from_f32(rt, y.shape(), &r.uniform_vec(y.numel(), -1.0, 1.0)).unwrap()).unwrap();
    out.extend([y.to_vec(rt).unwrap(), g.get(&xt).unwrap().to_vec(rt).unwrap(), g.get(&gamma).unwrap().to_vec(rt).unwrap()]);
    let logits = Tensor::leaf(rt, &[300, 10], &r.uniform_vec(3000, -3.0, 3.0)).unwrap();
    let labels = Tensor::from_u32(rt, &[300], &(0..300).map(|i| (i * 7 % 10) as u32).collect::<Vec<_>>()).unwrap();
    let loss = cross_entropy(rt, &logits, &labels).unwrap();
    let g = autodiff::backward(rt, &loss).unwrap();
    out.extend([loss.to_vec(rt).unwrap(), g.get(&logits).unwrap().to_vec(rt).unwrap()]);
    out
}

#[test]
fn kernels_give_the_same_bits_with_and_without_zeroed_workgroup_memory() {
    let rt = rt();
    let without = outputs(&with_kernels(&rt, |k| k.zero_init_workgroup_memory = false));
    let with = outputs(&with_kernels(&rt, |k| k.zero_init_workgroup_memory = true));
    for (i, (a, b)) in without.iter().zip(&with).enumerate() {
        let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
        assert_eq!(differ, 0, "output {i}: {differ} of {} values change when workgroup memory is zeroed", a.len());
    }
}
