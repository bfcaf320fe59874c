//! Tensors: a pooled GPU buffer plus a shape, and (when recorded) the op that made it.
//!
//! Cloning a `Tensor` is cheap (reference-counted). A tensor made by an op while gradients are
//! enabled and at least one input requires them carries that op (see `autodiff`); everything else
//! is a plain value that costs nothing at backward time.

use std::rc::Rc;

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, GpuBuffer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    /// Class indices and other small integers.
    U32,
}

pub(crate) struct Inner {
    pub id: u64,
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub buf: Rc<GpuBuffer>,
    pub requires_grad: bool,
    pub op: Option<Op>,
}

#[derive(Clone)]
pub struct Tensor(pub(crate) Rc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor#{}{:?}{}", self.id(), self.shape(), if self.requires_grad() { " (grad)" } else { "" })
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    fn from_parts(gpu: &Gpu, shape: Vec<usize>, dtype: DType, buf: Rc<GpuBuffer>, requires_grad: bool, op: Option<Op>) -> Tensor {
        Tensor(Rc::new(Inner { id: gpu.fresh_id(), shape, dtype, buf, requires_grad, op }))
    }

    /// An f32 tensor with undefined contents (every kernel that makes one overwrites it whole).
    pub fn empty(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let buf = gpu.alloc(numel(shape) as u64 * 4)?;
        Ok(Self::from_parts(gpu, shape.to_vec(), DType::F32, Rc::new(buf), false, None))
    }

    /// A u32 tensor with undefined contents, for kernels that overwrite it whole.
    pub fn empty_u32(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let buf = gpu.alloc(numel(shape) as u64 * 4)?;
        Ok(Self::from_parts(gpu, shape.to_vec(), DType::U32, Rc::new(buf), false, None))
    }

    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(shape_err("from_f32", format!("shape {shape:?} needs {} values, got {}", numel(shape), data.len())));
        }
        let t = Self::empty(gpu, shape)?;
        gpu.write(&t.0.buf, bytemuck::cast_slice(data));
        Ok(t)
    }

    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(shape_err("from_u32", format!("shape {shape:?} needs {} values, got {}", numel(shape), data.len())));
        }
        let buf = gpu.alloc(data.len() as u64 * 4)?;
        gpu.write(&buf, bytemuck::cast_slice(data));
        Ok(Self::from_parts(gpu, shape.to_vec(), DType::U32, Rc::new(buf), false, None))
    }

    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        let t = Self::empty(gpu, shape)?;
        crate::ops::arith::fill_into(gpu, &t, 0.0);
        Ok(t)
    }

    /// A leaf that gradients flow into (a parameter, or an input being attacked).
    pub fn leaf(gpu: &Gpu, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Ok(Self::from_f32(gpu, shape, data)?.requiring_grad(gpu))
    }

    /// The same storage as a new leaf that requires gradients.
    pub fn requiring_grad(&self, gpu: &Gpu) -> Tensor {
        Self::from_parts(gpu, self.shape().to_vec(), self.dtype(), self.0.buf.clone(), true, None)
    }

    /// Stop-gradient: the same storage, cut from the graph.
    pub fn detach(&self, gpu: &Gpu) -> Tensor {
        Self::from_parts(gpu, self.shape().to_vec(), self.dtype(), self.0.buf.clone(), false, None)
    }

    /// The same storage under another shape with as many elements; differentiable.
    pub fn reshape(&self, gpu: &Gpu, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(shape_err("reshape", format!("{:?} -> {shape:?}", self.shape())));
        }
        let op = Op::record(gpu, &[self], || Op::Reshape { x: self.clone() });
        let rg = op.is_some();
        Ok(Self::from_parts(gpu, shape.to_vec(), self.dtype(), self.0.buf.clone(), rg, op))
    }

    /// Builds an op's output: records `op` if recording applies to `inputs`.
    pub(crate) fn from_op(gpu: &Gpu, out: Tensor, inputs: &[&Tensor], op: impl FnOnce() -> Op) -> Tensor {
        let op = Op::record(gpu, inputs, op);
        if op.is_none() {
            return out;
        }
        Self::from_parts(gpu, out.shape().to_vec(), out.dtype(), out.0.buf.clone(), true, op)
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }
    pub fn buffer(&self) -> &GpuBuffer {
        &self.0.buf
    }
    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }
    /// Whether two tensors share storage (a reshape or detach of each other).
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Rc::ptr_eq(&self.0.buf, &other.0.buf)
    }

    pub fn to_vec(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let bytes = gpu.read_bytes(&self.0.buf, self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    pub fn to_vec_u32(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        let bytes = gpu.read_bytes(&self.0.buf, self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Overwrites the contents from the host (shape unchanged).
    pub fn write_f32(&self, gpu: &Gpu, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(shape_err("write_f32", format!("tensor {:?} vs {} values", self.shape(), data.len())));
        }
        gpu.write(&self.0.buf, bytemuck::cast_slice(data));
        Ok(())
    }

    pub fn write_u32(&self, gpu: &Gpu, data: &[u32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(shape_err("write_u32", format!("tensor {:?} vs {} values", self.shape(), data.len())));
        }
        gpu.write(&self.0.buf, bytemuck::cast_slice(data));
        Ok(())
    }
}
