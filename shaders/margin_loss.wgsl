// margin_loss.wgsl: the Carlini-Wagner margin loss of logits (N, K) against labels (N,) u32,
// as the reference's CW-inf evaluation uses it (summed over the batch):
//   real_r  = logits[r, y_r],  other_r = max over j != y_r of logits[r, j]
//   loss    = -sum_r max(real_r - other_r + confidence, 0)
// Ascending it pushes the true logit below the best other one by `confidence`.
//
// Entry points:
//   margin_loss_fwd  one workgroup of 256; threads take rows r, r+256, ...; shared-memory sum.
//                    0 logits, 1 labels, 2 loss (overwritten, 1 value)
//   margin_loss_bwd  one thread per row (workgroup 64): for rows with a positive margin term,
//                    d/d real = -g, d/d other = +g (other = the first maximising j); 0 elsewhere.
//                    0 logits, 1 labels, 2 g (1 value), 3 dlogits (overwritten)

struct Params {
    rows: u32,
    cols: u32,
    confidence: f32,
    _p0: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;

// Index of the largest logit of row r other than the label (the first one on ties).
fn best_other(r: u32) -> u32 {
    let base = r * p.cols;
    let y = labels[r];
    var best = select(0u, 1u, y == 0u);
    for (var j = 0u; j < p.cols; j++) {
        if (j != y && logits[base + j] > logits[base + best]) { best = j; }
    }
    return best;
}

// RED (the workgroup size) and workgroup_sum come from workgroup_sum.wgsl, prepended.
@compute @workgroup_size(RED)
fn margin_loss_fwd(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var r = t; r < p.rows; r += RED) {
        let base = r * p.cols;
        acc -= max(logits[base + labels[r]] - logits[base + best_other(r)] + p.confidence, 0.0);
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        loss[0] = total;
    }
}

@compute @workgroup_size(WG_ROWS)
fn margin_loss_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let y = labels[r];
    let o = best_other(r);
    let on_hinge = logits[base + y] - logits[base + o] + p.confidence > 0.0;
    for (var j = 0u; j < p.cols; j++) {
        var d = 0.0;
        if (on_hinge && j == y) { d = -grad[0]; }
        if (on_hinge && j == o) { d = grad[0]; }
        dlogits[base + j] = d;
    }
}
