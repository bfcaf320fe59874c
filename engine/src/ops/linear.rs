//! Dense layer `y = x w^T + b`, and the plain product `a b`. A dense layer is a 1x1 convolution
//! of 1x1 images, so it runs on the implicit-GEMM kernels of `conv2d` (one tuned GEMM engine, no
//! second one to keep correct); the bias is added in the GEMM's epilogue, its gradient is a
//! column sum in `reduce`.
//!
//! Shapes: x (N, IN), w (OUT, IN), b (OUT,) -> y (N, OUT).

use crate::autodiff::{no_grad, Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::ops::{conv2d, reduce};
use crate::runtime::Runtime;
use crate::tensor::Tensor;

fn as_image(t: &Tensor) -> Result<Tensor> {
    let s = t.shape();
    t.detach().reshape(&[s[0], s[1], 1, 1])
}

/// `x w^T + b` (no bias if `b` is `None`).
pub fn linear(rt: &Runtime, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] || b.is_some_and(|b| b.shape() != [ws[0]]) {
        let bs = b.map(|b| b.shape()).unwrap_or(&[]);
        return Err(shape_err("linear", &[xs, ws, bs], "x (N, IN), w (OUT, IN) and a bias (OUT,)"));
    }
    let y = conv2d::conv2d_raw(rt, &as_image(x)?, &as_image(w)?, 1, 0, b)?.reshape(&[xs[0], ws[0]])?;
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(Tensor::from_op(y, &inputs, || Linear { x: x.clone(), w: w.clone(), b: b.cloned() }))
}

struct Linear {
    x: Tensor,
    w: Tensor,
    b: Option<Tensor>,
}

impl Backward for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![&self.x, &self.w];
        v.extend(self.b.iter());
        v
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        linear_backward(rt, &self.x, &self.w, self.b.as_ref(), g, sink)
    }
}

/// `a b^T` for a (N, K) and b (M, K), not recorded: the 1x1-convolution forward.
pub fn matmul_nt(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = no_grad(|| conv2d::conv2d(rt, &as_image(a)?, &as_image(b)?, 1, 0))?;
    y.reshape(&[a.shape()[0], b.shape()[0]])
}

/// `a b` for a (N, M) and b (M, K), not recorded: the 1x1-convolution input gradient.
pub fn matmul_nn(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape().len() != 2 || b.shape().len() != 2 || a.shape()[1] != b.shape()[0] {
        return Err(shape_err("matmul", &[a.shape(), b.shape()], "a (N, M) and b (M, K)"));
    }
    let (n, k) = (a.shape()[0], b.shape()[1]);
    let dx = conv2d::conv2d_backward_data(rt, &[n, k, 1, 1], &as_image(b)?, 1, 0, &as_image(a)?)?;
    dx.reshape(&[n, k])
}

/// `a^T b` for a (N, M) and b (N, K), not recorded: the 1x1-convolution weight gradient.
pub fn matmul_tn(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape().len() != 2 || b.shape().len() != 2 || a.shape()[0] != b.shape()[0] {
        return Err(shape_err("matmul_tn", &[a.shape(), b.shape()], "a (N, M) and b (N, K)"));
    }
    let (m, k) = (a.shape()[1], b.shape()[1]);
    let dw = conv2d::conv2d_backward_weight(rt, &as_image(b)?, &[m, k, 1, 1], 1, 0, &as_image(a)?)?;
    dw.reshape(&[m, k])
}

/// `a b` for a (N, M) and b (M, K), recorded: gradients `g b^T` and `a^T g`.
pub fn matmul(rt: &Runtime, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = matmul_nn(rt, a, b)?;
    Ok(Tensor::from_op(y, &[a, b], || MatMul { a: a.clone(), b: b.clone() }))
}

struct MatMul {
    a: Tensor,
    b: Tensor,
}

impl Backward for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.a, &self.b]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        matmul_backward(rt, &self.a, &self.b, g, sink)
    }
}

/// Backward of [`matmul`].
fn matmul_backward(rt: &Runtime, a: &Tensor, b: &Tensor, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    if grads.wants(a) {
        grads.add(a, matmul_nt(rt, g, b)?)?;
    }
    if grads.wants(b) {
        grads.add(b, matmul_tn(rt, a, g)?)?;
    }
    Ok(())
}

/// dx = g w, dw = g^T x, db = column sums of g; each only if its input wants it.
fn linear_backward(rt: &Runtime, x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    if grads.wants(x) {
        grads.add(x, matmul_nn(rt, g, w)?)?;
    }
    if grads.wants(w) {
        grads.add(w, matmul_tn(rt, g, x)?)?;
    }
    if let Some(b) = b.filter(|b| grads.wants(b)) {
        grads.add(b, reduce::sum_rows(rt, g)?)?;
    }
    Ok(())
}
