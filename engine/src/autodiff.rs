//! Reverse-mode autodiff over recorded ops.
//!
//! The rule, stated once: an op records itself (a [`Backward`] value holding its inputs and
//! whatever it saved) only when gradient mode is on and at least one input requires gradients.
//! `backward(loss)` walks the recorded graph in reverse topological order and asks each op for the gradients of
//! the inputs that require them (an op never computes a gradient nobody asked for: an attack,
//! whose weights do not require grad, launches no weight-gradient kernel). Each op hands every
//! gradient to a [`GradSink`] *together with the input tensor it belongs to*, so a gradient cannot
//! land on the wrong input by position; the sink checks the shape and sums fan-out contributions.
//! Gradients do not accumulate across calls: each `backward` returns fresh ones.
//!
//! Gradient mode is per thread (as in PyTorch) and is switched off only through [`NoGrad`], a
//! guard that restores the previous mode when dropped, on error and panic paths too.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};

use crate::error::{EngineError, Result};
use crate::ops;
use crate::runtime::Runtime;
use crate::tensor::Tensor;

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops record themselves for backward on this thread.
pub fn grad_enabled() -> bool {
    GRAD_ENABLED.with(Cell::get)
}

/// Gradient mode off until this guard drops; the previous mode comes back even if the code in
/// between returns an error or panics.
#[must_use = "gradient mode is restored when the guard drops"]
pub struct NoGrad {
    prev: bool,
}

impl NoGrad {
    pub fn new() -> NoGrad {
        NoGrad { prev: GRAD_ENABLED.with(|g| g.replace(false)) }
    }
}

impl Default for NoGrad {
    fn default() -> Self {
        NoGrad::new()
    }
}

impl Drop for NoGrad {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.prev));
    }
}

/// Runs `f` with gradient mode off: evaluation and attack bookkeeping that needs no gradients.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    let _guard = NoGrad::new();
    f()
}

/// What an op records for its backward pass: its inputs and whatever it saved. Each op's
/// implementation is a small struct beside its forward wrapper in `ops/<family>.rs` (reshape's
/// in `tensor.rs`), so adding an op touches no central list.
pub(crate) trait Backward {
    /// The op's name, as traces and errors show it.
    fn name(&self) -> &'static str;

    /// The tensors gradients may flow into (the graph's edges), in the op's order.
    fn inputs(&self) -> Vec<&Tensor>;

    /// Hands the gradients of this op's inputs to `sink`, each with its input. `out` is the op's
    /// output (some rules use it), `g` the gradient arriving at it.
    fn backward(&self, rt: &Runtime, out: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()>;
}

/// A recorded op, as a tensor keeps it.
pub(crate) type Op = Box<dyn Backward>;

/// `Some(make())` if an op with these `inputs` must be recorded, else `None` (and `make` never
/// runs, so nothing is cloned for an op nobody will differentiate).
pub(crate) fn record<B: Backward + 'static>(inputs: &[&Tensor], make: impl FnOnce() -> B) -> Option<Op> {
    (grad_enabled() && inputs.iter().any(|t| t.requires_grad())).then(|| Box::new(make()) as Op)
}

/// Where an op's backward puts its inputs' gradients: each one together with the input it
/// belongs to. Refuses a tensor that is not an input of the op and a gradient of another shape;
/// ignores gradients of inputs that require none; sums contributions to the same tensor.
pub(crate) struct GradSink<'a> {
    rt: &'a Runtime,
    op: &'static str,
    inputs: Vec<u64>,
    grads: &'a mut BTreeMap<u64, Tensor>,
}

impl GradSink<'_> {
    /// Whether `input`'s gradient is wanted (compute it only then).
    pub fn wants(&self, input: &Tensor) -> bool {
        input.requires_grad()
    }

    /// Adds `grad` as (a contribution to) the gradient of `input`.
    pub fn add(&mut self, input: &Tensor, grad: Tensor) -> Result<()> {
        if !self.inputs.contains(&input.id()) {
            return Err(EngineError::GradNotForInput { op: self.op });
        }
        if grad.shape() != input.shape() {
            return Err(EngineError::GradShape { op: self.op, got: grad.shape().to_vec(), want: input.shape().to_vec() });
        }
        if !input.requires_grad() {
            return Ok(());
        }
        let total = match self.grads.remove(&input.id()) {
            Some(prev) => ops::arith::add(self.rt, &prev, &grad)?,
            None => grad,
        };
        self.grads.insert(input.id(), total);
        Ok(())
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
pub fn backward(rt: &Runtime, loss: &Tensor) -> Result<Gradients> {
    if loss.numel() != 1 {
        return Err(EngineError::LossNotScalar { shape: loss.shape().to_vec() });
    }
    if !loss.requires_grad() {
        return Err(EngineError::NothingRequiresGrad);
    }
    // A constant 1 filled on the GPU once (a host write would force a submit mid-step).
    backward_with(rt, loss, rt.one()?.reshape(loss.shape())?)
}

/// Back-propagates `seed` (the gradient arriving at `out`, same shape) through the graph.
pub fn backward_with(rt: &Runtime, out: &Tensor, seed: Tensor) -> Result<Gradients> {
    backward_observed(rt, out, seed, &mut |_| Ok(()))
}

/// A node of the recorded graph as the backward pass reaches it, its gradient complete and its
/// own op's backward not yet run.
pub struct Node<'a> {
    /// The op that made the node (`"leaf"` for leaves).
    pub op: &'static str,
    pub value: &'a Tensor,
    pub grad: &'a Tensor,
}

impl<'a> Node<'a> {
    /// The op's inputs, in the op's order (batch norm: x, gamma, beta, then the residual if
    /// any); none for a leaf. Listed on request: the plain backward pass asks for none.
    pub fn inputs(&self) -> Vec<&'a Tensor> {
        self.value.op().map(|op| op.inputs()).unwrap_or_default()
    }
}

/// [`backward_with`], calling `observe` at every node in the order the gradients are complete:
/// a trace of the whole backward pass, to find the first op where two devices part ways, or to
/// look at (and, in tests, adjust) what an op's backward is about to read.
pub fn backward_observed(rt: &Runtime, out: &Tensor, seed: Tensor, observe: &mut dyn FnMut(Node) -> Result<()>) -> Result<Gradients> {
    if seed.shape() != out.shape() {
        return Err(EngineError::GradShape { op: "backward seed", got: seed.shape().to_vec(), want: out.shape().to_vec() });
    }
    // Backward kernels make plain values: nothing they produce is recorded.
    let _guard = NoGrad::new();
    let mut grads: BTreeMap<u64, Tensor> = BTreeMap::new();
    grads.insert(out.id(), seed);
    let mut leaves = Gradients::default();
    for t in topo_order(out) {
        let Some(g) = grads.remove(&t.id()) else { continue };
        observe(Node { op: t.op().map_or("leaf", |op| op.name()), value: &t, grad: &g })?;
        let Some(op) = t.op() else {
            leaves.map.insert(t.id(), g);
            continue;
        };
        let inputs = op.inputs().iter().map(|i| i.id()).collect();
        let mut sink = GradSink { rt, op: op.name(), inputs, grads: &mut grads };
        op.backward(rt, &t, &g, &mut sink)?;
    }
    Ok(leaves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_takes_gradients_only_for_the_ops_inputs_and_of_their_shape() {
        let rt = Runtime::new(crate::RuntimeOptions::from_env().expect("the environment's settings"))
            .expect("a Vulkan device (lavapipe is enough)");
        let x = Tensor::leaf(&rt, &[2], &[1.0, 2.0]).unwrap();
        let other = Tensor::leaf(&rt, &[2], &[0.0, 0.0]).unwrap();
        let mut grads = BTreeMap::new();
        let mut sink = GradSink { rt: &rt, op: "test", inputs: vec![x.id()], grads: &mut grads };
        let g = || Tensor::from_f32(&rt, &[2], &[1.0, 1.0]).unwrap();
        assert!(matches!(sink.add(&other, g()), Err(EngineError::GradNotForInput { op: "test" })));
        let wrong = Tensor::from_f32(&rt, &[1, 2], &[1.0, 1.0]).unwrap();
        assert!(matches!(sink.add(&x, wrong), Err(EngineError::GradShape { .. })));
        sink.add(&x, g()).unwrap();
        sink.add(&x, g()).unwrap();
        assert_eq!(grads[&x.id()].to_vec(&rt).unwrap(), vec![2.0, 2.0], "contributions sum");
    }
}
