//! The batch a training step works on: this process's images and labels on the GPU, and where
//! they sit in the global batch (all of it in one process; a rank's share with several).

use engine::Tensor;

use crate::distributed::shard::Share;

pub struct StepBatch<'a> {
    /// (n, C, H, W) images in [0, 1].
    pub x: &'a Tensor,
    /// (n,) labels.
    pub labels: &'a Tensor,
    pub share: Share,
}

impl<'a> StepBatch<'a> {
    /// The whole batch `x`, `labels` of one process.
    pub fn whole(x: &'a Tensor, labels: &'a Tensor) -> StepBatch<'a> {
        StepBatch { x, labels, share: Share::whole(x.shape()[0]) }
    }
}
