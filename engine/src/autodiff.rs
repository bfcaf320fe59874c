//! Reverse-mode autodiff over recorded ops.
//!
//! The rule, stated once: an op records itself (an [`Op`] value holding its inputs and whatever it
//! saved) only when gradients are enabled and at least one input requires them. `backward(loss)`
//! walks the recorded graph in reverse topological order, asks each op for the gradients of the
//! inputs that require them (an op never computes a gradient nobody asked for: an attack, whose
//! weights do not require grad, launches no weight-gradient kernel), sums fan-out contributions,
//! and returns the gradients of the leaves. Gradients do not accumulate across calls: each
//! `backward` returns fresh ones, and the optimizer consumes them.

use std::collections::{BTreeMap, HashSet};

use crate::error::{EngineError, Result};
use crate::gpu::Gpu;
use crate::ops;
use crate::tensor::Tensor;

/// A recorded op: its inputs and saved values. Each variant's forward and backward live side by
/// side in `ops/<family>.rs`.
pub enum Op {
    Reshape { x: Tensor },
    Conv2d { x: Tensor, w: Tensor, stride: u32, pad: u32 },
    BatchNorm { x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, rstd: Tensor, train: bool },
    /// Backward reads the forward output (the tape hands it over), so only the input is kept.
    Relu { x: Tensor },
    Add { a: Tensor, b: Tensor },
    Mul { a: Tensor, b: Tensor },
    Scale { x: Tensor, alpha: f32 },
    ChannelScale { z: Tensor, m: Tensor },
    AvgPool { x: Tensor, k: u32 },
    Linear { x: Tensor, w: Tensor, b: Option<Tensor> },
    MatMul { a: Tensor, b: Tensor },
    Softplus { x: Tensor, beta: f32 },
    Sigmoid { x: Tensor },
    /// Softmax over the last dimension.
    Softmax { x: Tensor },
    GatherRows { table: Tensor, idx: Tensor },
    CrossEntropy { logits: Tensor, labels: Tensor, probs: Tensor },
    MarginLoss { logits: Tensor, labels: Tensor, confidence: f32 },
}

impl Op {
    /// `Some(make())` if this op must be recorded for `inputs`, else `None` (and `make` never runs).
    pub(crate) fn record(gpu: &Gpu, inputs: &[&Tensor], make: impl FnOnce() -> Op) -> Option<Op> {
        (gpu.grad_enabled() && inputs.iter().any(|t| t.requires_grad())).then(make)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Op::Reshape { .. } => "reshape",
            Op::Conv2d { .. } => "conv2d",
            Op::BatchNorm { .. } => "batchnorm2d",
            Op::Relu { .. } => "relu",
            Op::Add { .. } => "add",
            Op::Mul { .. } => "mul",
            Op::Scale { .. } => "scale",
            Op::ChannelScale { .. } => "channel_scale",
            Op::AvgPool { .. } => "avg_pool2d",
            Op::Linear { .. } => "linear",
            Op::MatMul { .. } => "matmul",
            Op::Softplus { .. } => "softplus",
            Op::Sigmoid { .. } => "sigmoid",
            Op::Softmax { .. } => "softmax",
            Op::GatherRows { .. } => "gather_rows",
            Op::CrossEntropy { .. } => "cross_entropy",
            Op::MarginLoss { .. } => "margin_loss",
        }
    }

    /// The tensors gradients may flow into, in the order `backward` returns gradients for them.
    fn inputs(&self) -> Vec<&Tensor> {
        match self {
            Op::Reshape { x }
            | Op::Scale { x, .. }
            | Op::AvgPool { x, .. }
            | Op::Softplus { x, .. }
            | Op::Relu { x }
            | Op::Sigmoid { x }
            | Op::Softmax { x } => vec![x],
            Op::Conv2d { x, w, .. } => vec![x, w],
            Op::BatchNorm { x, gamma, beta, .. } => vec![x, gamma, beta],
            Op::Add { a, b } | Op::Mul { a, b } | Op::MatMul { a, b } => vec![a, b],
            Op::ChannelScale { z, m } => vec![z, m],
            Op::Linear { x, w, b } => {
                let mut v = vec![x, w];
                v.extend(b.iter());
                v
            }
            Op::GatherRows { table, .. } => vec![table],
            Op::CrossEntropy { logits, .. } | Op::MarginLoss { logits, .. } => vec![logits],
        }
    }

    /// Gradients of the inputs (same order as `inputs`), `None` where an input needs none.
    /// `out` is the op's output (some backward rules use it), `g` the gradient arriving at it.
    fn backward(&self, gpu: &Gpu, out: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
        match self {
            Op::Reshape { x } => Ok(vec![Some(g.detach(gpu).reshape(gpu, x.shape())?)]),
            Op::Conv2d { x, w, stride, pad } => ops::conv2d::conv2d_backward(gpu, x, w, *stride, *pad, g),
            Op::BatchNorm { x, gamma, beta, mean, rstd, train } => {
                ops::batchnorm::batchnorm_backward(gpu, x, gamma, beta, mean, rstd, *train, g)
            }
            Op::Relu { .. } => Ok(vec![Some(ops::activation::relu_backward(gpu, out, g)?)]),
            Op::Add { a, b } => Ok(vec![a.requires_grad().then(|| g.clone()), b.requires_grad().then(|| g.clone())]),
            Op::Mul { a, b } => ops::arith::mul_backward(gpu, a, b, g),
            Op::MatMul { a, b } => ops::linear::matmul_backward(gpu, a, b, g),
            Op::Scale { alpha, .. } => Ok(vec![Some(ops::arith::scale(gpu, g, *alpha)?)]),
            Op::ChannelScale { z, m } => ops::channel_scale::channel_scale_backward(gpu, z, m, g),
            Op::AvgPool { x, k } => Ok(vec![Some(ops::pool::avg_pool2d_backward(gpu, x.shape(), *k, g)?)]),
            Op::Linear { x, w, b } => ops::linear::linear_backward(gpu, x, w, b.as_ref(), g),
            Op::Softplus { x, beta } => Ok(vec![Some(ops::activation::softplus_backward(gpu, x, *beta, g)?)]),
            Op::Sigmoid { .. } => Ok(vec![Some(ops::activation::sigmoid_backward(gpu, out, g)?)]),
            Op::Softmax { .. } => Ok(vec![Some(ops::softmax::softmax_backward(gpu, out, g)?)]),
            Op::GatherRows { table, idx } => Ok(vec![Some(ops::index::gather_rows_backward(gpu, table.shape(), idx, g)?)]),
            Op::CrossEntropy { labels, probs, .. } => {
                Ok(vec![Some(ops::cross_entropy::cross_entropy_backward(gpu, probs, labels, g)?)])
            }
            Op::MarginLoss { logits, labels, confidence } => {
                Ok(vec![Some(ops::margin_loss::margin_loss_backward(gpu, logits, labels, *confidence, g)?)])
            }
        }
    }
}

/// Gradients of the leaves, keyed by the leaf tensor.
///
/// Ordered maps here and in `backward` are deliberate: tensors are dropped (and their buffers
/// returned to the pool) in the same order every step, so every step gets the same buffers in
/// the same roles, and the bind-group cache stops growing after the first steps.
#[derive(Default)]
pub struct Gradients {
    map: BTreeMap<u64, Tensor>,
}

impl Gradients {
    /// The gradient of `leaf`, if it required one and the loss depends on it.
    pub fn get(&self, leaf: &Tensor) -> Option<&Tensor> {
        self.map.get(&leaf.id())
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Reverse topological order of the recorded graph below `root`.
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    // Iterative DFS (ResNet graphs are deep enough to make recursion a risk in debug builds).
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(op) = t.op() {
            for i in op.inputs() {
                if i.requires_grad() && !seen.contains(&i.id()) {
                    stack.push((i.clone(), false));
                }
            }
        }
    }
    order.reverse();
    order
}

/// Back-propagates from a scalar `loss` (seed gradient 1) and returns the leaves' gradients.
pub fn backward(gpu: &Gpu, loss: &Tensor) -> Result<Gradients> {
    if loss.numel() != 1 {
        return Err(EngineError::Backward(format!("loss must have one element, has shape {:?}", loss.shape())));
    }
    if !loss.requires_grad() {
        return Err(EngineError::Backward("loss does not depend on anything that requires grad".into()));
    }
    // Filled on the GPU: a host write would force a submit in the middle of the step.
    let seed = Tensor::empty(gpu, loss.shape())?;
    ops::arith::fill_into(gpu, &seed, 1.0);
    backward_with(gpu, loss, seed)
}

/// Back-propagates `seed` (the gradient arriving at `out`, same shape) through the graph.
pub fn backward_with(gpu: &Gpu, out: &Tensor, seed: Tensor) -> Result<Gradients> {
    // Backward kernels make plain values: nothing they produce is recorded.
    gpu.no_grad(|| run_backward(gpu, out, seed))
}

fn run_backward(gpu: &Gpu, out: &Tensor, seed: Tensor) -> Result<Gradients> {
    if seed.shape() != out.shape() {
        return Err(EngineError::Backward(format!("seed {:?} vs output {:?}", seed.shape(), out.shape())));
    }
    let mut grads: BTreeMap<u64, Tensor> = BTreeMap::new();
    grads.insert(out.id(), seed);
    let mut leaves = Gradients::default();
    for t in topo_order(out) {
        let Some(g) = grads.remove(&t.id()) else { continue };
        let Some(op) = t.op() else {
            leaves.map.insert(t.id(), g);
            continue;
        };
        let inputs = op.inputs();
        let gs = op.backward(gpu, &t, &g)?;
        if gs.len() != inputs.len() {
            return Err(EngineError::Backward(format!("{} returned {} gradients for {} inputs", op.name(), gs.len(), inputs.len())));
        }
        for (input, gi) in inputs.into_iter().zip(gs) {
            let Some(gi) = gi else { continue };
            if !input.requires_grad() {
                continue;
            }
            if gi.shape() != input.shape() {
                return Err(EngineError::Backward(format!(
                    "{}: gradient shape {:?} for input {:?}",
                    op.name(),
                    gi.shape(),
                    input.shape()
                )));
            }
            let total = match grads.remove(&input.id()) {
                Some(prev) => ops::arith::add(gpu, &prev, &gi)?,
                None => gi,
            };
            grads.insert(input.id(), total);
        }
    }
    Ok(leaves)
}
