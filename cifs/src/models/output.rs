//! What a forward pass gives: the logits and probe logits ([`Output`]), and what the analysis
//! looks at inside ([`Taps`]); the two modes a model runs in.

use engine::Tensor;

use crate::error::Result;

/// Train: batch statistics, label pair rule, gradients into the parameters.
/// Eval: running statistics, top-1/top-2 pair rule, parameters frozen (attacks, evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

pub struct Output {
    /// (N, classes)
    pub logits: Tensor,
    /// One (N, classes) tensor per CIFS probe, in block order.
    pub probes: Vec<Tensor>,
}

/// A CIFS block seen from inside: its output before the mask, spatially averaged, and its mask.
pub struct BlockTap {
    /// State-dict name of the block (`layer4.0`).
    pub name: String,
    /// (N, C)
    pub pooled: Tensor,
    /// (N, C)
    pub mask: Tensor,
}

/// What the analysis looks at inside a forward pass.
pub struct Taps {
    /// The features the classifier reads: the last stage's output, average-pooled (N, C).
    pub features: Tensor,
    /// One per CIFS block, in order.
    pub blocks: Vec<BlockTap>,
}

/// A block with a probe: its state-dict name and the channels of the map its probe masks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedBlock {
    pub name: String,
    pub channels: usize,
}

/// A pooled (N, C, 1, 1) map as the (N, C) features the classifier reads.
pub(crate) fn flatten(pooled: &Tensor) -> Result<Tensor> {
    let n = pooled.shape()[0];
    Ok(pooled.reshape(&[n, pooled.numel() / n])?)
}
