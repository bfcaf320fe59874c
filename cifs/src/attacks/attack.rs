//! What an evaluation attack is: one file per attack (`natural`, `pgd`, `apgd`, `fab`, `square`,
//! `autoattack`) implementing [`Attack`], and one line in `crate::attacks::ATTACKS`. The evaluation
//! (`attacks::evaluate`) runs any of them over a test set, chains included, and tallies the
//! results per class; nothing there names an attack.

use std::sync::Arc;

use engine::{no_grad, Runtime, Tensor};

use crate::attacks::hostloss::predictions;
use crate::attacks::loss::AttackLoss;
use crate::error::{check_image_fraction, check_setting, Result};
use crate::models::{Mode, Model};

/// One line of `crate::attacks::ATTACKS`: a name as `--attacks` spells it (`pgd<steps>`) and the
/// function that makes the attack from a name it recognises.
pub struct Entry {
    pub name: &'static str,
    pub parse: fn(&str) -> Option<Arc<dyn Attack>>,
}

/// An attack on a model in eval mode.
pub trait Attack: Send + Sync {
    /// Its name in `--attacks` and in the table (`pgd20`, `apgd-ce`).
    fn name(&self) -> String;

    /// The loss it ascends under `s`, as the table reports it.
    fn loss(&self, s: &EvalSettings) -> String;

    /// The classes a dataset needs for it under `s` (the DLR loss reads the third largest logit,
    /// its targeted form the fourth).
    fn min_classes(&self, _s: &EvalSettings) -> usize {
        2
    }

    /// Refuses settings it cannot run with (before any work).
    fn validate(&self, _s: &EvalSettings) -> Result<()> {
        Ok(())
    }

    /// Attacks the images of `b` that `robust` still marks (those classified correctly so far),
    /// clears the flag of each it breaks, and returns the batch's images after it: the
    /// adversarial image where it broke one; elsewhere the image it leaves there (a white-box
    /// attack that perturbs the whole batch: its perturbed image; the others: the clean image).
    fn run(&self, rt: &Runtime, model: &Model, b: &Batch, s: &EvalSettings, robust: &mut [bool]) -> Result<Images>;

    /// A chain's stages (AutoAttack's), each run on the images still robust after the ones
    /// before; empty for a single attack. The evaluation reports a row per stage.
    fn stages(&self) -> Vec<Arc<dyn Attack>> {
        Vec::new()
    }
}

impl std::fmt::Debug for dyn Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// The images an attack leaves, where they are (the evaluation drops them: no transfer is made
/// for it).
pub enum Images {
    Device(Tensor),
    Host(Vec<f32>),
}

impl Images {
    pub fn into_host(self, rt: &Runtime) -> Result<Vec<f32>> {
        match self {
            Images::Device(t) => Ok(t.to_vec(rt)?),
            Images::Host(v) => Ok(v),
        }
    }

    /// As a tensor of `shape`.
    pub fn into_device(self, rt: &Runtime, shape: &[usize]) -> Result<Tensor> {
        match self {
            Images::Device(t) => Ok(t),
            Images::Host(v) => Ok(Tensor::from_f32(rt, shape, &v)?),
        }
    }
}

/// The images an attack works on, on the host and on the GPU.
pub struct Batch<'a> {
    /// (n, C, H, W) images in [0, 1].
    pub x: &'a Tensor,
    pub x_host: &'a [f32],
    pub labels: &'a Tensor,
    pub labels_host: &'a [u32],
    /// A stable identity per image (its index in the evaluated set): the key of its random draws.
    pub ids: &'a [u64],
}

/// Attack settings shared by all evaluation attacks.
#[derive(Debug, Clone, Copy)]
pub struct EvalSettings {
    pub eps: f32,
    /// The loss of FGSM, PGD and APGD-CE.
    pub loss: AttackLoss,
    pub batch_size: usize,
    /// CW-inf margin.
    pub confidence: f32,
    /// APGD's and FAB-T's iterations and restarts.
    pub iterations: usize,
    pub restarts: usize,
    /// APGD-T's and FAB-T's target classes: the most likely wrong classes, this many (9 in AutoAttack).
    pub target_classes: usize,
    /// Square's queries.
    pub queries: usize,
    /// Seeds every random start and square.
    pub seed: u64,
}

impl EvalSettings {
    /// The reference's settings at radius `eps`: joint loss (beta 2), AutoAttack's standard APGD
    /// (100 iterations, 1 restart) and Square (5000 queries), seed 0.
    pub fn reference(eps: f32, batch_size: usize) -> EvalSettings {
        EvalSettings {
            eps,
            loss: AttackLoss::Joint { beta: 2.0 },
            batch_size,
            confidence: 50.0,
            iterations: 100,
            restarts: 1,
            target_classes: 9,
            queries: 5000,
            seed: 0,
        }
    }

    /// Refuses shared settings that would run but mean nothing (each attack checks its own:
    /// [`Attack::validate`]).
    pub fn validate(&self) -> Result<()> {
        check_image_fraction("eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.batch_size >= 1, "batch size", self.batch_size, "must be at least 1")?;
        self.loss.validate()
    }

    /// The classes an attack ascending the evaluation's `loss` needs: 3 for DLR, else 2.
    pub fn loss_classes(&self) -> usize {
        if self.loss == AttackLoss::Dlr {
            3
        } else {
            2
        }
    }
}

/// Clears the flag of each image of `b` whose version in `x` (the batch's shape) the model
/// (eval mode) misclassifies.
pub fn judge(rt: &Runtime, model: &Model, b: &Batch, x: &Tensor, robust: &mut [bool]) -> Result<()> {
    let logits = no_grad(|| model.forward(rt, x, None, Mode::Eval))?.logits.to_vec(rt)?;
    for (r, (p, y)) in robust.iter_mut().zip(predictions(&logits, model.config.classes).iter().zip(b.labels_host)) {
        *r &= *p == *y as usize;
    }
    Ok(())
}

/// Runs `stages` in order, each on the images still robust after the ones before (a stage the
/// dataset has too few classes for is skipped); returns the batch's images: for each image a
/// stage broke, that stage's adversarial image; the clean image for the rest.
pub fn run_chain(
    stages: &[Arc<dyn Attack>],
    rt: &Runtime,
    model: &Model,
    b: &Batch,
    s: &EvalSettings,
    robust: &mut [bool],
) -> Result<Vec<f32>> {
    let mut images = b.x_host.to_vec();
    let per = images.len() / b.ids.len().max(1);
    for stage in stages.iter().filter(|st| model.config.classes >= st.min_classes(s)) {
        let before = robust.to_vec();
        let out = stage.run(rt, model, b, s, robust)?.into_host(rt)?;
        for (i, (&was, &now)) in before.iter().zip(robust.iter()).enumerate() {
            if was && !now {
                images[i * per..(i + 1) * per].copy_from_slice(&out[i * per..(i + 1) * per]);
            }
        }
    }
    Ok(images)
}
