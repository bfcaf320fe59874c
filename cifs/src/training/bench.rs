//! Whole-step benchmarks behind `cifs-wgpu bench`: the PGD-10 adversarial training step, the
//! single-step ones (FGSM-RS, N-FGSM), the clean training step and the eval forward, at a given model, width and batch, on random 32x32 inputs
//! (as the PyTorch anchors in PERF-ANCHORS.md were measured).
//!
//! Each step is timed twice over: by the wall clock from the start of recording to the end of the
//! GPU work (host recording and submission included: the figure comparable to PyTorch's
//! synchronised wall clock), and by GPU timestamps where the adapter has them (the device's own
//! time). The runtime's counters give the dispatches and submits each step costs. Medians over
//! the timed steps after warm-up.

use engine::{no_grad, Rng, Runtime, Tensor};
use serde::Serialize;

use crate::attacks::pgd::{AttackLoss, Pgd};
use crate::attacks::single_step::SingleStep;
use crate::error::Result;
use crate::models::{Mode, Model, ModelConfig};
use crate::training::optim::Sgd;
use crate::training::single_step;
use crate::training::step::train_step;

/// The steps measured, in order, under their JSON names.
pub const STEPS: [&str; 5] = ["pgd10-at-step", "fgsm-rs-step", "n-fgsm-step", "clean-train-step", "eval-forward"];

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub step: String,
    /// Wall clock per step, recording and submission included.
    pub wall_median_ms: f64,
    pub wall_min_ms: f64,
    /// GPU timestamps per step; `None` where the adapter has no timestamp queries.
    pub gpu_median_ms: Option<f64>,
    /// Images per second by the wall-clock median.
    pub images_per_s: f64,
    pub dispatches_per_step: u64,
    pub submits_per_step: u64,
    pub steps: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times `warmup + steps` runs of each step kind and reports the medians of the last `steps`.
pub fn bench_steps(
    rt: &Runtime,
    config: ModelConfig,
    batch: usize,
    steps: usize,
    warmup: usize,
    mut progress: impl FnMut(&str, usize),
) -> Result<Vec<StepTiming>> {
    let mut rng = Rng::new(0);
    let model = Model::new(rt, config, &mut rng)?;
    let sgd = Sgd::new(rt, &model, 0.1, 0.9, 2e-4)?;
    let (c, side) = config.kind.input();
    let x = Tensor::from_f32(rt, &[batch, c, side, side], &rng.uniform_vec(batch * c * side * side, 0.0, 1.0))?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(config.classes as u64) as u32).collect();
    let y = Tensor::from_u32(rt, &[batch], &labels)?;
    let (eps, loss) = (8.0 / 255.0, AttackLoss::Joint { beta: 2.0 });
    let pgd = Pgd { eps, step: 2.0 / 255.0, steps: 10, loss };
    let (fgsm_rs, n_fgsm) = (SingleStep::fgsm_rs(eps, loss), SingleStep::n_fgsm(eps, loss));
    let mut out = Vec::new();
    for kind in STEPS {
        let (mut wall, mut gpu) = (Vec::new(), Vec::new());
        let (mut dispatches, mut submits) = (0, 0);
        for i in 0..warmup + steps.max(1) {
            let before = rt.stats();
            let (r, timing) = rt.timed_both(|| -> Result<()> {
                match kind {
                    "pgd10-at-step" => train_step(rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut rng).map(|_| ()),
                    "fgsm-rs-step" => single_step::train_step(rt, &model, &sgd, &x, &y, &fgsm_rs, 2.0, &mut rng).map(|_| ()),
                    "n-fgsm-step" => single_step::train_step(rt, &model, &sgd, &x, &y, &n_fgsm, 2.0, &mut rng).map(|_| ()),
                    "clean-train-step" => train_step(rt, &model, &sgd, &x, &y, None, 2.0, &mut rng).map(|_| ()),
                    _ => no_grad(|| model.forward(rt, &x, None, Mode::Eval)).map(|_| ()),
                }
            })?;
            r?;
            let after = rt.stats();
            // The step's own work; the timer's sync before it submits nothing new.
            dispatches = after.dispatches - before.dispatches;
            submits = after.submits - before.submits;
            if i >= warmup {
                wall.push(timing.wall_s * 1e3);
                gpu.extend(timing.gpu_s.map(|s| s * 1e3));
            }
            progress(kind, i + 1);
        }
        let wall_min_ms = wall.iter().cloned().fold(f64::INFINITY, f64::min);
        let wall_median_ms = median(&mut wall);
        out.push(StepTiming {
            step: kind.to_string(),
            wall_median_ms,
            wall_min_ms,
            gpu_median_ms: (!gpu.is_empty()).then(|| median(&mut gpu)),
            images_per_s: batch as f64 / (wall_median_ms / 1e3),
            dispatches_per_step: dispatches,
            submits_per_step: submits,
            steps: wall.len(),
        });
    }
    Ok(out)
}
