//! One training step (docs/DESIGN.md, section 5), the same for one process and for each rank
//! of a data-parallel run: the method's training images (eval mode), its loss (train mode),
//! backward, then with several ranks the all-reduce of the gradients and running statistics,
//! then SGD. Everything is recorded into the GPU's open command stream; nothing is read back
//! unless the caller reads the returned loss (or the all-reduce needs the gradients).

use engine::{autodiff, Rng, Runtime, Tensor};

use crate::attacks::pgd::Pgd;
use crate::distributed::exchange::{all_reduce, Exchange};
use crate::distributed::Parallel;
use crate::error::Result;
use crate::models::{Model, Output};
use crate::training::batch::StepBatch;
use crate::training::objective::{Clean, Objective};
use crate::training::optim::Sgd;
use crate::training::pgd_at::PgdAt;

/// What a step hands back: the loss (1,) and the outputs, still on the GPU.
pub struct StepResult {
    pub loss: Tensor,
    pub output: Output,
}

/// What every step of a run works with.
pub struct Learner<'a> {
    pub rt: &'a Runtime,
    pub model: &'a Model,
    pub sgd: &'a Sgd,
    pub par: Parallel<'a>,
}

impl Learner<'_> {
    /// One step of `objective` on `batch`, drawing its random starts from `rng`; the all-reduce's
    /// time goes into `exchange`.
    ///
    /// Per-rank batch norm: each rank's gradient is that of its share's mean loss, and the ranks'
    /// gradients are averaged weighted by share size. With `sync_bn` the batch norms of the
    /// training forward and backward sum over the ranks, each rank's backward is seeded with its
    /// share of the global batch (so the summed sums are those of the global mean loss), and the
    /// gradients are summed: the gradient of one process at the global batch.
    pub fn step(&self, objective: &dyn Objective, batch: &StepBatch, rng: &mut Rng, exchange: &mut Exchange) -> Result<StepResult> {
        let (rt, model, part) = (self.rt, self.model, batch.share.part());
        // The weights change only at the optimizer step: until then the attack's backward passes
        // and the training backward share the weights' derived layouts.
        let (loss, output, grads, grad_weight) = rt.weights_frozen(|| -> Result<_> {
            let inputs = objective.inputs(rt, model, batch, rng)?;
            if !self.par.sync_bn {
                let (loss, output) = objective.loss(rt, model, batch, &inputs)?;
                let grads = autodiff::backward(rt, &loss)?;
                return Ok((loss, output, grads, part));
            }
            rt.with_replica_sum(self.par.coll.replica_sum(), || {
                let (loss, output) = objective.loss(rt, model, batch, &inputs)?;
                let grads = autodiff::backward_with(rt, &loss, Tensor::from_f32(rt, &[1], &[part])?)?;
                Ok((loss, output, grads, 1.0))
            })
        })?;
        if self.par.coll.size() > 1 {
            all_reduce(rt, self.par.coll, model, &grads, grad_weight, part, exchange)?;
        }
        self.sgd.step(rt, model, &grads)?;
        Ok(StepResult {
            loss: loss.detach(),
            output: Output { logits: output.logits.detach(), probes: output.probes.iter().map(|p| p.detach()).collect() },
        })
    }
}

/// One step of one process on images `x` (N, C, H, W) with labels (N,). `attack`: the attack
/// that makes the training images, exactly as given (its loss included), from a random start
/// drawn from `rng` (the reference's PGD-10 AT); `None` for clean training. `beta` weighs the
/// training loss's probe terms.
#[allow(clippy::too_many_arguments)]
pub fn train_step(
    rt: &Runtime,
    model: &Model,
    sgd: &Sgd,
    x: &Tensor,
    labels: &Tensor,
    attack: Option<&Pgd>,
    beta: f32,
    rng: &mut Rng,
) -> Result<StepResult> {
    let objective: Box<dyn Objective> = match attack {
        Some(&attack) => Box::new(PgdAt { attack, beta }),
        None => Box::new(Clean { beta }),
    };
    let learner = Learner { rt, model, sgd, par: Parallel::single() };
    learner.step(objective.as_ref(), &StepBatch::whole(x, labels), rng, &mut Exchange::default())
}
