//! conv2d: forward, backward-data, backward-weight (with and without split-K) vs the CPU.

use crate::common::*;
use engine::ops::conv2d::conv2d;
use engine::tune::{GemmTile, Tile};
use engine::{autodiff, RuntimeOptions, Tensor, TuneCache, Tuning};
use engine_reference as cpu;

/// Forward and both backward passes against the CPU, under every tile configuration the device
/// holds.
fn check(seed: u64, xs: [usize; 4], co: usize, k: usize, stride: u32, pad: u32) {
    let rt = rt();
    for tile in rt.tiles() {
        check_on(&with_kernels(&rt, |o| o.tile = Some(GemmTile::Simt(tile))), seed, xs, co, k, stride, pad);
    }
}

fn check_on(rt: &engine::Runtime, seed: u64, xs: [usize; 4], co: usize, k: usize, stride: u32, pad: u32) {
    let mut r = rng(seed);
    let ws = [co, xs[1], k, k];
    let x = r.uniform_vec(xs.iter().product(), -1.0, 1.0);
    let w = r.uniform_vec(ws.iter().product(), -0.5, 0.5);
    let xt = Tensor::leaf(rt, &xs, &x).unwrap();
    let wt = Tensor::leaf(rt, &ws, &w).unwrap();
    let y = conv2d(rt, &xt, &wt, stride, pad).unwrap();
    let want = cpu::conv2d(&to_f64(&x), xs, &to_f64(&w), ws, stride as usize, pad as usize);
    assert_eq!(y.numel(), want.len());
    assert_close("conv2d forward", &y.to_vec(rt).unwrap(), &want, tol::FWD);

    let g = r.uniform_vec(want.len(), -1.0, 1.0);
    let gt = Tensor::from_f32(rt, y.shape(), &g).unwrap();
    let grads = autodiff::backward_with(rt, &y, gt).unwrap();
    let (dx, dw) = cpu::conv2d_backward(&to_f64(&x), xs, &to_f64(&w), ws, stride as usize, pad as usize, &to_f64(&g));
    assert_close("conv2d backward data", &grads.get(&xt).unwrap().to_vec(rt).unwrap(), &dx, tol::BWD);
    assert_close("conv2d backward weight", &grads.get(&wt).unwrap().to_vec(rt).unwrap(), &dw, tol::BWD);
}

#[test]
fn conv3x3_stride1_odd_sizes() {
    check(1, [2, 3, 7, 5], 5, 3, 1, 1);
}

#[test]
fn conv3x3_stride2() {
    check(2, [2, 4, 8, 8], 3, 3, 2, 1);
}

#[test]
fn conv1x1_stride2_shortcut() {
    check(3, [3, 5, 6, 6], 7, 1, 2, 0);
}

#[test]
fn conv3x3_stride2_odd_sizes_every_phase_tiles() {
    // Odd height and width give phases of different sizes; 70 input channels and 130 images
    // span several tiles in every phase of the backward-data GEMM.
    check(8, [130, 70, 7, 9], 5, 3, 2, 1);
}

#[test]
fn conv_unpadded_and_wide_kernels_at_strides_two_and_three() {
    // Phases whose taps start past the window (k3 p0 s2), a 5x5 kernel with pad 2, and a stride
    // of 3, where some phases get a single tap and a 1x1 kernel leaves phases with none; each
    // with 3 input channels (the direct narrow backward-data kernel) and 6 (the phase GEMM).
    for ci in [3, 6] {
        check(9, [2, ci, 9, 9], 4, 3, 2, 0);
        check(10, [2, ci, 8, 7], 4, 5, 2, 2);
        check(11, [2, ci, 10, 11], 4, 3, 3, 1);
        check(12, [2, ci, 7, 7], 4, 1, 3, 0);
        check(13, [2, ci, 6, 6], 4, 2, 2, 1);
    }
}

#[test]
fn conv_multi_tile_and_split_k() {
    // GEMM dims beyond one 64x64 tile in M and N, K not a multiple of 16, and a weight gradient
    // depth (8*10*10 = 800) that is cut into several split-K slices.
    check(4, [8, 70, 10, 10], 67, 3, 1, 1);
}

#[test]
fn conv_split_k_forward_and_backward_data() {
    use engine::ops::conv2d::depth_splits;
    // Few output tiles and a deep K: forward and stride-1 backward-data both 128 * 9 = 1152
    // deep, in two splits. Then 256 outputs at stride 2: backward-data phases 256, 512, 512 and
    // 1024 deep, cut into splits of 512, so the shallowest phase's second split has no depth
    // left (it must write zeros to its slab).
    assert!(depth_splits(1, 128 * 9).0 == 2 && depth_splits(4, 256 * 4) == (2, 512), "these shapes must split");
    check(14, [2, 128, 5, 5], 128, 3, 1, 1);
    check(15, [1, 8, 7, 7], 256, 3, 2, 1);
}

#[test]
fn conv_gradient_finite_differences() {
    let rt = rt();
    let mut r = rng(5);
    // 2 input channels (direct backward-data) and 5 (the phase GEMM).
    for ci in [2, 5] {
        let xs = vec![2, ci, 5, 5];
        let ws = vec![3, ci, 3, 3];
        let inputs = vec![(xs.clone(), r.uniform_vec(50 * ci, -1.0, 1.0)), (ws, r.uniform_vec(27 * ci, -0.5, 0.5))];
        grad_check(&rt, 6, &inputs, 12, |g, t| conv2d(g, &t[0], &t[1], 2, 1));
    }
}

#[test]
fn conv_skips_weight_gradient_when_weight_is_frozen() {
    let rt = rt();
    let mut r = rng(7);
    // Two input channels take the direct kernel (one dispatch), eight the phase GEMM (two).
    for (ci, kernels) in [(2, 1), (8, 2)] {
        let x = Tensor::leaf(&rt, &[1, ci, 4, 4], &r.uniform_vec(16 * ci, -1.0, 1.0)).unwrap();
        let w = Tensor::from_f32(&rt, &[2, ci, 3, 3], &r.uniform_vec(18 * ci, -1.0, 1.0)).unwrap();
        let y = conv2d(&rt, &x, &w, 1, 1).unwrap();
        let g = Tensor::from_f32(&rt, y.shape(), &vec![1.0; y.numel()]).unwrap();
        let before = rt.stats().dispatches;
        let grads = autodiff::backward_with(&rt, &y, g).unwrap();
        assert!(grads.get(&x).is_some() && grads.get(&w).is_none());
        assert_eq!(rt.stats().dispatches - before, kernels, "only the backward-data kernels run ({ci} channels)");
    }
}

#[test]
fn tuning_times_every_tile_once_per_shape_and_remembers_it() {
    let dir = std::env::temp_dir().join(format!("cifs-wgpu-tuning-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("tune.json");
    let run = |rt: &engine::Runtime| {
        let mut r = rng(21);
        let x = Tensor::leaf(rt, &[2, 6, 9, 9], &r.uniform_vec(972, -1.0, 1.0)).unwrap();
        let w = Tensor::leaf(rt, &[5, 6, 3, 3], &r.uniform_vec(270, -0.5, 0.5)).unwrap();
        let y = conv2d(rt, &x, &w, 2, 1).unwrap();
        let grads = autodiff::backward_with(rt, &y, Tensor::from_f32(rt, y.shape(), &vec![1.0; y.numel()]).unwrap()).unwrap();
        [y.to_vec(rt).unwrap(), grads.get(&x).unwrap().to_vec(rt).unwrap(), grads.get(&w).unwrap().to_vec(rt).unwrap()]
    };
    let plain = run(&rt());

    let tuning_rt =
        || rt_with(RuntimeOptions { tuning: Tuning::Tune { cache: TuneCache::File(path.clone()) }, ..RuntimeOptions::from_env().unwrap() });
    let tuned_rt = tuning_rt();
    assert!(tuned_rt.tuning().1.is_empty());
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = seen.clone();
    tuned_rt.observe_tuning(move |_, _| counter.set(counter.get() + 1));
    let tuned = run(&tuned_rt);
    for (a, b) in plain.iter().zip(&tuned) {
        assert_close("tuned vs heuristic tiles", a, &to_f64(b), tol::FWD);
    }
    let (choices, warnings, at) = tuned_rt.tuning();
    assert!(warnings.is_empty() && at.as_deref() == Some(path.as_path()));
    let kernels: Vec<&str> = choices.keys().map(|k| k.split(' ').next().unwrap()).collect();
    assert_eq!(kernels, ["conv2d_bwd_data", "conv2d_bwd_weight", "conv2d_fwd"]);
    assert_eq!(seen.get(), 3, "each shape timed once");
    // Tiny GEMMs: only the configurations whose tiles are not mostly padding are timed.
    assert!(choices.values().all(|c| c.ms.len() == Tile::candidates(10, 5).len() && c.ms.values().all(|ms| *ms > 0.0)), "{choices:?}");
    run(&tuned_rt);
    assert_eq!(seen.get(), 3, "a tuned shape is not timed again");

    // A new process (runtime) reads the choices back instead of timing again.
    let again = tuning_rt();
    assert!(again.tuning().1.is_empty());
    let again_seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = again_seen.clone();
    again.observe_tuning(move |_, _| counter.set(counter.get() + 1));
    run(&again);
    assert_eq!(again_seen.get(), 0);
    let tiles =
        |c: &std::collections::BTreeMap<String, engine::tune::Choice>| c.iter().map(|(k, c)| (k.clone(), c.tile)).collect::<Vec<_>>();
    assert_eq!(tiles(&again.tuning().0), tiles(&choices));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn frozen_weights_are_re_laid_out_once_per_scope() {
    let rt = rt();
    let mut r = rng(16);
    let xs = [2, 6, 7, 7];
    let x = Tensor::from_f32(&rt, &xs, &r.uniform_vec(588, -1.0, 1.0)).unwrap();
    let w = Tensor::from_f32(&rt, &[5, 6, 3, 3], &r.uniform_vec(270, -0.5, 0.5)).unwrap();
    let input_grad = || {
        let leaf = x.requiring_grad();
        let y = conv2d(&rt, &leaf, &w, 2, 1).unwrap();
        let g = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &vec![1.0; y.numel()]).unwrap()).unwrap();
        g.get(&leaf).unwrap().to_vec(&rt).unwrap()
    };
    let flips = || rt.dispatches_by_entry().get("conv2d_flip_weights").copied().unwrap_or(0);
    let plain = input_grad();
    let outside = flips();
    let inside = rt.weights_frozen(|| [input_grad(), input_grad(), input_grad()]);
    assert_eq!(flips() - outside, 1, "three backward passes in one scope re-lay the weights out once");
    assert!(inside.iter().all(|g| *g == plain), "the cached layout gives the same gradient");
    input_grad();
    assert_eq!(flips() - outside, 2, "after the scope the layout is made again");
}
