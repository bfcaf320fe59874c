// optim.wgsl: the in-place updates of the optimizer and of the weight average.
//
// Entry points (workgroup 256, 1-D grid split over x/y, tail guarded):
//   sgd_step    SGD with momentum and weight decay, PyTorch semantics (dampening 0, no Nesterov):
//                 d = g + wd * p;  v = momentum * v + d;  p = p - lr * v
//               (v starts at zero, so the first step's v equals d, as torch's buffer
//               initialisation gives.)
//               0 g (read), 1 param (updated in place), 2 velocity (updated in place)
//   ema_update  exponential moving average of a tensor:
//                 ema = decay * ema + (1 - decay) * w
//               evaluated in this order: c = 1 - decay, then the two products, then their sum.
//               WGSL lets a compiler fuse one product into the sum (a fused multiply-add, one
//               rounding fewer); the op test accepts exactly those evaluations and says which
//               one the adapter used.
//               0 w (read), 1 ema (updated in place)

struct Params {
    n: u32,
    lr: f32,            // sgd_step
    decay: f32,         // sgd_step: the momentum (the velocity's decay); ema_update: the decay
    weight_decay: f32,  // sgd_step
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
    let v = p.decay * velocity[i] + d;
    velocity[i] = v;
    param[i] = param[i] - p.lr * v;
}

@group(0) @binding(0) var<storage, read> ema_w: array<f32>;
@group(0) @binding(1) var<storage, read_write> ema_avg: array<f32>;

@compute @workgroup_size(WG)
fn ema_update(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let c = 1.0 - p.decay;
    ema_avg[i] = p.decay * ema_avg[i] + c * ema_w[i];
}
