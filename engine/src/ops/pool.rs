//! Average pooling with window = stride = k, no padding (`shaders/pool.wgsl`), as
//! `F.avg_pool2d(x, k)`; global average pooling is `k = H = W` (see [`global_avg_pool`]).

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
    pub h: u32,
    pub w: u32,
    pub k: u32,
    pub oh: u32,
    pub ow: u32,
    pub _p: [u32; 2],
}

fn params(x_shape: &[usize], k: u32, n: usize) -> Params {
    let (h, w) = (x_shape[2] as u32, x_shape[3] as u32);
    Params { n: n as u32, h, w, k, oh: h / k, ow: w / k, _p: [0; 2] }
}

/// (N, C, H, W) -> (N, C, H / k, W / k), each output the mean of its k x k window.
pub fn avg_pool2d(rt: &Runtime, x: &Tensor, k: u32) -> Result<Tensor> {
    let s = x.shape();
    if s.len() != 4 || k == 0 || s[2] < k as usize || s[3] < k as usize {
        return Err(shape_err("avg_pool2d", &[s], "x (N, C, H, W) with H and W at least the window (>= 1)"));
    }
    let out_shape = [s[0], s[1], s[2] / k as usize, s[3] / k as usize];
    let y = Tensor::empty(rt, &out_shape)?;
    let n = y.numel();
    rt.dispatch(Shader::Pool, "avg_pool2d_fwd", &[x.buffer(), y.buffer()], &params(s, k, n), Work::Items(n as u64))?;
    Ok(Tensor::from_op(y, &[x], || AvgPool { x: x.clone(), k }))
}

struct AvgPool {
    x: Tensor,
    k: u32,
}

impl Backward for AvgPool {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, avg_pool2d_backward(rt, self.x.shape(), self.k, g)?)
    }
}

/// Each input pixel gets its window's gradient / (k k); pixels no window covers get 0.
fn avg_pool2d_backward(rt: &Runtime, x_shape: &[usize], k: u32, g: &Tensor) -> Result<Tensor> {
    let dx = Tensor::empty(rt, x_shape)?;
    let n = dx.numel();
    rt.dispatch(Shader::Pool, "avg_pool2d_bwd", &[g.buffer(), dx.buffer()], &params(x_shape, k, n), Work::Items(n as u64))?;
    Ok(dx)
}

/// Global average pooling (N, C, H, W) -> (N, C): the spatial mean (H must equal W).
pub fn global_avg_pool(rt: &Runtime, x: &Tensor) -> Result<Tensor> {
    let s = x.shape().to_vec();
    if s.len() != 4 || s[2] != s[3] {
        return Err(shape_err("global_avg_pool", &[&s], "x (N, C, H, H)"));
    }
    avg_pool2d(rt, x, s[2] as u32)?.reshape(&[s[0], s[1]])
}
