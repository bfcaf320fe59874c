//! The scales of an f16 GEMM's operands (`shaders/operand_scale.wgsl`), found on the GPU: the
//! largest magnitude of each operand goes into the GEMM's epilogue buffer (bias after it), from
//! which the GEMM derives the power of two it scales that operand by. No readback.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub na: u32,
    pub nb: u32,
    pub nbias: u32,
    pub groups: u32,
}

/// Workgroups per operand of the max-abs pass at most (each strides over its share): enough to
/// fill a large GPU, few enough that the atomics stay cheap.
const MAX_GROUPS: u64 = 512;

/// The epilogue buffer of an f16 GEMM with operands `a` and `b` (and `bias`, if any): the bits
/// of max |a| and max |b|, then the bias. Two dispatches.
pub(crate) fn epilogue(rt: &Runtime, a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let nbias = bias.map_or(0, Tensor::numel);
    let out = Tensor::empty(rt, &[2 + nbias])?;
    let longest = a.numel().max(b.numel()) as u64;
    let groups = longest.div_ceil(256 * 4).clamp(1, MAX_GROUPS) as u32;
    let params = Params { na: a.numel() as u32, nb: b.numel() as u32, nbias: nbias as u32, groups };
    rt.dispatch(Shader::OperandScale, "scale_begin", &[bias.unwrap_or(a).buffer(), out.buffer()], &params, Work::Items(2 + nbias as u64))?;
    rt.dispatch(Shader::OperandScale, "scale_maxabs", &[a.buffer(), b.buffer(), out.buffer()], &params, Work::Groups([groups, 2, 1]))?;
    Ok(out)
}
