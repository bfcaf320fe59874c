//! Accuracy under attack (DESIGN §5): natural, FGSM, PGD-20, PGD-100 (step 0.1 eps, no random
//! start, joint loss with beta), CW-inf (30 steps on the margin loss, confidence 50). The model is
//! in eval mode throughout; only the logits of each batch are read back.

use std::sync::Arc;

use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{Gpu, Tensor};

use crate::attack::{cw_inf, fgsm, AttackLoss, Pgd, Start};
use crate::error::{CifsError, Result};
use crate::resnet::{Mode, ResNet18};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    Natural,
    Fgsm,
    Pgd(usize),
    Cw(usize),
}

impl Attack {
    /// `natural`, `fgsm`, `pgd<steps>`, `cw<steps>` (e.g. pgd20, pgd100, cw30).
    pub fn parse(s: &str) -> Result<Attack> {
        let steps = |rest: &str| rest.parse::<usize>().ok().filter(|&n| n > 0);
        match s {
            "natural" => Ok(Attack::Natural),
            "fgsm" => Ok(Attack::Fgsm),
            _ if s.starts_with("pgd") && steps(&s[3..]).is_some() => Ok(Attack::Pgd(steps(&s[3..]).unwrap())),
            _ if s.starts_with("cw") && steps(&s[2..]).is_some() => Ok(Attack::Cw(steps(&s[2..]).unwrap())),
            _ => Err(CifsError::Invalid(format!("unknown attack `{s}` (use natural, fgsm, pgd<steps>, cw<steps>)"))),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Attack::Natural => "natural".into(),
            Attack::Fgsm => "fgsm".into(),
            Attack::Pgd(n) => format!("pgd{n}"),
            Attack::Cw(n) => format!("cw{n}"),
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

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttackResult {
    pub attack: String,
    pub correct: usize,
    pub images: usize,
    pub accuracy: f64,
}

/// Indices of the largest logit per row, read back from the GPU.
pub fn predictions(gpu: &Gpu, logits: &Tensor) -> Result<Vec<usize>> {
    let k = logits.shape()[1];
    let v = logits.to_vec(gpu)?;
    Ok(v.chunks(k).map(|r| r.iter().enumerate().fold(0, |best, (j, x)| if *x > r[best] { j } else { best })).collect())
}

/// Runs each attack over the first `limit` images of `data`; `on_batch(done, total)` reports progress.
pub fn evaluate(gpu: &Gpu, model: &ResNet18, data: &Arc<Dataset>, attacks: &[Attack], s: EvalSettings, mut on_batch: impl FnMut(usize, usize)) -> Result<Vec<AttackResult>> {
    let mut correct = vec![0usize; attacks.len()];
    let mut seen = 0usize;
    let total = data.len();
    for batch in batches(data.clone(), Pass { batch_size: s.batch_size, train_seed: None }) {
        let n = batch.len();
        let x = Tensor::from_f32(gpu, &[n, 3, 32, 32], &batch.images)?;
        let y = Tensor::from_u32(gpu, &[n], &batch.labels)?;
        for (k, a) in attacks.iter().enumerate() {
            let input = match *a {
                Attack::Natural => x.clone(),
                Attack::Fgsm => fgsm(gpu, model, &x, &y, s.eps, s.beta)?,
                Attack::Pgd(steps) => Pgd { eps: s.eps, step: 0.1 * s.eps, steps, loss: AttackLoss::Joint { beta: s.beta } }.attack(gpu, model, &x, &y, Start::Zero)?,
                Attack::Cw(steps) => cw_inf(gpu, model, &x, &y, s.eps, 0.1 * s.eps, steps, s.confidence)?,
            };
            let logits = gpu.no_grad(|| model.forward(gpu, &input, None, Mode::Eval))?.logits;
            correct[k] += predictions(gpu, &logits)?.iter().zip(&batch.labels).filter(|(p, l)| **p == **l as usize).count();
        }
        seen += n;
        on_batch(seen, total);
    }
    Ok(attacks
        .iter()
        .zip(correct)
        .map(|(a, c)| AttackResult { attack: a.name(), correct: c, images: seen, accuracy: if seen == 0 { 0.0 } else { c as f64 / seen as f64 } })
        .collect())
}
