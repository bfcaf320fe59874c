//! Dense layer `y = x w^T + b`, and the plain product `a b`. A dense layer is a 1x1 convolution of 1x1 images, so it runs on
//! the implicit-GEMM kernels of `conv2d` (one tuned GEMM engine, no second one to keep correct);
//! the bias is a row broadcast in `arith`, its gradient a column sum in `reduce`.
//!
//! Shapes: x (N, IN), w (OUT, IN), b (OUT,) -> y (N, OUT).

use crate::autodiff::Op;
use crate::error::{shape_err, Result};
use crate::gpu::Gpu;
use crate::ops::{arith, conv2d, reduce};
use crate::tensor::Tensor;

fn as_image(gpu: &Gpu, t: &Tensor) -> Result<Tensor> {
    let s = t.shape();
    t.detach(gpu).reshape(gpu, &[s[0], s[1], 1, 1])
}

/// `x w^T + b` (no bias if `b` is `None`).
pub fn linear(gpu: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() != 2 || ws.len() != 2 || xs[1] != ws[1] || b.is_some_and(|b| b.numel() != ws[0]) {
        return Err(shape_err("linear", format!("x {xs:?}, w {ws:?}, b {:?}", b.map(|b| b.shape().to_vec()))));
    }
    let y = matmul_nt(gpu, x, w)?;
    let y = match b {
        Some(b) => arith::add_row_bias_raw(gpu, &y, b)?,
        None => y,
    };
    let mut inputs = vec![x, w];
    inputs.extend(b);
    Ok(Tensor::from_op(gpu, y, &inputs, || Op::Linear { x: x.clone(), w: w.clone(), b: b.cloned() }))
}

/// `a b^T` for a (N, K) and b (M, K), not recorded: the 1x1-convolution forward.
pub fn matmul_nt(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = gpu.no_grad(|| conv2d::conv2d(gpu, &as_image(gpu, a)?, &as_image(gpu, b)?, 1, 0))?;
    y.reshape(gpu, &[a.shape()[0], b.shape()[0]])
}

/// `a b` for a (N, M) and b (M, K), not recorded: the 1x1-convolution input gradient.
pub fn matmul_nn(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (n, m, k) = (a.shape()[0], b.shape()[0], b.shape()[1]);
    if a.shape()[1] != m {
        return Err(shape_err("matmul_nn", format!("{:?} x {:?}", a.shape(), b.shape())));
    }
    let dx = conv2d::conv2d_backward_data(gpu, &[n, k, 1, 1], &as_image(gpu, b)?, 1, 0, &as_image(gpu, a)?)?;
    dx.reshape(gpu, &[n, k])
}

/// `a^T b` for a (N, M) and b (N, K), not recorded: the 1x1-convolution weight gradient.
pub fn matmul_tn(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (m, k) = (a.shape()[1], b.shape()[1]);
    if a.shape()[0] != b.shape()[0] {
        return Err(shape_err("matmul_tn", format!("{:?}^T x {:?}", a.shape(), b.shape())));
    }
    let dw = conv2d::conv2d_backward_weight(gpu, &as_image(gpu, b)?, &[m, k, 1, 1], 1, 0, &as_image(gpu, a)?)?;
    dw.reshape(gpu, &[m, k])
}

/// `a b` for a (N, M) and b (M, K), recorded: gradients `g b^T` and `a^T g`.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = matmul_nn(gpu, a, b)?;
    Ok(Tensor::from_op(gpu, y, &[a, b], || Op::MatMul { a: a.clone(), b: b.clone() }))
}

/// Backward of [`matmul`].
pub fn matmul_backward(gpu: &Gpu, a: &Tensor, b: &Tensor, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let da = if a.requires_grad() { Some(matmul_nt(gpu, g, b)?) } else { None };
    let db = if b.requires_grad() { Some(matmul_tn(gpu, a, g)?) } else { None };
    Ok(vec![da, db])
}

/// dx = g w, dw = g^T x, db = column sums of g; each only if its input requires grad.
pub fn linear_backward(gpu: &Gpu, x: &Tensor, w: &Tensor, b: Option<&Tensor>, g: &Tensor) -> Result<Vec<Option<Tensor>>> {
    let dx = if x.requires_grad() { Some(matmul_nn(gpu, g, w)?) } else { None };
    let dw = if w.requires_grad() { Some(matmul_tn(gpu, g, x)?) } else { None };
    let mut out = vec![dx, dw];
    if let Some(b) = b {
        out.push(if b.requires_grad() { Some(reduce::sum_rows(gpu, g)?) } else { None });
    }
    Ok(out)
}
