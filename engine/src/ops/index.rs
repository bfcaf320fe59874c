//! Integer indexing (`shaders/index.wgsl`): gather rows of a table by index (with its
//! deterministic scatter-add backward) and the top-2 indices of each row.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::kernels::Shader;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub struct Params {
    pub n: u32,
    pub cols: u32,
    pub rows: u32,
    pub _p: u32,
}

/// `out[n, :] = table[idx[n], :]`; table (R, C), idx (N,) u32 with values < R -> (N, C).
pub fn gather_rows(gpu: &Gpu, table: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let s = table.shape();
    if s.len() != 2 || idx.shape().len() != 1 || idx.dtype() != DType::U32 {
        return Err(shape_err("gather_rows", format!("table {s:?}, idx {:?} ({:?})", idx.shape(), idx.dtype())));
    }
    let n = idx.numel();
    let p = Params { n: n as u32, cols: s[1] as u32, rows: s[0] as u32, _p: 0 };
    let out = Tensor::empty(gpu, &[n, s[1]])?;
    gpu.dispatch(Shader::Index, "gather_rows_fwd", &[], &[table.buffer(), idx.buffer(), out.buffer()], &p, [((n * s[1]) as u32).div_ceil(256), 1, 1]);
    Ok(Tensor::from_op(gpu, out, &[table], || Op::GatherRows { table: table.clone(), idx: idx.clone() }))
}

/// `dtable[r, :] = sum over n with idx[n] == r of g[n, :]`.
pub fn gather_rows_backward(gpu: &Gpu, table_shape: &[usize], idx: &Tensor, g: &Tensor) -> Result<Tensor> {
    let p = Params { n: idx.numel() as u32, cols: table_shape[1] as u32, rows: table_shape[0] as u32, _p: 0 };
    let d = Tensor::empty(gpu, table_shape)?;
    gpu.dispatch(Shader::Index, "gather_rows_bwd", &[], &[idx.buffer(), g.buffer(), d.buffer()], &p, [(p.rows * p.cols).div_ceil(256), 1, 1]);
    Ok(d)
}

/// Indices of the largest and second-largest entry of each row of x (N, C), C >= 2: two (N,)
/// u32 tensors. Ties go to the lower index. Not differentiable.
pub fn top2(gpu: &Gpu, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = x.shape();
    if s.len() != 2 || s[1] < 2 {
        return Err(shape_err("top2", format!("x {s:?} must be (N, C) with C >= 2")));
    }
    let p = Params { n: s[0] as u32, cols: s[1] as u32, rows: s[0] as u32, _p: 0 };
    let first = Tensor::empty_u32(gpu, &[s[0]])?;
    let second = Tensor::empty_u32(gpu, &[s[0]])?;
    gpu.dispatch(Shader::Index, "top2", &[], &[x.buffer(), first.buffer(), second.buffer()], &p, [p.n.div_ceil(64), 1, 1]);
    Ok((first, second))
}
