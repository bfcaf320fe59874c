//! Integer indexing (`shaders/index.wgsl`): gather rows of a table by index (with its
//! deterministic scatter-add backward) and the top-2 indices of each row.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub n: u32,
    pub cols: u32,
    pub rows: u32,
    pub _p: u32,
}

/// `out[n, :] = table[idx[n], :]`; table (R, C), idx (N,) u32 with values < R -> (N, C).
pub fn gather_rows(rt: &Runtime, table: &Tensor, idx: &Tensor) -> Result<Tensor> {
    let s = table.shape();
    if s.len() != 2 || idx.shape().len() != 1 || idx.dtype() != DType::U32 {
        return Err(shape_err("gather_rows", &[s, idx.shape()], "a table (R, C) and u32 indices (N,)"));
    }
    let n = idx.numel();
    let p = Params { n: n as u32, cols: s[1] as u32, rows: s[0] as u32, _p: 0 };
    let out = Tensor::empty(rt, &[n, s[1]])?;
    rt.dispatch(Shader::Index, "gather_rows_fwd", &[table.buffer(), idx.buffer(), out.buffer()], &p, Work::Items((n * s[1]) as u64))?;
    Ok(Tensor::from_op(out, &[table], || GatherRows { table: table.clone(), idx: idx.clone() }))
}

struct GatherRows {
    table: Tensor,
    idx: Tensor,
}

impl Backward for GatherRows {
    fn name(&self) -> &'static str {
        "gather_rows"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.table]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.table, gather_rows_backward(rt, self.table.shape(), &self.idx, g)?)
    }
}

/// `dtable[r, :] = sum over n with idx[n] == r of g[n, :]`.
fn gather_rows_backward(rt: &Runtime, table_shape: &[usize], idx: &Tensor, g: &Tensor) -> Result<Tensor> {
    let p = Params { n: idx.numel() as u32, cols: table_shape[1] as u32, rows: table_shape[0] as u32, _p: 0 };
    let d = Tensor::empty(rt, table_shape)?;
    rt.dispatch(
        Shader::Index,
        "gather_rows_bwd",
        &[idx.buffer(), g.buffer(), d.buffer()],
        &p,
        Work::Items((table_shape[0] * table_shape[1]) as u64),
    )?;
    Ok(d)
}

/// Indices of the largest and second-largest entry of each row of x (N, C), C >= 2: two (N,)
/// u32 tensors. Ties go to the lower index. Not differentiable.
pub fn top2(rt: &Runtime, x: &Tensor) -> Result<(Tensor, Tensor)> {
    let s = x.shape();
    if s.len() != 2 || s[1] < 2 {
        return Err(shape_err("top2", &[s], "x (N, C) with C >= 2"));
    }
    let p = Params { n: s[0] as u32, cols: s[1] as u32, rows: s[0] as u32, _p: 0 };
    let first = Tensor::empty_u32(rt, &[s[0]])?;
    let second = Tensor::empty_u32(rt, &[s[0]])?;
    rt.dispatch(Shader::Index, "top2", &[x.buffer(), first.buffer(), second.buffer()], &p, Work::Items(s[0] as u64))?;
    Ok((first, second))
}
