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
