// kl_div.wgsl: the KL divergence between the row softmaxes of two logit matrices, as TRADES uses
// it: L = (1/N) sum_r sum_j p_rj (log p_rj - log q_rj), p = softmax(a_r), q = softmax(b_r)
// (PyTorch's KLDivLoss(reduction='batchmean') of log q against p).
// Layouts: a, b: (N, K) f32 (a: the natural logits, b: the adversarial ones).
// Entry points:
//   kl_div_fwd  one workgroup of RED threads; threads take rows r, r+RED, ...; shared-memory sum.
//               0 a, 1 b, 2 loss (1 value, overwritten)
//   kl_div_bwd  one thread per row (1-D grid split over x/y), writes the row's gradients:
//               da = g/N p (d - sum_j p_j d_j) with d = log p - log q;  db = g/N (q - p).
//               0 a, 1 b, 2 g (1 value), 3 da, 4 db (each written only when its flag is set;
//               a 1-value stand-in otherwise)

struct Params {
    rows: u32,
    cols: u32,
    want: u32,    // bit 0: write da; bit 1: write db
    _p0: u32,
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;

@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> da: array<f32>;
@group(0) @binding(4) var<storage, read_write> db: array<f32>;

// log-sum-exp of row r of a (from_a) or b.
fn lse(from_a: bool, base: u32) -> f32 {
    var mx = -3.4e38;
    for (var j = 0u; j < p.cols; j++) {
        mx = max(mx, select(b[base + j], a[base + j], from_a));
    }
    var s = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        s += exp(select(b[base + j], a[base + j], from_a) - mx);
    }
    return mx + log(s);
}

// RED (the workgroup size) and workgroup_sum come from workgroup_sum.wgsl, prepended.
@compute @workgroup_size(RED)
fn kl_div_fwd(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var r = t; r < p.rows; r += RED) {
        let base = r * p.cols;
        let la = lse(true, base);
        let lb = lse(false, base);
        for (var j = 0u; j < p.cols; j++) {
            let lp = a[base + j] - la;
            acc += exp(lp) * (lp - (b[base + j] - lb));
        }
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        loss[0] = total / f32(p.rows);
    }
}

@compute @workgroup_size(WG_ROWS)
fn kl_div_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let la = lse(true, base);
    let lb = lse(false, base);
    let k = grad[0] / f32(p.rows);
    var mean_d = 0.0;
    for (var j = 0u; j < p.cols; j++) {
        let lp = a[base + j] - la;
        mean_d += exp(lp) * (lp - (b[base + j] - lb));
    }
    for (var j = 0u; j < p.cols; j++) {
        let lp = a[base + j] - la;
        let lq = b[base + j] - lb;
        if ((p.want & 1u) != 0u) {
            da[base + j] = k * exp(lp) * (lp - lq - mean_d);
        }
        if ((p.want & 2u) != 0u) {
            db[base + j] = k * (exp(lq) - exp(lp));
        }
    }
}
