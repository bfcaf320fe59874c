//! APGD (Croce and Hein, ICML 2020): L-inf PGD with momentum and a step size that halves at
//! checkpoints, as the AutoAttack code (and torchattacks, which copies it) runs it:
//!
//! - start `clip(x + eps t / max|t|)`, t ~ U(-1, 1) per image; step size 2 eps per image;
//! - `z = P(x_k + s sign(grad))`, `x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))`,
//!   a = 1 at the first step and 0.75 after (P: the eps-ball, then [0, 1]);
//! - the best point (highest loss) and its gradient are kept per image; checkpoints after
//!   0.22 n iterations, then every max(k - 0.03 n, 0.06 n); at a checkpoint an image's step
//!   halves, and it restarts from its best point, when at most rho = 75% of the window's steps
//!   raised its loss, or when its step did not halve at the last checkpoint and its best loss has
//!   not risen since ([`StepControl`]);
//! - an image counts as broken as soon as any iterate is misclassified; restarts (and, for
//!   APGD-T, target classes) run on the images still robust.
//!
//! The loss values that drive the checkpoints are computed on the host from the read-back logits;
//! the GPU computes the gradient of the same loss. Every random draw comes from a generator of
//! (seed, image, restart, target), so an image's attack does not depend on which other images
//! share its batch.

use std::sync::Arc;

use engine::ops::attack::{apgd_step, select_rows};
use engine::ops::dlr_loss::dlr_loss;
use engine::{autodiff, Rng, Runtime, Tensor};

use crate::attacks::attack::{Attack, Batch, EvalSettings, Images};
use crate::attacks::hostloss;
use crate::attacks::loss::AttackLoss;
use crate::error::{check_image_fraction, check_setting, Result};
use crate::models::{Mode, Model};

/// Which loss an APGD run ascends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ApgdLoss {
    /// One of the untargeted losses (APGD-CE runs the evaluation's chosen loss, APGD-DLR DLR).
    Untargeted(AttackLoss),
    /// APGD-T: targeted DLR towards, in turn, the 2nd, 3rd, ..., `rank`-th most likely class of
    /// each clean image (rank 10: AutoAttack's 9 target classes).
    Targeted { rank: usize },
}

#[derive(Debug, Clone, Copy)]
pub struct Apgd {
    pub eps: f32,
    pub iterations: usize,
    pub restarts: usize,
    /// Checkpoint threshold: the share of a window's steps that must raise the loss.
    pub rho: f64,
    pub seed: u64,
}

impl Apgd {
    /// AutoAttack's standard settings at radius `eps`: 100 iterations, 1 restart, rho 0.75.
    pub fn standard(eps: f32, seed: u64) -> Apgd {
        Apgd { eps, iterations: 100, restarts: 1, rho: 0.75, seed }
    }

    /// The evaluation's APGD: its radius, iterations, restarts and seed, rho 0.75.
    pub fn from_settings(s: &EvalSettings) -> Apgd {
        Apgd { eps: s.eps, iterations: s.iterations, restarts: s.restarts, rho: 0.75, seed: s.seed }
    }

    pub fn validate(&self) -> Result<()> {
        check_image_fraction("eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.iterations >= 1, "iterations", self.iterations, "APGD needs at least one iteration")?;
        check_setting(self.restarts >= 1, "restarts", self.restarts, "APGD needs at least one restart")
    }
}

/// The step-size control of one APGD run over `n` images: pure host logic, exactly the AutoAttack
/// code's (its quirks included: the oscillation count of the first window compares the first
/// loss with the not yet written last slot of the loss history, which is 0).
pub struct StepControl {
    rho: f64,
    /// Per image: the current step size.
    pub step: Vec<f64>,
    /// Per image: the highest loss seen, and at the last checkpoint.
    pub loss_best: Vec<f64>,
    loss_best_last_check: Vec<f64>,
    reduced_last_check: Vec<bool>,
    /// Loss of every image at every iteration (iterations x n), zero until written.
    history: Vec<Vec<f64>>,
    counter: usize,
    k: usize,
    size_decr: usize,
    k_min: usize,
}

/// What one iteration's losses decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Images whose loss beat their best: their best point and gradient move here.
    pub improved: Vec<bool>,
    /// At a checkpoint, the images whose step halved (they restart from their best point).
    pub halved: Option<Vec<bool>>,
}

impl StepControl {
    /// Control for `iterations` iterations, starting from the losses at the starting points.
    pub fn new(eps: f64, iterations: usize, rho: f64, initial_loss: &[f64]) -> StepControl {
        let n = initial_loss.len();
        let frac = |f: f64| ((f * iterations as f64) as usize).max(1);
        StepControl {
            rho,
            step: vec![2.0 * eps; n],
            loss_best: initial_loss.to_vec(),
            loss_best_last_check: initial_loss.to_vec(),
            reduced_last_check: vec![true; n],
            history: vec![vec![0.0; n]; iterations],
            counter: 0,
            k: frac(0.22),
            size_decr: frac(0.03),
            k_min: frac(0.06),
        }
    }

    /// How many of the last `k` steps before iteration `j` raised each image's loss is at most
    /// k rho (python indexing: slot -1 is the last row of the history).
    fn oscillating(&self, j: usize, k: usize) -> Vec<bool> {
        let rows = self.history.len() as isize;
        let row = |i: isize| &self.history[i.rem_euclid(rows) as usize];
        (0..self.step.len())
            .map(|img| {
                let raised = (0..k).filter(|&c| row(j as isize - c as isize)[img] > row(j as isize - c as isize - 1)[img]).count();
                raised as f64 <= k as f64 * self.rho
            })
            .collect()
    }

    /// Records iteration `i`'s losses and says what they decide.
    pub fn record(&mut self, i: usize, losses: &[f64]) -> Decision {
        self.history[i] = losses.to_vec();
        let improved: Vec<bool> = losses.iter().zip(&self.loss_best).map(|(l, b)| l > b).collect();
        for (b, (&l, &up)) in self.loss_best.iter_mut().zip(losses.iter().zip(&improved)) {
            if up {
                *b = l;
            }
        }
        self.counter += 1;
        if self.counter != self.k {
            return Decision { improved, halved: None };
        }
        let oscillating = self.oscillating(i, self.k);
        let halved: Vec<bool> = (0..self.step.len())
            .map(|img| oscillating[img] || (!self.reduced_last_check[img] && self.loss_best_last_check[img] >= self.loss_best[img]))
            .collect();
        for (s, &h) in self.step.iter_mut().zip(&halved) {
            if h {
                *s /= 2.0;
            }
        }
        self.reduced_last_check = halved.clone();
        self.loss_best_last_check = self.loss_best.clone();
        self.counter = 0;
        self.k = self.k.saturating_sub(self.size_decr).max(self.k_min);
        Decision { improved, halved: Some(halved) }
    }
}

fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x243F_6A88_85A3_08D3, |h, &p| (h ^ p).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29))
}

/// `clip(x + eps t / max|t|)` for t ~ U(-1, 1), image by image from its own generator.
fn random_start(b: &Batch, eps: f32, key: u64) -> Vec<f32> {
    let per = b.x_host.len() / b.ids.len();
    let mut out = Vec::with_capacity(b.x_host.len());
    for (img, &id) in b.ids.iter().enumerate() {
        let mut rng = Rng::new(mix(&[key, id]));
        let t = rng.uniform_vec(per, -1.0, 1.0);
        let max = t.iter().fold(0f32, |m, v| m.max(v.abs()));
        let x = &b.x_host[img * per..(img + 1) * per];
        out.extend(x.iter().zip(&t).map(|(xi, ti)| (xi + eps * ti / max).clamp(0.0, 1.0)));
    }
    out
}

/// Classes of each clean image sorted by logit, largest first (ties: lower index first).
pub fn ranked_classes(logits: &[f32], classes: usize) -> Vec<Vec<u32>> {
    logits
        .chunks(classes)
        .map(|row| {
            let mut idx: Vec<u32> = (0..classes as u32).collect();
            idx.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            idx
        })
        .collect()
}

struct Point {
    logits: Vec<f32>,
    probes: Vec<Vec<f32>>,
    grad: Tensor,
}

/// Loss values of the images at a point (host side) for the loss being ascended.
fn losses(loss: ApgdLoss, p: &Point, labels: &[u32], targets: Option<&[u32]>, classes: usize) -> Vec<f64> {
    match loss {
        ApgdLoss::Untargeted(l) => hostloss::per_image(l, &p.logits, &p.probes, labels, classes),
        ApgdLoss::Targeted { .. } => hostloss::dlr(&p.logits, labels, targets, classes),
    }
}

impl Apgd {
    /// Model outputs and the input gradient of the loss at `x_adv`.
    fn point(
        &self,
        rt: &Runtime,
        model: &Model,
        x_adv: &Tensor,
        labels: &Tensor,
        loss: ApgdLoss,
        targets: Option<&Tensor>,
    ) -> Result<Point> {
        let leaf = x_adv.requiring_grad();
        let out = model.forward(rt, &leaf, Some(labels), Mode::Eval)?;
        let scalar = match (loss, targets) {
            (ApgdLoss::Targeted { .. }, Some(t)) => dlr_loss(rt, &out.logits, labels, Some(t))?,
            (ApgdLoss::Untargeted(l), _) => l.of(rt, &out, labels)?,
            (ApgdLoss::Targeted { .. }, None) => unreachable!("targeted runs pass their targets"),
        };
        let grads = autodiff::backward(rt, &scalar)?;
        let grad = grads.get(&leaf).ok_or(engine::EngineError::NothingRequiresGrad)?.clone();
        // One submit and one wait per iteration for everything the step control needs.
        let mut wanted = vec![&out.logits];
        if matches!(loss, ApgdLoss::Untargeted(AttackLoss::Joint { .. })) {
            wanted.extend(&out.probes);
        }
        let mut values = Tensor::read_all(rt, &wanted)?.into_iter();
        Ok(Point { logits: values.next().expect("the logits"), probes: values.collect(), grad })
    }

    /// One run from a random start keyed by `key`; returns, per image, whether it stayed robust
    /// (no iterate misclassified), and the images: a misclassified iterate where there was one,
    /// the start elsewhere.
    fn single_run(
        &self,
        rt: &Runtime,
        model: &Model,
        b: &Batch,
        loss: ApgdLoss,
        targets: Option<&[u32]>,
        key: u64,
    ) -> Result<(Vec<bool>, Vec<f32>)> {
        let classes = model.config.classes;
        let shape = b.x.shape().to_vec();
        let n = b.ids.len();
        let start = random_start(b, self.eps, key);
        let x_adv = Tensor::from_f32(rt, &shape, &start)?;
        let x_old = Tensor::from_f32(rt, &shape, &start)?;
        let x_best = Tensor::from_f32(rt, &shape, &start)?;
        let x_best_adv = Tensor::from_f32(rt, &shape, &start)?;
        let target_t = targets.map(|t| Tensor::from_u32(rt, &[n], t)).transpose()?;
        let mut p = self.point(rt, model, &x_adv, b.labels, loss, target_t.as_ref())?;
        let grad_best = Tensor::empty(rt, &shape)?;
        grad_best.copy_from(rt, &p.grad)?;
        let mut robust: Vec<bool> =
            hostloss::predictions(&p.logits, classes).iter().zip(b.labels_host).map(|(p, y)| *p == *y as usize).collect();
        let mut control = StepControl::new(self.eps as f64, self.iterations, self.rho, &losses(loss, &p, b.labels_host, targets, classes));
        let mut steps = Tensor::from_f32(rt, &[n], &control.step.iter().map(|&s| s as f32).collect::<Vec<_>>())?;
        let mask = |m: &[bool]| Tensor::from_u32(rt, &[n], &m.iter().map(|&v| v as u32).collect::<Vec<_>>());
        for i in 0..self.iterations {
            let a = if i > 0 { 0.75 } else { 1.0 };
            apgd_step(rt, b.x, &p.grad, &steps, &x_adv, &x_old, self.eps, a)?;
            p = self.point(rt, model, &x_adv, b.labels, loss, target_t.as_ref())?;
            let wrong: Vec<bool> =
                hostloss::predictions(&p.logits, classes).iter().zip(b.labels_host).map(|(p, y)| *p != *y as usize).collect();
            if wrong.iter().any(|&w| w) {
                select_rows(rt, &mask(&wrong)?, &x_adv, &x_best_adv)?;
            }
            for (r, w) in robust.iter_mut().zip(wrong) {
                *r &= !w;
            }
            let decision = control.record(i, &losses(loss, &p, b.labels_host, targets, classes));
            if decision.improved.iter().any(|&v| v) {
                let m = mask(&decision.improved)?;
                select_rows(rt, &m, &x_adv, &x_best)?;
                select_rows(rt, &m, &p.grad, &grad_best)?;
            }
            if let Some(halved) = decision.halved.filter(|h| h.iter().any(|&v| v)) {
                steps = Tensor::from_f32(rt, &[n], &control.step.iter().map(|&s| s as f32).collect::<Vec<_>>())?;
                let m = mask(&halved)?;
                select_rows(rt, &m, &x_best, &x_adv)?;
                select_rows(rt, &m, &grad_best, &p.grad)?;
            }
            if !robust.iter().any(|&r| r) {
                break; // every image is broken: further iterations change no result
            }
        }
        Ok((robust, x_best_adv.to_vec(rt)?))
    }

    /// Attacks the images of `b` that `robust` still marks (AutoAttack's protocol: each restart
    /// and target only on the images that survived so far) and clears the flags of those it
    /// breaks. Returns the batch's images after the attack: for each image it broke, the
    /// misclassified point; the clean image for the rest.
    pub fn run(&self, rt: &Runtime, model: &Model, b: &Batch, loss: ApgdLoss, robust: &mut [bool]) -> Result<Vec<f32>> {
        self.validate()?;
        let per = b.x_host.len() / b.ids.len();
        let mut images = b.x_host.to_vec();
        let classes = model.config.classes;
        let ranks: Vec<usize> = match loss {
            ApgdLoss::Targeted { rank } => (2..=rank.min(classes)).collect(),
            ApgdLoss::Untargeted(_) => vec![0],
        };
        let mut ranked: Option<Vec<Vec<u32>>> = None;
        for &rank in &ranks {
            for restart in 0..self.restarts {
                let live: Vec<usize> = (0..robust.len()).filter(|&i| robust[i]).collect();
                if live.is_empty() {
                    return Ok(images);
                }
                let sub = Subset::of(rt, b, &live)?;
                let targets = if rank >= 2 {
                    if ranked.is_none() {
                        let clean = engine::no_grad(|| model.forward(rt, b.x, None, Mode::Eval))?.logits.to_vec(rt)?;
                        ranked = Some(ranked_classes(&clean, classes));
                    }
                    let r = ranked.as_ref().expect("ranked above");
                    Some(live.iter().map(|&i| r[i][rank - 1]).collect::<Vec<u32>>())
                } else {
                    None
                };
                let loss = if rank >= 2 { ApgdLoss::Targeted { rank } } else { loss };
                let key = mix(&[self.seed, restart as u64, rank as u64]);
                let (survived, adv) = self.single_run(rt, model, &sub.batch(), loss, targets.as_deref(), key)?;
                for (k, (&i, s)) in live.iter().zip(survived).enumerate() {
                    if !s {
                        robust[i] = false;
                        images[i * per..(i + 1) * per].copy_from_slice(&adv[k * per..(k + 1) * per]);
                    }
                }
            }
        }
        Ok(images)
    }
}

/// Some images of a batch, gathered on the host and uploaded.
pub struct Subset {
    x: Tensor,
    x_host: Vec<f32>,
    labels: Tensor,
    labels_host: Vec<u32>,
    ids: Vec<u64>,
}

impl Subset {
    pub fn of(rt: &Runtime, b: &Batch, rows: &[usize]) -> Result<Subset> {
        let per = b.x_host.len() / b.ids.len();
        let x_host: Vec<f32> = rows.iter().flat_map(|&i| b.x_host[i * per..(i + 1) * per].iter().copied()).collect();
        let mut shape = b.x.shape().to_vec();
        shape[0] = rows.len();
        let labels_host: Vec<u32> = rows.iter().map(|&i| b.labels_host[i]).collect();
        Ok(Subset {
            x: Tensor::from_f32(rt, &shape, &x_host)?,
            labels: Tensor::from_u32(rt, &[rows.len()], &labels_host)?,
            x_host,
            labels_host,
            ids: rows.iter().map(|&i| b.ids[i]).collect(),
        })
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch { x: &self.x, x_host: &self.x_host, labels: &self.labels, labels_host: &self.labels_host, ids: &self.ids }
    }
}

/// `apgd-ce`, `apgd-dlr` and `apgd-t` as evaluation attacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApgdAttack {
    /// The evaluation's loss (cross-entropy in standard AutoAttack, the joint loss by default).
    Ce,
    /// DLR.
    Dlr,
    /// Targeted DLR towards each of the evaluation's `target_classes` most likely wrong classes.
    Targeted,
}

impl Attack for ApgdAttack {
    fn name(&self) -> String {
        match self {
            ApgdAttack::Ce => "apgd-ce",
            ApgdAttack::Dlr => "apgd-dlr",
            ApgdAttack::Targeted => "apgd-t",
        }
        .into()
    }

    fn loss(&self, s: &EvalSettings) -> String {
        match self {
            ApgdAttack::Ce => s.loss.describe(),
            ApgdAttack::Dlr => "dlr".into(),
            ApgdAttack::Targeted => "targeted dlr".into(),
        }
    }

    /// The DLR loss needs the third (untargeted) or fourth (targeted) largest logit.
    fn min_classes(&self, s: &EvalSettings) -> usize {
        match self {
            ApgdAttack::Ce => s.loss_classes(),
            ApgdAttack::Dlr => 3,
            ApgdAttack::Targeted => 4,
        }
    }

    fn validate(&self, s: &EvalSettings) -> Result<()> {
        check_setting(s.target_classes >= 1, "target classes", s.target_classes, "APGD-T needs at least one target class")?;
        Apgd::from_settings(s).validate()
    }

    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images> {
        let loss = match self {
            ApgdAttack::Ce => ApgdLoss::Untargeted(s.loss),
            ApgdAttack::Dlr => ApgdLoss::Untargeted(AttackLoss::Dlr),
            ApgdAttack::Targeted => ApgdLoss::Targeted { rank: s.target_classes + 1 },
        };
        Ok(Images::Host(Apgd::from_settings(s).run(rt, model, b, loss, robust)?))
    }
}

pub fn parse(name: &str) -> Option<Arc<dyn Attack>> {
    let attack = match name {
        "apgd-ce" => ApgdAttack::Ce,
        "apgd-dlr" => ApgdAttack::Dlr,
        "apgd-t" => ApgdAttack::Targeted,
        _ => return None,
    };
    Some(Arc::new(attack))
}
