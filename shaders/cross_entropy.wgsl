// cross_entropy.wgsl: mean softmax cross-entropy of logits (N, K) against labels (N,) u32.
//
// Entry points:
//   cross_entropy_fwd  one workgroup of 256 threads. Each thread takes rows r, r+256, ...:
//                      probs[r,:] = softmax(logits[r,:]), loss_r = logsumexp - logits[r, label];
//                      the workgroup sums loss_r in shared memory; loss[0] = weight * sum / N.
//                      0 logits, 1 labels, 2 probs (overwritten), 3 loss (overwritten, 1 value)
//   cross_entropy_bwd  dlogits[r,j] = g[0] * weight * (probs[r,j] - [j == label_r]) / N
//                      workgroup 256, 1-D grid over N*K; 0 probs, 1 labels, 2 g, 3 dlogits

struct Params {
    rows: u32,
    cols: u32,
    weight: f32,   // the loss is weight * mean CE (the joint loss's weights, free)
    _p1: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;

@group(0) @binding(0) var<storage, read> saved_probs: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;

// RED (the workgroup size) and workgroup_sum come from workgroup_sum.wgsl, prepended.
@compute @workgroup_size(RED)
fn cross_entropy_fwd(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var r = t; r < p.rows; r += RED) {
        let base = r * p.cols;
        var mx = logits[base];
        for (var j = 1u; j < p.cols; j++) {
            mx = max(mx, logits[base + j]);
        }
        var sum = 0.0;
        for (var j = 0u; j < p.cols; j++) {
            sum += exp(logits[base + j] - mx);
        }
        for (var j = 0u; j < p.cols; j++) {
            probs[base + j] = exp(logits[base + j] - mx) / sum;
        }
        acc += mx + log(sum) - logits[base + labels[r]];
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        loss[0] = p.weight * total / f32(p.rows);
    }
}

@compute @workgroup_size(WG)
fn cross_entropy_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let j = i % p.cols;
    let onehot = select(0.0, 1.0, labels[r] == j);
    dlogits[i] = grad[0] * p.weight * (saved_probs[i] - onehot) / f32(p.rows);
}
