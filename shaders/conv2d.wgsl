// conv2d.wgsl: 2-D convolution (square kernel ks, stride, zero padding, no bias, groups 1) as
// implicit GEMM: the im2col matrix is never built; tiles of it are gathered straight from NCHW.
//
// Layouts: x, dx: (N, CI, H, W); w, dw: (CO, CI, ks, ks); y, g: (N, CO, OH, OW).
// One GEMM engine, three index maps (MODE is a compile-time argument, folded after inlining):
//   conv2d_fwd         y  = A (M x K) * B (K x N):  M = N*OH*OW pixels, N = CO, K = CI*ks*ks
//                      A[m, k] = x patch value, B[k, co] = w[co, k]; plus bias[co] if has_bias.
//                      Split-K (small layers, to make enough workgroups): workgroup z handles
//                      K range [z*k_split, (z+1)*k_split) and writes slab z of a (splits, y) array.
//                      bindings: 0 x, 1 w, 2 y (overwritten), 3 bias (w when unused; the backward
//                      entries share the store code, so they bind a stand-in there too; with
//                      F16, every entry binds its operands' epilogue buffer there)
//   conv2d_bwd_data    dx by output phase: the input pixels (iy, ix) with iy % stride = py and
//                      ix % stride = px receive gradient only through the taps ky = r_y (mod
//                      stride), r_y = (py + pad) % stride, so each phase is a stride-1
//                      convolution of g with those taps, flipped and transposed (no zero taps are
//                      gathered; stride 1 is the single phase with every tap). Workgroup z is
//                      phase * splits + split (split-K as the forward's, slabs of dx's size);
//                      M = N * pixels of the phase, N = CI, K = CO * taps of the phase.
//                      B is the weight re-laid out by conv2d_flip_weights, phase after phase, so
//                      that it reads like the forward's.  bindings: 0 g, 1 flipped w, 2 dx
//   conv2d_bwd_weight  dw = A * B:  M = CO, N = CI*ks*ks, K = N*OH*OW (batch and space)
//                      A[co, k] = g[n, co, oy, ox], B[k, j] = x patch value.
//                      Split-K: workgroup z handles K range [z*k_split, (z+1)*k_split) and writes
//                      its partial product to dst[z, co, j]; reduce.wgsl sums the splits (with one
//                      split it is dw itself).  bindings: 0 g, 1 x, 2 partials (overwritten)
//   conv2d_flip_weights  w (CO, CI, ks, ks) -> for each phase in order, (CI, CO, taps_y, taps_x)
//                      with the taps reversed: the B operand of conv2d_bwd_data (a permutation of
//                      w, one thread per element, 1-D grid).  bindings: 0 w, 2 flipped w
// Tiling: a BM x BN output tile per workgroup of 256 threads (64x64, 128x64, 64x128 or 128x128:
// the specialised RM, RN), K in slices of 16 staged in workgroup memory, the next slice's
// global loads held in registers while this one is multiplied (PREFETCH); with DOUBLE, two
// workgroup tiles alternate, so a slice is stored into one while the other is multiplied and
// each K step needs one barrier instead of two; each thread accumulates
// an RM x RN register block at rows tx + 16 i, cols ty + 16 j, so consecutive threads touch
// consecutive pixels (coalesced NCHW stores). The tiles are laid out so that each four of a
// thread's rows (and columns) are one vec4: per depth step it reads (RM + RN) / 4 vec4s and does
// RM RN / 4 vec4 multiply-adds. Grid: (ceil(M/BM), ceil(N/BN), splits or phases). Tails in M, N
// and K are guarded by zero-filled loads and skipped stores.
// F16 = 1 (specialised like the tile constants): every operand value is scaled by a power of
// two and rounded to f16 as it is staged, the products still accumulate in f32, and each output
// is scaled back exactly before it is stored (see `operand` below).
// The depth index is split into (channel, tap row, tap column) without integer division in the
// K loop: `div_exact` (div_exact.wgsl, prepended) divides through a reciprocal computed once per
// thread and corrects by one.
// The tensor-core GEMMs (conv2d_coop.wgsl) are compiled with this text (F16 = 1) and run its
// gemm_of, prepare, load_a, load_b, operand, unscaled and store: a change here changes both.

struct Params {
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
    gm: u32,       // GEMM rows (FWD, BWD_WEIGHT; BWD_DATA derives its own per phase)
    gn: u32,       // GEMM cols
    gk: u32,       // GEMM depth (FWD, BWD_WEIGHT)
    k_split: u32,  // depth handled by one workgroup along z (a split of K; at least the depth if unsplit)
    has_bias: u32, // conv2d_fwd: add bias[co] to every output (the dense layers' bias; unsplit only)
    splits: u32,   // BWD_DATA: K splits per phase (grid z = phase * splits + split); 1 = none
}
var<immediate> p: Params;

const FWD: u32 = 0u;
const BWD_DATA: u32 = 1u;
const BWD_WEIGHT: u32 = 2u;

// Tile configuration, chosen per (kernel, shape) by the host (engine/src/tune.rs): each of the
// 16 x 16 threads computes RM x RN outputs (4 or 8 each), so a workgroup's tile is BM x BN =
// 16 RM x 16 RN (64x64 up to 128x128). Larger tiles read fewer workgroup-memory words per
// multiply-add (RM RN / (RM + RN) per word); smaller ones make more workgroups for small layers.
// They are specialisation constants: the host rewrites these two declarations with the chosen
// values before compiling (engine/src/pipelines.rs), so the tile sizes and every expression
// and branch on them fold at compile time; as written, the shader is the 64x64 configuration.
const RM: u32 = 4u;
const RN: u32 = 4u;
// 1: the next K slice's global loads are issued before this slice's multiply-adds (prefetch);
// 0: each slice is loaded at the top of its step. Also chosen per shape (engine/src/tune.rs).
const PREFETCH: u32 = 1u;
// 1: two workgroup tiles (double buffering; the host sets PREFETCH with it): the prefetched
// slice is stored into the tile not being multiplied, one barrier per K step.
const DOUBLE: u32 = 0u;
// 1: operands in f16 (scaled, rounded to nearest even), f32 accumulation. Binding 3 is then the
// epilogue buffer of operand_scale.wgsl: the bits of max |A| and max |B|, then the bias.
const F16: u32 = 0u;
const BM: u32 = 16u * RM;
const BN: u32 = 16u * RN;
const BK: u32 = 16u;

@group(0) @binding(0) var<storage, read> src_a: array<f32>;
@group(0) @binding(1) var<storage, read> src_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(1) var<storage, read_write> flipped: array<f32>; // conv2d_flip_weights only

// Tiles are stored so that each four rows (columns) one thread multiplies, tx + 16 i for
// i = 4q .. 4q + 3 (likewise ty + 16 j), sit in one vec4: row r = tx + 16 i of depth kl lives at
// tile_a[kl * 4 RM + (i / 4) * 16 + tx][i % 4].
// B's depth rows are padded by one vec4 (BP = BN / 4 + 1): the weight loads write sixteen depths
// of a column at once, which would otherwise all fall in one bank. Double-buffered tiles are
// not padded but swizzled (b_swz): two padded 128x128 tiles would need 33 280 bytes, over the
// 32 KiB of workgroup memory lavapipe (and many GPUs) offer; unpadded they need exactly 32 KiB.
const BP: u32 = 4u * RN + 1u - DOUBLE;
const A_TILE: u32 = BK * 4u * RM; // vec4s per A tile: [BK][BM / 4]
const B_TILE: u32 = BK * BP;      // vec4s per B tile: [BK][BP]
var<workgroup> tile_a: array<vec4<f32>, (1u + DOUBLE) * A_TILE>;
var<workgroup> tile_b: array<vec4<f32>, (1u + DOUBLE) * B_TILE>;

// Taps ky in [0, ks) with ky % stride == r.
fn taps(r: u32) -> u32 {
    if (r >= p.ks) {
        return 0u;
    }
    return (p.ks - r + p.stride - 1u) / p.stride;
}

// Workgroup-uniform geometry: which GEMM this workgroup computes (the phase of the backward-data
// pass, the depth range of a split) and the shape of the tensor its A operand gathers from.
struct Gemm {
    py: u32,      // BWD_DATA: output phase (rows iy % stride == py, columns ix % stride == px)
    px: u32,
    taps_y: u32,  // FWD, BWD_DATA: kernel taps per row and column of the gathered window
    taps_x: u32,
    step: u32,    // gathered row = output row * step + off_y + tap row
    off_y: i32,
    off_x: i32,
    rows: u32,    // output rows and columns per image of this GEMM
    cols: u32,
    src_c: u32,   // gathered tensor (x for FWD, g for BWD_DATA): channels, height, width
    src_h: u32,
    src_w: u32,
    gm: u32,
    gk: u32,
    k_begin: u32,
    k_end: u32,
    b_off: u32,   // BWD_DATA: first flipped weight of this phase
    split: u32,   // which K split this workgroup computes (its partial sums go to slab `split`)
}

fn gemm_of(mode: u32, z: u32) -> Gemm {
    var f: Gemm;
    f.gm = p.gm;
    f.gk = p.gk;
    f.k_begin = 0u;
    f.k_end = p.gk;
    f.split = 0u;
    switch mode {
        case FWD: {
            f.split = z;
            f.k_begin = z * p.k_split;
            f.k_end = min(p.gk, f.k_begin + p.k_split);
            f.taps_y = p.ks;
            f.taps_x = p.ks;
            f.step = p.stride;
            f.off_y = -i32(p.pad);
            f.off_x = -i32(p.pad);
            f.rows = p.oh;
            f.cols = p.ow;
            f.src_c = p.ci;
            f.src_h = p.h;
            f.src_w = p.w;
        }
        case BWD_DATA: {
            let s = p.stride;
            let phase = z / p.splits;
            f.split = z - phase * p.splits;
            f.py = phase / s;
            f.px = phase - f.py * s;
            let ry = (f.py + p.pad) % s;
            let rx = (f.px + p.pad) % s;
            f.taps_y = taps(ry);
            f.taps_x = taps(rx);
            // Input row s*a + py takes g row a + c - t from tap ry + s*t, c = (py + pad - ry) / s;
            // with the taps reversed (t' = taps - 1 - t) that is row a + c - taps + 1 + t'.
            f.step = 1u;
            f.off_y = i32((f.py + p.pad - ry) / s) - i32(f.taps_y) + 1;
            f.off_x = i32((f.px + p.pad - rx) / s) - i32(f.taps_x) + 1;
            f.rows = select(0u, (p.h - f.py + s - 1u) / s, f.py < p.h);
            f.cols = select(0u, (p.w - f.px + s - 1u) / s, f.px < p.w);
            f.src_c = p.co;
            f.src_h = p.oh;
            f.src_w = p.ow;
            f.gm = p.n * f.rows * f.cols;
            f.gk = p.co * f.taps_y * f.taps_x;
            // A split past this phase's depth (phases have fewer taps) multiplies nothing and
            // stores zeros: its slab still covers the phase's pixels.
            f.k_begin = min(f.gk, f.split * p.k_split);
            f.k_end = min(f.gk, f.k_begin + p.k_split);
            var before = 0u;
            for (var q = 0u; q < phase; q++) {
                let qy = q / s;
                before += taps((qy + p.pad) % s) * taps((q - qy * s + p.pad) % s);
            }
            f.b_off = before * p.ci * p.co;
        }
        default: {
            f.split = z;
            f.k_begin = z * p.k_split;
            f.k_end = min(p.gk, f.k_begin + p.k_split);
        }
    }
    return f;
}

// Per-thread constants of the gather. A thread always loads the same tile row (for A) and the
// same tile column (for B), so the decomposition of its row index m and column index j is done
// once, before the K loop; inside it only the depth index k is decomposed.
struct Gather {
    row_ok: bool,
    col_ok: bool,
    a_base: u32,  // FWD, BWD_DATA: channel 0 of the gathered image; BWD_WEIGHT: co (= m)
    a_y: i32,     // FWD, BWD_DATA: gathered row and column of tap (0, 0)
    a_x: i32,
    b_base: u32,  // FWD, BWD_DATA: start of column j of B; BWD_WEIGHT: c*h*w
    b_y: i32,     // BWD_WEIGHT: ky - pad
    b_x: i32,     // BWD_WEIGHT: kx - pad
    kk: u32,      // FWD, BWD_DATA: taps per channel, taps per row, and their reciprocals;
    kw: u32,      // BWD_WEIGHT: OH*OW and OW (the depth is batch x space)
    inv_kk: f32,
    inv_kw: f32,
}

fn prepare(mode: u32, f: Gemm, m: u32, j: u32) -> Gather {
    var g: Gather;
    g.row_ok = m < f.gm;
    g.col_ok = j < p.gn;
    if (mode == BWD_WEIGHT) {
        g.a_base = m;
        let kk = p.ks * p.ks;
        let c = j / kk;
        let t = j - c * kk;
        let ky = t / p.ks;
        g.b_base = c * p.h * p.w;
        g.b_y = i32(ky) - i32(p.pad);
        g.b_x = i32(t - ky * p.ks) - i32(p.pad);
        g.kk = p.oh * p.ow;
        g.kw = p.ow;
    } else {
        let plane = f.rows * f.cols;
        let n = m / max(plane, 1u);
        let r = m - n * plane;
        let row = r / max(f.cols, 1u);
        g.a_base = n * f.src_c * f.src_h * f.src_w;
        g.a_y = i32(row * f.step) + f.off_y;
        g.a_x = i32((r - row * f.cols) * f.step) + f.off_x;
        g.b_base = f.b_off + j * f.gk;
        g.kk = max(f.taps_y * f.taps_x, 1u);
        g.kw = max(f.taps_x, 1u);
    }
    g.inv_kk = 1.0 / f32(g.kk);
    g.inv_kw = 1.0 / f32(g.kw);
    return g;
}

// Element (iy, ix) of the h x w plane starting at `base` (from src_b if `from_b`), 0 outside it.
fn plane_at(from_b: bool, base: u32, iy: i32, ix: i32, h: u32, w: u32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(h) || ix >= i32(w)) {
        return 0.0;
    }
    let i = base + u32(iy) * w + u32(ix);
    if (from_b) {
        return src_b[i];
    }
    return src_a[i];
}

fn load_a(mode: u32, f: Gemm, g: Gather, k: u32) -> f32 {
    if (mode == BWD_WEIGHT) { // A[co, k] = g[n, co, oy, ox], k = (n, oy, ox)
        let n = div_exact(k, g.kk, g.inv_kk);
        return src_a[(n * p.co + g.a_base) * g.kk + k - n * g.kk];
    }
    // A[m, k] = gathered value at channel c, tap (ky, kx), k = (c, ky, kx)
    let c = div_exact(k, g.kk, g.inv_kk);
    let t = k - c * g.kk;
    let ky = div_exact(t, g.kw, g.inv_kw);
    let kx = t - ky * g.kw;
    return plane_at(false, g.a_base + c * f.src_h * f.src_w, g.a_y + i32(ky), g.a_x + i32(kx), f.src_h, f.src_w);
}

fn load_b(mode: u32, g: Gather, k: u32) -> f32 {
    if (mode == BWD_WEIGHT) { // B[k, j] = x patch value, k = (n, oy, ox)
        let n = div_exact(k, g.kk, g.inv_kk);
        let r = k - n * g.kk;
        let oy = div_exact(r, g.kw, g.inv_kw);
        let ox = r - oy * g.kw;
        return plane_at(true, n * p.ci * p.h * p.w + g.b_base, i32(oy * p.stride) + g.b_y, i32(ox * p.stride) + g.b_x, p.h, p.w);
    }
    return src_b[g.b_base + k];
}

// Splits of K write their partial sums to slabs of the output's size, one after another
// (engine/src/ops/conv2d.rs sums them with reduce.wgsl); unsplit, slab 0 is the output itself.
fn store(mode: u32, f: Gemm, m: u32, j: u32, v: f32) {
    switch mode {
        case FWD: {
            let ohw = p.oh * p.ow;
            let n = m / ohw;
            let r = m - n * ohw;
            var out = v;
            if (p.has_bias != 0u) {
                if (F16 == 1u) {
                    out += bias[2u + j];
                } else {
                    out += bias[j];
                }
            }
            dst[f.split * p.n * p.co * ohw + (n * p.co + j) * ohw + r] = out;
        }
        case BWD_DATA: {
            let plane = f.rows * f.cols;
            let n = m / plane;
            let r = m - n * plane;
            let a = r / f.cols;
            let b = r - a * f.cols;
            dst[f.split * p.n * p.ci * p.h * p.w + (n * p.ci + j) * p.h * p.w + (a * p.stride + f.py) * p.w + b * p.stride + f.px] = v;
        }
        default: {
            dst[(f.split * p.gm + m) * p.gn + j] = v;
        }
    }
}

// ---- f16 operands (F16 = 1) ----------------------------------------------------------------
// Each operand is multiplied by 2^e, e chosen from its largest magnitude (operand_scale.wgsl) so
// that it lands in [2^14, 2^15): under f16's largest finite value (65504) even after rounding,
// and as far above f16's smallest normal (2^-14) as that allows. Scaling by a power of two is
// exact, so the only error is f16's rounding; the output is scaled back by 2^-(eA + eB), exact too.

// Exponents (A, B) of this workgroup's operands, read once per thread in `gemm`.
var<private> operand_exp: vec2<i32>;

// The scale exponent for an operand whose largest magnitude has these bits (0: all zeros, any
// scale does; a subnormal largest magnitude takes the largest scale allowed).
fn scale_exponent(max_bits: u32) -> i32 {
    if (max_bits == 0u) {
        return 0;
    }
    // max in [2^(e - 127), 2^(e - 126)); times 2^(141 - e) it is in [2^14, 2^15).
    let e = i32((max_bits >> 23u) & 0xffu);
    return clamp(141 - e, -126, 126);
}

// 2^k as an f32, for k in [-126, 127].
fn pow2(k: i32) -> f32 {
    return bitcast<f32>(u32(k + 127) << 23u);
}

// x rounded to the nearest f16 value, ties to even, as the hardware conversion does (done in
// integer arithmetic: the rounding of pack2x16float is left to the implementation). Beyond
// f16's range it is infinite; below 2^-14 it is a multiple of 2^-24 (f16 subnormals).
fn round_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let sign = bits & 0x80000000u;
    let mag = bits & 0x7fffffffu;
    if (mag >= 0x7f800000u) {
        return x; // infinity or NaN
    }
    if (mag >= 0x38800000u) { // 2^-14 and above: keep 10 of the 23 mantissa bits
        var r = (mag + 0xfffu + ((mag >> 13u) & 1u)) & 0xffffe000u;
        if (r >= 0x47800000u) { // 65520 and above round past 65504
            r = 0x7f800000u;
        }
        return bitcast<f32>(sign | r);
    }
    let e = mag >> 23u;
    if (e < 102u) { // under 2^-25: rounds to zero
        return bitcast<f32>(sign);
    }
    // mag = m 2^(e - 150) with the implicit bit; in units of 2^-24 that is m >> (126 - e).
    let m = (mag & 0x7fffffu) | 0x800000u;
    let s = 126u - e;
    let q = (m + (1u << (s - 1u)) - 1u + ((m >> s) & 1u)) >> s;
    return bitcast<f32>(sign | bitcast<u32>(f32(q) * pow2(-24)));
}

// A staged operand value (`which`: 0 for A, 1 for B): unchanged in f32, scaled and rounded in f16.
fn operand(v: f32, which: u32) -> f32 {
    if (F16 == 1u) {
        return round_f16(v * pow2(operand_exp[which]));
    }
    return v;
}

// An accumulated output back at the operands' scale.
fn unscaled(v: f32) -> f32 {
    if (F16 == 1u) {
        return v * pow2(-operand_exp.x) * pow2(-operand_exp.y);
    }
    return v;
}

// Double-buffered B tiles: the vec4 slot s of depth row kl is stored at s ^ (kl % 8), spreading
// the sixteen depths one weight load writes over eight banks as the padding does. The XOR
// touches only the low three bits, so a slot stays within its group of sixteen.
fn b_swz(depth: u32, s: u32) -> u32 {
    if (DOUBLE == 1u) {
        return s ^ (depth & 7u);
    }
    return s;
}

fn b_slot(depth: u32, c: u32) -> u32 {
    return depth * BP + b_swz(depth, ((c / 16u) / 4u) * 16u + c % 16u);
}

fn tile_slot(depth: u32, r: u32, per_thread: u32) -> u32 {
    let i = r / 16u;
    return depth * 4u * per_thread + (i / 4u) * 16u + r % 16u;
}

// The four outputs (m, n + 16 e), e = 0..3, of one accumulator.
fn store4(mode: u32, f: Gemm, m: u32, n: u32, v: vec4<f32>) {
    if (m >= f.gm) {
        return;
    }
    for (var e = 0u; e < 4u; e++) {
        if (n + 16u * e < p.gn) {
            store(mode, f, m, n + 16u * e, unscaled(v[e]));
        }
    }
}

// The A value thread `lid` loads for K slice `k0`, its r-th of RM: tile row lid % BM at depth
// lid / BM + (256 / BM) r (zero outside the matrix).
fn fetch_a(mode: u32, f: Gemm, g: Gather, lid: u32, k0: u32, r: u32) -> f32 {
    let k = k0 + lid / BM + (256u / BM) * r;
    if (g.row_ok && k < f.k_end) {
        return load_a(mode, f, g, k);
    }
    return 0.0;
}

fn put_a(lid: u32, buf: u32, r: u32, v: f32) {
    let arow = lid % BM;
    let kl = lid / BM + (256u / BM) * r;
    tile_a[buf * A_TILE + tile_slot(kl, arow, RM)][(arow / 16u) % 4u] = operand(v, 0u);
}

// The B value thread `lid` loads for K slice `k0`, its r-th of RN. Backward-weight gathers B
// from x: consecutive threads take consecutive columns (patches), at depth lid / BN + (256 / BN) r.
// Otherwise B is the (flipped) weight, contiguous along K: sixteen consecutive threads read
// sixteen consecutive depths of one column (64 bytes), column lid / BK + 16 r.
fn fetch_b(mode: u32, f: Gemm, g: Gather, lid: u32, n0: u32, k0: u32, r: u32) -> f32 {
    if (mode == BWD_WEIGHT) {
        let k = k0 + lid / BN + (256u / BN) * r;
        if (g.col_ok && k < f.k_end) {
            return load_b(mode, g, k);
        }
        return 0.0;
    }
    let k = k0 + lid % BK;
    let j = n0 + lid / BK + 16u * r;
    if (j < p.gn && k < f.k_end) {
        return src_b[f.b_off + j * f.gk + k];
    }
    return 0.0;
}

fn put_b(mode: u32, lid: u32, buf: u32, r: u32, v: f32) {
    var kl: u32;
    var col: u32;
    if (mode == BWD_WEIGHT) {
        kl = lid / BN + (256u / BN) * r;
        col = lid % BN;
    } else {
        kl = lid % BK;
        col = lid / BK + 16u * r;
    }
    tile_b[buf * B_TILE + b_slot(kl, col)][(col / 16u) % 4u] = operand(v, 1u);
}

// One K slice's global values of one thread: RM of A, RN of B (named, not an array: every
// access is static, so nothing can spill to memory; the unused ones are compiled out).
struct Slice {
    a0: f32, a1: f32, a2: f32, a3: f32, a4: f32, a5: f32, a6: f32, a7: f32,
    b0: f32, b1: f32, b2: f32, b3: f32, b4: f32, b5: f32, b6: f32, b7: f32,
}

fn fetch_slice(mode: u32, f: Gemm, g: Gather, lid: u32, n0: u32, k0: u32) -> Slice {
    var s: Slice;
    s.a0 = fetch_a(mode, f, g, lid, k0, 0u);
    s.a1 = fetch_a(mode, f, g, lid, k0, 1u);
    s.a2 = fetch_a(mode, f, g, lid, k0, 2u);
    s.a3 = fetch_a(mode, f, g, lid, k0, 3u);
    if (RM == 8u) {
        s.a4 = fetch_a(mode, f, g, lid, k0, 4u);
        s.a5 = fetch_a(mode, f, g, lid, k0, 5u);
        s.a6 = fetch_a(mode, f, g, lid, k0, 6u);
        s.a7 = fetch_a(mode, f, g, lid, k0, 7u);
    }
    s.b0 = fetch_b(mode, f, g, lid, n0, k0, 0u);
    s.b1 = fetch_b(mode, f, g, lid, n0, k0, 1u);
    s.b2 = fetch_b(mode, f, g, lid, n0, k0, 2u);
    s.b3 = fetch_b(mode, f, g, lid, n0, k0, 3u);
    if (RN == 8u) {
        s.b4 = fetch_b(mode, f, g, lid, n0, k0, 4u);
        s.b5 = fetch_b(mode, f, g, lid, n0, k0, 5u);
        s.b6 = fetch_b(mode, f, g, lid, n0, k0, 6u);
        s.b7 = fetch_b(mode, f, g, lid, n0, k0, 7u);
    }
    return s;
}

// Stores a slice into workgroup tile `buf` (0, or 1 when double-buffered).
fn put_slice(mode: u32, lid: u32, buf: u32, s: Slice) {
    put_a(lid, buf, 0u, s.a0);
    put_a(lid, buf, 1u, s.a1);
    put_a(lid, buf, 2u, s.a2);
    put_a(lid, buf, 3u, s.a3);
    if (RM == 8u) {
        put_a(lid, buf, 4u, s.a4);
        put_a(lid, buf, 5u, s.a5);
        put_a(lid, buf, 6u, s.a6);
        put_a(lid, buf, 7u, s.a7);
    }
    put_b(mode, lid, buf, 0u, s.b0);
    put_b(mode, lid, buf, 1u, s.b1);
    put_b(mode, lid, buf, 2u, s.b2);
    put_b(mode, lid, buf, 3u, s.b3);
    if (RN == 8u) {
        put_b(mode, lid, buf, 4u, s.b4);
        put_b(mode, lid, buf, 5u, s.b5);
        put_b(mode, lid, buf, 6u, s.b6);
        put_b(mode, lid, buf, 7u, s.b7);
    }
}

fn gemm(mode: u32, wid: vec3<u32>, lid: u32) {
    if (F16 == 1u) {
        operand_exp = vec2<i32>(scale_exponent(bitcast<u32>(bias[0])), scale_exponent(bitcast<u32>(bias[1])));
    }
    let f = gemm_of(mode, wid.z);
    let tx = lid % 16u;
    let ty = lid / 16u;
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;
    // Accumulator c<r><q>: rows tx + 16 r, columns ty + 64 q + 16 e (e the vec4 component).
    // Named registers, not an array: every access is static, so nothing can spill to memory;
    // the blocks a configuration does not use are compiled out (RM, RN are constants).
    var c00 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);
    // Every A load of this thread hits tile row lid % BM, at depths lid / BM + (256 / BM) r:
    // 256 threads cover the BM x 16 A slice in RM loads (consecutive threads, consecutive pixels).
    let arow = lid % BM;
    let bcol = lid % BN;
    let g = prepare(mode, f, m0 + arow, n0 + bcol);
    // Register prefetch: the next K slice's global loads are issued before this slice's
    // multiply-adds, so their latency hides behind the arithmetic instead of stalling at the top
    // of the next step. Without PREFETCH the slice is loaded at the top of its step instead.
    var next: Slice;
    if (PREFETCH == 1u) {
        next = fetch_slice(mode, f, g, lid, n0, f.k_begin);
    }
    if (DOUBLE == 1u) {
        put_slice(mode, lid, 0u, next);
        workgroupBarrier();
    }
    // The tile being multiplied: always 0 single-buffered; alternating when double-buffered.
    var cur = 0u;
    for (var k0 = f.k_begin; k0 < f.k_end; k0 += BK) {
        if (DOUBLE == 0u) {
            if (PREFETCH == 0u) {
                next = fetch_slice(mode, f, g, lid, n0, k0);
            }
            put_slice(mode, lid, 0u, next);
            workgroupBarrier();
        }
        let kn = k0 + BK;
        if (PREFETCH == 1u && kn < f.k_end) {
            next = fetch_slice(mode, f, g, lid, n0, kn);
        }
        let ab = cur * A_TILE;
        let bb = cur * B_TILE;
        for (var kl = 0u; kl < BK; kl++) {
            let a0 = tile_a[ab + kl * 4u * RM + tx];
            let b0 = tile_b[bb + kl * BP + b_swz(kl, ty)];
            c00 += a0.x * b0; c10 += a0.y * b0; c20 += a0.z * b0; c30 += a0.w * b0;
            if (RN == 8u) {
                let b1 = tile_b[bb + kl * BP + 16u + b_swz(kl, ty)];
                c01 += a0.x * b1; c11 += a0.y * b1; c21 += a0.z * b1; c31 += a0.w * b1;
            }
            if (RM == 8u) {
                let a1 = tile_a[ab + kl * 4u * RM + 16u + tx];
                c40 += a1.x * b0; c50 += a1.y * b0; c60 += a1.z * b0; c70 += a1.w * b0;
                if (RN == 8u) {
                    let b1 = tile_b[bb + kl * BP + 16u + b_swz(kl, ty)];
                    c41 += a1.x * b1; c51 += a1.y * b1; c61 += a1.z * b1; c71 += a1.w * b1;
                }
            }
        }
        // Double-buffered: the next slice goes into the other tile, last read a step ago (every
        // thread passed the barrier since), while slower threads may still read this one.
        if (DOUBLE == 1u) {
            cur = 1u - cur;
            if (kn < f.k_end) {
                put_slice(mode, lid, cur, next);
            }
        }
        workgroupBarrier();
    }
    store4(mode, f, m0 + tx + 0u, n0 + ty + 0u, c00);
    if (RN == 8u) { store4(mode, f, m0 + tx + 0u, n0 + ty + 64u, c01); }
    store4(mode, f, m0 + tx + 16u, n0 + ty + 0u, c10);
    if (RN == 8u) { store4(mode, f, m0 + tx + 16u, n0 + ty + 64u, c11); }
    store4(mode, f, m0 + tx + 32u, n0 + ty + 0u, c20);
    if (RN == 8u) { store4(mode, f, m0 + tx + 32u, n0 + ty + 64u, c21); }
    store4(mode, f, m0 + tx + 48u, n0 + ty + 0u, c30);
    if (RN == 8u) { store4(mode, f, m0 + tx + 48u, n0 + ty + 64u, c31); }
    if (RM == 8u) { store4(mode, f, m0 + tx + 64u, n0 + ty + 0u, c40); }
    if (RM == 8u && RN == 8u) { store4(mode, f, m0 + tx + 64u, n0 + ty + 64u, c41); }
    if (RM == 8u) { store4(mode, f, m0 + tx + 80u, n0 + ty + 0u, c50); }
    if (RM == 8u && RN == 8u) { store4(mode, f, m0 + tx + 80u, n0 + ty + 64u, c51); }
    if (RM == 8u) { store4(mode, f, m0 + tx + 96u, n0 + ty + 0u, c60); }
    if (RM == 8u && RN == 8u) { store4(mode, f, m0 + tx + 96u, n0 + ty + 64u, c61); }
    if (RM == 8u) { store4(mode, f, m0 + tx + 112u, n0 + ty + 0u, c70); }
    if (RM == 8u && RN == 8u) { store4(mode, f, m0 + tx + 112u, n0 + ty + 64u, c71); }
}

@compute @workgroup_size(256)
fn conv2d_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    gemm(FWD, wid, lid);
}

@compute @workgroup_size(256)
fn conv2d_bwd_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    gemm(BWD_DATA, wid, lid);
}

@compute @workgroup_size(256)
fn conv2d_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    gemm(BWD_WEIGHT, wid, lid);
}

// One thread per weight w[co, ci, ky, kx]: its place among the flipped weights of its phase.
@compute @workgroup_size(WG)
fn conv2d_flip_weights(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let kk = p.ks * p.ks;
    if (i >= p.co * p.ci * kk) {
        return;
    }
    let s = p.stride;
    let t = i % kk;
    let ky = t / p.ks;
    let kx = t - ky * p.ks;
    let ci = (i / kk) % p.ci;
    let co = i / (kk * p.ci);
    let ry = ky % s;
    let rx = kx % s;
    let py = (ry + s - p.pad % s) % s;
    let px = (rx + s - p.pad % s) % s;
    let phase = py * s + px;
    var before = 0u;
    for (var q = 0u; q < phase; q++) {
        let qy = q / s;
        before += taps((qy + p.pad) % s) * taps((q - qy * s + p.pad) % s);
    }
    let ny = taps(ry);
    let nx = taps(rx);
    let fy = ny - 1u - ky / s; // reversed tap order
    let fx = nx - 1u - kx / s;
    flipped[before * p.ci * p.co + ((ci * p.co + co) * ny + fy) * nx + fx] = src_a[i];
}

// Backward-data for at most four input channels (the stem: RGB), where a GEMM tile would leave
// all but CI of its columns idle: one thread per input pixel (n, iy, ix) sums, for every tap
// that reaches it, g over the output channels times that tap's weights of its CI channels.
// Consecutive threads read consecutive pixels of g; the weights are the same for all threads.
// bindings: 0 g, 1 w, 2 dx (overwritten)
@compute @workgroup_size(WG)
fn conv2d_bwd_data_narrow(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    let hw = p.h * p.w;
    if (i >= p.n * hw) {
        return;
    }
    let n = i / hw;
    let r = i - n * hw;
    let iy = r / p.w;
    let ix = r - iy * p.w;
    let kk = p.ks * p.ks;
    let ohw = p.oh * p.ow;
    var acc = vec4<f32>(0.0);
    for (var ky = 0u; ky < p.ks; ky++) {
        let ty = i32(iy + p.pad) - i32(ky);
        let oy = u32(max(ty, 0)) / p.stride;
        if (ty < 0 || oy * p.stride != u32(ty) || oy >= p.oh) {
            continue;
        }
        for (var kx = 0u; kx < p.ks; kx++) {
            let tx = i32(ix + p.pad) - i32(kx);
            let ox = u32(max(tx, 0)) / p.stride;
            if (tx < 0 || ox * p.stride != u32(tx) || ox >= p.ow) {
                continue;
            }
            var gi = n * p.co * ohw + oy * p.ow + ox;
            var wi = ky * p.ks + kx;
            for (var co = 0u; co < p.co; co++) {
                let gv = src_a[gi];
                var wv = vec4<f32>(0.0);
                for (var c = 0u; c < p.ci; c++) {
                    wv[c] = src_b[wi + c * kk];
                }
                acc += gv * wv;
                gi += ohw;
                wi += p.ci * kk;
            }
        }
    }
    for (var c = 0u; c < p.ci; c++) {
        dst[(n * p.ci + c) * hw + r] = acc[c];
    }
}
