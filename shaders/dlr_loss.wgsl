// dlr_loss.wgsl: the Difference-of-Logits-Ratio loss of Croce and Hein (2020), summed over the
// batch, and its gradient. With pi_1 >= pi_2 >= ... the classes sorted by logit:
//   untargeted  L_r = -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12)
//   targeted    L_r = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)      (target t)
// Layouts: logits (N, K) f32, labels (N,) u32, targets (N,) u32 (read only when targeted; bind the
// labels there otherwise).
// Entry points:
//   dlr_loss_fwd  one workgroup of RED threads; threads take rows r, r+RED, ...; shared-memory sum.
//                 0 logits, 1 labels, 2 targets, 3 loss (1 value, overwritten)
//   dlr_loss_bwd  one thread per row (1-D grid split over x/y), writes its whole row:
//                 dz_j = g * (-(dnum/dz_j) / d + num / d^2 * (dd/dz_j)).
//                 0 logits, 1 labels, 2 targets, 3 g (1 value), 4 dlogits (overwritten)

struct Params {
    rows: u32,
    cols: u32,
    targeted: u32,
    _p0: u32,
}
var<immediate> p: Params;

const TINY: f32 = 1e-12;

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;

@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;

// The four largest logits' classes of row r, largest first (ties: the lower index first).
fn top4(r: u32) -> vec4<u32> {
    let base = r * p.cols;
    var best = vec4<u32>(0u, 0u, 0u, 0u);
    var n = 0u;
    for (var j = 0u; j < p.cols; j++) {
        let v = logits[base + j];
        // Insertion into the sorted prefix best[0..min(n, 4)].
        var pos = min(n, 4u);
        for (var q = 0u; q < min(n, 4u); q++) {
            if (v > logits[base + best[q]]) {
                pos = q;
                break;
            }
        }
        if (pos < 4u) {
            for (var q = 3u; q > pos; q--) {
                best[q] = best[q - 1u];
            }
            best[pos] = j;
        }
        n++;
    }
    return best;
}

// (num, d, the class subtracted in num) of row r.
struct Parts {
    num: f32,
    d: f32,
    other: u32,
    top: vec4<u32>,
}

fn parts(r: u32) -> Parts {
    let base = r * p.cols;
    let y = labels[r];
    let t = top4(r);
    var out: Parts;
    out.top = t;
    if (p.targeted != 0u) {
        out.other = targets[r];
        out.d = logits[base + t[0]] - 0.5 * (logits[base + t[2]] + logits[base + t[3]]) + TINY;
    } else {
        out.other = select(t[0], t[1], t[0] == y);
        out.d = logits[base + t[0]] - logits[base + t[2]] + TINY;
    }
    out.num = logits[base + y] - logits[base + out.other];
    return out;
}

// RED (the workgroup size) and workgroup_sum come from workgroup_sum.wgsl, prepended.
@compute @workgroup_size(RED)
fn dlr_loss_fwd(@builtin(local_invocation_index) t: u32) {
    var acc = 0.0;
    for (var r = t; r < p.rows; r += RED) {
        let q = parts(r);
        acc -= q.num / q.d;
    }
    let total = workgroup_sum(t, acc);
    if (t == 0u) {
        loss[0] = total;
    }
}

@compute @workgroup_size(WG_ROWS)
fn dlr_loss_bwd(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let r = row_index(gid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let y = labels[r];
    let q = parts(r);
    let g = grad[0];
    let scale = q.num / (q.d * q.d);
    for (var j = 0u; j < p.cols; j++) {
        let dnum = select(0.0, 1.0, j == y) - select(0.0, 1.0, j == q.other);
        var dd = select(0.0, 1.0, j == q.top[0]);
        if (p.targeted != 0u) {
            dd -= 0.5 * (select(0.0, 1.0, j == q.top[2]) + select(0.0, 1.0, j == q.top[3]));
        } else {
            dd -= select(0.0, 1.0, j == q.top[2]);
        }
        dlogits[base + j] = g * (-dnum / q.d + scale * dd);
    }
}
