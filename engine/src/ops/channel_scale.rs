//! Per-(sample, channel) scaling of an NCHW map (`shaders/channel_scale.wgsl`): `z * m[n, c]`,
//! broadcast over H and W. This is how CIFS applies its channel mask.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, WG_1D};
use crate::kernels::Shader;
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub hw: u32,
    pub _p: [u32; 2],
}

fn hw_of(z: &Tensor, m: &Tensor) -> Result<u32> {
    let s = z.shape();
    if s.len() != 4 || m.shape() != [s[0], s[1]] {
        return Err(shape_err("channel_scale", format!("z {:?} needs m (N, C), got {:?}", s, m.shape())));
    }
    Ok((s[2] * s[3]) as u32)
}

/// `out[n, c, h, w] = z[n, c, h, w] * m[n, c]`; z (N, C, H, W), m (N, C).
pub fn channel_scale(gpu: &Gpu, z: &Tensor, m: &Tensor) -> Result<Tensor> {
    let hw = hw_of(z, m)?;
    let out = Tensor::empty(gpu, z.shape())?;
    let p = Params { n: z.numel() as u32, hw, _p: [0; 2] };
    gpu.dispatch(Shader::ChannelScale, "channel_scale_fwd", &[], &[z.buffer(), m.buffer(), out.buffer()], &p, grid_1d(z.numel() as u64, WG_1D));
    Ok(Tensor::from_op(gpu, out, &[z, m], || Op::ChannelScale { z: z.clone(), m: m.clone() }))
}

/// `dz = g * m` (broadcast), `dm[n, c] = sum_{h,w} g * z`.
pub fn channel_scale_backward(gpu: &Gpu, z: &Tensor, m: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let hw = hw_of(z, m)?;
    let dz = if z.requires_grad() {
        let dz = Tensor::empty(gpu, z.shape())?;
        let p = Params { n: z.numel() as u32, hw, _p: [0; 2] };
        gpu.dispatch(Shader::ChannelScale, "channel_scale_bwd_z", &[], &[g.buffer(), m.buffer(), dz.buffer()], &p, grid_1d(z.numel() as u64, WG_1D));
        Some(dz)
    } else {
        None
    };
    let dm = if m.requires_grad() {
        let dm = Tensor::empty(gpu, m.shape())?;
        let p = Params { n: m.numel() as u32, hw, _p: [0; 2] };
        gpu.dispatch(Shader::ChannelScale, "channel_scale_bwd_m", &[], &[z.buffer(), g.buffer(), dm.buffer()], &p, grid_1d(m.numel() as u64, WG_1D));
        Some(dm)
    } else {
        None
    };
    Ok(vec![dz, dm])
}
