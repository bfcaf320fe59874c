//! Accuracy under attack, overall and per class.
//!
//! White-box gradient attacks (docs/DESIGN.md, section 4): FGSM, PGD-n (step 0.1 eps, no random start) and CW-inf
//! (PGD on the margin loss, confidence 50); the loss that FGSM, PGD and APGD-CE ascend is the
//! evaluation's `loss` (the joint loss by default, as the reference evaluates CIFS models).
//! AutoAttack-grade attacks (Croce and Hein 2020): APGD-CE, APGD-DLR, APGD-T (targeted DLR over
//! the 9 most likely wrong classes), Square (black box, 5000 queries), and `autoattack`: APGD-CE,
//! then APGD-T, then Square, each on the images still robust (FAB-T is not implemented). APGD,
//! APGD-T and Square attack only the images classified correctly.
//!
//! The model is in eval mode throughout; only logits are read back.

use std::sync::Arc;

use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{no_grad, Runtime, Tensor};
use serde::Serialize;

use crate::attacks::apgd::{Apgd, ApgdLoss, Batch};
use crate::attacks::hostloss::predictions;
use crate::attacks::pgd::{cw_inf, fgsm, AttackLoss, Pgd, Start};
use crate::attacks::square::Square;
use crate::error::{check_setting, CifsError, Result};
use crate::models::{Mode, Model};

/// An evaluation attack: `natural`, `fgsm`, `pgd<steps>`, `cw<steps>` (e.g. pgd20, pgd100, cw30),
/// `apgd-ce`, `apgd-dlr`, `apgd-t`, `square`, `autoattack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Natural,
    Fgsm,
    Pgd(usize),
    Cw(usize),
    ApgdCe,
    ApgdDlr,
    ApgdT,
    Square,
    AutoAttack,
}

impl std::str::FromStr for Attack {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Attack, String> {
        let steps = |rest: &str| rest.parse::<usize>().ok().filter(|&n| n > 0);
        let s = s.trim();
        if let Some(n) = s.strip_prefix("pgd").and_then(steps) {
            return Ok(Attack::Pgd(n));
        }
        if let Some(n) = s.strip_prefix("cw").and_then(steps) {
            return Ok(Attack::Cw(n));
        }
        match s {
            "natural" => Ok(Attack::Natural),
            "fgsm" => Ok(Attack::Fgsm),
            "apgd-ce" => Ok(Attack::ApgdCe),
            "apgd-dlr" => Ok(Attack::ApgdDlr),
            "apgd-t" => Ok(Attack::ApgdT),
            "square" => Ok(Attack::Square),
            "autoattack" => Ok(Attack::AutoAttack),
            _ => Err(format!(
                "unknown attack `{s}` (use natural, fgsm, pgd<steps>, cw<steps>, apgd-ce, apgd-dlr, apgd-t, square, autoattack)"
            )),
        }
    }
}

impl std::fmt::Display for Attack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attack::Natural => write!(f, "natural"),
            Attack::Fgsm => write!(f, "fgsm"),
            Attack::Pgd(n) => write!(f, "pgd{n}"),
            Attack::Cw(n) => write!(f, "cw{n}"),
            Attack::ApgdCe => write!(f, "apgd-ce"),
            Attack::ApgdDlr => write!(f, "apgd-dlr"),
            Attack::ApgdT => write!(f, "apgd-t"),
            Attack::Square => write!(f, "square"),
            Attack::AutoAttack => write!(f, "autoattack"),
        }
    }
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
    /// APGD iterations and restarts.
    pub iterations: usize,
    pub restarts: usize,
    /// APGD-T's target classes: the most likely wrong classes, this many (9 in AutoAttack).
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

    pub fn validate(&self) -> Result<()> {
        check_setting(self.eps.is_finite() && self.eps >= 0.0, "eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.batch_size >= 1, "batch size", self.batch_size, "must be at least 1")?;
        check_setting(self.target_classes >= 1, "target classes", self.target_classes, "APGD-T needs at least one target class")?;
        self.apgd().validate()?;
        self.square().validate()?;
        Pgd { eps: self.eps, step: self.eps, steps: 1, loss: self.loss }.validate()
    }

    fn apgd(&self) -> Apgd {
        Apgd { eps: self.eps, iterations: self.iterations, restarts: self.restarts, rho: 0.75, seed: self.seed }
    }

    fn square(&self) -> Square {
        Square { eps: self.eps, queries: self.queries, p_init: 0.8, seed: self.seed }
    }
}

/// Correct answers and images of one class.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassResult {
    pub class: String,
    pub correct: usize,
    pub images: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackResult {
    /// The attack, or for AutoAttack's stages `autoattack/<stage>` (robust after that stage).
    pub attack: String,
    /// The loss the attack ascended.
    pub loss: String,
    pub correct: usize,
    pub images: usize,
    pub accuracy: f64,
    pub per_class: Vec<ClassResult>,
}

/// Correct-answer counts of one row of the table.
struct Tally {
    name: String,
    loss: String,
    per_class: Vec<usize>,
}

/// The DLR loss needs the third (untargeted) or fourth (targeted) largest logit.
fn min_classes(attack: Attack) -> usize {
    match attack {
        Attack::ApgdDlr => 3,
        Attack::ApgdT => 4,
        _ => 2,
    }
}

impl Attack {
    /// The loss this attack ascends under `s`.
    fn loss_name(&self, s: &EvalSettings) -> String {
        match self {
            Attack::Natural => "none".into(),
            Attack::Fgsm | Attack::Pgd(_) | Attack::ApgdCe => s.loss.describe(),
            Attack::Cw(_) => AttackLoss::CwMargin { confidence: s.confidence }.describe(),
            Attack::ApgdDlr => "dlr".into(),
            Attack::ApgdT => "targeted dlr".into(),
            Attack::Square => "margin (black box)".into(),
            Attack::AutoAttack => format!("apgd-ce: {}; apgd-t: targeted dlr; square: margin", s.loss.describe()),
        }
    }

    /// The rows this attack adds to the table.
    fn rows(&self, s: &EvalSettings, classes: usize) -> Vec<(String, String)> {
        let apgd_t = if classes >= min_classes(Attack::ApgdT) { "targeted dlr" } else { "skipped: fewer than 4 classes" };
        match self {
            Attack::AutoAttack => vec![
                ("autoattack/apgd-ce".into(), s.loss.describe()),
                ("autoattack/apgd-t".into(), apgd_t.into()),
                ("autoattack/square".into(), "margin (black box)".into()),
                ("autoattack".into(), self.loss_name(s)),
            ],
            _ => vec![(self.to_string(), self.loss_name(s))],
        }
    }
}

/// AutoAttack's stages, in order (FAB-T is not implemented).
const AUTOATTACK: [Attack; 3] = [Attack::ApgdCe, Attack::ApgdT, Attack::Square];

/// The adversarial images of a white-box PGD-family attack (natural: the images themselves).
fn pgd_family(rt: &Runtime, model: &Model, b: &Batch, attack: Attack, s: &EvalSettings) -> Result<Tensor> {
    Ok(match attack {
        Attack::Fgsm => fgsm(rt, model, b.x, b.labels, s.eps, s.loss)?,
        Attack::Pgd(steps) => Pgd { eps: s.eps, step: 0.1 * s.eps, steps, loss: s.loss }.attack(rt, model, b.x, b.labels, Start::Zero)?,
        Attack::Cw(steps) => cw_inf(rt, model, b.x, b.labels, s.eps, 0.1 * s.eps, steps, s.confidence)?,
        _ => b.x.clone(),
    })
}

/// Runs an attack that works on the images still robust (APGD, Square); returns the batch's
/// images after it.
fn robust_set(rt: &Runtime, model: &Model, b: &Batch, attack: Attack, s: &EvalSettings, robust: &mut [bool]) -> Result<Vec<f32>> {
    match attack {
        Attack::ApgdCe => s.apgd().run(rt, model, b, ApgdLoss::Untargeted(s.loss), robust),
        Attack::ApgdDlr => s.apgd().run(rt, model, b, ApgdLoss::Untargeted(AttackLoss::Dlr), robust),
        Attack::ApgdT => s.apgd().run(rt, model, b, ApgdLoss::Targeted { rank: s.target_classes + 1 }, robust),
        _ => s.square().run(rt, model, b, robust),
    }
}

fn is_robust_set(attack: Attack) -> bool {
    matches!(attack, Attack::ApgdCe | Attack::ApgdDlr | Attack::ApgdT | Attack::Square)
}

/// Which of the images of `b` survive `attack` (among those `robust` still marks).
fn survive(rt: &Runtime, model: &Model, b: &Batch, attack: Attack, s: &EvalSettings, robust: &mut [bool]) -> Result<()> {
    if is_robust_set(attack) {
        return robust_set(rt, model, b, attack, s, robust).map(drop);
    }
    let adv = pgd_family(rt, model, b, attack, s)?;
    let logits = no_grad(|| model.forward(rt, &adv, None, Mode::Eval))?.logits.to_vec(rt)?;
    for (r, (p, y)) in robust.iter_mut().zip(predictions(&logits, model.config.classes).iter().zip(b.labels_host)) {
        *r &= *p == *y as usize;
    }
    Ok(())
}

/// The adversarial images `attack` makes of the batch `b` (AutoAttack: each stage's images for
/// the images it broke). Robust-set attacks run on the images classified correctly.
pub fn adversarial_images(rt: &Runtime, model: &Model, b: &Batch, attack: Attack, s: &EvalSettings) -> Result<Tensor> {
    s.validate()?;
    if !is_robust_set(attack) && attack != Attack::AutoAttack {
        return pgd_family(rt, model, b, attack, s);
    }
    let mut robust = vec![true; b.ids.len()];
    survive(rt, model, b, Attack::Natural, s, &mut robust)?;
    let mut images = b.x_host.to_vec();
    let per = images.len() / b.ids.len().max(1);
    let stages: &[Attack] = if attack == Attack::AutoAttack { &AUTOATTACK } else { std::slice::from_ref(&attack) };
    for &stage in stages.iter().filter(|&&st| model.config.classes >= min_classes(st)) {
        let before = robust.clone();
        let out = robust_set(rt, model, b, stage, s, &mut robust)?;
        for (i, (&was, &now)) in before.iter().zip(&robust).enumerate() {
            if was && !now {
                images[i * per..(i + 1) * per].copy_from_slice(&out[i * per..(i + 1) * per]);
            }
        }
    }
    Ok(Tensor::from_f32(rt, b.x.shape(), &images)?)
}

/// Runs each attack over every image of `data`; `on_batch(done, total)` reports progress.
pub fn evaluate(
    rt: &Runtime,
    model: &Model,
    data: &Arc<Dataset>,
    attacks: &[Attack],
    s: EvalSettings,
    on_batch: impl FnMut(usize, usize),
) -> Result<Vec<AttackResult>> {
    evaluate_from(rt, model, data, 0, attacks, s, on_batch)
}

/// [`evaluate`] on images that are part of a larger set, the first being image `first_id` of it
/// (the index seeds the per-image random draws of APGD and Square).
pub fn evaluate_from(
    rt: &Runtime,
    model: &Model,
    data: &Arc<Dataset>,
    first_id: usize,
    attacks: &[Attack],
    s: EvalSettings,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<AttackResult>> {
    s.validate()?;
    // An empty selection would print a table of zeros that reads like a broken model.
    if data.is_empty() {
        return Err(CifsError::NoImages { what: "evaluation" });
    }
    let classes = data.classes.len();
    let dlr_needed = if s.loss == AttackLoss::Dlr
        && attacks.iter().any(|a| matches!(a, Attack::Fgsm | Attack::Pgd(_) | Attack::ApgdCe | Attack::AutoAttack))
    {
        3
    } else {
        2
    };
    for &a in attacks {
        check_setting(
            classes >= min_classes(a).max(dlr_needed),
            "attack",
            a,
            "its DLR loss needs at least 3 classes (4 targeted); this dataset has fewer",
        )?;
    }
    let mut tallies: Vec<Tally> =
        attacks.iter().flat_map(|a| a.rows(&s, classes)).map(|(name, loss)| Tally { name, loss, per_class: vec![0; classes] }).collect();
    let mut images = vec![0usize; classes];
    let mut seen = 0usize;
    let total = data.len();
    // No weight changes while the model is evaluated: every attack's backward passes (APGD's
    // hundred per restart) share the layouts derived from the weights, made once.
    rt.weights_frozen(|| -> Result<()> {
        for batch in batches(data.clone(), Pass::in_order(total, s.batch_size))? {
            let batch = batch?;
            let n = batch.len();
            let x = Tensor::from_f32(rt, &batch.dims(), &batch.images)?;
            let y = Tensor::from_u32(rt, &[n], &batch.labels)?;
            let ids: Vec<u64> = (first_id + seen..first_id + seen + n).map(|i| i as u64).collect();
            let b = Batch { x: &x, x_host: &batch.images, labels: &y, labels_host: &batch.labels, ids: &ids };
            let mut clean = vec![true; n];
            survive(rt, model, &b, Attack::Natural, &s, &mut clean)?;
            let mut row = 0;
            for &attack in attacks {
                let stages: &[Attack] = match attack {
                    Attack::AutoAttack => &AUTOATTACK,
                    Attack::Natural => &[],
                    _ => std::slice::from_ref(&attack),
                };
                let mut robust = clean.clone();
                for &stage in stages {
                    // AutoAttack on fewer than 4 classes runs without APGD-T (its loss needs 4 logits).
                    if classes >= min_classes(stage) {
                        survive(rt, model, &b, stage, &s, &mut robust)?;
                    }
                    if attack == Attack::AutoAttack {
                        count(&mut tallies[row], &robust, &batch.labels);
                        row += 1;
                    }
                }
                count(&mut tallies[row], &robust, &batch.labels);
                row += 1;
            }
            for &l in &batch.labels {
                images[l as usize] += 1;
            }
            seen += n;
            on_batch(seen, total);
        }
        Ok(())
    })?;
    let ratio = |c: usize, n: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    Ok(tallies
        .into_iter()
        .map(|t| {
            let correct = t.per_class.iter().sum();
            let per_class = t
                .per_class
                .iter()
                .zip(&images)
                .zip(&data.classes)
                .map(|((&c, &n), name)| ClassResult { class: name.clone(), correct: c, images: n, accuracy: ratio(c, n) })
                .collect();
            AttackResult { attack: t.name, loss: t.loss, correct, images: seen, accuracy: ratio(correct, seen), per_class }
        })
        .collect())
}

fn count(t: &mut Tally, robust: &[bool], labels: &[u32]) {
    for (&r, &l) in robust.iter().zip(labels) {
        if r {
            t.per_class[l as usize] += 1;
        }
    }
}
