// channel_scale.wgsl: per-(sample, channel) scaling of an NCHW feature map, the CIFS mask z * m.
//
// Layouts: z, out, g, dz: (N, C, H, W) flat; m, dm: (N, C) flat. hw = H * W, nc = N * C.
// Entry points (workgroup 256, 1-D grid split over x/y, tail guarded, outputs overwritten):
//   channel_scale_fwd    out[i] = z[i] * m[i / hw]                 0 z, 1 m, 2 out     (n = N*C*H*W)
//   channel_scale_bwd_z  dz[i]  = g[i] * m[i / hw]                 0 g, 1 m, 2 dz      (n = N*C*H*W)
//   channel_scale_bwd_m  dm[j]  = sum over the hw positions of g * z   0 z, 1 g, 2 dm  (n = N*C)

struct Params {
    n: u32,
    hw: u32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> lhs: array<f32>;
@group(0) @binding(1) var<storage, read> rhs: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn channel_scale_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = lhs[i] * rhs[i / p.hw];
}

@compute @workgroup_size(WG)
fn channel_scale_bwd_z(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out[i] = lhs[i] * rhs[i / p.hw];
}

@compute @workgroup_size(WG)
fn channel_scale_bwd_m(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let j = flat_index(gid, nwg);
    if (j >= p.n) { return; }
    var acc = 0.0;
    let base = j * p.hw;
    for (var s = 0u; s < p.hw; s++) {
        acc += lhs[base + s] * rhs[base + s];
    }
    out[j] = acc;
}
