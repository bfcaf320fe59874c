// attack.wgsl: the element-wise steps of L-inf attacks (FGSM, PGD, APGD) on images in [0, 1].
//
// Entry points (workgroup 256, 1-D grid split over x/y, tail guarded):
//   pgd_project  delta = clamp(delta, -eps, eps); delta = clamp(x + delta, 0, 1) - x;
//                x_adv = x + delta. Used after the random start.
//                0 x, 1 delta (in place), 2 x_adv (overwritten)
//   pgd_step     delta += step * sign(grad), then the same projection as pgd_project.
//                0 x, 1 grad, 2 delta (in place), 3 x_adv (overwritten)
//   apgd_step    the APGD update (Croce and Hein 2020, as the AutoAttack code writes it), image n
//                with its own step size s_n and momentum weight a (1 at the first step, then 0.75):
//                z = P(x_adv + s_n sign(grad)); x_adv' = P(x_adv + a (z - x_adv) + (1 - a)(x_adv - x_old));
//                x_old' = x_adv. P clips to the eps-ball around x, then to [0, 1].
//                0 x, 1 grad, 2 step sizes (N,), 3 x_adv (in place), 4 x_old (in place)
//   select_rows  dst[n, :] = src[n, :] for every image n with mask[n] != 0; others untouched.
//                0 mask (N,) u32, 1 src, 2 dst (in place)
// sign(0) = 0, as torch.sign. Images are rows of `per_image` elements.

struct Params {
    n: u32,
    eps: f32,
    step: f32,       // pgd_step: the step; apgd_step: the momentum weight a
    per_image: u32,  // apgd_step, select_rows: elements of one image
}
var<immediate> p: Params;

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> pr_delta: array<f32>;
@group(0) @binding(2) var<storage, read_write> pr_adv: array<f32>;

@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_delta: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_adv: array<f32>;

fn project(xi: f32, d: f32) -> f32 {
    let dc = clamp(d, -p.eps, p.eps);
    return clamp(xi + dc, 0.0, 1.0) - xi;
}

@compute @workgroup_size(WG)
fn pgd_project(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let d = project(x[i], pr_delta[i]);
    pr_delta[i] = d;
    pr_adv[i] = x[i] + d;
}

@compute @workgroup_size(WG)
fn pgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let d = project(x[i], st_delta[i] + p.step * sign(grad[i]));
    st_delta[i] = d;
    st_adv[i] = x[i] + d;
}

@group(0) @binding(2) var<storage, read> ap_step: array<f32>;
@group(0) @binding(3) var<storage, read_write> ap_adv: array<f32>;
@group(0) @binding(4) var<storage, read_write> ap_old: array<f32>;

fn clip(v: f32, xi: f32) -> f32 {
    return clamp(min(max(v, xi - p.eps), xi + p.eps), 0.0, 1.0);
}

@compute @workgroup_size(WG)
fn apgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    let xi = x[i];
    let cur = ap_adv[i];
    let z = clip(cur + ap_step[i / p.per_image] * sign(grad[i]), xi);
    let a = p.step;
    ap_adv[i] = clip(cur + (z - cur) * a + (cur - ap_old[i]) * (1.0 - a), xi);
    ap_old[i] = cur;
}

@group(0) @binding(0) var<storage, read> sel_mask: array<u32>;
@group(0) @binding(1) var<storage, read> sel_src: array<f32>;
@group(0) @binding(2) var<storage, read_write> sel_dst: array<f32>;

@compute @workgroup_size(WG)
fn select_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = flat_index(gid, nwg);
    if (i >= p.n) { return; }
    if (sel_mask[i / p.per_image] != 0u) {
        sel_dst[i] = sel_src[i];
    }
}
