// optim.wgsl: SGD with momentum and weight decay, PyTorch semantics (dampening 0, no Nesterov):
//   d = g + wd * p;  v = momentum * v + d;  p = p - lr * v
// (v starts at zero, so the first step's v equals d, as torch's buffer initialisation gives.)
//
// Entry point sgd_step: workgroup 256, 1-D grid split over x/y, tail guarded.
//   0 g (read), 1 param (updated in place), 2 velocity (updated in place)

struct Params {
    n: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> grad: array<f32>;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> velocity: array<f32>;

@compute @workgroup_size(WG)
fn sgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let d = grad[i] + p.weight_decay * param[i];
    let v = p.momentum * velocity[i] + d;
    velocity[i] = v;
    param[i] = param[i] - p.lr * v;
}
