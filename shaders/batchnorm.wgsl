// batchnorm.wgsl: 2-D batch normalisation over NCHW (statistics per channel over N, H, W),
// PyTorch semantics: biased variance normalises, the running variance takes the unbiased one,
// running = (1 - momentum) * running + momentum * batch. The apply step can fuse the residual
// add and the ReLU that follow a ResNet block's batch norms: y = act(BN(x) + residual), and the
// backward folds the ReLU's mask in, so a BN-add-ReLU costs the dispatches of a BN alone.
//
// Layouts: x, y, g, dx, residual: (N, C, H, W) flat, hw = H*W, m = N*hw; per-channel vectors (C,);
// stats (C, 2): (mean, rstd) per channel; coef (C, 4): dx = A g' + B + C x per channel;
// partials (C, chunks, 2). act bits: 1 = ReLU after, 2 = a residual is added before it.
//
// The per-channel reductions run on `chunks` workgroups per channel (grid (C, chunks)), chunk s
// taking samples [s per, min(N, (s + 1) per)): one workgroup per channel would leave most of a
// large GPU idle at the wide early layers (64 channels of 131 072 values at batch 128). With one
// chunk a reduction writes its results directly; with more, each writes its chunk's partials and
// a one-thread-per-channel combine finishes (a dispatch more, on C values). The workgroup sum
// inside a reduction, reduce2, is prepended: a tree in workgroup memory (reduce2_tree.wgsl) or
// subgroup operations (reduce2_subgroups.wgsl), one compiled family each.
// The element-wise passes run on grids (ceil(N*hw / WG), C): the channel is the workgroup's row,
// an element's sample is split off its index by div_exact (div_exact.wgsl), no integer division.
// Entry points:
//   bn_stats       grid (C, chunks): per chunk, two passes (its mean, then the squared
//                  deviations from it) for accuracy. One chunk: writes stats = (mean,
//                  1/sqrt(var + eps)) and, if flag != 0, updates running_mean / running_var in
//                  place; several: writes (mean, M2) of the chunk to partials instead.
//                  0 x, 1 stats (or partials), 2 running_mean (rw), 3 running_var (rw)
//   bn_stats_combine  1-D over C: the chunks' (mean, M2) combined exactly (Chan et al.'s pairwise
//                  update, in chunk order), then what bn_stats writes with one chunk.
//                  0 partials, 1 stats, 2 running_mean (rw), 3 running_var (rw)
//   bn_eval_stats  stats = (running_mean, 1/sqrt(running_var + eps)); 1-D over C. Only for the
//                  rare eval-mode backward that needs dgamma or dbeta.
//                  0 running_mean, 1 running_var, 2 stats
//   bn_apply       y = act((x - mean) * rstd * gamma + beta (+ residual)). Grid (N*hw / WG, C).
//                  0 x, 1 stats, 2 gamma, 3 beta, 4 residual (x when unused), 5 y
//   bn_apply_eval  the same from the running statistics, read directly (eval mode needs no
//                  statistics pass: one dispatch per batch norm).
//                  0 x, 1 running_mean, 2 running_var, 3 gamma, 4 beta, 5 residual, 6 y
//   bn_bwd_reduce  grid (C, chunks): with g' = g * (y > 0) under ReLU (else g): dbeta = sum g',
//                  dgamma = sum g' * xhat, and the channel's coef (train mode: A = gamma rstd,
//                  C = -A rstd dgamma / m, B = -A dbeta / m - C mean). Several chunks: each
//                  writes its (sum g', sum g' xhat) to partials (bound at 7) instead.
//                  0 x, 1 g, 2 y, 3 stats, 4 gamma, 5 dgamma, 6 dbeta, 7 coef (or partials)
//   bn_bwd_combine 1-D over C: the chunks' sums added in chunk order, then what bn_bwd_reduce
//                  writes with one chunk.  0 partials, 1 stats, 2 gamma, 3 dgamma, 4 dbeta, 5 coef
//   bn_bwd_data    train mode: dx = A g' + B + C x from coef; dres = g' when act's residual bit
//                  is set. Grid (N*hw / WG, C).
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
    chunks: u32,     // reductions: workgroups per channel
    per: u32,        // reductions: samples per chunk
    inv_hw: f32,     // 1 / hw, for div_exact
    _p0: u32,
    _p1: u32,
}
var<immediate> p: Params;

const RELU: u32 = 1u;
const RESIDUAL: u32 = 2u;

@group(0) @binding(0) var<storage, read> x: array<f32>;

@group(0) @binding(1) var<storage, read_write> st_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_var: array<f32>;

@group(0) @binding(0) var<storage, read> partials: array<f32>;

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

@group(0) @binding(1) var<storage, read> cb_stats: array<f32>;
@group(0) @binding(2) var<storage, read> cb_gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> cb_dgamma: array<f32>;
@group(0) @binding(4) var<storage, read_write> cb_dbeta: array<f32>;
@group(0) @binding(5) var<storage, read_write> cb_coef: array<f32>;

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

// Element j (j < N hw) of channel c: its place in the NCHW array, the sample split off by
// div_exact (N hw < 2^24: the grid's x dimension of 65 535 workgroups already bounds it).
fn chan_at(c: u32, j: u32) -> u32 {
    let n = div_exact(j, p.hw, p.inv_hw);
    return (n * p.c + c) * p.hw + j - n * p.hw;
}

// The samples [n0, n1) of reduction chunk s.
fn chunk(s: u32) -> vec2<u32> {
    let n0 = s * p.per;
    return vec2<u32>(n0, min(p.n, n0 + p.per));
}

// A thread's walk over one channel's values in a chunk: element t, t + WG, ... as (plane, offset
// within it). WG = q hw + r, so a step adds q planes and r values and carries at most one plane:
// no division in the loop, whatever hw (16 at ResNet's layer4, 1024 at layer1).
struct Walk {
    plane: u32,
    off: u32,
    q: u32,
    r: u32,
}

fn walk_from(t: u32) -> Walk {
    var w: Walk;
    w.q = WG / p.hw;
    w.r = WG - w.q * p.hw;
    w.plane = t / p.hw;
    w.off = t - w.plane * p.hw;
    return w;
}

fn walk_next(w0: Walk) -> Walk {
    var w = w0;
    w.off += w.r;
    w.plane += w.q;
    if (w.off >= p.hw) {
        w.off -= p.hw;
        w.plane += 1u;
    }
    return w;
}

// The gradient arriving before the ReLU: g masked where the output was clipped.
fn pre_act(i: u32) -> f32 {
    if ((p.act & RELU) != 0u && bw_y[i] <= 0.0) {
        return 0.0;
    }
    return g[i];
}

// Channel c's statistics from the mean and the sum of squared deviations over all m values.
fn finish_stats(c: u32, mean: f32, m2: f32) {
    let m = p.n * p.hw;
    st_stats[2u * c] = mean;
    st_stats[2u * c + 1u] = 1.0 / sqrt(m2 / f32(m) + p.eps);
    if (p.flag != 0u) {
        let var_u = m2 / f32(max(m, 2u) - 1u);
        running_mean[c] = (1.0 - p.momentum) * running_mean[c] + p.momentum * mean;
        running_var[c] = (1.0 - p.momentum) * running_var[c] + p.momentum * var_u;
    }
}

@compute @workgroup_size(WG)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, ids: ReduceIds) {
    let t = ids.t;
    let c = wid.x;
    let r = chunk(wid.y);
    let planes = r.y - r.x;
    let base = r.x * p.c + c; // plane index of (sample n0, channel c); sample n is base + (n - n0) C
    var s = 0.0;
    for (var w = walk_from(t); w.plane < planes; w = walk_next(w)) {
        s += x[(base + w.plane * p.c) * p.hw + w.off];
    }
    red_a[t] = s;
    red_b[t] = 0.0;
    reduce2(ids);
    let mean = red_a[0] / f32(planes * p.hw);
    workgroupBarrier();
    var ss = 0.0;
    for (var w = walk_from(t); w.plane < planes; w = walk_next(w)) {
        let d = x[(base + w.plane * p.c) * p.hw + w.off] - mean;
        ss += d * d;
    }
    red_a[t] = ss;
    reduce2(ids);
    if (t == 0u) {
        if (p.chunks == 1u) {
            finish_stats(c, mean, red_a[0]);
        } else {
            st_stats[2u * (c * p.chunks + wid.y)] = mean;
            st_stats[2u * (c * p.chunks + wid.y) + 1u] = red_a[0];
        }
    }
}

@compute @workgroup_size(WG)
fn bn_stats_combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) { return; }
    var count = 0.0;
    var mean = 0.0;
    var m2 = 0.0;
    for (var s = 0u; s < p.chunks; s++) {
        let r = chunk(s);
        let nb = f32((r.y - r.x) * p.hw);
        let mb = partials[2u * (c * p.chunks + s)];
        let total = count + nb;
        let d = mb - mean;
        mean += d * (nb / total);
        m2 += partials[2u * (c * p.chunks + s) + 1u] + d * d * (count * nb / total);
        count = total;
    }
    finish_stats(c, mean, m2);
}

@compute @workgroup_size(WG)
fn bn_eval_stats(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) { return; }
    ev_stats[2u * c] = ev_running_mean[c];
    ev_stats[2u * c + 1u] = 1.0 / sqrt(ev_running_var[c] + p.eps);
}

@compute @workgroup_size(WG)
fn bn_apply(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.y;
    if (gid.x >= p.n * p.hw) { return; }
    let i = chan_at(c, gid.x);
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
fn bn_apply_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.y;
    if (gid.x >= p.n * p.hw) { return; }
    let i = chan_at(c, gid.x);
    var v = (x[i] - ev_mean[c]) / sqrt(ev_var[c] + p.eps) * ev_gamma[c] + ev_beta[c];
    if ((p.act & RESIDUAL) != 0u) {
        v += ev_residual[i];
    }
    if ((p.act & RELU) != 0u) {
        v = max(v, 0.0);
    }
    ev_y[i] = v;
}

// A channel's parameter gradients and dx coefficients, from its sums over all m values.
struct ChannelGrads {
    dbeta: f32,
    dgamma: f32,
    coef: vec4<f32>,
}

fn channel_grads(dbeta: f32, dgamma: f32, mean: f32, rstd: f32, gamma: f32) -> ChannelGrads {
    let m = f32(p.n * p.hw);
    let a = gamma * rstd;
    let cc = -a * rstd * dgamma / m;
    return ChannelGrads(dbeta, dgamma, vec4<f32>(a, -a * dbeta / m - cc * mean, cc, 0.0));
}

@compute @workgroup_size(WG)
fn bn_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, ids: ReduceIds) {
    let t = ids.t;
    let c = wid.x;
    let r = chunk(wid.y);
    let planes = r.y - r.x;
    let base = r.x * p.c + c;
    let mean = bw_stats[2u * c];
    let rstd = bw_stats[2u * c + 1u];
    var sg = 0.0;
    var sgx = 0.0;
    for (var w = walk_from(t); w.plane < planes; w = walk_next(w)) {
        let j = (base + w.plane * p.c) * p.hw + w.off;
        let gj = pre_act(j);
        sg += gj;
        sgx += gj * (x[j] - mean) * rstd;
    }
    red_a[t] = sg;
    red_b[t] = sgx;
    reduce2(ids);
    if (t == 0u) {
        if (p.chunks == 1u) {
            let r = channel_grads(red_a[0], red_b[0], mean, rstd, bw_gamma[c]);
            red_dbeta[c] = r.dbeta;
            red_dgamma[c] = r.dgamma;
            for (var i = 0u; i < 4u; i++) {
                red_coef[4u * c + i] = r.coef[i];
            }
        } else {
            red_coef[2u * (c * p.chunks + wid.y)] = red_a[0];
            red_coef[2u * (c * p.chunks + wid.y) + 1u] = red_b[0];
        }
    }
}

@compute @workgroup_size(WG)
fn bn_bwd_combine(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let c = flat_index(gid, nwg);
    if (c >= p.c) { return; }
    var sg = 0.0;
    var sgx = 0.0;
    for (var s = 0u; s < p.chunks; s++) {
        sg += partials[2u * (c * p.chunks + s)];
        sgx += partials[2u * (c * p.chunks + s) + 1u];
    }
    let r = channel_grads(sg, sgx, cb_stats[2u * c], cb_stats[2u * c + 1u], cb_gamma[c]);
    cb_dbeta[c] = r.dbeta;
    cb_dgamma[c] = r.dgamma;
    for (var i = 0u; i < 4u; i++) {
        cb_coef[4u * c + i] = r.coef[i];
    }
}

@compute @workgroup_size(WG)
fn bn_bwd_data(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.y;
    if (gid.x >= p.n * p.hw) { return; }
    let i = chan_at(c, gid.x);
    let gi = pre_act(i);
    if ((p.act & RESIDUAL) != 0u) {
        dres[i] = gi;
    }
    dx[i] = bw_coef[4u * c] * gi + bw_coef[4u * c + 1u] + bw_coef[4u * c + 2u] * x[i];
}

@compute @workgroup_size(WG)
fn bn_bwd_data_eval(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let c = wid.y;
    if (gid.x >= p.n * p.hw) { return; }
    let i = chan_at(c, gid.x);
    var gi = ed_g[i];
    if ((p.act & RELU) != 0u && ed_y[i] <= 0.0) {
        gi = 0.0;
    }
    if ((p.act & RESIDUAL) != 0u) {
        dres[i] = gi;
    }
    dx[i] = ed_gamma[c] / sqrt(ed_var[c] + p.eps) * gi;
}
