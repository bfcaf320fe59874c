// attack.wgsl: the element-wise steps of L-inf attacks (FGSM, PGD) on images in [0, 1].
//
// Entry points (workgroup 256, 1-D grid split over x/y, tail guarded):
//   pgd_project  delta = clamp(delta, -eps, eps); delta = clamp(x + delta, 0, 1) - x;
//                x_adv = x + delta. Used after the random start.
//                0 x, 1 delta (in place), 2 x_adv (overwritten)
//   pgd_step     delta += step * sign(grad), then the same projection as pgd_project.
//                0 x, 1 grad, 2 delta (in place), 3 x_adv (overwritten)
// sign(0) = 0, as torch.sign.

struct Params {
    n: u32,
    eps: f32,
    step: f32,
    _p0: u32,
}
var<immediate> p: Params;

const WG: u32 = 256u;

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
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) { return; }
    let d = project(x[i], pr_delta[i]);
    pr_delta[i] = d;
    pr_adv[i] = x[i] + d;
}

@compute @workgroup_size(WG)
fn pgd_step(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p.n) { return; }
    let d = project(x[i], st_delta[i] + p.step * sign(grad[i]));
    st_delta[i] = d;
    st_adv[i] = x[i] + d;
}
