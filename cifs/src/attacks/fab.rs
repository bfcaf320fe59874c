//! FAB-T, L-inf (Croce and Hein, ICML 2020, "Minimally distorted adversarial examples with a fast
//! adaptive boundary attack"): the targeted version AutoAttack's standard run uses, as the
//! AutoAttack code runs it (fab_base.py, fab_projections.py; torchattacks' FAB with
//! `multi_targeted` is a copy):
//!
//! - targets: the 2nd, 3rd, ..., (targets + 1)-th most likely classes of each clean image, in that
//!   order, each one run of `iterations` on the images still robust (restarts likewise);
//! - a run starts at the clean image x0 (a restart after the first at
//!   `clip(x0 + eps / 2 t / max|t|)`, t ~ U(-1, 1));
//! - each iteration linearises the logit difference `df = z_t - z_y` at the current point x1,
//!   projects x1 and x0 onto the hyperplane `df + <grad, z - x1> = 0` within [0, 1] (the smallest
//!   L-inf moves d1, d2), and moves to `clip((x1 + eta d1)(1 - a) + (x0 + eta d2) a)` with
//!   `a = clamp(|d1| / (|d1| + |d2|), 0, alpha_max)` (`engine::ops::fab::fab_step`);
//! - where that point is misclassified it becomes the image's best adversarial if it is closer
//!   to x0 (L-inf) than the best so far, and x1 steps back towards x0: `x1 = x0 + beta (x1 - x0)`;
//! - FAB minimises the distance rather than working inside the eps-ball: an image counts as broken
//!   when its best adversarial lies within eps.
//!
//! Model outputs are read back once per iteration (the predictions and each image's distance);
//! the projections run on the GPU, one workgroup per image. Images that a run breaks early keep
//! being attacked to the end of it, as in AutoAttack (the distance keeps shrinking; the verdict at
//! eps cannot change). A restart's random start comes from a generator of (seed, restart, target,
//! image), so an image's attack does not depend on which other images share its batch; the
//! standard run (one restart) draws nothing.

use std::sync::Arc;

use engine::ops::attack::select_rows;
use engine::ops::fab::{fab_shrink, fab_step, FabStep};
use engine::{autodiff, no_grad, Rng, Runtime, Tensor};

use crate::attacks::apgd::{ranked_classes, Subset};
use crate::attacks::attack::{Attack, Batch, EvalSettings, Images};
use crate::attacks::hostloss::predictions;
use crate::error::{check_image_fraction, check_setting, Result};
use crate::models::{Mode, Model};

#[derive(Debug, Clone, Copy)]
pub struct Fab {
    pub eps: f32,
    pub iterations: usize,
    pub restarts: usize,
    /// The most likely other classes of each clean image to target, in turn (9 in AutoAttack).
    pub targets: usize,
    /// Largest weight of the clean image's projection in each step's mix.
    pub alpha_max: f32,
    /// Overshoot of the projections.
    pub eta: f32,
    /// Backward step towards the clean image after a misclassified point.
    pub beta: f32,
    pub seed: u64,
}

/// One run towards one target rank: the images it attacked (indices into the batch) and, for
/// each, the L-inf distance of the closest misclassified point it found (None: none found).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRun {
    /// The target's rank among the clean image's classes (2: the second most likely).
    pub rank: usize,
    pub restart: usize,
    pub images: Vec<usize>,
    pub distances: Vec<Option<f32>>,
}

fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0xA409_3822_299F_31D0, |h, &p| (h ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(27))
}

impl Fab {
    /// AutoAttack's FAB-T at radius `eps`: 100 iterations, 1 restart, 9 target classes,
    /// alpha_max 0.1, eta 1.05, beta 0.9.
    pub fn standard(eps: f32, seed: u64) -> Fab {
        Fab { eps, iterations: 100, restarts: 1, targets: 9, alpha_max: 0.1, eta: 1.05, beta: 0.9, seed }
    }

    /// The evaluation's FAB-T: its radius, iterations, restarts, target classes and seed, with
    /// AutoAttack's alpha_max, eta and beta.
    pub fn from_settings(s: &EvalSettings) -> Fab {
        Fab { iterations: s.iterations, restarts: s.restarts, targets: s.target_classes, ..Fab::standard(s.eps, s.seed) }
    }

    pub fn validate(&self) -> Result<()> {
        check_image_fraction("eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.iterations >= 1, "iterations", self.iterations, "FAB needs at least one iteration")?;
        check_setting(self.restarts >= 1, "restarts", self.restarts, "FAB needs at least one restart")?;
        check_setting(self.targets >= 1, "target classes", self.targets, "FAB-T needs at least one target class")?;
        check_setting((0.0..=1.0).contains(&self.alpha_max), "alpha_max", self.alpha_max, "a weight in [0, 1]")?;
        check_setting(self.eta.is_finite() && self.eta >= 1.0, "eta", self.eta, "the overshoot must be finite and at least 1")?;
        check_setting(self.beta > 0.0 && self.beta <= 1.0, "beta", self.beta, "the backward step must be in (0, 1]")
    }

    /// Attacks the images of `b` that `robust` still marks and clears the flags of those it
    /// breaks (and of any the model misclassifies unattacked). Returns the batch's images after
    /// the attack: for each image it broke, its closest misclassified point; the clean image for
    /// the rest.
    pub fn run(&self, rt: &Runtime, model: &Model, b: &Batch, robust: &mut [bool]) -> Result<Vec<f32>> {
        self.run_logged(rt, model, b, robust, &mut Vec::new())
    }

    /// [`Fab::run`], appending each target run's distances to `log`.
    pub fn run_logged(&self, rt: &Runtime, model: &Model, b: &Batch, robust: &mut [bool], log: &mut Vec<TargetRun>) -> Result<Vec<f32>> {
        self.validate()?;
        let mut images = b.x_host.to_vec();
        if !robust.iter().any(|&r| r) {
            return Ok(images);
        }
        let per = b.x_host.len() / b.ids.len();
        let classes = model.config.classes;
        let clean = no_grad(|| model.forward(rt, b.x, None, Mode::Eval))?.logits.to_vec(rt)?;
        for (r, (p, y)) in robust.iter_mut().zip(predictions(&clean, classes).iter().zip(b.labels_host)) {
            *r &= *p == *y as usize;
        }
        let ranked = ranked_classes(&clean, classes);
        for rank in 2..=(self.targets + 1).min(classes) {
            for restart in 0..self.restarts {
                let live: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
                if live.is_empty() {
                    return Ok(images);
                }
                let sub = Subset::of(rt, b, &live)?;
                let targets: Vec<u32> = live.iter().map(|&i| ranked[i][rank - 1]).collect();
                let start = (restart > 0).then(|| mix(&[self.seed, restart as u64, rank as u64]));
                let (distances, adv) = self.single_run(rt, model, &sub.batch(), &targets, start)?;
                for (k, &i) in live.iter().enumerate() {
                    if distances[k] <= self.eps {
                        robust[i] = false;
                        images[i * per..(i + 1) * per].copy_from_slice(&adv[k * per..(k + 1) * per]);
                    }
                }
                let distances = distances.into_iter().map(|d| d.is_finite().then_some(d)).collect();
                log.push(TargetRun { rank, restart, images: live, distances });
            }
        }
        Ok(images)
    }

    /// `clip(x0 + eps / 2 t / max|t|)` for t ~ U(-1, 1), image by image from its own generator.
    fn random_start(&self, b: &Batch, key: u64) -> Vec<f32> {
        let per = b.x_host.len() / b.ids.len();
        let mut out = Vec::with_capacity(b.x_host.len());
        for (img, &id) in b.ids.iter().enumerate() {
            let t = Rng::new(mix(&[key, id])).uniform_vec(per, -1.0, 1.0);
            let max = t.iter().fold(0f32, |m, v| m.max(v.abs()));
            let x = &b.x_host[img * per..(img + 1) * per];
            out.extend(x.iter().zip(&t).map(|(xi, ti)| (xi + 0.5 * self.eps * ti / max).clamp(0.0, 1.0)));
        }
        out
    }

    /// Rows of +1 at each image's target class and -1 at its label: the seed of the logit
    /// difference's gradient, and the weights that make it from the logits.
    fn direction(rt: &Runtime, labels: &[u32], targets: &[u32], classes: usize) -> Result<Tensor> {
        let mut d = vec![0f32; labels.len() * classes];
        for (row, (&y, &t)) in d.chunks_mut(classes).zip(labels.iter().zip(targets)) {
            row[y as usize] -= 1.0;
            row[t as usize] += 1.0;
        }
        Ok(Tensor::from_f32(rt, &[labels.len(), classes], &d)?)
    }

    /// One run on the images of `b` towards `targets`, from the clean images (or, with a key, a
    /// random start). Returns each image's distance to its closest misclassified point (infinite
    /// where none was found) and those points (the clean image where none was found).
    fn single_run(&self, rt: &Runtime, model: &Model, b: &Batch, targets: &[u32], start: Option<u64>) -> Result<(Vec<f32>, Vec<f32>)> {
        let classes = model.config.classes;
        let n = b.ids.len();
        let shape = b.x.shape().to_vec();
        let mut x1 = match start {
            Some(key) => Tensor::from_f32(rt, &shape, &self.random_start(b, key))?,
            None => Tensor::from_f32(rt, &shape, b.x_host)?,
        };
        let best = Tensor::from_f32(rt, &shape, b.x_host)?;
        let direction = Self::direction(rt, b.labels_host, targets, classes)?;
        let step = FabStep { eta: self.eta, alpha_max: self.alpha_max };
        let mut distance = vec![f32::INFINITY; n];
        let mask = |m: &[bool]| Tensor::from_u32(rt, &[n], &m.iter().map(|&v| v as u32).collect::<Vec<_>>());
        for _ in 0..self.iterations {
            let leaf = x1.requiring_grad();
            let out = model.forward(rt, &leaf, None, Mode::Eval)?;
            let grads = autodiff::backward_with(rt, &out.logits, direction.clone())?;
            let grad = grads.get(&leaf).ok_or(engine::EngineError::NothingRequiresGrad)?;
            let (next, norms) = fab_step(rt, &x1, b.x, grad, &out.logits, &direction, step)?;
            x1 = next;
            let logits = no_grad(|| model.forward(rt, &x1, None, Mode::Eval))?.logits;
            let [logits, norms]: [Vec<f32>; 2] = Tensor::read_all(rt, &[&logits, &norms])?.try_into().expect("two tensors read");
            let wrong: Vec<bool> = predictions(&logits, classes).iter().zip(b.labels_host).map(|(p, y)| *p != *y as usize).collect();
            let closer: Vec<bool> = (0..n).map(|k| wrong[k] && norms[k] < distance[k]).collect();
            for k in (0..n).filter(|&k| closer[k]) {
                distance[k] = norms[k];
            }
            if closer.iter().any(|&c| c) {
                select_rows(rt, &mask(&closer)?, &x1, &best)?;
            }
            if wrong.iter().any(|&w| w) {
                fab_shrink(rt, &mask(&wrong)?, b.x, &x1, self.beta)?;
            }
        }
        Ok((distance, best.to_vec(rt)?))
    }
}

/// `fab-t` as an evaluation attack (and AutoAttack's third stage).
pub struct FabT;

impl Attack for FabT {
    fn name(&self) -> String {
        "fab-t".into()
    }

    fn loss(&self, _: &EvalSettings) -> String {
        "targeted logit difference (smallest L-inf distance)".into()
    }

    fn validate(&self, s: &EvalSettings) -> Result<()> {
        Fab::from_settings(s).validate()
    }

    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        Ok(Images::Host(Fab::from_settings(s).run(rt, model, b, robust)?))
    }
}

pub fn parse(name: &str) -> Option<Arc<dyn Attack>> {
    (name == "fab-t").then(|| Arc::new(FabT) as Arc<dyn Attack>)
}
