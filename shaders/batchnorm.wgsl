// batchnorm.wgsl: 2-D batch normalisation over NCHW (statistics per channel over N, H, W),
// PyTorch semantics: biased variance normalises, the running variance takes the unbiased one,
// running = (1 - momentum) * running + momentum * batch.
//
// Layouts: x, y, g, dx: (N, C, H, W) flat, hw = H*W, m = N*hw; per-channel vectors (C,).
// Entry points:
//   bn_stats       one workgroup of 256 per channel (grid C). Two passes (mean, then squared
//                  deviations) for accuracy. Writes mean, rstd = 1/sqrt(var + eps) and, if
//                  update_running != 0, updates running_mean / running_var in place.
//                  0 x, 1 mean, 2 rstd, 3 running_mean (rw), 4 running_var (rw)
//   bn_eval_stats  mean = running_mean, rstd = 1/sqrt(running_var + eps); 1-D over C.
//                  0 running_mean, 1 running_var, 2 mean, 3 rstd
//   bn_apply       y = (x - mean) * rstd * gamma + beta.
//                  workgroup 256, 1-D grid split over x/y over N*C*hw.
//                  0 x, 1 mean, 2 rstd, 3 gamma, 4 beta, 5 y
//   bn_bwd_reduce  one workgroup per channel: dbeta = sum g, dgamma = sum g * xhat.
//                  0 x, 1 g, 2 mean, 3 rstd, 4 dgamma, 5 dbeta
//   bn_bwd_data    train: dx = gamma * rstd * (g - dbeta / m - xhat * dgamma / m)
//                  eval (train == 0): dx = gamma * rstd * g. 1-D grid over N*C*hw.
//                  0 x, 1 g, 2 mean, 3 rstd, 4 gamma, 5 dgamma, 6 dbeta, 7 dx
// All outputs are overwritten.

struct Params {
    n: u32,          // N
    c: u32,          // C
    hw: u32,         // H * W
    flag: u32,       // bn_stats: update_running; bn_bwd_data: train
    eps: f32,
    momentum: f32,
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

const WG: u32 = 256u;

@group(0) @binding(0) var<storage, read> x: array<f32>;

@group(0) @binding(1) var<storage, read_write> st_mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_rstd: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;

@group(0) @binding(0) var<storage, read> ev_running_mean: array<f32>;
@group(0) @binding(1) var<storage, read> ev_running_var: array<f32>;
@group(0) @binding(2) var<storage, read_write> ev_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> ev_rstd: array<f32>;

@group(0) @binding(1) var<storage, read> ap_mean: array<f32>;
@group(0) @binding(2) var<storage, read> ap_rstd: array<f32>;
@group(0) @binding(3) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(4) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> ap_y: array<f32>;

@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> bw_mean: array<f32>;
@group(0) @binding(3) var<storage, read> bw_rstd: array<f32>;
@group(0) @binding(4) var<storage, read_write> red_dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> red_dbeta: array<f32>;

@group(0) @binding(4) var<storage, read> bw_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> bw_dgamma: array<f32>;
@group(0) @binding(6) var<storage, read> bw_dbeta: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;

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
        st_mean[c] = mean;
        st_rstd[c] = 1.0 / sqrt(var_b + p.eps);
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
    ev_mean[c] = ev_running_mean[c];
    ev_rstd[c] = 1.0 / sqrt(ev_running_var[c] + p.eps);
}

@compute @workgroup_size(WG)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    ap_y[i] = (x[i] - ap_mean[c]) * ap_rstd[c] * ap_gamma[c] + ap_beta[c];
}

@compute @workgroup_size(WG)
fn bn_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let c = wid.x;
    let m = p.n * p.hw;
    let mean = bw_mean[c];
    let rstd = bw_rstd[c];
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = t; i < m; i += WG) {
        let j = at(c, i);
        sg += g[j];
        sgx += g[j] * (x[j] - mean) * rstd;
    }
    red_a[t] = sg;
    red_b[t] = sgx;
    reduce2(t);
    if (t == 0u) {
        red_dbeta[c] = red_a[0];
        red_dgamma[c] = red_b[0];
    }
}

@compute @workgroup_size(WG)
fn bn_bwd_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = index(gid, nwg);
    if (i >= p.n * p.c * p.hw) { return; }
    let c = (i / p.hw) % p.c;
    let k = bw_gamma[c] * bw_rstd[c];
    if (p.flag == 0u) {
        dx[i] = k * g[i];
        return;
    }
    let m = f32(p.n * p.hw);
    let xhat = (x[i] - bw_mean[c]) * bw_rstd[c];
    dx[i] = k * (g[i] - bw_dbeta[c] / m - xhat * bw_dgamma[c] / m);
}
