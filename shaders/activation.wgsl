// activation.wgsl: point-wise activations and their backward rules, on flat f32 arrays.
//
// Entry points (workgroup 256, 1-D grid split over x/y; every output overwritten, tail guarded):
//   relu_fwd      y = max(x, 0)                                 0 x, 1 y
//   relu_bwd      dx = g * (y > 0)     (uses the forward output) 0 y, 1 g, 2 dx
//   sigmoid_fwd   y = 1 / (1 + exp(-x))                         0 x, 1 y
//   sigmoid_bwd   dx = g * y * (1 - y)                          0 y, 1 g, 2 dx
//   softplus_fwd  y = log(1 + exp(beta x)) / beta, or x where beta x > 20 (PyTorch's threshold)
//                                                               0 x, 1 y
//   softplus_bwd  dx = g * sigmoid(beta x)  (1 where beta x > 20) 0 x, 1 g, 2 dx

struct Params {
    n: u32,
    beta: f32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

const SOFTPLUS_THRESHOLD: f32 = 20.0;

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> dsrc: array<f32>;

// Stable logistic: never exponentiates a large positive number.
fn sigmoid(x: f32) -> f32 {
    if (x >= 0.0) {
        return 1.0 / (1.0 + exp(-x));
    }
    let e = exp(x);
    return e / (1.0 + e);
}

@compute @workgroup_size(WG)
fn relu_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] = max(src[i], 0.0);
}

@compute @workgroup_size(WG)
fn relu_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    dsrc[i] = select(0.0, grad[i], src[i] > 0.0);
}

@compute @workgroup_size(WG)
fn sigmoid_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    dst[i] = sigmoid(src[i]);
}

@compute @workgroup_size(WG)
fn sigmoid_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let y = src[i];
    dsrc[i] = grad[i] * y * (1.0 - y);
}

@compute @workgroup_size(WG)
fn softplus_fwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let z = p.beta * src[i];
    if (z > SOFTPLUS_THRESHOLD) {
        dst[i] = src[i];
    } else {
        // log(1 + e^z) = max(z, 0) + log(1 + e^-|z|): no overflow, no cancellation for z << 0.
        dst[i] = (max(z, 0.0) + log(1.0 + exp(-abs(z)))) / p.beta;
    }
}

@compute @workgroup_size(WG)
fn softplus_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let z = p.beta * src[i];
    dsrc[i] = select(grad[i] * sigmoid(z), grad[i], z > SOFTPLUS_THRESHOLD);
}
