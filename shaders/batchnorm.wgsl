// batchnorm.wgsl: 2-D batch normalisation over NCHW (statistics per channel over N, H, W),
// PyTorch semantics: biased variance normalises, the running variance takes the unbiased one,
// running = (1 - momentum) * running + momentum * batch. The apply step can fuse the residual
// add and the ReLU that follow a ResNet block's batch norms: y = act(BN(x) + residual), and the
// backward folds the ReLU's mask in, so a BN-add-ReLU costs the dispatches of a BN alone.
//
// Layouts: x, y, g, dx, residual: (N, C, H, W) flat, hw = H*W, m = N*hw; per-channel vectors (C,);
// stats (C, 2): (mean, rstd) per channel; coef (C, 4): dx = A g' + B + C x per channel.
// act bits: 1 = ReLU after, 2 = a residual is added before it.
// Entry points:
//   bn_stats       one workgroup of WG per channel (grid C). Two passes (mean, then squared
//                  deviations) for accuracy. Writes stats = (mean, 1/sqrt(var + eps)) and, if
//                  flag != 0, updates running_mean / running_var in place.
//                  0 x, 1 stats, 2 running_mean (rw), 3 running_var (rw)
//   bn_eval_stats  stats = (running_mean, 1/sqrt(running_var + eps)); 1-D over C. Only for the
//                  rare eval-mode backward that needs dgamma or dbeta.
//                  0 running_mean, 1 running_var, 2 stats
//   bn_apply       y = act((x - mean) * rstd * gamma + beta (+ residual)). 1-D over N*C*hw.
//                  0 x, 1 stats, 2 gamma, 3 beta, 4 residual (x when unused), 5 y
//   bn_apply_eval  the same from the running statistics, read directly (eval mode needs no
//                  statistics pass: one dispatch per batch norm).
//                  0 x, 1 running_mean, 2 running_var, 3 gamma, 4 beta, 5 residual, 6 y
//   bn_bwd_reduce  one workgroup per channel: with g' = g * (y > 0) under ReLU (else g):
//                  dbeta = sum g', dgamma = sum g' * xhat, and the channel's coef (train mode:
//                  A = gamma rstd, C = -A rstd dgamma / m, B = -A dbeta / m - C mean).
//                  0 x, 1 g, 2 y, 3 stats, 4 gamma, 5 dgamma, 6 dbeta, 7 coef
//   bn_bwd_data    train mode: dx = A g' + B + C x from coef; dres = g' when act's residual bit
//                  is set. 1-D over N*C*hw.
//                  0 x, 1 g, 2 y, 3 coef, 4 dx, 5 dres (a 1-value stand-in when not written)
//   bn_bwd_data_eval  eval mode: dx = gamma / sqrt(running_var + eps) g'; dres as above.
//                  0 g, 1 y, 2 running_var, 3 gamma, 4 dx, 5 dres
// All outputs are overwritten.

struct Params {
    n: u32,          // N
    c: u32,          // C
    hw: u32,         // H * W
    flag: u32,       // bn_stats: update the running statistics
    eps: f32,
    momentum: f32,
    act: u32,        // bit 0: ReLU; bit 1: residual (bn_bwd_data: write dres)
    _p0: u32,
}
var<immediate> p: Params;

const WG: u32 = 256u;
const RELU: u32 = 1u;
const RESIDUAL: u32 = 2u;

@group(0) @binding(0) var<storage, read> x: array<f32>;

@group(0) @binding(1) var<storage, read_write> st_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;

@group(0) @binding(0) var<storage, read> ev_running_mean: array<f32>;
@group(0) @binding(1) var<storage, read> ev_running_var: array<f32>;
@group(0) @binding(2) var<storage, read_write> ev_stats: array<f32>;

@group(0) @binding(1) var<storage, read> ap_stats: array<f32>;
@group(0) @binding(2) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(3) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(4) var<storage, read> ap_residual: array<f32>;
@group(0) @binding(5) var<storage, read_write> ap_y: array<f32>;

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> bw_y: array<f32>;
@group(0) @binding(3) var<storage, read> bw_stats: array<f32>;
@group(0) @binding(4) var<storage, read> bw_gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> red_dgamma: array<f32>;
@group(0) @binding(6) var<storage, read_write> red_dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> red_coef: array<f32>;

@group(0) @binding(3) var<storage, read> bw_coef: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> dres: array<f32>;

@group(0) @binding(1) var<storage, read> ev_mean: array<f32>;
@group(0) @binding(2) var<storage, read> ev_var: array<f32>;
@group(0) @binding(3) var<storage, read> ev_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ev_beta: array<f32>;
@group(0) @binding(5) var<storage, read> ev_residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> ev_y: array<f32>;

@group(0) @binding(0) var<storage, read> ed_g: array<f32>;
@group(0) @binding(1) var<storage, read> ed_y: array<f32>;
@group(0) @binding(2) var<storage, read> ed_var: array<f32>;
@group(0) @binding(3) var<storage, read> ed_gamma: array<f32>;

var<workgroup> red_a: array<f32, WG>;
var<workgroup> red_b: array<f32, WG>;

fn index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return gid.x + gid.y * nwg.x * WG;
}

// Position of the i-th element (0 <= i < N*hw) of channel c in the NCHW array.
fn at(c: u32, i: u32) -> u32 {
    let n = i / p.hw;
    return (n * p.c + c) * p.hw + (i - n * p.hw);
}

// Tree-sums red_a (and red_b) across the workgroup; the result is in element 0.
fn reduce2(t: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_a[t] += red_a[t + s];
            red_b[t] += red_b[t + s];
        }
        workgroupBarrier();
    }
}

// The gradient arriving before the ReLU: g masked where the output was clipped.
fn pre_act(i: u32) -> f32 {
    if ((p.act & RELU) != 0u && bw_y[i] <= 0.0) {
        return 0.0;
    }
    return g[i];
}

@compute @workgroup_size(WG)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wid.x;
    let m = p.n * p.hw;
    var s = 0.0;
    for (var i = t; i < m; i += WG) {
        s += x[at(c, i)];
    }
    red_a[t] = s;
    red_b[t] = 0.0;
    reduce2(t);
    let mean = red_a[0] / f32(m);
    workgroupBarrier();
    var ss = 0.0;
    for (var i = t; i < m; i += WG) {
        let d = x[at(c, i)] - mean;
        ss += d * d;
    }
    red_a[t] = ss;
    reduce2(t);
    if (t == 0u) {
        let var_b = red_a[0] / f32(m);
        st_stats[2u * c] = mean;
        st_stats[2u * c + 1u] = 1.0 / sqrt(var_b + p.eps);
        if (p.flag != 0u) {
            let var_u = red_a[0] / f32(max(m, 2u) - 1u);
            running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
            running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * var_u;
        }
    }
}

@compute @workgroup_size(WG)
fn bn_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = index(gid, nwg);
    if (c >= p.c) { return; }
    ev_stats[2u * c] = ev_running_mean[c];
    ev_stats[2u * c + 1u] = 1.0 / sqrt(ev_running_var[c] + p.eps);
}

@compute @workgroup_size(WG)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    var v = (x[i] - ap_stats[2u * c]) * ap_stats[2u * c + 1u] * ap_gamma[c] + ap_beta[c];
    if ((p.act & RESIDUAL) != 0u) {
        v += ap_residual[i];
    }
    if ((p.act & RELU) != 0u) {
        v = max(v, 0.0);
    }
    ap_y[i] = v;
}

@compute @workgroup_size(WG)
fn bn_apply_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    var v = (x[i] - ev_mean[c]) / sqrt(ev_var[c] + p.eps) * ev_gamma[c] + ev_beta[c];
    if ((p.act & RESIDUAL) != 0u) {
        v += ev_residual[i];
    }
    if ((p.act & RELU) != 0u) {
        v = max(v, 0.0);
    }
    ev_y[i] = v;
}

@compute @workgroup_size(WG)
fn bn_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wid.x;
    let m = p.n * p.hw;
    let mean = bw_stats[2u * c];
    let rstd = bw_stats[2u * c + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = t; i < m; i += WG) {
        let j = at(c, i);
        let gj = pre_act(j);
        sg += gj;
        sgx += gj * (x[j] - mean) * rstd;
    }
    red_a[t] = sg;
    red_b[t] = sgx;
    reduce2(t);
    if (t == 0u) {
        let dbeta = red_a[0];
        let dgamma = red_b[0];
        red_dbeta[c] = dbeta;
        red_dgamma[c] = dgamma;
        let a = bw_gamma[c] * rstd;
        let cc = -a * rstd * dgamma / f32(m);
        red_coef[4u * c] = a;
        red_coef[4u * c + 1u] = -a * dbeta / f32(m) - cc * mean;
        red_coef[4u * c + 2u] = cc;
        red_coef[4u * c + 3u] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn bn_bwd_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    let gi = pre_act(i);
    if ((p.act & RESIDUAL) != 0u) {
        dres[i] = gi;
    }
    dx[i] = bw_coef[4u * c] * gi + bw_coef[4u * c + 1u] + bw_coef[4u * c + 2u] * x[i];
}

@compute @workgroup_size(WG)
fn bn_bwd_data_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    var gi = ed_g[i];
    if ((p.act & RELU) != 0u && ed_y[i] <= 0.0) {
        gi = 0.0;
    }
    if ((p.act & RESIDUAL) != 0u) {
        dres[i] = gi;
    }
    dx[i] = ed_gamma[c] / sqrt(ed_var[c] + p.eps) * gi;
}
