//! 2-D convolution as implicit GEMM (`shaders/conv2d.wgsl`): forward, backward-data and
//! backward-weight, each split along K when its output tiles alone would leave a large GPU idle
//! (partial sums folded by `reduce::sum_rows`).
//!
//! In f16 ([`crate::precision`]) each GEMM first finds its operands' largest magnitudes
//! (`operand_scale`, two dispatches), then runs on tensor cores where the adapter has them
//! (`shaders/conv2d_coop.wgsl`), else on the same SIMT tiles specialised with `F16`: either way
//! operands scaled and rounded to f16 as they are staged, f32 accumulation, outputs scaled back.
//! The direct backward-data kernel of the narrow stem (not a GEMM) stays f32.
//!
//! Shapes: x (N, CI, H, W), w (CO, CI, ks, ks) -> y (N, CO, OH, OW),
//! OH = (H + 2 pad - ks) / stride + 1. Square kernels, no bias, no dilation, one group.

use bytemuck::{Pod, Zeroable};

use crate::autodiff::{Backward, GradSink};
use crate::error::{shape_err, Result};
use crate::grid::Work;
use crate::kernels::Shader;
use crate::ops::{operand_scale, reduce};
use crate::pool::GpuBuffer;
use crate::precision::Precision;
use crate::runtime::Runtime;
use crate::tensor::Tensor;
use crate::tune::{Gemm, GemmTile, Tile};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Debug)]
pub(crate) struct Params {
    pub n: u32,
    pub ci: u32,
    pub h: u32,
    pub w: u32,
    pub co: u32,
    pub oh: u32,
    pub ow: u32,
    pub ks: u32,
    pub stride: u32,
    pub pad: u32,
    pub gm: u32,
    pub gn: u32,
    pub gk: u32,
    pub k_split: u32,
    pub has_bias: u32,
    pub splits: u32,
}

/// The depth slice staged per step (BK in the WGSL; a test reads it from the shader with naga).
/// The output tile of a workgroup is a [`Tile`] (on tensor cores a [`crate::tune::CoopTile`]),
/// chosen per shape (`crate::tune`).
pub(crate) const TILE_K: u32 = 16;

/// Geometry of one convolution, checked once.
#[derive(Clone, Copy, Debug)]
struct Geom {
    n: u32,
    ci: u32,
    h: u32,
    w: u32,
    co: u32,
    oh: u32,
    ow: u32,
    ks: u32,
    stride: u32,
    pad: u32,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], stride: u32, pad: u32) -> Result<Geom> {
        if x.len() != 4 || w.len() != 4 || w[2] != w[3] || x[1] != w[1] || stride == 0 {
            return Err(shape_err("conv2d", &[x, w], "x (N, C, H, W), w (CO, C, k, k) and a stride of at least 1"));
        }
        let (h, wd, ks) = (x[2] as u32, x[3] as u32, w[2] as u32);
        if h + 2 * pad < ks || wd + 2 * pad < ks {
            return Err(shape_err("conv2d", &[x, w], "a kernel no larger than the padded input"));
        }
        let g = Geom {
            n: x[0] as u32,
            ci: x[1] as u32,
            h,
            w: wd,
            co: w[0] as u32,
            oh: (h + 2 * pad - ks) / stride + 1,
            ow: (wd + 2 * pad - ks) / stride + 1,
            ks,
            stride,
            pad,
        };
        // The kernels split GEMM depth indices through float reciprocals, exact below 2^24.
        let depth = [g.ci * g.ks * g.ks, g.co * g.ks * g.ks, g.n * g.oh * g.ow];
        if depth.iter().any(|&d| d >= 1 << 24) {
            return Err(shape_err("conv2d", &[x, w], "channels x taps and batch x output pixels under 2^24"));
        }
        Ok(g)
    }

    fn params(&self, gm: u32, gn: u32, gk: u32, k_split: u32) -> Params {
        Params {
            n: self.n,
            ci: self.ci,
            h: self.h,
            w: self.w,
            co: self.co,
            oh: self.oh,
            ow: self.ow,
            ks: self.ks,
            stride: self.stride,
            pad: self.pad,
            gm,
            gn,
            gk,
            k_split,
            has_bias: 0,
            splits: 1,
        }
    }
}

/// One dispatch of `gemm` with tile `t`, over a `gm` x `gn` GEMM repeated `layers` times (grid
/// z: phases, splits), with the f16 specialisation when `f16` (on tensor cores, always f16).
fn dispatch_gemm(
    rt: &Runtime,
    (gemm, t): (Gemm, GemmTile),
    f16: bool,
    bufs: &[&GpuBuffer],
    params: &Params,
    (gm, gn, layers): (u32, u32, u32),
) -> Result<()> {
    let grid = Work::Groups([gm.div_ceil(t.rows()), gn.div_ceil(t.cols()), layers]);
    match t {
        GemmTile::Simt(s) => {
            let (c, n) = constants(s, f16);
            rt.dispatch_with(Shader::Conv2d, gemm.entry(), &c[..n], bufs, params, grid)
        }
        GemmTile::TensorCores(c) => {
            let tc = rt.tensor_cores().expect("tensor-core tiles are chosen only where tensor cores run");
            rt.dispatch_with(c.shader(), gemm.tensor_core_entry(), &c.constants(tc.subgroup), bufs, params, grid)
        }
    }
}

/// The GEMM of one of the three kernels at this geometry: (rows, columns, independent layers:
/// output phases; for the weight gradient, whose split-K makes about 256 workgroups whatever
/// the tile, as many as fill the device), as the heuristic sees it.
fn gemm_dims(g: &Geom, gemm: Gemm) -> (u32, u32, u32) {
    match gemm {
        Gemm::ConvForward => (g.n * g.oh * g.ow, g.co, 1),
        Gemm::ConvBackwardData => (g.n * g.h.div_ceil(g.stride) * g.w.div_ceil(g.stride), g.ci, g.stride * g.stride),
        Gemm::ConvBackwardWeight => (g.co, g.ci * g.ks * g.ks, 256),
    }
}

/// The tile the heuristic picks for `gemm` at this geometry (benchmarks report it beside the
/// measured best).
pub fn heuristic_tile(gemm: Gemm, x_shape: &[usize], w_shape: &[usize], stride: u32, pad: u32) -> Result<Tile> {
    let (m, n, layers) = gemm_dims(&Geom::new(x_shape, w_shape, stride, pad)?, gemm);
    Ok(Tile::heuristic(m, n, layers))
}

/// Runs `run` with the tile configuration chosen for `gemm` at this geometry (tuned, cached or
/// by the heuristic for a `gm` x `gn` GEMM repeated over `layers` phases or splits; tensor-core
/// tiles where they run).
fn tiled(rt: &Runtime, gemm: Gemm, g: &Geom, run: impl Fn(GemmTile) -> Result<()>) -> Result<()> {
    let shape = format!("n={} ci={} h={} w={} co={} k={} s={} p={}", g.n, g.ci, g.h, g.w, g.co, g.ks, g.stride, g.pad);
    let tile = rt.tile_for(gemm, &shape, gemm_dims(g, gemm), &run)?;
    run(tile)
}

/// The specialisation of a GEMM: its tile configuration, then in f16 the `F16` switch (the
/// first `.1` entries of `.0`).
fn constants(t: Tile, f16: bool) -> ([(&'static str, u32); 5], usize) {
    (f16_constants(t), if f16 { 5 } else { 4 })
}

/// The f16 specialisation of the GEMMs at tile `t`: its tile constants and the `F16` switch
/// (registered beside the f32 ones in [`Shader::specialisations`]).
pub(crate) fn f16_constants(t: Tile) -> [(&'static str, u32); 5] {
    let [rm, rn, prefetch, double] = t.constants();
    [rm, rn, prefetch, double, ("F16", 1)]
}

/// In f16, the epilogue buffer of a GEMM of `a` and `b` (binding 3, see `operand_scale`; the
/// tensor-core kernels, always f16, read it too); in f32, none.
fn f16_epilogue(rt: &Runtime, a: &Tensor, b: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if rt.precision() == Precision::F16 {
        operand_scale::epilogue(rt, a, b, bias).map(Some)
    } else {
        Ok(None)
    }
}

/// Convolution forward. Records its backward when `x` or `w` requires grad.
pub fn conv2d(rt: &Runtime, x: &Tensor, w: &Tensor, stride: u32, pad: u32) -> Result<Tensor> {
    let y = conv2d_raw(rt, x, w, stride, pad, None)?;
    Ok(Tensor::from_op(y, &[x, w], || Conv2d { x: x.clone(), w: w.clone(), stride, pad }))
}

struct Conv2d {
    x: Tensor,
    w: Tensor,
    stride: u32,
    pad: u32,
}

impl Backward for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }
    fn inputs(&self) -> Vec<&Tensor> {
        vec![&self.x, &self.w]
    }
    fn backward(&self, rt: &Runtime, _: &Tensor, g: &Tensor, sink: &mut GradSink) -> Result<()> {
        conv2d_backward(rt, &self.x, &self.w, self.stride, self.pad, g, sink)
    }
}

/// The forward GEMM, not recorded, with `bias[co]` added to every output in its epilogue (the
/// dense layers' bias costs no dispatch of its own).
pub(crate) fn conv2d_raw(rt: &Runtime, x: &Tensor, w: &Tensor, stride: u32, pad: u32, bias: Option<&Tensor>) -> Result<Tensor> {
    let g = Geom::new(x.shape(), w.shape(), stride, pad)?;
    if let Some(b) = bias.filter(|b| b.numel() != g.co as usize) {
        return Err(shape_err("conv2d", &[w.shape(), b.shape()], "a bias of one value per output channel"));
    }
    let y = Tensor::empty(rt, &[g.n as usize, g.co as usize, g.oh as usize, g.ow as usize])?;
    let (gm, gn, gk) = (g.n * g.oh * g.ow, g.co, g.ci * g.ks * g.ks);
    let epilogue = f16_epilogue(rt, x, w, bias)?;
    tiled(rt, Gemm::ConvForward, &g, |t| {
        // The bias is added in the epilogue, which a partial sum must not do: no split then.
        let (splits, k_split) = if bias.is_some() { (1, gk) } else { split_depth_in(t.cover(gm, gn).0 as u32, gk, t.depth()) };
        let params = Params { has_bias: bias.is_some() as u32, ..g.params(gm, gn, gk, k_split) };
        in_slabs(rt, &y, splits, |dst| {
            let bufs = [x.buffer(), w.buffer(), dst, epilogue.as_ref().or(bias).unwrap_or(w).buffer()];
            dispatch_gemm(rt, (Gemm::ConvForward, t), epilogue.is_some(), &bufs, &params, (gm, gn, splits))
        })
    })?;
    Ok(y)
}

/// Up to this many input channels (the stem's RGB) the gradient w.r.t. the input is computed
/// directly, a thread per input pixel, instead of by a GEMM whose tiles would be mostly empty.
pub const NARROW_CHANNELS: u32 = 4;

/// Gradient w.r.t. the input: `dx[n,ci,iy,ix] = sum_{co,ky,kx} g[n,co,oy,ox] w[co,ci,ky,kx]`
/// over the output pixels (oy, ox) whose window covers (iy, ix) at tap (ky, kx).
///
/// Computed as `stride * stride` stride-1 convolutions of `g`, one per output phase (the input
/// pixels with the same row and column remainder), each with only the taps that reach it,
/// flipped and transposed: no gathered zero taps at stride 2, and the same gather as the
/// forward (coalesced along pixels, B contiguous along K). Two dispatches: the weight
/// re-layout and one GEMM whose grid z is the phase. With at most [`NARROW_CHANNELS`] input
/// channels, one direct kernel instead.
pub fn conv2d_backward_data(rt: &Runtime, x_shape: &[usize], w: &Tensor, stride: u32, pad: u32, g: &Tensor) -> Result<Tensor> {
    let geo = Geom::new(x_shape, w.shape(), stride, pad)?;
    let params = geo.params(0, geo.ci, 0, u32::MAX);
    if geo.ci <= NARROW_CHANNELS {
        let dx = Tensor::empty(rt, x_shape)?;
        let bufs = [g.buffer(), w.buffer(), dx.buffer()];
        rt.dispatch(Shader::Conv2d, "conv2d_bwd_data_narrow", &bufs, &params, Work::Items((geo.n * geo.h * geo.w) as u64))?;
        return Ok(dx);
    }
    // The layout depends on the weights, the stride and the padding's phase offset.
    let flipped = rt.derived_from(w, (stride as u64) << 32 | pad as u64, || {
        let flipped = Tensor::empty(rt, &[w.numel()])?;
        rt.dispatch(Shader::Conv2d, "conv2d_flip_weights", &[w.buffer(), flipped.buffer()], &params, Work::Items(w.numel() as u64))?;
        Ok(flipped)
    })?;
    let dx = Tensor::empty(rt, x_shape)?;
    // Phase (0, 0) has the most pixels; the other phases' workgroups past their rows idle.
    let rows = geo.n * geo.h.div_ceil(stride) * geo.w.div_ceil(stride);
    let phases = stride * stride;
    // The deepest phase's GEMM (phase (0, 0) has the most taps).
    let depth = geo.co * geo.ks.div_ceil(stride) * geo.ks.div_ceil(stride);
    let epilogue = f16_epilogue(rt, g, &flipped, None)?;
    tiled(rt, Gemm::ConvBackwardData, &geo, |t| {
        let (splits, k_split) = split_depth_in(t.cover(rows, geo.ci).0 as u32 * phases, depth, t.depth());
        let params = Params { k_split, splits, ..params };
        in_slabs(rt, &dx, splits, |dst| {
            let bufs = [g.buffer(), flipped.buffer(), dst, epilogue.as_ref().unwrap_or(&flipped).buffer()];
            dispatch_gemm(rt, (Gemm::ConvBackwardData, t), epilogue.is_some(), &bufs, &params, (rows, geo.ci, phases * splits))
        })
    })?;
    Ok(dx)
}

/// Split-K for the forward and backward-data GEMMs of small layers (layer4 at batch 128 makes
/// 64-128 output tiles, under one per compute unit of a large GPU): `(splits, depth per split)`,
/// enough splits for about 256 workgroups with `groups` tiles, each at least 512 deep (32 K
/// slices, so the extra pass that sums the slabs stays small against the GEMM), depth rounded
/// to whole slices. One split when the tiles already fill the device or the depth is short.
pub fn depth_splits(groups: u32, depth: u32) -> (u32, u32) {
    split_depth_in(groups, depth, TILE_K)
}

/// [`depth_splits`] in slices of `slice` (the tile's staging depth).
fn split_depth_in(groups: u32, depth: u32, slice: u32) -> (u32, u32) {
    let by_occupancy = 256u32.div_ceil(groups.max(1));
    let by_depth = (depth / 512).max(1);
    split_depth(by_occupancy.min(by_depth).clamp(1, 16), depth, slice)
}

/// `depth` cut into about `splits` parts of whole K slices of `slice` (so that no slice
/// straddles two workgroups): `(splits, depth per split)`; one split is the whole depth.
fn split_depth(splits: u32, depth: u32, slice: u32) -> (u32, u32) {
    if splits <= 1 {
        return (1, depth);
    }
    let k_split = depth.div_ceil(splits).div_ceil(slice) * slice;
    (depth.div_ceil(k_split), k_split)
}

/// Runs a GEMM whose output is `out`: with one split it writes `out` itself; with more, each
/// split writes a slab of `out`'s size (grid z) and one pass sums the slabs into `out`.
fn in_slabs(rt: &Runtime, out: &Tensor, splits: u32, gemm: impl FnOnce(&GpuBuffer) -> Result<()>) -> Result<()> {
    if splits == 1 {
        return gemm(out.buffer());
    }
    let partial = Tensor::empty(rt, &[splits as usize, out.numel()])?;
    gemm(partial.buffer())?;
    reduce::sum_rows_into(rt, &partial, out)
}

/// How many depth slices the weight gradient's long reduction (batch x space) is cut into so
/// that enough workgroups run: aim for about 256 of them, each with at least 256 depth.
fn weight_splits(tiles: u32, gk: u32) -> u32 {
    let by_occupancy = 256u32.div_ceil(tiles.max(1));
    let by_depth = (gk / 256).max(1);
    by_occupancy.min(by_depth).clamp(1, 128)
}

/// Gradient w.r.t. the weights: `dw[co,ci,ky,kx] = sum_{n,oy,ox} g[n,co,oy,ox] x[n,ci,iy,ix]`.
pub fn conv2d_backward_weight(rt: &Runtime, x: &Tensor, w_shape: &[usize], stride: u32, pad: u32, g: &Tensor) -> Result<Tensor> {
    let geo = Geom::new(x.shape(), w_shape, stride, pad)?;
    let (gm, gn, gk) = (geo.co, geo.ci * geo.ks * geo.ks, geo.n * geo.oh * geo.ow);
    let dw = Tensor::empty(rt, w_shape)?;
    let epilogue = f16_epilogue(rt, g, x, None)?;
    tiled(rt, Gemm::ConvBackwardWeight, &geo, |t| {
        let (splits, k_split) = split_depth(weight_splits(t.cover(gm, gn).0 as u32, gk), gk, t.depth());
        let params = geo.params(gm, gn, gk, k_split);
        in_slabs(rt, &dw, splits, |dst| {
            let bufs = [g.buffer(), x.buffer(), dst, epilogue.as_ref().unwrap_or(x).buffer()];
            dispatch_gemm(rt, (Gemm::ConvBackwardWeight, t), epilogue.is_some(), &bufs, &params, (gm, gn, splits))
        })
    })?;
    Ok(dw)
}

/// Backward of `conv2d`: gradients for the inputs that want them, and only those.
fn conv2d_backward(rt: &Runtime, x: &Tensor, w: &Tensor, stride: u32, pad: u32, g: &Tensor, grads: &mut GradSink) -> Result<()> {
    if grads.wants(x) {
        grads.add(x, conv2d_backward_data(rt, x.shape(), w, stride, pad, g)?)?;
    }
    if grads.wants(w) {
        grads.add(w, conv2d_backward_weight(rt, x, w.shape(), stride, pad, g)?)?;
    }
    Ok(())
}
