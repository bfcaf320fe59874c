//! Shared test helpers: a GPU per test, random data, norm-wise comparisons that print where
//! they fail, and the finite-difference gradient checker. Tolerances live in `tol`.
#![allow(dead_code)]

use datasets::Rng;
use engine::{Gpu, Result, Tensor};

/// Every tolerance the tests use, in one place.
pub mod tol {
    /// GPU f32 vs CPU f64 reference: relative norm error of forward values.
    pub const FWD: f64 = 1e-5;
    /// GPU f32 vs CPU f64 reference: gradients (longer reductions).
    pub const BWD: f64 = 1e-4;
    /// Whole blocks (several convolutions and batch norms chained) in f32 vs float64.
    pub const COMPOSITE: f64 = 1e-3;
    /// Central finite differences of an f32 GPU function vs its analytic gradient.
    pub const FD: f64 = 2e-2;
    /// Step for the central differences (f32 forward: large enough that rounding noise,
    /// ~1e-7 |L| / h, stays small; small enough that curvature terms, ~h^2, do too).
    pub const FD_STEP: f64 = 1e-2;
}

pub fn gpu() -> Gpu {
    Gpu::new().unwrap_or_else(|e| panic!("tests need a Vulkan device (lavapipe is enough): {e}"))
}

pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// ||got - want|| / ||want|| (absolute if want is ~0).
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let num: f64 = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).powi(2)).sum::<f64>().sqrt();
    let den: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    if den < 1e-12 { num } else { num / den }
}

/// Asserts a relative norm error below `tol`; on failure prints the max difference and the
/// first mismatching positions.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    let e = rel_err(got, want);
    if e <= tol {
        return;
    }
    let mut worst: Vec<(usize, f64)> = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).enumerate().collect();
    worst.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let shown: Vec<String> = worst.iter().take(5).map(|(i, d)| format!("[{i}] got {} want {} (diff {d:.3e})", got[*i], want[*i])).collect();
    panic!("{what}: relative error {e:.3e} > {tol:.1e}; largest differences: {}", shown.join("; "));
}

/// Finite-difference check of a GPU function of several inputs.
///
/// Loss = sum(f(inputs) * R) with R random, so every output element's gradient matters. The
/// analytic gradient is our backward seeded with R; the numeric one is a central difference of
/// the GPU forward itself, at `samples` positions of each input.
pub fn grad_check(
    gpu: &Gpu,
    seed: u64,
    inputs: &[(Vec<usize>, Vec<f32>)],
    samples: usize,
    f: impl Fn(&Gpu, &[Tensor]) -> Result<Tensor>,
) {
    let mut r = rng(seed);
    let leaves: Vec<Tensor> = inputs.iter().map(|(s, d)| Tensor::leaf(gpu, s, d).unwrap()).collect();
    let out = f(gpu, &leaves).unwrap();
    let weights = r.uniform_vec(out.numel(), -1.0, 1.0);
    let seed_t = Tensor::from_f32(gpu, out.shape(), &weights).unwrap();
    let grads = engine::autodiff::backward_with(gpu, &out, seed_t).unwrap();
    let loss_at = |vals: &[Vec<f32>]| -> f64 {
        let ts: Vec<Tensor> = inputs.iter().zip(vals).map(|((s, _), v)| Tensor::from_f32(gpu, s, v).unwrap()).collect();
        let y = gpu.no_grad(|| f(gpu, &ts)).unwrap().to_vec(gpu).unwrap();
        y.iter().zip(&weights).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    for (k, (shape, data)) in inputs.iter().enumerate() {
        let analytic = grads.get(&leaves[k]).unwrap_or_else(|| panic!("input {k} {shape:?} got no gradient")).to_vec(gpu).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for _ in 0..samples.min(data.len()) {
            let j = r.below(data.len() as u64) as usize;
            let h = tol::FD_STEP as f32;
            let mut vals: Vec<Vec<f32>> = inputs.iter().map(|(_, d)| d.clone()).collect();
            vals[k][j] = data[j] + h;
            let plus = loss_at(&vals);
            vals[k][j] = data[j] - h;
            let minus = loss_at(&vals);
            // The step actually taken, after f32 rounding of data[j] +- h.
            let step = (data[j] + h) as f64 - (data[j] - h) as f64;
            got.push(analytic[j]);
            want.push((plus - minus) / step);
        }
        assert_close(&format!("finite differences, input {k} {shape:?}"), &got, &want, tol::FD);
    }
}
