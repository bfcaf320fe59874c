//! SGD with momentum and weight decay (`shaders/optim.wgsl`), PyTorch semantics:
//! `g += wd p; v = mu v + g; p -= lr v` (dampening 0), in place on the parameter's buffer.

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
    pub momentum: f32,
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
    let p = Params { n: n as u32, lr, momentum, weight_decay };
    rt.dispatch(Shader::Optim, "sgd_step", &[grad.buffer(), param.buffer(), velocity.buffer()], &p, Work::Items(n as u64))
}
