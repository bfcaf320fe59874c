// arith.wgsl: element-wise arithmetic on flat f32 arrays.
//
// Entry points (workgroup WG = 256, 1-D grid split over x/y; the index from grid.wgsl):
//   fill      out[i] = alpha                         bindings: 0 out (overwritten)
//   add       out[i] = a[i] + b[i]                   bindings: 0 a, 1 b, 2 out (overwritten)
//   scale     out[i] = alpha * a[i]                  bindings: 0 a, 1 out (overwritten)
//   mul       out[i] = a[i] * b[i]                   bindings: 0 a, 1 b, 2 out (overwritten)
// Every entry guards the tail (i >= n).

struct Params {
    n: u32,
    alpha: f32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read_write> fill_out: array<f32>;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out2: array<f32>;

@group(0) @binding(1) var<storage, read_write> out1: array<f32>;

@compute @workgroup_size(WG)
fn fill(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    fill_out[i] = p.alpha;
}

@compute @workgroup_size(WG)
fn add(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out2[i] = a[i] + b[i];
}

@compute @workgroup_size(WG)
fn scale(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out1[i] = p.alpha * a[i];
}

@compute @workgroup_size(WG)
fn mul(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    out2[i] = a[i] * b[i];
}
