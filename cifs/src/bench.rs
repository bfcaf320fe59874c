//! Whole-step benchmarks behind `cifs-wgpu bench`: the PGD-10 adversarial training step, the clean
//! training step and the eval forward, at a given model, width and batch, on random 32x32 inputs
//! (as the PyTorch anchors in PERF-ANCHORS.md were measured). Median of the timed steps after
//! warm-up; each step is timed on the GPU's clock where the adapter allows it.

use datasets::Rng;
use engine::gpu::Clock;
use engine::{Gpu, Tensor};
use serde::Serialize;

use crate::attack::{AttackLoss, Pgd};
use crate::error::Result;
use crate::optim::Sgd;
use crate::resnet::{Mode, ModelConfig, ResNet18};
use crate::train::train_step;

#[derive(Debug, Clone, Serialize)]
pub struct StepTiming {
    pub step: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub images_per_s: f64,
    pub clock: String,
    pub steps: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Times `warmup + steps` runs of each step kind and reports the median of the last `steps`.
pub fn bench_steps(gpu: &Gpu, config: ModelConfig, batch: usize, steps: usize, warmup: usize, mut progress: impl FnMut(&str, usize)) -> Result<Vec<StepTiming>> {
    let mut rng = Rng::new(0);
    let model = ResNet18::new(gpu, config, &mut rng)?;
    let sgd = Sgd::new(gpu, &model, 0.1, 0.9, 2e-4)?;
    let x = Tensor::from_f32(gpu, &[batch, 3, 32, 32], &rng.uniform_vec(batch * 3072, 0.0, 1.0))?;
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(config.classes as u64) as u32).collect();
    let y = Tensor::from_u32(gpu, &[batch], &labels)?;
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 10, loss: AttackLoss::Joint { beta: 2.0 } };
    let mut out = Vec::new();
    for kind in ["pgd10-at-step", "clean-train-step", "eval-forward"] {
        let mut times = Vec::new();
        let mut clock = Clock::Wall;
        for i in 0..warmup + steps.max(1) {
            let (r, secs, c) = gpu.timed(|| -> Result<()> {
                match kind {
                    "pgd10-at-step" => train_step(gpu, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut rng).map(|_| ()),
                    "clean-train-step" => train_step(gpu, &model, &sgd, &x, &y, None, 2.0, &mut rng).map(|_| ()),
                    _ => gpu.no_grad(|| model.forward(gpu, &x, None, Mode::Eval)).map(|_| ()),
                }
            })?;
            r?;
            clock = c;
            if i >= warmup {
                times.push(secs * 1e3);
            }
            progress(kind, i + 1);
        }
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(&mut times);
        out.push(StepTiming {
            step: kind.to_string(),
            median_ms: med,
            min_ms: min,
            images_per_s: batch as f64 / (med / 1e3),
            clock: format!("{clock:?}"),
            steps: times.len(),
        });
    }
    Ok(out)
}
