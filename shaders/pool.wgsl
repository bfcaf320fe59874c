// pool.wgsl: average pooling with a square window k and stride k, no padding (F.avg_pool2d(x, k)).
// Global average pooling is the case k = H = W.
//
// Layouts: x, dx: (N, C, H, W); y, g: (N, C, OH, OW) with OH = H / k, OW = W / k (floor).
// Entry points (workgroup 256, 1-D grid split over x/y, tail guarded, outputs overwritten):
//   avg_pool2d_fwd  y = mean of the k*k window            0 x, 1 y     (n = N*C*OH*OW)
//   avg_pool2d_bwd  dx = g of the window / (k*k), 0 for rows/cols no window covers
//                                                          0 g, 1 dx    (n = N*C*H*W)

struct Params {
    n: u32,
    h: u32,
    w: u32,
    k: u32,
    oh: u32,
    ow: u32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG)
fn avg_pool2d_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let ox = i % p.ow;
    let oy = (i / p.ow) % p.oh;
    let plane = i / (p.ow * p.oh);
    let base = plane * p.h * p.w + oy * p.k * p.w + ox * p.k;
    var acc = 0.0;
    for (var dy = 0u; dy < p.k; dy++) {
        for (var dx = 0u; dx < p.k; dx++) {
            acc += src[base + dy * p.w + dx];
        }
    }
    dst[i] = acc / f32(p.k * p.k);
}

@compute @workgroup_size(WG)
fn avg_pool2d_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let x = i % p.w;
    let y = (i / p.w) % p.h;
    let plane = i / (p.w * p.h);
    let ox = x / p.k;
    let oy = y / p.k;
    if (ox >= p.ow || oy >= p.oh) {
        dst[i] = 0.0;
        return;
    }
    dst[i] = src[plane * p.oh * p.ow + oy * p.ow + ox] / f32(p.k * p.k);
}
