//! What a training run reports: one [`EpochMetrics`] per epoch (`metrics.jsonl`), and the
//! [`Events`] a caller shows while it runs.

use serde::{Deserialize, Serialize};

use crate::training::config::Phase;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based, over both phases.
    pub epoch: usize,
    pub phase: Phase,
    pub lr: f32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub natural_acc: Option<f64>,
    pub pgd20_acc: Option<f64>,
    pub eval_images: usize,
    /// Natural and PGD-20 accuracy on the held-out training images (`--val-split`), when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_natural_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_pgd20_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub val_images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
    /// Catastrophic overfitting: PGD-20 accuracy far under its best before this epoch
    /// (`training::overfitting::CollapseRule`'s default rule); absent in runs recorded before.
    #[serde(default)]
    pub collapsed: bool,
    /// The weight average's (`--ema`) natural and PGD-20 accuracy on the same images; written
    /// only for runs that keep one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_natural_acc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_pgd20_acc: Option<f64>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What the caller shows while a run goes on.
pub trait Events {
    fn epoch_start(&mut self, epoch: usize, total: usize, phase: Phase, lr: f32, batches: usize);
    fn batch(&mut self, done: usize, loss: f64, acc: f64, images_per_s: f64);
    fn evaluating(&mut self, done: usize, total: usize);
    fn epoch_end(&mut self, m: &EpochMetrics);
}

/// Shows nothing (ranks other than 0, tests).
pub struct Quiet;

impl Events for Quiet {
    fn epoch_start(&mut self, _: usize, _: usize, _: Phase, _: f32, _: usize) {}
    fn batch(&mut self, _: usize, _: f64, _: f64, _: f64) {}
    fn evaluating(&mut self, _: usize, _: usize) {}
    fn epoch_end(&mut self, _: &EpochMetrics) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_recorded_before_the_collapse_flag_read_as_not_collapsed() {
        let line = r#"{"epoch":1,"phase":"adversarial","lr":0.1,"train_loss":1.0,"train_acc":0.5,"natural_acc":0.4,"pgd20_acc":0.2,"eval_images":6,"seconds":1.0,"images_per_s":5.0}"#;
        let m: EpochMetrics = serde_json::from_str(line).unwrap();
        assert!(!m.collapsed);
        let flagged = EpochMetrics { collapsed: true, ..m };
        assert!(serde_json::to_string(&flagged).unwrap().contains(r#""collapsed":true"#));
    }
}
