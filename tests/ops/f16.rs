//! The f16 GEMMs (convolution forward, input gradient, weight gradient; the dense layer): each
//! operand scaled by a power of two found on the GPU, rounded to f16, f32 accumulation.
//!
//! Three kinds of check: (1) exactly, element by element, the operand values the GEMMs multiply
//! (a GEMM with an identity or one-hot other operand returns one operand's f16 values, scaled
//! back, bit for bit), against `half`'s rounding after the CPU's choice of scale; (2) whole
//! convolutions and dense layers against the float64 reference fed those same f16 operands, to
//! the f32 tolerances (only the summation order differs); (3) finite differences of the f16 ops.
//! Each also prints the f16 error against the unrounded float64 reference. A forced SIMT tile
//! runs the SIMT emulation; where the adapter has tensor cores, the checks without one run on
//! them (the tensor-core tiles themselves are checked in `coop.rs`).

use crate::common::*;
use engine::ops::conv2d::{conv2d, conv2d_backward_data, conv2d_backward_weight, NARROW_CHANNELS};
use engine::ops::linear::linear;
use engine::tune::GemmTile;
use engine::{autodiff, Precision, Runtime, Tensor};
use engine_reference as cpu;

fn rt16() -> Runtime {
    let rt = with_kernels(&rt(), |k| k.precision = Precision::F16);
    assert_eq!(rt.precision(), Precision::F16);
    rt
}

/// Values over 40 binades below `top` (a power of two, so that the scale is known exactly),
/// both signs, with f16 ties at several binades (ties to even must go both ways) and ties
/// between f16 subnormals after scaling, plus `top` itself and a zero.
pub(crate) fn wide_values(r: &mut engine::Rng, n: usize, top: f32) -> Vec<f32> {
    let scale = 2f32.powi(14) / top; // what the GEMM will multiply by
    let mut v: Vec<f32> = (0..n)
        .map(|i| {
            let mag = match i % 4 {
                // A tie between two f16 values in binade 2^-b (below 2^15 after scaling).
                0 => (1.0 + (2 * (i % 7) + 1) as f32 * 2f32.powi(-11)) * 2f32.powi(-((i / 4) as i32 % 28)),
                // A tie between two f16 subnormals: an odd multiple of 2^-25 after scaling.
                1 => (2 * (i % 300) + 1) as f32 * 2f32.powi(-25) / 2f32.powi(14),
                _ => r.uniform(1.0, 2.0) as f32 * 2f32.powi(-(r.below(40) as i32)),
            };
            let sign = if r.below(2) == 0 { -1.0 } else { 1.0 };
            sign * mag * 2f32.powi(14) / scale
        })
        .collect();
    v[0] = top;
    v[1] = 0.0;
    v
}

/// Asserts `got == want` element by element (bit for bit, zeros of either sign equal).
pub(crate) fn assert_exact(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let bad: Vec<String> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(5)
        .map(|(i, (g, w))| format!("[{i}] got {g:e} want {w:e}"))
        .collect();
    assert!(bad.is_empty(), "{what}: operand values differ from f16 rounding at the chosen scale: {}", bad.join("; "));
}

/// `n` x `n` identity as (n, n, 1, 1) weights, or as an (1, n, n pixels) one-hot image.
pub(crate) fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect()
}

pub(crate) fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|i| v[(i % rows) * cols + i / rows]).collect()
}

/// Each of the six operands of the three convolution GEMMs, seen through a GEMM whose other
/// operand is an identity: the output is the operand's f16 values, scaled back, exactly. Over
/// values from 2^-40 to 1 of a small top (gradient-like, 2^-20) and a large one (2^20, over f16's
/// range unscaled), under every tile configuration the device holds.
#[test]
fn f16_operands_are_the_nearest_f16_values_at_the_chosen_scale() {
    let rt = rt16();
    for tile in rt.tiles() {
        operands_through_identities(&with_kernels(&rt, |k| k.tile = Some(GemmTile::Simt(tile))), &tile.name());
    }
}

/// The six operand checks above, with the tiles `rt` runs now (`name` says which).
pub(crate) fn operands_through_identities(rt: &Runtime, name: &str) {
    let c = 24; // channels, and pixels (4 x 6): above NARROW_CHANNELS, so every pass is a GEMM
    assert!(c > NARROW_CHANNELS as usize);
    let img = [1, c, 4, 6];
    let w_shape = [c, c, 1, 1];
    let eye = identity(c);
    let mut r = rng(71);
    for top in [2f32.powi(-20), 2f32.powi(20)] {
        let v = wide_values(&mut r, c * c, top);
        let q = f16_operand(&v);
        assert!(q.iter().zip(&v).any(|(a, b)| a != b), "the test values must need rounding");
        let t = |shape: &[usize], d: &[f32]| Tensor::from_f32(rt, shape, d).unwrap();
        let (vt, eye_img, eye_w) = (t(&img, &v), t(&img, &eye), t(&w_shape, &eye));
        // Forward: A (the image) through identity weights; B (the weights) through a one-hot image.
        assert_exact(&format!("forward A, {name}"), &conv2d(rt, &vt, &eye_w, 1, 0).unwrap().to_vec(rt).unwrap(), &q);
        let y = conv2d(rt, &eye_img, &t(&w_shape, &v), 1, 0).unwrap().to_vec(rt).unwrap();
        assert_exact(&format!("forward B, {name}"), &y, &q);
        // Input gradient: A (the output gradient) through identity weights; B (the weights)
        // through a one-hot output gradient.
        assert_exact(
            &format!("input gradient A, {name}"),
            &conv2d_backward_data(rt, &img, &eye_w, 1, 0, &vt).unwrap().to_vec(rt).unwrap(),
            &q,
        );
        let dx = conv2d_backward_data(rt, &img, &t(&w_shape, &v), 1, 0, &eye_img).unwrap().to_vec(rt).unwrap();
        assert_exact(&format!("input gradient B, {name}"), &dx, &transpose(&q, c, c));
        // Weight gradient: A (the output gradient) against a one-hot image; B (the image)
        // against a one-hot output gradient.
        assert_exact(
            &format!("weight gradient A, {name}"),
            &conv2d_backward_weight(rt, &eye_img, &w_shape, 1, 0, &vt).unwrap().to_vec(rt).unwrap(),
            &q,
        );
        let dw = conv2d_backward_weight(rt, &vt, &w_shape, 1, 0, &eye_img).unwrap().to_vec(rt).unwrap();
        assert_exact(&format!("weight gradient B, {name}"), &dw, &transpose(&q, c, c));
    }
}

/// Forward, input gradient and weight gradient of one convolution in f16 against the float64
/// reference fed the same f16 operands (f32 tolerances: only the order of the f32 sums
/// differs). Returns the f16 errors against the unrounded reference (forward, dx, dw).
fn check_conv(
    rt: &Runtime,
    seed: u64,
    xs: [usize; 4],
    co: usize,
    k: usize,
    (stride, pad): (u32, u32),
    magnitudes: (f64, f64, f64),
) -> [f64; 3] {
    let mut r = rng(seed);
    let ws = [co, xs[1], k, k];
    let (mx, mw, mg) = magnitudes;
    let x = r.uniform_vec(xs.iter().product(), -mx, mx);
    let w = r.uniform_vec(ws.iter().product(), -mw, mw);
    let xt = Tensor::leaf(rt, &xs, &x).unwrap();
    let wt = Tensor::leaf(rt, &ws, &w).unwrap();
    let y = conv2d(rt, &xt, &wt, stride, pad).unwrap();
    let (qx, qw) = (to_f64(&f16_operand(&x)), to_f64(&f16_operand(&w)));
    let got_y = y.to_vec(rt).unwrap();
    assert_close("f16 conv2d forward", &got_y, &cpu::conv2d(&qx, xs, &qw, ws, stride as usize, pad as usize), tol::FWD);

    let g = r.uniform_vec(got_y.len(), -mg, mg);
    let grads = autodiff::backward_with(rt, &y, Tensor::from_f32(rt, y.shape(), &g).unwrap()).unwrap();
    let (got_dx, got_dw) = (grads.get(&xt).unwrap().to_vec(rt).unwrap(), grads.get(&wt).unwrap().to_vec(rt).unwrap());
    let qg = to_f64(&f16_operand(&g));
    let (_, dw) = cpu::conv2d_backward(&qx, xs, &qw, ws, stride as usize, pad as usize, &qg);
    // The narrow stem's input gradient is a direct kernel, not a GEMM: f32 in both precisions.
    let (dx, _) = if xs[1] <= NARROW_CHANNELS as usize {
        cpu::conv2d_backward(&qx, xs, &to_f64(&w), ws, stride as usize, pad as usize, &to_f64(&g))
    } else {
        cpu::conv2d_backward(&qx, xs, &qw, ws, stride as usize, pad as usize, &qg)
    };
    assert_close("f16 conv2d input gradient", &got_dx, &dx, tol::BWD);
    assert_close("f16 conv2d weight gradient", &got_dw, &dw, tol::BWD);

    let exact_y = cpu::conv2d(&to_f64(&x), xs, &to_f64(&w), ws, stride as usize, pad as usize);
    let (exact_dx, exact_dw) = cpu::conv2d_backward(&to_f64(&x), xs, &to_f64(&w), ws, stride as usize, pad as usize, &to_f64(&g));
    [rel_err(&got_y, &exact_y), rel_err(&got_dx, &exact_dx), rel_err(&got_dw, &exact_dw)]
}

/// Largest f16 error of a convolution against the unrounded float64 reference, per pass, over
/// the shapes below (measured on lavapipe: forward 3.2e-4, input gradient 2.8e-4, weight
/// gradient 2.9e-4; each operand's rounding is at most 2^-12 = 2.4e-4 relative): a bound that
/// says the f16 GEMMs lose no more than their operands' rounding.
const F16_CONV_ERR: f64 = 1e-3;

#[test]
fn f16_convolutions_match_the_reference_on_f16_operands() {
    let rt = rt16();
    let mut worst = [0.0f64; 3];
    let mut run = |errs: [f64; 3]| {
        for (w, e) in worst.iter_mut().zip(errs) {
            *w = w.max(e);
        }
    };
    // Odd sizes, stride 2 over several tiles per phase, a 1x1 shortcut, split-K forward and
    // backward-data, and the narrow stem. The tiles' staging is checked under every
    // configuration above; here the first two shapes also run the widest double-buffered tiles the
    // device holds (128x128; 64x64 at WebGPU's default limits).
    for tile in [None, Some(widest_double_buffered(&rt))] {
        let rt = with_kernels(&rt, |k| k.tile = tile.map(GemmTile::Simt));
        run(check_conv(&rt, 1, [2, 6, 7, 5], 5, 3, (1, 1), (1.0, 0.5, 1.0)));
        run(check_conv(&rt, 2, [3, 20, 9, 9], 9, 3, (2, 1), (1.0, 0.5, 1.0)));
    }
    run(check_conv(&rt, 3, [3, 5, 6, 6], 7, 1, (2, 0), (1.0, 0.5, 1.0)));
    run(check_conv(&rt, 4, [2, 128, 5, 5], 128, 3, (1, 1), (1.0, 0.05, 1.0)));
    run(check_conv(&rt, 5, [8, 70, 10, 10], 67, 3, (1, 1), (1.0, 0.5, 1.0)));
    run(check_conv(&rt, 6, [2, 3, 9, 9], 4, 3, (2, 1), (1.0, 0.5, 1.0)));
    // Gradients of 1e-9 with activations of 1e4: unscaled, f16 would flush the gradients to
    // zero (its smallest subnormal is 6e-8) and overflow the activations' products.
    run(check_conv(&rt, 7, [2, 16, 6, 6], 12, 3, (1, 1), (1e4, 1e-3, 1e-9)));
    println!(
        "f16 convolution error vs the unrounded reference: forward {:.2e}, input gradient {:.2e}, weight gradient {:.2e}",
        worst[0], worst[1], worst[2]
    );
    for (what, e) in ["forward", "input gradient", "weight gradient"].iter().zip(worst) {
        assert!(e <= F16_CONV_ERR, "f16 {what}: error {e:.3e} vs the unrounded reference > {F16_CONV_ERR:.0e}");
    }
    assert!(worst.iter().all(|&e| e > tol::FWD), "f16 results as close as f32's: are the operands rounded at all?");
}

#[test]
fn f16_linear_matches_the_reference_on_f16_operands() {
    let rt = rt16();
    let mut r = rng(81);
    let (n, i, o) = (5, 70, 13);
    let x = r.uniform_vec(n * i, -1.0, 1.0);
    let w = r.uniform_vec(o * i, -0.3, 0.3);
    let b = r.uniform_vec(o, -0.3, 0.3);
    let (xt, wt, bt) =
        (Tensor::leaf(&rt, &[n, i], &x).unwrap(), Tensor::leaf(&rt, &[o, i], &w).unwrap(), Tensor::leaf(&rt, &[o], &b).unwrap());
    let y = linear(&rt, &xt, &wt, Some(&bt)).unwrap();
    let got_y = y.to_vec(&rt).unwrap();
    let (qx, qw, bd) = (to_f64(&f16_operand(&x)), to_f64(&f16_operand(&w)), to_f64(&b));
    // The bias is added in f32, unrounded.
    assert_close("f16 linear", &got_y, &cpu::linear(&qx, &qw, Some(&bd), n, i, o), tol::FWD);
    let g = r.uniform_vec(n * o, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &[n, o], &g).unwrap()).unwrap();
    let qg = to_f64(&f16_operand(&g));
    let dx: Vec<f64> = (0..n * i).map(|e| (0..o).map(|c| qg[e / i * o + c] * qw[c * i + e % i]).sum()).collect();
    let dw: Vec<f64> = (0..o * i).map(|e| (0..n).map(|rr| qg[rr * o + e / i] * qx[rr * i + e % i]).sum()).collect();
    let db: Vec<f64> = (0..o).map(|c| (0..n).map(|rr| g[rr * o + c] as f64).sum()).collect();
    let (got_dx, got_dw) = (grads.get(&xt).unwrap().to_vec(&rt).unwrap(), grads.get(&wt).unwrap().to_vec(&rt).unwrap());
    assert_close("f16 linear dx", &got_dx, &dx, tol::BWD);
    assert_close("f16 linear dw", &got_dw, &dw, tol::BWD);
    assert_close("f16 linear db (f32 column sums)", &grads.get(&bt).unwrap().to_vec(&rt).unwrap(), &db, tol::BWD);
    let exact_y = cpu::linear(&to_f64(&x), &to_f64(&w), Some(&bd), n, i, o);
    println!("f16 linear error vs the unrounded reference: forward {:.2e}", rel_err(&got_y, &exact_y));
}

/// Central differences of the f16 forward against the f16 backward. The ops are linear in each
/// input, so the difference quotient is exact whatever the step: a large step (0.25) keeps the
/// f16 rounding of the perturbed operands (2^-12 relative) small against the change.
#[test]
fn f16_conv_and_linear_finite_differences() {
    let rt = rt16();
    let mut r = rng(91);
    for ci in [2, 6] {
        let inputs = vec![(vec![2, ci, 5, 5], r.uniform_vec(50 * ci, -1.0, 1.0)), (vec![3, ci, 3, 3], r.uniform_vec(27 * ci, -0.5, 0.5))];
        grad_check_with(&rt, 92, &inputs, 12, 0.25, F16_FD, |g, t| conv2d(g, &t[0], &t[1], 2, 1));
    }
    let inputs = vec![
        (vec![3, 6], r.uniform_vec(18, -1.0, 1.0)),
        (vec![4, 6], r.uniform_vec(24, -0.5, 0.5)),
        (vec![4], r.uniform_vec(4, -0.5, 0.5)),
    ];
    grad_check_with(&rt, 93, &inputs, 10, 0.25, F16_FD, |g, t| linear(g, &t[0], &t[1], Some(&t[2])));
}

/// Finite differences in f16 (measured on lavapipe: at most 5.8e-4 relative).
pub(crate) const F16_FD: f64 = 2e-3;
