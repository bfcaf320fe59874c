//! Shared test helpers: a runtime per test, random data, norm-wise comparisons that print where
//! they fail, and the finite-difference gradient checker. Tolerances live in `tol`.
#![allow(dead_code)]

use approx::{AbsDiffEq, RelativeEq};
use engine::{KernelOptions, Result, Rng, Runtime, RuntimeOptions, Tensor};

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
    /// Below this norm a reference field counts as zero and the comparison is absolute.
    pub const ZERO: f64 = 1e-12;
}

/// A runtime of its own for the calling test. Tests run on parallel threads and each opens a
/// device; the openings are taken one at a time: on an H200 the op tests' executable stalled
/// twice in five runs with 16 threads opening devices at once (never with one thread), and the
/// product opens one device per process anyway (docs/PERFORMANCE-HISTORY.md, "The test suite on the GPU").
pub fn rt() -> Runtime {
    rt_with(RuntimeOptions::from_env().unwrap_or_else(|e| panic!("{e}")))
}

/// [`rt`] opened with `options` (the environment's defaults are `RuntimeOptions::from_env()`).
pub fn rt_with(options: RuntimeOptions) -> Runtime {
    static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = OPENING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Runtime::new(options).unwrap_or_else(|e| panic!("tests need a Vulkan device (lavapipe is enough): {e}"))
}

/// A runtime on `rt`'s device with its kernel settings changed by `change` (tensors pass between
/// the two: `Runtime::with_kernels`).
pub fn with_kernels(rt: &Runtime, change: impl FnOnce(&mut KernelOptions)) -> Runtime {
    let mut k = rt.kernels();
    change(&mut k);
    rt.with_kernels(k)
}

/// The widest double-buffered tile `rt` can run: 128x128 (32 KiB of workgroup memory) on most
/// adapters, 64x64 at WebGPU's default 16 KiB (`CIFS_WGPU_LIMITS=webgpu`).
pub fn widest_double_buffered(rt: &Runtime) -> engine::tune::Tile {
    let double = rt.tiles().into_iter().filter(|t| t.staging == engine::tune::Staging::Double);
    double.max_by_key(|t| t.rows() * t.cols()).expect("the 64x64 double-buffered tile fits every WebGPU device")
}

pub fn rng(seed: u64) -> Rng {
    Rng::new(seed)
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A field of values compared as one vector, norm-wise, through approx's `relative_eq` family:
/// `||a - b|| <= epsilon`, or `||a - b|| <= max_relative * max(||a||, ||b||)`.
pub struct Field<'a>(pub &'a [f64]);

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

impl Field<'_> {
    fn diff(&self, other: &Field) -> f64 {
        assert_eq!(self.0.len(), other.0.len(), "length mismatch");
        norm(self.0.iter().zip(other.0).map(|(a, b)| a - b))
    }
}

impl PartialEq for Field<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl AbsDiffEq for Field<'_> {
    type Epsilon = f64;
    fn default_epsilon() -> f64 {
        tol::ZERO
    }
    fn abs_diff_eq(&self, other: &Self, epsilon: f64) -> bool {
        self.diff(other) <= epsilon
    }
}

impl RelativeEq for Field<'_> {
    fn default_max_relative() -> f64 {
        tol::FWD
    }
    fn relative_eq(&self, other: &Self, epsilon: f64, max_relative: f64) -> bool {
        let d = self.diff(other);
        d <= epsilon || d <= max_relative * norm(self.0.iter().copied()).max(norm(other.0.iter().copied()))
    }
}

/// ||got - want|| / ||want|| (absolute if want is ~0): the number printed beside each check.
pub fn rel_err(got: &[f32], want: &[f64]) -> f64 {
    let g = to_f64(got);
    let d = Field(&g).diff(&Field(want));
    let den = norm(want.iter().copied());
    if den < tol::ZERO {
        d
    } else {
        d / den
    }
}

/// Whether `got` matches `want` norm-wise within `tol` (relative; absolute near zero).
pub fn close(got: &[f32], want: &[f64], tol: f64) -> bool {
    approx::relative_eq!(Field(&to_f64(got)), Field(want), epsilon = tol::ZERO, max_relative = tol)
}

/// Asserts `close`; on failure prints the relative error, the largest differences and where.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    if close(got, want, tol) {
        return;
    }
    let mut worst: Vec<(usize, f64)> = got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).enumerate().collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    let shown: Vec<String> = worst.iter().take(5).map(|(i, d)| format!("[{i}] got {} want {} (diff {d:.3e})", got[*i], want[*i])).collect();
    panic!("{what}: relative error {:.3e} > {tol:.1e}; largest differences: {}", rel_err(got, want), shown.join("; "));
}

/// Finite-difference check of a GPU function of several inputs.
///
/// Loss = sum(f(inputs) * R) with R random, so every output element's gradient matters. The
/// analytic gradient is our backward seeded with R; the numeric one is a central difference of
/// the GPU forward itself, at `samples` positions of each input.
pub fn grad_check(
    rt: &Runtime,
    seed: u64,
    inputs: &[(Vec<usize>, Vec<f32>)],
    samples: usize,
    f: impl Fn(&Runtime, &[Tensor]) -> Result<Tensor>,
) {
    grad_check_with(rt, seed, inputs, samples, tol::FD_STEP, tol::FD, f)
}

/// [`grad_check`] with central differences of step `step`, compared to within `tolerance`.
pub fn grad_check_with(
    rt: &Runtime,
    seed: u64,
    inputs: &[(Vec<usize>, Vec<f32>)],
    samples: usize,
    step: f64,
    tolerance: f64,
    f: impl Fn(&Runtime, &[Tensor]) -> Result<Tensor>,
) {
    let mut r = rng(seed);
    let leaves: Vec<Tensor> = inputs.iter().map(|(s, d)| Tensor::leaf(rt, s, d).unwrap()).collect();
    let out = f(rt, &leaves).unwrap();
    let weights = r.uniform_vec(out.numel(), -1.0, 1.0);
    let seed_t = Tensor::from_f32(rt, out.shape(), &weights).unwrap();
    let grads = engine::autodiff::backward_with(rt, &out, seed_t).unwrap();
    let loss_at = |vals: &[Vec<f32>]| -> f64 {
        let ts: Vec<Tensor> = inputs.iter().zip(vals).map(|((s, _), v)| Tensor::from_f32(rt, s, v).unwrap()).collect();
        let y = engine::no_grad(|| f(rt, &ts)).unwrap().to_vec(rt).unwrap();
        y.iter().zip(&weights).map(|(a, b)| *a as f64 * *b as f64).sum()
    };
    for (k, (shape, data)) in inputs.iter().enumerate() {
        let analytic = grads.get(&leaves[k]).unwrap_or_else(|| panic!("input {k} {shape:?} got no gradient")).to_vec(rt).unwrap();
        let mut got = Vec::new();
        let mut want = Vec::new();
        for _ in 0..samples.min(data.len()) {
            let j = r.below(data.len() as u64) as usize;
            let h = step as f32;
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
        println!("finite differences, input {k} {shape:?}: rel err {:.2e}", rel_err(&got, &want));
        assert_close(&format!("finite differences, input {k} {shape:?}"), &got, &want, tolerance);
    }
}

/// The values an f16 GEMM computes with for the operand `v`, scaled back: `v` times the power of
/// two that puts its largest magnitude in [2^14, 2^15), rounded to f16 (the `half` crate: nearest,
/// ties to even, subnormals kept), divided by that power again. Exact in f32 (powers of two).
pub fn f16_operand(v: &[f32]) -> Vec<f32> {
    let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let e = if max == 0.0 { 0 } else { (14.0 - (max as f64).log2().floor()).clamp(-126.0, 126.0) as i32 };
    let (up, down) = (2f32.powi(e), 2f32.powi(-e));
    v.iter().map(|&x| half::f16::from_f32(x * up).to_f32() * down).collect()
}

/// Whether every adversarial pixel is in [0, 1] and within `eps` of its clean pixel (plus f32
/// rounding), checked with approx.
pub fn in_eps_ball(adv: &[f32], x: &[f32], eps: f32) -> Option<usize> {
    adv.iter().zip(x).position(|(a, x0)| !(0.0..=1.0).contains(a) || !approx::abs_diff_eq!(*a, *x0, epsilon = eps + 1e-6))
}

/// `CIFS_WGPU_REQUIRE_TENSOR_CORES=1`: the tests that need tensor cores fail where the adapter
/// has none instead of skipping (CI sets it on the device that has them).
pub const REQUIRE_TENSOR_CORES_ENV: &str = "CIFS_WGPU_REQUIRE_TENSOR_CORES";

/// A runtime whose GEMMs run in f16 on tensor cores, or `None` where the tensor-core kernels do
/// not run on this adapter: the test `test` is then skipped with the reason printed, or fails
/// if `CIFS_WGPU_REQUIRE_TENSOR_CORES=1`.
pub fn tensor_core_rt(test: &str) -> Option<(Runtime, engine::precision::TensorCores)> {
    let rt = with_kernels(&rt(), |k| k.precision = engine::Precision::F16);
    if let Some(tc) = rt.tensor_cores() {
        println!("{test}: tensor cores {} at subgroups of up to {}", tc.name(), tc.subgroup);
        return Some((rt, tc));
    }
    let s = rt.precision_support();
    let why = format!(
        "the tensor-core kernels do not run on {} ({} {}): cooperative matrices {:?}, shader f16 {}, subgroups up to {}",
        rt.adapter().name,
        rt.adapter().driver,
        rt.adapter().driver_info,
        s.cooperative_matrices,
        s.shader_f16,
        s.subgroup_sizes.1
    );
    assert!(!std::env::var(REQUIRE_TENSOR_CORES_ENV).is_ok_and(|v| v.trim() == "1"), "{test}: {why}, and {REQUIRE_TENSOR_CORES_ENV}=1");
    println!("{test}: skipped, {why}");
    None
}
