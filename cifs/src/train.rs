//! One adversarial training step (DESIGN §5): attack the batch in eval mode, train-mode forward on
//! the adversarial images with labels, joint loss, backward, SGD. Everything is recorded into the
//! GPU's open command stream; nothing is read back unless the caller reads the returned loss.

use datasets::Rng;
use engine::{autodiff, Gpu, Tensor};

use crate::attack::{AttackLoss, Pgd, Start};
use crate::error::Result;
use crate::loss::joint_loss;
use crate::optim::Sgd;
use crate::resnet::{Mode, Output, ResNet18};

/// What a step hands back: the loss (1,) and the outputs, still on the GPU.
pub struct StepResult {
    pub loss: Tensor,
    pub output: Output,
}

/// One step on images `x` (N, 3, H, W) with labels (N,). `attack`: PGD with a random start drawn
/// from `rng` (the reference's PGD-10 AT), or `None` for clean training.
pub fn train_step(gpu: &Gpu, model: &ResNet18, sgd: &Sgd, x: &Tensor, labels: &Tensor, attack: Option<&Pgd>, beta: f32, rng: &mut Rng) -> Result<StepResult> {
    let input = match attack {
        Some(pgd) => {
            let pgd = Pgd { loss: AttackLoss::Joint { beta }, ..*pgd };
            pgd.attack(gpu, model, x, labels, Start::Random(rng))?
        }
        None => x.clone(),
    };
    let output = model.forward(gpu, &input, Some(labels), Mode::Train)?;
    let loss = joint_loss(gpu, &output, labels, beta)?;
    let grads = autodiff::backward(gpu, &loss)?;
    sgd.step(gpu, model, &grads)?;
    Ok(StepResult { loss: loss.detach(gpu), output: Output { logits: output.logits.detach(gpu), probes: output.probes.iter().map(|p| p.detach(gpu)).collect() } })
}
