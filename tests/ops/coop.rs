//! The tensor-core GEMMs (`shaders/conv2d_coop.wgsl`: convolution forward, input gradient,
//! weight gradient, and the dense layers through them) on an adapter whose cooperative matrices
//! they run on: Mesa >= 26's lavapipe in CI (`.ci/lavapipe-coop.sh`), 8x8x8. Elsewhere each test
//! is skipped with the reason printed, unless `CIFS_WGPU_REQUIRE_TENSOR_CORES=1` makes that a
//! failure. Under every tensor-core tile the adapter runs:
//! - the operand values, exactly: through identity GEMMs, each of the six operands comes back as
//!   the SIMT emulation's f16 values (the same scale and rounding), bit for bit;
//! - every GEMM against the SIMT emulation on the same operands, element by element, within the
//!   bound on reordering f32 sums of the same exact products (`reordering_bound`), and against
//!   the float64 reference on the f16 operands;
//! - finite differences, and the choice of tiles (heuristic, tuning cache).

use crate::common::*;
use crate::f16::operands_through_identities;
use engine::ops::conv2d::{conv2d, conv2d_backward_data, conv2d_backward_weight, NARROW_CHANNELS};
use engine::ops::linear::linear;
use engine::precision::TensorCores;
use engine::tune::{CoopTile, GemmTile, Tile};
use engine::{autodiff, Precision, Runtime, RuntimeOptions, Tensor, TuneCache, Tuning};
use engine_reference as cpu;

/// Every tensor-core tile `tc` runs on this adapter (workgroup memory and size included).
fn tiles(rt: &Runtime, tc: TensorCores) -> Vec<CoopTile> {
    let l = rt.limits();
    let runs = |t: &CoopTile| {
        t.valid(tc.subgroup) && t.threads(tc.subgroup) <= l.max_workgroup_invocations && t.workgroup_bytes() <= l.max_workgroup_memory
    };
    let all: Vec<CoopTile> = CoopTile::all(tc.size).into_iter().filter(runs).collect();
    assert!(all.len() >= 4, "{} tensor-core tiles run here: {all:?}", all.len());
    all
}

/// `rt` with every GEMM on the tensor-core tile `tile`.
fn on_tile(rt: &Runtime, tile: CoopTile) -> Runtime {
    with_kernels(rt, |k| k.tile = Some(GemmTile::TensorCores(tile)))
}

/// `rt` with every GEMM on the SIMT emulation of f16 (the 64x64 tile).
fn emulation(rt: &Runtime) -> Runtime {
    with_kernels(rt, |k| k.tile = Some(GemmTile::Simt(Tile::T64X64)))
}

/// The number of dispatches of the tensor-core entry points so far: proof that a check ran on
/// them and not on the SIMT emulation.
fn coop_dispatches(rt: &Runtime) -> u64 {
    rt.dispatches_by_entry().iter().filter(|(e, _)| e.ends_with("_coop")).map(|(_, n)| n).sum()
}

#[test]
fn tensor_core_operands_are_the_emulations_f16_values() {
    let Some((rt, tc)) = tensor_core_rt("tensor_core_operands_are_the_emulations_f16_values") else { return };
    for tile in tiles(&rt, tc) {
        let rt = on_tile(&rt, tile);
        let before = coop_dispatches(&rt);
        operands_through_identities(&rt, &tile.name());
        assert!(coop_dispatches(&rt) - before >= 12, "{}: the identities ran on the SIMT tiles", tile.name());
    }
}

/// u, the unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// How far two f32 GEMMs may differ at one output whose sum has `k` terms of magnitudes summing
/// to `abs_sum` and whose value is `y`, when both multiply the same f16 operands: a product of
/// two f16 values (11 significant bits each) is exact in f32 (24), so the two results are sums
/// of the same `k` exact numbers, in different orders (the tensor cores' own order, another
/// split of the depth). Any order of a recursive f32 sum lands within gamma(k-1) times the sum
/// of the magnitudes of the exact sum (Higham, Accuracy and Stability of Numerical Algorithms,
/// 2nd ed., (4.4)), gamma(n) = n u / (1 - n u); two such sums within twice that of each other.
/// Splits of the depth add their partial sums in one more f32 addition each (at most 16 splits:
/// `k` bounds the number of additions of any tree anyway), and the epilogue's bias addition
/// rounds once more (u |y| each side). Scaling by powers of two is exact.
fn reordering_bound(k: usize, abs_sum: f64, y: f64) -> f64 {
    let gamma = k as f64 * U / (1.0 - k as f64 * U);
    2.0 * gamma * abs_sum + 2.0 * U * y.abs()
}

/// Asserts `got` (tensor cores) within [`reordering_bound`] of `emulated` element by element;
/// returns the largest ratio of a difference to its bound, and the largest difference in units
/// of u times the magnitudes (printed: how much of the bound the hardware's order uses).
fn assert_reordered(what: &str, got: &[f32], emulated: &[f32], k: usize, abs_sums: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), emulated.len(), "{what}: length");
    let (mut worst, mut in_u) = (0.0f64, 0.0f64);
    for (i, ((g, e), s)) in got.iter().zip(emulated).zip(abs_sums).enumerate() {
        let d = (*g as f64 - *e as f64).abs();
        let bound = reordering_bound(k, *s, *e as f64);
        assert!(
            d <= bound,
            "{what}: [{i}] tensor cores {g:e}, emulation {e:e}: differ by {d:.3e} > {bound:.3e} (k {k}, sum of |products| {s:.3e})"
        );
        worst = worst.max(if bound > 0.0 { d / bound } else { 0.0 });
        in_u = in_u.max(if *s > 0.0 { d / (U * s) } else { 0.0 });
    }
    (worst, in_u)
}

/// One convolution: its inputs, their f16 values (what the GEMMs multiply) and shapes.
struct Conv {
    xs: [usize; 4],
    ws: [usize; 4],
    stride: u32,
    pad: u32,
    x: Vec<f32>,
    w: Vec<f32>,
    g: Vec<f32>,
}

impl Conv {
    fn new(seed: u64, xs: [usize; 4], co: usize, k: usize, (stride, pad): (u32, u32)) -> Conv {
        let mut r = rng(seed);
        let ws = [co, xs[1], k, k];
        let oh = (xs[2] + 2 * pad as usize - k) / stride as usize + 1;
        let ow = (xs[3] + 2 * pad as usize - k) / stride as usize + 1;
        let x = r.uniform_vec(xs.iter().product(), -1.0, 1.0);
        let w = r.uniform_vec(ws.iter().product(), -0.5, 0.5);
        let g = r.uniform_vec(xs[0] * co * oh * ow, -1.0, 1.0);
        Conv { xs, ws, stride, pad, x, w, g }
    }

    fn ys(&self) -> [usize; 4] {
        let (oh, ow) = (cpu::conv_out(self.xs[2], self.ws[2], self.stride as usize, self.pad as usize), {
            cpu::conv_out(self.xs[3], self.ws[3], self.stride as usize, self.pad as usize)
        });
        [self.xs[0], self.ws[0], oh, ow]
    }

    /// Forward, input gradient, weight gradient on `rt` with its tiles as they stand.
    fn run(&self, rt: &Runtime) -> [Vec<f32>; 3] {
        let t = |s: &[usize], v: &[f32]| Tensor::from_f32(rt, s, v).unwrap();
        let (x, w, g) = (t(&self.xs, &self.x), t(&self.ws, &self.w), t(&self.ys(), &self.g));
        let (s, p) = (self.stride, self.pad);
        [
            conv2d(rt, &x, &w, s, p).unwrap().to_vec(rt).unwrap(),
            conv2d_backward_data(rt, &self.xs, &w, s, p, &g).unwrap().to_vec(rt).unwrap(),
            conv2d_backward_weight(rt, &x, &self.ws, s, p, &g).unwrap().to_vec(rt).unwrap(),
        ]
    }

    /// The float64 reference of the three passes on `x`, `w`, `g` (of this convolution's shapes).
    fn reference(&self, x: &[f64], w: &[f64], g: &[f64]) -> [Vec<f64>; 3] {
        let (s, p) = (self.stride as usize, self.pad as usize);
        let (dx, dw) = cpu::conv2d_backward(x, self.xs, w, self.ws, s, p, g);
        [cpu::conv2d(x, self.xs, w, self.ws, s, p), dx, dw]
    }

    /// The depth of each pass's sums: CI k k, CO k k (at most, per phase), N OH OW.
    fn depths(&self) -> [usize; 3] {
        let y = self.ys();
        [self.xs[1] * self.ws[2] * self.ws[3], self.ws[0] * self.ws[2] * self.ws[3], y[0] * y[2] * y[3]]
    }
}

/// Odd sizes that leave every tile partly empty, stride 2 (four output phases of the input
/// gradient), a strided 1x1 shortcut, depths that split (forward and input gradient at 1152,
/// weight gradient at 800) and gradients of 1e-9 with activations of 1e4 (the scale matters).
fn shapes() -> Vec<Conv> {
    let mut tiny = Conv::new(7, [2, 16, 6, 6], 12, 3, (1, 1));
    tiny.x.iter_mut().for_each(|v| *v *= 1e4);
    tiny.g.iter_mut().for_each(|v| *v *= 1e-9);
    vec![
        Conv::new(1, [2, 6, 7, 5], 5, 3, (1, 1)),
        Conv::new(2, [3, 20, 9, 9], 9, 3, (2, 1)),
        Conv::new(3, [3, 5, 6, 6], 7, 1, (2, 0)),
        Conv::new(4, [2, 128, 5, 5], 128, 3, (1, 1)),
        Conv::new(5, [8, 70, 10, 10], 67, 3, (1, 1)),
        tiny,
    ]
}

/// Every tensor-core GEMM under every tile against the SIMT emulation (the 64x64 tile, f16
/// operands) on the same inputs, element by element within [`reordering_bound`], and against
/// the float64 reference fed the f16 operands (the f32 tolerances of the op tests).
#[test]
fn tensor_core_gemms_match_the_emulation_up_to_the_order_of_the_sums() {
    let Some((rt, tc)) = tensor_core_rt("tensor_core_gemms_match_the_emulation_up_to_the_order_of_the_sums") else { return };
    let names = ["forward", "input gradient", "weight gradient"];
    let (mut worst, mut in_u) = (0.0f64, 0.0f64);
    for conv in shapes() {
        assert!(conv.xs[1] > NARROW_CHANNELS as usize, "the input gradient must be a GEMM");
        let emulated = conv.run(&emulation(&rt));
        let (qx, qw, qg) = (to_f64(&f16_operand(&conv.x)), to_f64(&f16_operand(&conv.w)), to_f64(&f16_operand(&conv.g)));
        let want = conv.reference(&qx, &qw, &qg);
        let abs = |v: &[f64]| v.iter().map(|a| a.abs()).collect::<Vec<_>>();
        let abs_sums = conv.reference(&abs(&qx), &abs(&qw), &abs(&qg));
        for tile in tiles(&rt, tc) {
            let rt = on_tile(&rt, tile);
            let before = coop_dispatches(&rt);
            let got = conv.run(&rt);
            assert!(coop_dispatches(&rt) - before >= 3, "{}: ran on the SIMT tiles", tile.name());
            for p in 0..3 {
                let what = format!("{} {:?} -> {:?}, {}", names[p], conv.xs, conv.ys(), tile.name());
                let (w, u) = assert_reordered(&what, &got[p], &emulated[p], conv.depths()[p], &abs_sums[p]);
                (worst, in_u) = (worst.max(w), in_u.max(u));
                assert_close(&what, &got[p], &want[p], if p == 0 { tol::FWD } else { tol::BWD });
            }
        }
    }
    println!("tensor cores vs emulation: largest difference {worst:.3} of its bound, {in_u:.2} u x sum of |products|");
}

/// Each tensor-core tile run again on the same inputs gives the same bits, every pass. A
/// workgroup-memory race (a fragment loaded before its slice is staged, the epilogue's scratch
/// reused while another subgroup still reads it) gives run-to-run differences on a GPU, which
/// runs subgroups independently; lavapipe runs a workgroup in lock-step and cannot show one, so
/// this test is for the first run on a GPU as much as for CI.
#[test]
fn tensor_core_gemms_give_the_same_bits_every_run() {
    let Some((rt, tc)) = tensor_core_rt("tensor_core_gemms_give_the_same_bits_every_run") else { return };
    const RUNS: usize = 8;
    let conv = Conv::new(5, [8, 70, 10, 10], 67, 3, (1, 1));
    for tile in tiles(&rt, tc) {
        let rt = on_tile(&rt, tile);
        let first = conv.run(&rt);
        for run in 1..RUNS {
            let again = conv.run(&rt);
            for (p, (a, b)) in first.iter().zip(&again).enumerate() {
                let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!(differ, 0, "{} pass {p}, run {run}: {differ} of {} outputs differ from the first run", tile.name(), a.len());
            }
        }
    }
}

/// The dense layer (a 1x1 convolution of 1x1 images, its bias added in the GEMM's epilogue) on
/// tensor cores: forward with bias, both gradients, against the emulation within the reordering
/// bound, under every tile.
#[test]
fn tensor_core_linear_matches_the_emulation() {
    let Some((rt, tc)) = tensor_core_rt("tensor_core_linear_matches_the_emulation") else { return };
    let mut r = rng(81);
    let (n, i, o) = (5, 70, 13);
    let (x, w, b, g) =
        (r.uniform_vec(n * i, -1.0, 1.0), r.uniform_vec(o * i, -0.3, 0.3), r.uniform_vec(o, -0.3, 0.3), r.uniform_vec(n * o, -1.0, 1.0));
    let run = |rt: &Runtime| -> [Vec<f32>; 3] {
        let (xt, wt, bt) =
            (Tensor::leaf(rt, &[n, i], &x).unwrap(), Tensor::leaf(rt, &[o, i], &w).unwrap(), Tensor::leaf(rt, &[o], &b).unwrap());
        let y = linear(rt, &xt, &wt, Some(&bt)).unwrap();
        let grads = autodiff::backward_with(rt, &y, Tensor::from_f32(rt, &[n, o], &g).unwrap()).unwrap();
        [y.to_vec(rt).unwrap(), grads.get(&xt).unwrap().to_vec(rt).unwrap(), grads.get(&wt).unwrap().to_vec(rt).unwrap()]
    };
    let emulated = run(&emulation(&rt));
    let (qx, qw, qg) = (f16_operand(&x), f16_operand(&w), f16_operand(&g));
    let abs = |v: &[f32]| v.iter().map(|a| a.abs() as f64).collect::<Vec<_>>();
    let (ax, aw, ag) = (abs(&qx), abs(&qw), abs(&qg));
    let abs_y = cpu::linear(&ax, &aw, None, n, i, o);
    let abs_dx: Vec<f64> = (0..n * i).map(|e| (0..o).map(|c| ag[e / i * o + c] * aw[c * i + e % i]).sum()).collect();
    let abs_dw: Vec<f64> = (0..o * i).map(|e| (0..n).map(|rr| ag[rr * o + e / i] * ax[rr * i + e % i]).sum()).collect();
    for tile in tiles(&rt, tc) {
        let got = run(&on_tile(&rt, tile));
        for (p, (what, k, sums)) in [("linear", i, &abs_y), ("linear dx", o, &abs_dx), ("linear dw", n, &abs_dw)].into_iter().enumerate() {
            assert_reordered(&format!("{what}, {}", tile.name()), &got[p], &emulated[p], k, sums);
        }
        let want = cpu::linear(&to_f64(&qx), &to_f64(&qw), Some(&to_f64(&b)), n, i, o);
        assert_close(&format!("linear vs the reference on f16 operands, {}", tile.name()), &got[0], &want, tol::FWD);
    }
}

/// Central differences of the tensor-core forward against the tensor-core backward (the
/// heuristic's tiles), as the f16 emulation's check: linear in each input, so a large step.
#[test]
fn tensor_core_finite_differences() {
    let Some((rt, _)) = tensor_core_rt("tensor_core_finite_differences") else { return };
    let mut r = rng(91);
    let before = coop_dispatches(&rt);
    for ci in [6, 12] {
        let inputs = vec![(vec![2, ci, 5, 5], r.uniform_vec(50 * ci, -1.0, 1.0)), (vec![3, ci, 3, 3], r.uniform_vec(27 * ci, -0.5, 0.5))];
        grad_check_with(&rt, 92, &inputs, 12, 0.25, crate::f16::F16_FD, |g, t| conv2d(g, &t[0], &t[1], 2, 1));
    }
    let inputs = vec![
        (vec![3, 6], r.uniform_vec(18, -1.0, 1.0)),
        (vec![4, 6], r.uniform_vec(24, -0.5, 0.5)),
        (vec![4], r.uniform_vec(4, -0.5, 0.5)),
    ];
    grad_check_with(&rt, 93, &inputs, 10, 0.25, crate::f16::F16_FD, |g, t| linear(g, &t[0], &t[1], Some(&t[2])));
    assert!(coop_dispatches(&rt) > before, "the finite differences ran on the SIMT tiles");
}

/// Without tuning the heuristic picks a tensor-core tile; with tuning every candidate is timed
/// once per shape under a key that names the matrix size, remembered in the cache file and read
/// back by the next runtime; a forced tile of another size is refused.
#[test]
fn tensor_core_tiles_are_chosen_tuned_and_cached() {
    let Some((rt, tc)) = tensor_core_rt("tensor_core_tiles_are_chosen_tuned_and_cached") else { return };
    let conv = Conv::new(5, [2, 12, 6, 6], 10, 3, (1, 1));
    let heuristic = conv.run(&rt);
    assert!(coop_dispatches(&rt) >= 3, "the heuristic's tiles are tensor-core tiles");
    let dir = std::env::temp_dir().join(format!("cifs-wgpu-coop-tune-{}", std::process::id()));
    let path = dir.join("tune.json");
    let _ = std::fs::remove_dir_all(&dir);
    let tuning_rt = || {
        let options =
            RuntimeOptions { tuning: Tuning::Tune { cache: TuneCache::File(path.clone()) }, ..RuntimeOptions::from_env().unwrap() };
        with_kernels(&rt_with(options), |k| k.precision = Precision::F16)
    };
    let tuned_rt = tuning_rt();
    assert!(tuned_rt.tuning().1.is_empty());
    let tuned = conv.run(&tuned_rt);
    for (a, b) in heuristic.iter().zip(&tuned) {
        assert_close("tuned vs heuristic tensor-core tiles", a, &to_f64(b), tol::FWD);
    }
    let (choices, _, _) = tuned_rt.tuning();
    let keys: Vec<&str> = choices.keys().map(|k| k.split(' ').next().unwrap()).collect();
    let size = tc.size;
    assert_eq!(
        keys,
        [format!("conv2d_bwd_data_f16_tc{size}"), format!("conv2d_bwd_weight_f16_tc{size}"), format!("conv2d_fwd_f16_tc{size}")]
    );
    for c in choices.values() {
        assert!(matches!(c.tile, GemmTile::TensorCores(t) if t.size == size), "{c:?}");
        assert!(c.ms.len() >= 2 && c.ms.keys().all(|n| CoopTile::parse(n).is_some()), "{c:?}");
    }
    let again = tuning_rt();
    assert!(again.tuning().1.is_empty());
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = seen.clone();
    again.observe_tuning(move |_, _| counter.set(counter.get() + 1));
    conv.run(&again);
    assert_eq!(seen.get(), 0, "the cached choices are read back, not timed again");
    std::fs::remove_dir_all(&dir).unwrap();
    let other = CoopTile { size: if size == 8 { 16 } else { 8 }, warps: (2, 2), frags: (1, 1) };
    let rt = on_tile(&rt, other);
    let x = Tensor::from_f32(&rt, &conv.xs, &conv.x).unwrap();
    let w = Tensor::from_f32(&rt, &conv.ws, &conv.w).unwrap();
    let Err(err) = conv2d(&rt, &x, &w, 1, 1) else { panic!("a tile of another matrix size must be refused") };
    let err = err.to_string();
    assert!(err.contains("cannot run here"), "{err}");
}
