//! In-place updates (`shaders/optim.wgsl`): SGD with momentum and weight decay in PyTorch
//! semantics, `g += wd p; v = mu v + g; p -= lr v` (dampening 0), and the exponential moving
//! average of a weight, `ema = decay ema + (1 - decay) w`. Both run on the GPU in the step's
//! command stream; nothing is read back.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub lr: f32,
    /// SGD: the momentum; EMA: the decay.
    pub decay: f32,
    pub weight_decay: f32,
}

/// One SGD update of `param` (and its `velocity`, zero before the first step) by `grad`.
pub fn sgd_step(rt: &Runtime, param: &Tensor, velocity: &Tensor, grad: &Tensor, lr: f32, momentum: f32, weight_decay: f32) -> Result<()> {
    if param.shape() != velocity.shape() || param.shape() != grad.shape() {
        return Err(shape_err(
            "sgd_step",
            &[param.shape(), velocity.shape(), grad.shape()],
            "parameter, velocity and gradient of one shape",
        ));
    }
    let n = param.numel();
    let p = Params { n: n as u32, lr, decay: momentum, weight_decay };
    rt.dispatch(Shader::Optim, "sgd_step", &[grad.buffer(), param.buffer(), velocity.buffer()], &p, Work::Items(n as u64))
}

/// `ema = decay * ema + (1 - decay) * weight`, in place on `ema`: one dispatch. In f32 as the
/// shader writes it (`c = 1 - decay`, the two products, their sum); a GPU compiler may fuse
/// one product into the sum, which changes the last bit of some elements (see
/// `shaders/optim.wgsl`), never more.
pub fn ema_update(rt: &Runtime, ema: &Tensor, weight: &Tensor, decay: f32) -> Result<()> {
    if ema.shape() != weight.shape() {
        return Err(shape_err("ema_update", &[ema.shape(), weight.shape()], "an average and a weight of one shape"));
    }
    let n = ema.numel();
    let p = Params { n: n as u32, lr: 0.0, decay, weight_decay: 0.0 };
    rt.dispatch(Shader::Optim, "ema_update", &[weight.buffer(), ema.buffer()], &p, Work::Items(n as u64))
}
