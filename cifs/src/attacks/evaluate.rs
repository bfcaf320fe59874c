//! Accuracy under attack, overall and per class, for any list of attacks ([`Attack`]): each
//! attack starts from the images classified correctly, a chain's stages (AutoAttack's) run in
//! turn on the images still robust with a row after each, and every row is tallied per class.
//! The model is in eval mode throughout, its weights frozen.

use std::sync::Arc;

use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{Runtime, Tensor};
use serde::Serialize;

use crate::attacks::attack::{judge, Attack, Batch, EvalSettings};
use crate::error::{check_setting, CifsError, Result};
use crate::models::Model;

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
    /// The attack, or for a chain's stages `<chain>/<stage>` (robust after that stage).
    pub attack: String,
    /// The loss the attack ascended.
    pub loss: String,
    pub correct: usize,
    pub images: usize,
    pub accuracy: f64,
    pub per_class: Vec<ClassResult>,
}

/// One row of the table while it is counted: correct answers per class.
struct Tally {
    name: String,
    loss: String,
    per_class: Vec<usize>,
}

impl Tally {
    fn new(name: String, loss: String, classes: usize) -> Tally {
        Tally { name, loss, per_class: vec![0; classes] }
    }

    fn count(&mut self, robust: &[bool], labels: &[u32]) {
        for (&r, &l) in robust.iter().zip(labels) {
            if r {
                self.per_class[l as usize] += 1;
            }
        }
    }
}

/// The rows `attack` adds to the table: a chain's stages (`<chain>/<stage>`, or why a stage is
/// skipped), then the attack itself.
fn rows(attack: &dyn Attack, s: &EvalSettings, classes: usize) -> Vec<Tally> {
    let mut v: Vec<Tally> = attack
        .stages()
        .iter()
        .map(|st| {
            let need = st.min_classes(s);
            let loss = if classes >= need { st.loss(s) } else { format!("skipped: fewer than {need} classes") };
            Tally::new(format!("{}/{}", attack.name(), st.name()), loss, classes)
        })
        .collect();
    v.push(Tally::new(attack.name(), attack.loss(s), classes));
    v
}

/// Refuses, before any work, settings an attack cannot run with and attacks the dataset has too
/// few classes for.
fn check(attacks: &[Arc<dyn Attack>], s: &EvalSettings, classes: usize) -> Result<()> {
    s.validate()?;
    for a in attacks {
        a.validate(s)?;
        check_setting(
            classes >= a.min_classes(s),
            "attack",
            a.name(),
            "its DLR loss needs at least 3 classes (4 targeted); this dataset has fewer",
        )?;
    }
    Ok(())
}

/// Runs `attack` on the batch from the clean flags `clean`, counting its rows (a chain's, one
/// per stage, then its own) into `tallies`.
fn attack_batch(
    rt: &Runtime,
    model: &Model,
    b: &Batch,
    attack: &dyn Attack,
    s: &EvalSettings,
    clean: &[bool],
    tallies: &mut [Tally],
) -> Result<()> {
    let mut robust = clean.to_vec();
    let stages = attack.stages();
    for (st, tally) in stages.iter().zip(tallies.iter_mut()) {
        if model.config.classes >= st.min_classes(s) {
            st.run(rt, model, b, s, &mut robust)?;
        }
        tally.count(&robust, b.labels_host);
    }
    if stages.is_empty() {
        attack.run(rt, model, b, s, &mut robust)?;
    }
    tallies.last_mut().expect("an attack's own row").count(&robust, b.labels_host);
    Ok(())
}

/// The adversarial images `attack` makes of the batch `b` (a chain: each stage's images for the
/// images it broke). Attacks other than the white-box ones on the PGD kernels leave the clean
/// image where they break nothing, and attack only the images classified correctly.
pub fn adversarial_images(rt: &Runtime, model: &Model, b: &Batch, attack: &dyn Attack, s: &EvalSettings) -> Result<Tensor> {
    check(&[], s, model.config.classes)?;
    attack.validate(s)?;
    let mut robust = vec![true; b.ids.len()];
    judge(rt, model, b, b.x, &mut robust)?;
    attack.run(rt, model, b, s, &mut robust)?.into_device(rt, b.x.shape())
}

/// Runs each attack over every image of `data`; `on_batch(done, total)` reports progress.
pub fn evaluate(
    rt: &Runtime,
    model: &Model,
    data: &Arc<Dataset>,
    attacks: &[Arc<dyn Attack>],
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
    attacks: &[Arc<dyn Attack>],
    s: EvalSettings,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<AttackResult>> {
    // An empty selection would print a table of zeros that reads like a broken model.
    if data.is_empty() {
        return Err(CifsError::NoImages { what: "evaluation" });
    }
    let classes = data.classes.len();
    check(attacks, &s, classes)?;
    let mut tallies: Vec<Vec<Tally>> = attacks.iter().map(|a| rows(a.as_ref(), &s, classes)).collect();
    let mut images = vec![0usize; classes];
    let (mut seen, total) = (0usize, data.len());
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
            judge(rt, model, &b, &x, &mut clean)?;
            for (attack, rows) in attacks.iter().zip(tallies.iter_mut()) {
                attack_batch(rt, model, &b, attack.as_ref(), &s, &clean, rows)?;
            }
            for &l in &batch.labels {
                images[l as usize] += 1;
            }
            seen += n;
            on_batch(seen, total);
        }
        Ok(())
    })?;
    Ok(tallies.into_iter().flatten().map(|t| result(t, &images, &data.classes, seen)).collect())
}

/// A row's counts as accuracies, overall and per class (`images` of each class, `seen` in all).
fn result(t: Tally, images: &[usize], names: &[String], seen: usize) -> AttackResult {
    let ratio = |c: usize, n: usize| if n == 0 { 0.0 } else { c as f64 / n as f64 };
    let correct = t.per_class.iter().sum();
    let per_class = t
        .per_class
        .iter()
        .zip(images)
        .zip(names)
        .map(|((&c, &n), name)| ClassResult { class: name.clone(), correct: c, images: n, accuracy: ratio(c, n) })
        .collect();
    AttackResult { attack: t.name, loss: t.loss, correct, images: seen, accuracy: ratio(correct, seen), per_class }
}
