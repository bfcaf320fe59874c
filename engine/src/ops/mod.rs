//! One module per kernel family. Each holds its `#[repr(C)]` parameter struct (mirroring the
//! WGSL `Params` of its shader), the forward wrapper(s) and, right below each, what the op records
//! for backward (a struct implementing `autodiff::Backward`) and its gradient rule.

pub mod activation;
pub mod arith;
pub mod attack;
pub mod batchnorm;
pub mod batchnorm_sync;
pub mod channel_scale;
pub mod conv2d;
pub mod cross_entropy;
pub mod dlr_loss;
pub mod fab;
pub mod index;
pub mod kl_div;
pub mod linear;
pub mod margin_loss;
pub(crate) mod operand_scale;
pub mod optim;
pub mod pool;
pub mod random;
pub mod reduce;
pub mod softmax;

#[cfg(test)]
use crate::kernels::Shader;

/// Byte size of each family's parameter struct; a naga test checks the WGSL side agrees.
#[cfg(test)]
pub(crate) fn param_sizes() -> Vec<(Shader, usize)> {
    use std::mem::size_of;
    vec![
        (Shader::Activation, size_of::<activation::Params>()),
        (Shader::Arith, size_of::<arith::Params>()),
        (Shader::Attack, size_of::<attack::Params>()),
        (Shader::BatchNorm, size_of::<batchnorm::Params>()),
        (Shader::BatchNormSubgroups, size_of::<batchnorm::Params>()),
        (Shader::ChannelScale, size_of::<channel_scale::Params>()),
        (Shader::Conv2d, size_of::<conv2d::Params>()),
        (Shader::CrossEntropy, size_of::<cross_entropy::Params>()),
        (Shader::DlrLoss, size_of::<dlr_loss::Params>()),
        (Shader::Fab, size_of::<fab::Params>()),
        (Shader::Index, size_of::<index::Params>()),
        (Shader::KlDiv, size_of::<kl_div::Params>()),
        (Shader::MarginLoss, size_of::<margin_loss::Params>()),
        (Shader::OperandScale, size_of::<operand_scale::Params>()),
        (Shader::Optim, size_of::<optim::Params>()),
        (Shader::Pool, size_of::<pool::Params>()),
        (Shader::Random, size_of::<random::Params>()),
        (Shader::Reduce, size_of::<reduce::Params>()),
        (Shader::Softmax, size_of::<softmax::Params>()),
    ]
}
