//! Per-(sample, channel) scaling of an NCHW map (`shaders/channel_scale.wgsl`): `z * m[n, c]`,
//! broadcast over H and W. This is how CIFS applies its channel mask.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub hw: u32,
    pub _p: [u32; 2],
}

fn hw_of(z: &Tensor, m: &Tensor) -> Result<u32> {
    let s = z.shape();
    if s.len() != 4 || m.shape() != [s[0], s[1]] {
        return Err(shape_err("channel_scale", &[s, m.shape()], "z (N, C, H, W) and m (N, C)"));
    }
    Ok((s[2] * s[3]) as u32)
}

/// `out[n, c, h, w] = z[n, c, h, w] * m[n, c]`; z (N, C, H, W), m (N, C).
pub fn channel_scale(rt: &Runtime, z: &Tensor, m: &Tensor) -> Result<Tensor> {
    let hw = hw_of(z, m)?;
    let out = Tensor::empty(rt, z.shape())?;
    let p = Params { n: z.numel() as u32, hw, _p: [0; 2] };
    rt.dispatch(Shader::ChannelScale, "channel_scale_fwd", &[z.buffer(), m.buffer(), out.buffer()], &p, Work::Items(z.numel() as u64))?;
    Ok(Tensor::from_op(out, &[z, m], || ChannelScale { z: z.clone(), m: m.clone() }))
}

struct ChannelScale {
    z: Tensor,
    m: Tensor,
}

impl Backward for ChannelScale {
    fn name(&self) -> &'static str {
        "channel_scale"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.z, &self.m]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        channel_scale_backward(rt, &self.z, &self.m, g, sink)
    }
}

/// `dz = g * m` (broadcast), `dm[n, c] = sum_{h,w} g * z`.
fn channel_scale_backward(rt: &Runtime, z: &Tensor, m: &Tensor, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    let hw = hw_of(z, m)?;
    if grads.wants(z) {
        let dz = Tensor::empty(rt, z.shape())?;
        let p = Params { n: z.numel() as u32, hw, _p: [0; 2] };
        rt.dispatch(
            Shader::ChannelScale,
            "channel_scale_bwd_z",
            &[g.buffer(), m.buffer(), dz.buffer()],
            &p,
            Work::Items(z.numel() as u64),
        )?;
        grads.add(z, dz)?;
    }
    if grads.wants(m) {
        let dm = Tensor::empty(rt, m.shape())?;
        let p = Params { n: m.numel() as u32, hw, _p: [0; 2] };
        rt.dispatch(
            Shader::ChannelScale,
            "channel_scale_bwd_m",
            &[z.buffer(), g.buffer(), dm.buffer()],
            &p,
            Work::Items(m.numel() as u64),
        )?;
        grads.add(m, dm)?;
    }
    Ok(())
}
