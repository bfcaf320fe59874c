//! Tensors: a pooled GPU buffer plus a shape, and (when recorded) the op that made it.
//!
//! Cloning a `Tensor` is cheap (reference-counted). A tensor made by an op while gradient mode is
//! on and at least one input requires gradients carries that op (see `autodiff`); everything else
//! is a plain value that costs nothing at backward time.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::autodiff::{self, Backward, GradSink, Op};
use crate::error::{shape_err, Result};
use crate::pool::GpuBuffer;
use crate::runtime::Runtime;

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

/// Tensor identities (keys of the autodiff tape), unique for the life of the process.
fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Tensor {
    fn from_parts(shape: Vec<usize>, dtype: DType, buf: Rc<GpuBuffer>, requires_grad: bool, op: Option<Op>) -> Tensor {
        Tensor(Rc::new(Inner { id: fresh_id(), shape, dtype, buf, requires_grad, op }))
    }

    fn empty_of(rt: &Runtime, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let buf = rt.alloc(numel(shape) as u64 * 4)?;
        Ok(Self::from_parts(shape.to_vec(), dtype, Rc::new(buf), false, None))
    }

    /// An f32 tensor with undefined contents (every kernel that makes one overwrites it whole).
    pub fn empty(rt: &Runtime, shape: &[usize]) -> Result<Tensor> {
        Self::empty_of(rt, shape, DType::F32)
    }

    /// A u32 tensor with undefined contents, for kernels that overwrite it whole.
    pub fn empty_u32(rt: &Runtime, shape: &[usize]) -> Result<Tensor> {
        Self::empty_of(rt, shape, DType::U32)
    }

    pub fn from_f32(rt: &Runtime, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        let t = Self::empty(rt, shape)?;
        t.write_f32(rt, data)?;
        Ok(t)
    }

    pub fn from_u32(rt: &Runtime, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(shape_err("from_u32", &[shape, &[data.len()]], "a shape with as many elements as the data"));
        }
        let t = Self::empty_u32(rt, shape)?;
        rt.write(t.buffer(), bytemuck::cast_slice(data))?;
        Ok(t)
    }

    pub fn zeros(rt: &Runtime, shape: &[usize]) -> Result<Tensor> {
        let t = Self::empty(rt, shape)?;
        crate::ops::arith::fill_into(rt, &t, 0.0)?;
        Ok(t)
    }

    /// A leaf that gradients flow into (a parameter, or an input being attacked).
    pub fn leaf(rt: &Runtime, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        Ok(Self::from_f32(rt, shape, data)?.requiring_grad())
    }

    /// The same storage as a new leaf that requires gradients.
    pub fn requiring_grad(&self) -> Tensor {
        Self::from_parts(self.shape().to_vec(), self.dtype(), self.0.buf.clone(), true, None)
    }

    /// Stop-gradient: the same storage, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Self::from_parts(self.shape().to_vec(), self.dtype(), self.0.buf.clone(), false, None)
    }

    /// The same storage under another shape with as many elements; differentiable.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(shape_err("reshape", &[self.shape(), shape], "shapes with as many elements"));
        }
        let op = autodiff::record(&[self], || Reshape { x: self.clone() });
        let rg = op.is_some();
        Ok(Self::from_parts(shape.to_vec(), self.dtype(), self.0.buf.clone(), rg, op))
    }

    /// Builds an op's output: records the op `make` builds if recording applies to `inputs`.
    pub(crate) fn from_op<B: Backward + 'static>(out: Tensor, inputs: &[&Tensor], make: impl FnOnce() -> B) -> Tensor {
        let op = autodiff::record(inputs, make);
        if op.is_none() {
            return out;
        }
        Self::from_parts(out.shape().to_vec(), out.dtype(), out.0.buf.clone(), true, op)
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
    pub(crate) fn buffer(&self) -> &GpuBuffer {
        &self.0.buf
    }
    pub(crate) fn op(&self) -> Option<&Op> {
        self.0.op.as_ref()
    }

    pub fn to_vec(&self, rt: &Runtime) -> Result<Vec<f32>> {
        let bytes = rt.read_bytes(&self.0.buf, self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The values of several f32 tensors, read back with one submit and one wait (instead of
    /// one of each per tensor).
    pub fn read_all(rt: &Runtime, tensors: &[&Tensor]) -> Result<Vec<Vec<f32>>> {
        rt.read_later(tensors)?.into_iter().map(|p| rt.finish_read_f32(p)).collect()
    }

    pub fn to_vec_u32(&self, rt: &Runtime) -> Result<Vec<u32>> {
        let bytes = rt.read_bytes(&self.0.buf, self.numel() as u64 * 4)?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Overwrites the contents with `src`'s, on the GPU (recorded, like a kernel). The two may
    /// differ in shape but not in element count or type.
    pub fn copy_from(&self, rt: &Runtime, src: &Tensor) -> Result<()> {
        if src.numel() != self.numel() || src.dtype() != self.dtype() {
            return Err(shape_err("copy_from", &[src.shape(), self.shape()], "a source with as many elements of the same type"));
        }
        rt.copy(src.buffer(), self.buffer(), self.numel() as u64 * 4);
        Ok(())
    }

    /// Overwrites the contents from the host (shape unchanged).
    pub fn write_f32(&self, rt: &Runtime, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return Err(shape_err("write_f32", &[self.shape(), &[data.len()]], "as many values as the tensor has elements"));
        }
        rt.write(&self.0.buf, bytemuck::cast_slice(data))
    }
}

/// Reshape's record: the gradient is the arriving one under the input's shape.
struct Reshape {
    x: Tensor,
}

impl Backward for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x]
    }
    fn backward(&self, _: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        sink.add(&self.x, g.detach().reshape(self.x.shape())?)
    }
}
