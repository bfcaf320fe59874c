//! Uniform random tensors generated on the GPU (`shaders/random.wgsl`): a counter-based hash of
//! (seed, element), so a random attack start costs one dispatch instead of a host draw and
//! upload. `engine_reference::uniform` (engine/reference) computes the same stream on the CPU.

use bytemuck::{Pod, Zeroable};

use crate::error::Result;
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _p0: u32,
    pub lo: f32,
    pub hi: f32,
    pub _p1: [u32; 2],
}

/// A tensor of `shape` with values uniform in [lo, hi), element i a function of (seed, i) alone.
pub fn uniform(rt: &Runtime, shape: &[usize], lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
    let t = Tensor::empty(rt, shape)?;
    uniform_into(rt, &t, lo, hi, seed)?;
    Ok(t)
}

/// Overwrites `t` with the values [`uniform`] would give.
pub fn uniform_into(rt: &Runtime, t: &Tensor, lo: f32, hi: f32, seed: u64) -> Result<()> {
    let n = t.numel();
    let p = Params { n: n as u32, seed_lo: seed as u32, seed_hi: (seed >> 32) as u32, _p0: 0, lo, hi, _p1: [0; 2] };
    rt.dispatch(Shader::Random, "uniform_fill", &[t.buffer()], &p, Work::Items(n as u64))
}
