// fab.wgsl: the L-inf step of FAB (Croce and Hein 2020), as AutoAttack's fab_base.py and
// fab_projections.py write it. Images are rows of `cols` elements in [0, 1].
//
// The projection of a point t onto the hyperplane {z : <w, z> = b} intersected with the box
// [0, 1]^cols, smallest in L-inf (AutoAttack's projection_linf): with c = <w, t> - b and
// w' = sign(c) w (sign +1 at c = 0), every coordinate moves towards the side of the box that
// lowers <w', z>, by at most its room p_i (t_i where w'_i > 0, 1 - t_i where w'_i < 0):
//   d_i = -sign(w'_i) min(lam, p_i), and d_i = 0 where w_i = 0,
// lam >= 0 solving G(lam) = |c| for G(lam) = sum_i |w_i| min(lam, p_i), which is continuous,
// piecewise linear and non-decreasing, with breakpoints at the p_i. When |c| >= G(max p) the
// plane is out of the box's reach and every coordinate goes all the way (lam = max p).
// AutoAttack finds lam's segment by sorting p, prefix sums and a binary search over the sorted
// breakpoints; here it is found by bisection on lam itself (a non-negative float orders as its
// bits: 31 halvings of [0, bits(max p)] leave lo, hi one bit apart), each G a workgroup sum, then
// on that segment lam = (|c| - sum_{p_i <= lo} |w_i| p_i) / sum_{p_i > lo} |w_i|, as AutoAttack's
// (b - sb[lb]) / (-s[lb]). Same lam, no sort: no workgroup memory of the image's size.
//
// Entry points (one workgroup of FT threads per image, grid x by y over the images, guarded):
//   project_linf  d = the projection's step for each row.
//                 0 points (N, cols), 1 points again (unused), 2 w (N, cols), 3 b (N,),
//                 4 d (N, cols, overwritten)
//   fab_step      one FAB iteration for target-versus-label hyperplanes: with df = z_t - z_y (the
//                 logit difference, from the logits and the direction rows that hold +1 at the
//                 target and -1 at the label) and g its input gradient at x1, the plane
//                 {z : df + <g, z - x1> = 0}; d1, d2 the projections of x1 and of the clean x0 on
//                 it, a_k = max(max |d_k|, 1e-8), alpha = clamp(a1 / (a1 + a2), 0, alpha_max):
//                 x1' = clamp((x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha, 0, 1), and
//                 norm = max |x1' - x0| per image.
//                 0 x1, 1 x0, 2 g, 3 logits (N, classes), 4 direction (N, classes),
//                 5 x1' (overwritten), 6 norms (N,) (overwritten)
//   fab_shrink    the backward step on the rows whose mask is set: x1 = x0 + beta (x1 - x0).
//                 1-D grid of WG threads, one per element.
//                 0 mask (N,) u32, 1 x0, 2 x1 (in place)

struct Params {
    rows: u32,
    cols: u32,
    classes: u32,
    _p0: u32,
    eta: f32,
    alpha_max: f32,
    beta: f32,
    _p1: f32,
}
var<immediate> p: Params;

// Threads of a one-workgroup-per-image kernel.
const FT: u32 = 256u;
// Halvings of lam's bit range: bits(max p) < 2^31 for any finite non-negative max p.
const HALVINGS: u32 = 31u;

@group(0) @binding(0) var<storage, read> pa: array<f32>;
@group(0) @binding(1) var<storage, read> pb: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;

@group(0) @binding(3) var<storage, read> plane_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> d_out: array<f32>;

@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> direction: array<f32>;
@group(0) @binding(5) var<storage, read_write> x1_out: array<f32>;
@group(0) @binding(6) var<storage, read_write> norms: array<f32>;

// Workgroup reductions of two values at once.
const SUM_SUM: u32 = 0u;
const SUM_MAX: u32 = 1u;
const MAX_MAX: u32 = 2u;
var<workgroup> lanes: array<vec2<f32>, FT>;

fn combine(a: vec2<f32>, b: vec2<f32>, kind: u32) -> vec2<f32> {
    if (kind == SUM_SUM) {
        return a + b;
    }
    if (kind == SUM_MAX) {
        return vec2<f32>(a.x + b.x, max(a.y, b.y));
    }
    return max(a, b);
}

// Every thread's `v` combined over the workgroup; every thread gets the result. Call from
// uniform control flow. The last barrier keeps the next call from overwriting lanes[0] before
// every thread has read it.
fn reduce(lid: u32, v: vec2<f32>, kind: u32) -> vec2<f32> {
    lanes[lid] = v;
    workgroupBarrier();
    for (var s = FT / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            lanes[lid] = combine(lanes[lid], lanes[lid + s], kind);
        }
        workgroupBarrier();
    }
    let out = lanes[0];
    workgroupBarrier();
    return out;
}

fn image_row(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// Element i of point set `which` (0: binding 0, 1: binding 1).
fn point(which: u32, i: u32) -> f32 {
    if (which == 0u) {
        return pa[i];
    }
    return pb[i];
}

// The room of a coordinate at t whose sign-corrected weight is wf: how far it can move towards
// the side of the box that lowers <w', z>.
fn room(t: f32, wf: f32) -> f32 {
    return select(t, 1.0 - t, wf < 0.0);
}

// The projection's move of one coordinate (t, w) given the row's sign and lam.
fn move_of(t: f32, wi: f32, flip: f32, lam: f32) -> f32 {
    let wf = flip * wi;
    let m = min(lam, room(t, wf));
    return select(0.0, select(-m, m, wf < 0.0), wi != 0.0);
}

fn sign_of(c: f32) -> f32 {
    return select(-1.0, 1.0, c >= 0.0);
}

// lam of the projection of point set `which`, row at `base`, whose residual is c = <w, t> - b.
fn solve_lambda(lid: u32, base: u32, which: u32, c: f32) -> f32 {
    let flip = sign_of(c);
    let need = abs(c);
    var acc = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < p.cols; i += FT) {
        let wi = w[base + i];
        let r = room(point(which, base + i), flip * wi);
        acc = vec2<f32>(acc.x + abs(wi) * r, max(acc.y, r));
    }
    let reach = reduce(lid, acc, SUM_MAX); // (G(max p), max p)
    var lo = 0u;
    var hi = bitcast<u32>(max(reach.y, 0.0));
    for (var k = 0u; k < HALVINGS; k++) {
        let mid = lo + (hi - lo) / 2u;
        let lam = bitcast<f32>(mid);
        var g = 0.0;
        for (var i = lid; i < p.cols; i += FT) {
            let wi = w[base + i];
            g += abs(wi) * min(lam, room(point(which, base + i), flip * wi));
        }
        if (reduce(lid, vec2<f32>(g, 0.0), SUM_SUM).x <= need) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let lam_lo = bitcast<f32>(lo);
    var parts = vec2<f32>(0.0, 0.0); // (sum |w| p over the coordinates that reach their side, sum |w| over the rest)
    for (var i = lid; i < p.cols; i += FT) {
        let wi = w[base + i];
        let r = room(point(which, base + i), flip * wi);
        if (r <= lam_lo) {
            parts.x += abs(wi) * r;
        } else {
            parts.y += abs(wi);
        }
    }
    let s = reduce(lid, parts, SUM_SUM);
    let lam = max(select(lam_lo, (need - s.x) / s.y, s.y > 0.0), 0.0);
    return select(lam, reach.y, need >= reach.x);
}

@compute @workgroup_size(FT)
fn project_linf(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = image_row(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var acc = 0.0;
    for (var i = lid; i < p.cols; i += FT) {
        acc += w[base + i] * pa[base + i];
    }
    let c = reduce(lid, vec2<f32>(acc, 0.0), SUM_SUM).x - plane_b[r];
    let lam = solve_lambda(lid, base, 0u, c);
    let flip = sign_of(c);
    for (var i = lid; i < p.cols; i += FT) {
        d_out[base + i] = move_of(pa[base + i], w[base + i], flip, lam);
    }
}

@compute @workgroup_size(FT)
fn fab_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = image_row(wid, nwg);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var df = 0.0;
    for (var k = 0u; k < p.classes; k++) {
        df += direction[r * p.classes + k] * logits[r * p.classes + k];
    }
    // Residuals of the two points: c1 = <g, x1> - b = df; c0 = <g, x0 - x1> + df.
    var acc = 0.0;
    for (var i = lid; i < p.cols; i += FT) {
        acc += w[base + i] * (pb[base + i] - pa[base + i]);
    }
    let c1 = df;
    let c0 = reduce(lid, vec2<f32>(acc, 0.0), SUM_SUM).x + df;
    let lam1 = solve_lambda(lid, base, 0u, c1);
    let lam0 = solve_lambda(lid, base, 1u, c0);
    let f1 = sign_of(c1);
    let f0 = sign_of(c0);
    var m = vec2<f32>(0.0, 0.0);
    for (var i = lid; i < p.cols; i += FT) {
        let wi = w[base + i];
        m = max(m, abs(vec2<f32>(move_of(pa[base + i], wi, f1, lam1), move_of(pb[base + i], wi, f0, lam0))));
    }
    let a = max(reduce(lid, m, MAX_MAX), vec2<f32>(1e-8, 1e-8));
    let alpha = clamp(a.x / (a.x + a.y), 0.0, p.alpha_max);
    var norm = 0.0;
    for (var i = lid; i < p.cols; i += FT) {
        let wi = w[base + i];
        let x1 = pa[base + i];
        let x0 = pb[base + i];
        let d1 = move_of(x1, wi, f1, lam1);
        let d0 = move_of(x0, wi, f0, lam0);
        let v = clamp((x1 + p.eta * d1) * (1.0 - alpha) + (x0 + d0 * p.eta) * alpha, 0.0, 1.0);
        x1_out[base + i] = v;
        norm = max(norm, abs(v - x0));
    }
    let largest = reduce(lid, vec2<f32>(norm, 0.0), MAX_MAX).x;
    if (lid == 0u) {
        norms[r] = largest;
    }
}

@group(0) @binding(0) var<storage, read> sh_mask: array<u32>;
@group(0) @binding(1) var<storage, read> sh_x0: array<f32>;
@group(0) @binding(2) var<storage, read_write> sh_x1: array<f32>;

@compute @workgroup_size(WG)
fn fab_shrink(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.rows * p.cols) { return; }
    if (sh_mask[i / p.cols] != 0u) {
        sh_x1[i] = sh_x0[i] + (sh_x1[i] - sh_x0[i]) * p.beta;
    }
}
