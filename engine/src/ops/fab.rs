//! The L-inf step of FAB (`shaders/fab.wgsl`), Croce and Hein 2020, as AutoAttack writes it: the
//! smallest L-inf move from a point onto a hyperplane within the box [0, 1] (AutoAttack's
//! `projection_linf`), one workgroup per image; FAB's iteration built on it (project the current
//! point and the clean image onto the linearised decision boundary, mix, overshoot); and FAB's
//! backward step towards the clean image. Not differentiable: nothing here records on the tape.

use bytemuck::{Pod, Zeroable};

use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::runtime::Runtime;
use crate::tensor::{DType, Tensor};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Params {
    pub rows: u32,
    pub cols: u32,
    pub classes: u32,
    pub _p0: u32,
    pub eta: f32,
    pub alpha_max: f32,
    pub beta: f32,
    pub _p1: f32,
}

impl Params {
    fn rows(rows: usize, cols: usize) -> Params {
        Params { rows: rows as u32, cols: cols as u32, classes: 0, _p0: 0, eta: 0.0, alpha_max: 0.0, beta: 0.0, _p1: 0.0 }
    }
}

/// (images, elements per image) of `x` (N, ...), checking that `same` have its shape and that
/// `per_row` are (N,) of `dtype`.
fn image_rows(op: &'static str, x: &Tensor, same: &[&Tensor], per_row: &[(&Tensor, DType)]) -> Result<(usize, usize)> {
    let n = x.shape().first().copied().unwrap_or(0);
    let bad = n == 0
        || x.dtype() != DType::F32
        || same.iter().any(|t| t.shape() != x.shape() || t.dtype() != DType::F32)
        || per_row.iter().any(|(t, d)| t.shape() != [n] || t.dtype() != *d);
    if bad {
        let mut shapes = vec![x.shape()];
        shapes.extend(same.iter().map(|t| t.shape()));
        shapes.extend(per_row.iter().map(|(t, _)| t.shape()));
        return Err(shape_err(op, &shapes, "images (N, ...) of one shape and one value per image (N,)"));
    }
    Ok((n, x.numel() / n))
}

/// One workgroup per image.
fn per_image(rows: usize) -> Result<Work> {
    Ok(Work::Groups(Work::items_grid(rows as u64, 1)?))
}

/// For each row n, the smallest L-inf step `d` that puts `points[n] + d` on the hyperplane
/// `<w[n], z> = b[n]` within [0, 1] (every coordinate all the way to its side of the box where
/// the plane is out of reach), as AutoAttack's `projection_linf`. points and w (N, ...), b (N,).
pub fn project_linf(rt: &Runtime, points: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (rows, cols) = image_rows("project_linf", points, &[w], &[(b, DType::F32)])?;
    let d = Tensor::empty(rt, points.shape())?;
    let bufs = [points.buffer(), points.buffer(), w.buffer(), b.buffer(), d.buffer()];
    rt.dispatch(Shader::Fab, "project_linf", &bufs, &Params::rows(rows, cols), per_image(rows)?)?;
    Ok(d)
}

/// FAB's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FabStep {
    /// Overshoot of both projections (AutoAttack: 1.05).
    pub eta: f32,
    /// Largest weight of the clean image's projection in the mix (AutoAttack: 0.1).
    pub alpha_max: f32,
}

/// One FAB iteration on the images x1 (N, ...) attacked from the clean x0: the hyperplane is the
/// linearisation at x1 of the logit difference `df = <direction[n], logits[n]>` (direction (N, K):
/// +1 at the target class, -1 at the label) whose input gradient at x1 is `grad`. Returns the new
/// x1 (clamped to [0, 1]) and, per image, `max |x1 - x0|` (N,).
pub fn fab_step(
    rt: &Runtime,
    x1: &Tensor,
    x0: &Tensor,
    grad: &Tensor,
    logits: &Tensor,
    direction: &Tensor,
    step: FabStep,
) -> Result<(Tensor, Tensor)> {
    let (rows, cols) = image_rows("fab_step", x1, &[x0, grad], &[])?;
    let ls = logits.shape();
    if ls.len() != 2 || ls[0] != rows || direction.shape() != ls || logits.dtype() != DType::F32 || direction.dtype() != DType::F32 {
        return Err(shape_err("fab_step", &[x1.shape(), ls, direction.shape()], "logits and direction (N, K) for images (N, ...)"));
    }
    let next = Tensor::empty(rt, x1.shape())?;
    let norms = Tensor::empty(rt, &[rows])?;
    let p = Params { classes: ls[1] as u32, eta: step.eta, alpha_max: step.alpha_max, ..Params::rows(rows, cols) };
    let bufs = [x1.buffer(), x0.buffer(), grad.buffer(), logits.buffer(), direction.buffer(), next.buffer(), norms.buffer()];
    rt.dispatch(Shader::Fab, "fab_step", &bufs, &p, per_image(rows)?)?;
    Ok((next, norms))
}

/// FAB's backward step, in place on the images whose `mask[n]` (N,) u32 is non-zero:
/// `x1 = x0 + beta (x1 - x0)`.
pub fn fab_shrink(rt: &Runtime, mask: &Tensor, x0: &Tensor, x1: &Tensor, beta: f32) -> Result<()> {
    let (rows, cols) = image_rows("fab_shrink", x1, &[x0], &[(mask, DType::U32)])?;
    let p = Params { beta, ..Params::rows(rows, cols) };
    rt.dispatch(Shader::Fab, "fab_shrink", &[mask.buffer(), x0.buffer(), x1.buffer()], &p, Work::Items(x1.numel() as u64))
}
