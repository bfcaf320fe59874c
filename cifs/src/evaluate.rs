//! Accuracy under attack (DESIGN §5): natural, FGSM, PGD-20, PGD-100 (step 0.1 eps, no random
//! start, joint loss with beta), CW-inf (30 steps on the margin loss, confidence 50). The model is
//! in eval mode throughout; only the logits of each batch are read back.

use std::sync::Arc;

use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{no_grad, Runtime, Tensor};

use crate::attack::{cw_inf, fgsm, AttackLoss, Pgd, Start};
use crate::error::{check_setting, Result};
use crate::resnet::{Mode, ResNet18};

/// An evaluation attack: `natural`, `fgsm`, `pgd<steps>`, `cw<steps>` (e.g. pgd20, pgd100, cw30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Natural,
    Fgsm,
    Pgd(usize),
    Cw(usize),
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
            _ => Err(format!("unknown attack `{s}` (use natural, fgsm, pgd<steps>, cw<steps>)")),
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
        }
    }
}

/// Attack strength shared by all evaluation attacks.
#[derive(Debug, Clone, Copy)]
pub struct EvalSettings {
    pub eps: f32,
    pub beta: f32,
    pub batch_size: usize,
    /// CW-inf margin.
    pub confidence: f32,
}

impl EvalSettings {
    pub fn validate(&self) -> Result<()> {
        check_setting(self.eps.is_finite() && self.eps >= 0.0, "eps", self.eps, "the attack radius must be finite and at least 0")?;
        check_setting(self.beta.is_finite() && self.beta >= 0.0, "beta", self.beta, "the probe-loss weight must be finite and at least 0")?;
        check_setting(self.batch_size >= 1, "batch size", self.batch_size, "must be at least 1")
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackResult {
    pub attack: String,
    pub correct: usize,
    pub images: usize,
    pub accuracy: f64,
}

/// Indices of the largest logit per row, read back from the GPU.
pub fn predictions(rt: &Runtime, logits: &Tensor) -> Result<Vec<usize>> {
    let k = logits.shape()[1];
    let v = logits.to_vec(rt)?;
    Ok(v.chunks(k).map(|r| r.iter().enumerate().fold(0, |best, (j, x)| if *x > r[best] { j } else { best })).collect())
}

/// Runs each attack over every image of `data`; `on_batch(done, total)` reports progress.
pub fn evaluate(rt: &Runtime, model: &ResNet18, data: &Arc<Dataset>, attacks: &[Attack], s: EvalSettings, mut on_batch: impl FnMut(usize, usize)) -> Result<Vec<AttackResult>> {
    s.validate()?;
    let mut correct = vec![0usize; attacks.len()];
    let mut seen = 0usize;
    let total = data.len();
    for batch in batches(data.clone(), Pass::in_order(total, s.batch_size))? {
        let batch = batch?;
        let n = batch.len();
        let x = Tensor::from_f32(rt, &[n, 3, 32, 32], &batch.images)?;
        let y = Tensor::from_u32(rt, &[n], &batch.labels)?;
        for (k, a) in attacks.iter().enumerate() {
            let input = match *a {
                Attack::Natural => x.clone(),
                Attack::Fgsm => fgsm(rt, model, &x, &y, s.eps, s.beta)?,
                Attack::Pgd(steps) => Pgd { eps: s.eps, step: 0.1 * s.eps, steps, loss: AttackLoss::Joint { beta: s.beta } }.attack(rt, model, &x, &y, Start::Zero)?,
                Attack::Cw(steps) => cw_inf(rt, model, &x, &y, s.eps, 0.1 * s.eps, steps, s.confidence)?,
            };
            let logits = no_grad(|| model.forward(rt, &input, None, Mode::Eval))?.logits;
            correct[k] += predictions(rt, &logits)?.iter().zip(&batch.labels).filter(|(p, l)| **p == **l as usize).count();
        }
        seen += n;
        on_batch(seen, total);
    }
    Ok(attacks
        .iter()
        .zip(correct)
        .map(|(a, c)| AttackResult { attack: a.to_string(), correct: c, images: seen, accuracy: if seen == 0 { 0.0 } else { c as f64 / seen as f64 } })
        .collect())
}
