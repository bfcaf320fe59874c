// conv2d.wgsl: 2-D convolution (square kernel ks, stride, zero padding, no bias, groups 1) as
// implicit GEMM: the im2col matrix is never built; tiles of it are gathered straight from NCHW.
//
// Layouts: x, dx: (N, CI, H, W); w, dw: (CO, CI, ks, ks); y, g: (N, CO, OH, OW).
// One GEMM engine, three index maps (MODE is a compile-time argument, folded after inlining):
//   conv2d_fwd         y  = A (M x K) * B (K x N):  M = N*OH*OW pixels, N = CO, K = CI*ks*ks
//                      A[m, k] = x patch value, B[k, co] = w[co, k]; plus bias[co] if has_bias.
//                      bindings: 0 x, 1 w, 2 y (overwritten), 3 bias (w when unused; the backward
//                      entries share the store code, so they bind a stand-in there too)
//   conv2d_bwd_data    dx = A * B:  M = N*H*W input pixels, N = CI, K = CO*ks*ks
//                      A[m, k] = g at the output pixel that tap k maps input pixel m to (0 if none)
//                      B[k, ci] = w[co, ci, ky, kx].  bindings: 0 g, 1 w, 2 dx (overwritten)
//   conv2d_bwd_weight  dw = A * B:  M = CO, N = CI*ks*ks, K = N*OH*OW (batch and space)
//                      A[co, k] = g[n, co, oy, ox], B[k, j] = x patch value.
//                      Split-K: workgroup z handles K range [z*k_split, (z+1)*k_split) and writes
//                      its partial product to dst[z, co, j]; reduce.wgsl sums the splits (with one
//                      split it is dw itself).  bindings: 0 g, 1 x, 2 partials (overwritten)
// Tiling: a 64x64 output tile per workgroup of 256 threads, K in slices of 16 staged in workgroup
// memory; each thread accumulates a 4x4 register block at rows tx + 16 i, cols ty + 16 j, so
// consecutive threads touch consecutive pixels (coalesced NCHW stores). The tiles are laid out so
// that a thread's four rows (and four columns) are one vec4: per depth step it reads two vec4s
// and does four vec4 multiply-adds. Grid: (ceil(M/64),
// ceil(N/64), splits). Tails in M, N and K are guarded by zero-filled loads and skipped stores.

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
    gm: u32,       // GEMM rows
    gn: u32,       // GEMM cols
    gk: u32,       // GEMM depth
    k_split: u32,  // depth handled by one workgroup along z
    has_bias: u32, // conv2d_fwd: add bias[co] to every output (the dense layers' bias)
    _p1: u32,
}
var<immediate> p: Params;

const FWD: u32 = 0u;
const BWD_DATA: u32 = 1u;
const BWD_WEIGHT: u32 = 2u;

// BM == BN: a thread loads tile row lid % 64 of A and tile column lid % 64 of B (see gemm).
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

@group(0) @binding(0) var<storage, read> src_a: array<f32>;
@group(0) @binding(1) var<storage, read> src_b: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;

// Tiles are stored so that the four rows (columns) one thread multiplies, tx + 16 i (ty + 16 j),
// sit in one vec4: row r of depth kl lives at tile_a[kl * 16 + r % 16][r / 16].
var<workgroup> tile_a: array<vec4<f32>, 256>; // [BK][BM / 4]
var<workgroup> tile_b: array<vec4<f32>, 256>; // [BK][BN / 4]

// Per-thread constants of the gather. A thread always loads the same tile row (for A) and the
// same tile column (for B), so the decomposition of its row index m and column index j is done
// once, before the K loop; inside it only the depth index k is decomposed.
struct Gather {
    row_ok: bool,
    col_ok: bool,
    a_base: u32,  // FWD: n*ci*h*w; BWD_DATA: n*co*oh*ow; BWD_WEIGHT: co (= m)
    a_y: i32,     // FWD: oy*stride - pad; BWD_DATA: iy + pad
    a_x: i32,     // FWD: ox*stride - pad; BWD_DATA: ix + pad
    b_base: u32,  // FWD: j*gk; BWD_DATA: ci (= j); BWD_WEIGHT: c*h*w
    b_y: i32,     // BWD_WEIGHT: ky - pad
    b_x: i32,     // BWD_WEIGHT: kx - pad
}

fn prepare(mode: u32, m: u32, j: u32) -> Gather {
    var g: Gather;
    g.row_ok = m < p.gm;
    g.col_ok = j < p.gn;
    let kk = p.ks * p.ks;
    switch mode {
        case FWD: {
            let ohw = p.oh * p.ow;
            let n = m / ohw;
            let r = m - n * ohw;
            let oy = r / p.ow;
            let ox = r - oy * p.ow;
            g.a_base = n * p.ci * p.h * p.w;
            g.a_y = i32(oy * p.stride) - i32(p.pad);
            g.a_x = i32(ox * p.stride) - i32(p.pad);
            g.b_base = j * p.gk;
        }
        case BWD_DATA: {
            let hw = p.h * p.w;
            let n = m / hw;
            let r = m - n * hw;
            let iy = r / p.w;
            g.a_base = n * p.co * p.oh * p.ow;
            g.a_y = i32(iy + p.pad);
            g.a_x = i32(r - iy * p.w + p.pad);
            g.b_base = j;
        }
        default: {
            g.a_base = m;
            let c = j / kk;
            let t = j - c * kk;
            let ky = t / p.ks;
            g.b_base = c * p.h * p.w;
            g.b_y = i32(ky) - i32(p.pad);
            g.b_x = i32(t - ky * p.ks) - i32(p.pad);
        }
    }
    return g;
}

// x at (row iy, column ix) of the plane starting at `base` (from src_b if `from_b`), 0 in the padding.
fn x_at(from_b: bool, base: u32, iy: i32, ix: i32) -> f32 {
    if (iy < 0 || ix < 0 || iy >= i32(p.h) || ix >= i32(p.w)) {
        return 0.0;
    }
    let i = base + u32(iy) * p.w + u32(ix);
    if (from_b) {
        return src_b[i];
    }
    return src_a[i];
}

fn load_a(mode: u32, g: Gather, k: u32) -> f32 {
    let kk = p.ks * p.ks;
    switch mode {
        case FWD: {
            let c = k / kk;
            let t = k - c * kk;
            let ky = t / p.ks;
            let kx = t - ky * p.ks;
            return x_at(false, g.a_base + c * p.h * p.w, g.a_y + i32(ky), g.a_x + i32(kx));
        }
        case BWD_DATA: {
            let co = k / kk;
            let t = k - co * kk;
            let ky = t / p.ks;
            let kx = t - ky * p.ks;
            let ty = g.a_y - i32(ky);
            let tx = g.a_x - i32(kx);
            if (ty < 0 || tx < 0) { return 0.0; }
            let oy = u32(ty) / p.stride;
            let ox = u32(tx) / p.stride;
            if (oy * p.stride != u32(ty) || ox * p.stride != u32(tx) || oy >= p.oh || ox >= p.ow) {
                return 0.0;
            }
            return src_a[g.a_base + (co * p.oh + oy) * p.ow + ox];
        }
        default: { // BWD_WEIGHT: A[co, k] = g[n, co, oy, ox], k = (n, oy, ox)
            let ohw = p.oh * p.ow;
            let n = k / ohw;
            let r = k - n * ohw;
            return src_a[(n * p.co + g.a_base) * ohw + r];
        }
    }
}

fn load_b(mode: u32, g: Gather, k: u32) -> f32 {
    let kk = p.ks * p.ks;
    switch mode {
        case FWD: {
            return src_b[g.b_base + k];
        }
        case BWD_DATA: {
            let co = k / kk;
            let t = k - co * kk;
            return src_b[(co * p.ci + g.b_base) * kk + t];
        }
        default: { // BWD_WEIGHT: B[k, j] = x patch value, k = (n, oy, ox)
            let ohw = p.oh * p.ow;
            let n = k / ohw;
            let r = k - n * ohw;
            let oy = r / p.ow;
            let ox = r - oy * p.ow;
            return x_at(true, n * p.ci * p.h * p.w + g.b_base, i32(oy * p.stride) + g.b_y, i32(ox * p.stride) + g.b_x);
        }
    }
}

fn store(mode: u32, split: u32, m: u32, j: u32, v: f32) {
    switch mode {
        case FWD: {
            let ohw = p.oh * p.ow;
            let n = m / ohw;
            let r = m - n * ohw;
            var out = v;
            if (p.has_bias != 0u) {
                out += bias[j];
            }
            dst[(n * p.co + j) * ohw + r] = out;
        }
        case BWD_DATA: {
            let hw = p.h * p.w;
            let n = m / hw;
            let r = m - n * hw;
            dst[(n * p.ci + j) * hw + r] = v;
        }
        default: {
            dst[(split * p.gm + m) * p.gn + j] = v;
        }
    }
}

fn gemm(mode: u32, wid: vec3<u32>, lid: u32) {
    let tx = lid % 16u;
    let ty = lid / 16u;
    let m0 = wid.x * BM;
    let n0 = wid.y * BN;
    let k_begin = wid.z * p.k_split;
    let k_end = min(p.gk, k_begin + p.k_split);
    // acc[i][j]: row tx + 16 i, column ty + 16 j.
    var acc = array<vec4<f32>, 4>(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    // Every load of this thread hits tile row lid % 64 of A and tile column lid % 64 of B.
    let lrow = lid % BM;
    let g = prepare(mode, m0 + lrow, n0 + lrow);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        for (var r = 0u; r < 4u; r++) {
            let kl = lid / BM + 4u * r;
            let k = k0 + kl;
            var va = 0.0;
            if (g.row_ok && k < k_end) {
                va = load_a(mode, g, k);
            }
            tile_a[kl * 16u + lrow % 16u][lrow / 16u] = va;
            var vb = 0.0;
            if (g.col_ok && k < k_end) {
                vb = load_b(mode, g, k);
            }
            tile_b[kl * 16u + lrow % 16u][lrow / 16u] = vb;
        }
        workgroupBarrier();
        for (var kl = 0u; kl < BK; kl++) {
            let a = tile_a[kl * 16u + tx];
            let b = tile_b[kl * 16u + ty];
            acc[0] += a.x * b;
            acc[1] += a.y * b;
            acc[2] += a.z * b;
            acc[3] += a.w * b;
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tx + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + ty + 16u * j;
            if (m < p.gm && n < p.gn) {
                store(mode, wid.z, m, n, acc[i][j]);
            }
        }
    }
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
