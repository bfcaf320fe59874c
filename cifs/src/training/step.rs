//! One adversarial training step (docs/DESIGN.md, section 5): attack the batch in eval mode, train-mode forward on
//! the adversarial images with labels, joint loss, backward, SGD. Everything is recorded into the
//! GPU's open command stream; nothing is read back unless the caller reads the returned loss.

use engine::{autodiff, Rng, Runtime, Tensor};

use crate::attacks::pgd::{Pgd, Start};
use crate::error::Result;
use crate::loss::joint_loss;
use crate::models::{Mode, Model, Output};
use crate::training::optim::Sgd;

/// What a step hands back: the loss (1,) and the outputs, still on the GPU.
pub struct StepResult {
    pub loss: Tensor,
    pub output: Output,
}

/// One step on images `x` (N, 3, H, W) with labels (N,). `attack`: the attack that makes the
/// training images, exactly as given (its loss included), with a random start drawn from `rng`
/// (the reference's PGD-10 AT); `None` for clean training. `beta` weighs the training loss's
/// probe terms.
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
    train_step_on(rt, model, sgd, labels, beta, || match attack {
        Some(pgd) => pgd.attack(rt, model, x, labels, Start::Random(rng)),
        None => Ok(x.clone()),
    })
}

/// The step on the training images `images()` makes (an attack, or the clean batch): train-mode
/// forward with `labels`, joint loss weighted by `beta`, backward, SGD.
pub fn train_step_on(
    rt: &Runtime,
    model: &Model,
    sgd: &Sgd,
    labels: &Tensor,
    beta: f32,
    images: impl FnOnce() -> Result<Tensor>,
) -> Result<StepResult> {
    // The weights change only at the optimizer step: until then the attack's backward passes
    // and the training backward share the weights' derived layouts.
    let (output, loss, grads) = rt.weights_frozen(|| -> Result<_> {
        let input = images()?;
        let output = model.forward(rt, &input, Some(labels), Mode::Train)?;
        let loss = joint_loss(rt, &output, labels, beta)?;
        let grads = autodiff::backward(rt, &loss)?;
        Ok((output, loss, grads))
    })?;
    sgd.step(rt, model, &grads)?;
    Ok(StepResult {
        loss: loss.detach(),
        output: Output { logits: output.logits.detach(), probes: output.probes.iter().map(|p| p.detach()).collect() },
    })
}
