//! Naive float64 CPU references of every engine op, forward and backward: the oracle the GPU
//! kernels are tested against (`tests/`, `benches/`). A crate of its own, beside the engine and
//! outside its API: nothing the program runs uses it.
//!
//! Layouts match the GPU's: NCHW row-major, weights (CO, CI, k, k), matrices row-major.

/// Output size of a convolution along one axis.
pub fn conv_out(size: usize, k: usize, stride: usize, pad: usize) -> usize {
    (size + 2 * pad - k) / stride + 1
}

/// Iterates every (n, co, oy, ox, ci, ky, kx) with its x index (None if in the padding).
fn conv_taps(xs: [usize; 4], ws: [usize; 4], stride: usize, pad: usize, mut f: impl FnMut(usize, Option<usize>, usize)) {
    let [n, ci, h, w] = xs;
    let [co, _, k, _] = ws;
    let (oh, ow) = (conv_out(h, k, stride, pad), conv_out(w, k, stride, pad));
    for b in 0..n {
        for o in 0..co {
            for oy in 0..oh {
                for ox in 0..ow {
                    let yi = ((b * co + o) * oh + oy) * ow + ox;
                    for c in 0..ci {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * stride + ky) as isize - pad as isize;
                                let ix = (ox * stride + kx) as isize - pad as isize;
                                let wi = ((o * ci + c) * k + ky) * k + kx;
                                let xi = (iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w)
                                    .then(|| ((b * ci + c) * h + iy as usize) * w + ix as usize);
                                f(yi, xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub fn conv2d(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], stride: usize, pad: usize) -> Vec<f64> {
    let (oh, ow) = (conv_out(xs[2], ws[2], stride, pad), conv_out(xs[3], ws[3], stride, pad));
    let mut y = vec![0.0; xs[0] * ws[0] * oh * ow];
    conv_taps(xs, ws, stride, pad, |yi, xi, wi| {
        if let Some(xi) = xi {
            y[yi] += x[xi] * w[wi];
        }
    });
    y
}

/// (dx, dw) of `sum(conv2d(x, w) * g)`.
pub fn conv2d_backward(x: &[f64], xs: [usize; 4], w: &[f64], ws: [usize; 4], stride: usize, pad: usize, g: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; w.len()];
    conv_taps(xs, ws, stride, pad, |yi, xi, wi| {
        if let Some(xi) = xi {
            dx[xi] += g[yi] * w[wi];
            dw[wi] += g[yi] * x[xi];
        }
    });
    (dx, dw)
}

/// Per-channel (mean, biased var) of an NCHW array.
pub fn channel_stats(x: &[f64], xs: [usize; 4]) -> (Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = xs;
    let m = (n * h * w) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for (i, v) in x.iter().enumerate() {
        mean[(i / (h * w)) % c] += v / m;
    }
    for (i, v) in x.iter().enumerate() {
        let ch = (i / (h * w)) % c;
        var[ch] += (v - mean[ch]).powi(2) / m;
    }
    (mean, var)
}

/// Batch norm with the given per-channel mean and variance: y = (x - mean) / sqrt(var + eps) gamma + beta.
pub fn batchnorm(x: &[f64], xs: [usize; 4], mean: &[f64], var: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let [_, c, h, w] = xs;
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / (h * w)) % c;
            (v - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch]
        })
        .collect()
}

/// (dx, dgamma, dbeta) of `sum(batchnorm(x) * g)`. In train mode mean and var are the batch's
/// (functions of x); in eval mode they are constants.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_backward(
    x: &[f64],
    xs: [usize; 4],
    mean: &[f64],
    var: &[f64],
    gamma: &[f64],
    eps: f64,
    train: bool,
    g: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let [n, c, h, w] = xs;
    let m = (n * h * w) as f64;
    let ch = |i: usize| (i / (h * w)) % c;
    let mut dgamma = vec![0.0; c];
    let mut dbeta = vec![0.0; c];
    for i in 0..x.len() {
        let k = ch(i);
        let xhat = (x[i] - mean[k]) / (var[k] + eps).sqrt();
        dgamma[k] += g[i] * xhat;
        dbeta[k] += g[i];
    }
    let dx = (0..x.len())
        .map(|i| {
            let k = ch(i);
            let rstd = 1.0 / (var[k] + eps).sqrt();
            if train {
                let xhat = (x[i] - mean[k]) * rstd;
                gamma[k] * rstd * (g[i] - dbeta[k] / m - xhat * dgamma[k] / m)
            } else {
                gamma[k] * rstd * g[i]
            }
        })
        .collect();
    (dx, dgamma, dbeta)
}

pub fn relu(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v.max(0.0)).collect()
}

pub fn sigmoid(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect()
}

/// PyTorch's Softplus(beta, threshold 20).
pub fn softplus(x: &[f64], beta: f64) -> Vec<f64> {
    x.iter().map(|v| if beta * v > 20.0 { *v } else { (1.0 + (beta * v).exp()).ln() / beta }).collect()
}

/// Derivative of softplus: sigmoid(beta x) (1 above the threshold).
pub fn softplus_grad(x: &[f64], beta: f64) -> Vec<f64> {
    x.iter().map(|v| if beta * v > 20.0 { 1.0 } else { 1.0 / (1.0 + (-beta * v).exp()) }).collect()
}

pub fn softmax_rows(x: &[f64], cols: usize) -> Vec<f64> {
    x.chunks(cols)
        .flat_map(|r| {
            let mx = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = r.iter().map(|v| (v - mx).exp()).sum();
            r.iter().map(move |v| (v - mx).exp() / s)
        })
        .collect()
}

/// Mean cross-entropy of logits (rows, cols) against labels, and its gradient w.r.t. logits.
pub fn cross_entropy(logits: &[f64], cols: usize, labels: &[u32]) -> (f64, Vec<f64>) {
    let p = softmax_rows(logits, cols);
    let n = labels.len() as f64;
    let loss = labels.iter().enumerate().map(|(r, &l)| -p[r * cols + l as usize].ln()).sum::<f64>() / n;
    let mut d = p;
    for (r, &l) in labels.iter().enumerate() {
        d[r * cols + l as usize] -= 1.0;
    }
    d.iter_mut().for_each(|v| *v /= n);
    (loss, d)
}

pub fn channel_scale(z: &[f64], m: &[f64], hw: usize) -> Vec<f64> {
    z.iter().enumerate().map(|(i, v)| v * m[i / hw]).collect()
}

pub fn avg_pool2d(x: &[f64], xs: [usize; 4], k: usize) -> Vec<f64> {
    let [n, c, h, w] = xs;
    let (oh, ow) = (h / k, w / k);
    let mut y = vec![0.0; n * c * oh * ow];
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut s = 0.0;
                for dy in 0..k {
                    for dx in 0..k {
                        s += x[p * h * w + (oy * k + dy) * w + ox * k + dx];
                    }
                }
                y[(p * oh + oy) * ow + ox] = s / (k * k) as f64;
            }
        }
    }
    y
}

/// y = x w^T + b for x (n, i), w (o, i).
pub fn linear(x: &[f64], w: &[f64], b: Option<&[f64]>, n: usize, i: usize, o: usize) -> Vec<f64> {
    let mut y = vec![0.0; n * o];
    for r in 0..n {
        for c in 0..o {
            y[r * o + c] = (0..i).map(|k| x[r * i + k] * w[c * i + k]).sum::<f64>() + b.map_or(0.0, |b| b[c]);
        }
    }
    y
}

pub fn gather_rows(table: &[f64], cols: usize, idx: &[u32]) -> Vec<f64> {
    idx.iter().flat_map(|&r| table[r as usize * cols..(r as usize + 1) * cols].iter().cloned()).collect()
}

/// (first, second) largest index per row; ties to the lower index.
pub fn top2(x: &[f64], cols: usize) -> (Vec<u32>, Vec<u32>) {
    x.chunks(cols)
        .map(|r| {
            let mut i1 = 0;
            for j in 1..cols {
                if r[j] > r[i1] {
                    i1 = j;
                }
            }
            let mut i2 = if i1 == 0 { 1 } else { 0 };
            for j in 0..cols {
                if j != i1 && r[j] > r[i2] {
                    i2 = j;
                }
            }
            (i1 as u32, i2 as u32)
        })
        .unzip()
}

/// One PyTorch SGD step in place: g += wd p; v = mu v + g; p -= lr v.
pub fn sgd_step(p: &mut [f64], v: &mut [f64], g: &[f64], lr: f64, mu: f64, wd: f64) {
    for i in 0..p.len() {
        let d = g[i] + wd * p[i];
        v[i] = mu * v[i] + d;
        p[i] -= lr * v[i];
    }
}

/// One exponential-moving-average update in place: ema = decay ema + (1 - decay) w.
pub fn ema_update(ema: &mut [f64], w: &[f64], decay: f64) {
    for (e, &w) in ema.iter_mut().zip(w) {
        *e = decay * *e + (1.0 - decay) * w;
    }
}

/// One PGD step in place on delta: delta = clamp(delta + step sign(g), -eps, eps), then the [0, 1] box.
pub fn pgd_step(x: &[f64], g: &[f64], delta: &mut [f64], eps: f64, step: f64) {
    for i in 0..x.len() {
        let s = if g[i] > 0.0 {
            1.0
        } else if g[i] < 0.0 {
            -1.0
        } else {
            0.0
        };
        let d = (delta[i] + step * s).clamp(-eps, eps);
        delta[i] = (x[i] + d).clamp(0.0, 1.0) - x[i];
    }
}

/// CW margin loss summed over rows, and its gradient w.r.t. the logits.
pub fn margin_loss(logits: &[f64], cols: usize, labels: &[u32], confidence: f64) -> (f64, Vec<f64>) {
    let mut loss = 0.0;
    let mut d = vec![0.0; logits.len()];
    for (r, &y) in labels.iter().enumerate() {
        let row = &logits[r * cols..(r + 1) * cols];
        let y = y as usize;
        let mut o = if y == 0 { 1 } else { 0 };
        for j in 0..cols {
            if j != y && row[j] > row[o] {
                o = j;
            }
        }
        let m = row[y] - row[o] + confidence;
        if m > 0.0 {
            loss -= m;
            d[r * cols + y] = -1.0;
            d[r * cols + o] = 1.0;
        }
    }
    (loss, d)
}

/// Classes of one row sorted by descending logit (ties: lower index first).
fn sorted_desc(row: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx
}

/// Per-row DLR losses (untargeted, or towards `targets`), as APGD uses them.
pub fn dlr_rows(logits: &[f64], cols: usize, labels: &[u32], targets: Option<&[u32]>) -> Vec<f64> {
    logits
        .chunks(cols)
        .enumerate()
        .map(|(r, row)| {
            let s = sorted_desc(row);
            let y = labels[r] as usize;
            let (other, d) = match targets {
                Some(t) => (t[r] as usize, row[s[0]] - 0.5 * (row[s[2]] + row[s[3]]) + 1e-12),
                None => (if s[0] == y { s[1] } else { s[0] }, row[s[0]] - row[s[2]] + 1e-12),
            };
            -(row[y] - row[other]) / d
        })
        .collect()
}

/// Summed DLR loss and its gradient (the kernel's formula, written out per row).
pub fn dlr_loss(logits: &[f64], cols: usize, labels: &[u32], targets: Option<&[u32]>) -> (f64, Vec<f64>) {
    let loss = dlr_rows(logits, cols, labels, targets).iter().sum();
    let mut grad = vec![0.0; logits.len()];
    for (r, row) in logits.chunks(cols).enumerate() {
        let s = sorted_desc(row);
        let y = labels[r] as usize;
        let (other, d, dd): (usize, f64, Vec<(usize, f64)>) = match targets {
            Some(t) => (t[r] as usize, row[s[0]] - 0.5 * (row[s[2]] + row[s[3]]) + 1e-12, vec![(s[0], 1.0), (s[2], -0.5), (s[3], -0.5)]),
            None => (if s[0] == y { s[1] } else { s[0] }, row[s[0]] - row[s[2]] + 1e-12, vec![(s[0], 1.0), (s[2], -1.0)]),
        };
        let num = row[y] - row[other];
        let g = &mut grad[r * cols..(r + 1) * cols];
        g[y] -= 1.0 / d;
        g[other] += 1.0 / d;
        for (j, w) in dd {
            g[j] += num / (d * d) * w;
        }
    }
    (loss, grad)
}

/// One APGD step (see `ops::attack::apgd_step`) on images of `per_image` elements, in place.
#[allow(clippy::too_many_arguments)]
pub fn apgd_step(x: &[f64], g: &[f64], steps: &[f64], x_adv: &mut [f64], x_old: &mut [f64], per_image: usize, eps: f64, a: f64) {
    let clip = |v: f64, xi: f64| v.max(xi - eps).min(xi + eps).clamp(0.0, 1.0);
    for i in 0..x.len() {
        let s = if g[i] > 0.0 {
            1.0
        } else if g[i] < 0.0 {
            -1.0
        } else {
            0.0
        };
        let cur = x_adv[i];
        let z = clip(cur + steps[i / per_image] * s, x[i]);
        x_adv[i] = clip(cur + (z - cur) * a + (cur - x_old[i]) * (1.0 - a), x[i]);
        x_old[i] = cur;
    }
}

/// AutoAttack's `projection_linf` (fab_projections.py) on rows of `cols` elements, written as
/// it is there: the smallest L-inf step d with `<w, t + d> = b` and `t + d` in [0, 1] (all the
/// way to the box's side where the plane is out of reach), found by sorting each coordinate's
/// room, prefix sums of the weights and a binary search over the sorted breakpoints.
pub fn projection_linf(t: &[f64], w: &[f64], b: &[f64], cols: usize) -> Vec<f64> {
    t.chunks(cols).zip(w.chunks(cols)).zip(b).flat_map(|((t, w), &b)| projection_linf_row(t, w, b)).collect()
}

fn cumsum(v: impl Iterator<Item = f64>) -> Vec<f64> {
    v.scan(0.0, |acc, x| {
        *acc += x;
        Some(*acc)
    })
    .collect()
}

fn projection_linf_row(t: &[f64], w: &[f64], b: f64) -> Vec<f64> {
    let n = t.len();
    let dot = |a: &[f64], c: &[f64]| a.iter().zip(c).map(|(x, y)| x * y).sum::<f64>();
    let sign = if dot(w, t) - b >= 0.0 { 1.0 } else { -1.0 };
    let w: Vec<f64> = w.iter().map(|v| v * sign).collect();
    let a: Vec<f64> = w.iter().map(|&v| if v < 0.0 { 1.0 } else { 0.0 }).collect();
    let mut d: Vec<f64> = (0..n).map(|i| if w[i] != 0.0 { a[i] - t[i] } else { 0.0 }).collect();
    let p: Vec<f64> = (0..n).map(|i| a[i] - t[i] * (2.0 * a[i] - 1.0)).collect();
    let mut indp: Vec<usize> = (0..n).collect();
    indp.sort_by(|&i, &j| p[i].total_cmp(&p[j]));
    let b = b * sign - dot(&w, t);
    let b0 = dot(&w, &d);
    // Descending room: the prefix sums of |w| and of |w| p, from the coordinate with most room.
    let s = cumsum(indp.iter().rev().map(|&i| w[i].abs()));
    let sb: Vec<f64> = cumsum(indp.iter().rev().map(|&i| -w[i] * d[i])).iter().map(|v| v + b0).collect();
    let c_l = b - (sb[n - 1] - s[n - 1] * p[indp[0]]) > 0.0;
    let c2 = b - b0 > 0.0 && !c_l;
    if c_l {
        let lmbd = ((b - sb[n - 1]) / -s[n - 1]).max(0.0);
        d = a.iter().map(|ai| (2.0 * ai - 1.0) * lmbd).collect();
    } else if c2 {
        let (mut lb, mut ub) = (0, n - 1);
        for _ in 0..(n as f64).log2().ceil() as usize {
            let mid = (lb + ub) / 2;
            if b - (sb[mid] - s[mid] * p[indp[n - 1 - mid]]) > 0.0 {
                lb = mid;
            } else {
                ub = mid;
            }
        }
        let lmbd = ((b - sb[lb]) / -s[lb]).max(0.0);
        for i in 0..n {
            d[i] = lmbd.min(d[i]) * a[i] + (-lmbd).max(d[i]) * (1.0 - a[i]);
        }
    }
    d.iter().zip(&w).map(|(di, wi)| if *wi != 0.0 { *di } else { 0.0 }).collect()
}

/// One FAB iteration (see `ops::fab::fab_step`) as AutoAttack's fab_base.py writes it, on rows
/// of `cols` elements with logit differences `df` (N,) and their input gradient `g` at `x1`:
/// `b = -df + <g, x1>`, both points projected with [`projection_linf`], mixed and clamped.
/// Returns the new x1 and each row's `max |x1 - x0|`.
pub fn fab_step(x1: &[f64], x0: &[f64], g: &[f64], df: &[f64], cols: usize, eta: f64, alpha_max: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut next, mut norms) = (Vec::with_capacity(x1.len()), Vec::with_capacity(df.len()));
    for (r, &f) in df.iter().enumerate() {
        let row = r * cols..(r + 1) * cols;
        let (x1, x0, g) = (&x1[row.clone()], &x0[row.clone()], &g[row]);
        let b = -f + x1.iter().zip(g).map(|(x, w)| x * w).sum::<f64>();
        let d1 = projection_linf_row(x1, g, b);
        let d2 = projection_linf_row(x0, g, b);
        let largest = |d: &[f64]| d.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-8);
        let (a1, a2) = (largest(&d1), largest(&d2));
        let alpha = (a1 / (a1 + a2)).max(0.0).min(alpha_max);
        let mut norm = 0.0f64;
        for i in 0..cols {
            let v = ((x1[i] + eta * d1[i]) * (1.0 - alpha) + (x0[i] + d2[i] * eta) * alpha).clamp(0.0, 1.0);
            norm = norm.max((v - x0[i]).abs());
            next.push(v);
        }
        norms.push(norm);
    }
    (next, norms)
}

/// FAB's backward step (see `ops::fab::fab_shrink`), in place on the masked rows.
pub fn fab_shrink(mask: &[u32], x0: &[f64], x1: &mut [f64], beta: f64) {
    let cols = x0.len() / mask.len();
    for (i, v) in x1.iter_mut().enumerate() {
        if mask[i / cols] != 0 {
            *v = x0[i] + (*v - x0[i]) * beta;
        }
    }
}

/// `act(BN(x) + residual)` with the given statistics: the fused batch norm's forward.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_act(
    x: &[f64],
    xs: [usize; 4],
    mean: &[f64],
    var: &[f64],
    gamma: &[f64],
    beta: &[f64],
    residual: Option<&[f64]>,
    relu: bool,
    eps: f64,
) -> Vec<f64> {
    batchnorm(x, xs, mean, var, gamma, beta, eps)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = v + residual.map_or(0.0, |r| r[i]);
            if relu {
                v.max(0.0)
            } else {
                v
            }
        })
        .collect()
}

/// (dx, dgamma, dbeta, dresidual) of `sum(batchnorm_act(..) * g)`: the ReLU's mask applied to g
/// (from the output `y`), then the batch norm's backward; the residual receives the masked g.
#[allow(clippy::too_many_arguments)]
pub fn batchnorm_act_backward(
    x: &[f64],
    xs: [usize; 4],
    mean: &[f64],
    var: &[f64],
    gamma: &[f64],
    eps: f64,
    train: bool,
    relu: bool,
    y: &[f64],
    g: &[f64],
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let masked: Vec<f64> = g.iter().zip(y).map(|(g, y)| if relu && *y <= 0.0 { 0.0 } else { *g }).collect();
    let (dx, dgamma, dbeta) = batchnorm_backward(x, xs, mean, var, gamma, eps, train, &masked);
    (dx, dgamma, dbeta, masked)
}

/// `(1/N) sum_r KL(softmax(a_r) || softmax(b_r))` and its gradients w.r.t. a and b.
pub fn kl_div(a: &[f64], b: &[f64], cols: usize) -> (f64, Vec<f64>, Vec<f64>) {
    let rows = a.len() / cols;
    let (p, q) = (softmax_rows(a, cols), softmax_rows(b, cols));
    let mut loss = 0.0;
    let (mut da, mut db) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    for r in 0..rows {
        let range = r * cols..(r + 1) * cols;
        let d: Vec<f64> = range.clone().map(|i| p[i].ln() - q[i].ln()).collect();
        let kl: f64 = range.clone().zip(&d).map(|(i, d)| p[i] * d).sum();
        loss += kl / rows as f64;
        for (k, i) in range.enumerate() {
            da[i] = p[i] * (d[k] - kl) / rows as f64;
            db[i] = (q[i] - p[i]) / rows as f64;
        }
    }
    (loss, da, db)
}

fn pcg(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The stream of `ops::random::uniform`: element i is `lo + (hi - lo) u`, u = (h >> 8) / 2^24,
/// h a PCG hash of (seed, i).
pub fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
    let key = pcg(seed as u32 ^ pcg((seed >> 32) as u32));
    (0..n as u32).map(|i| lo + (hi - lo) * ((pcg(i ^ key) >> 8) as f32 * (1.0 / 16_777_216.0))).collect()
}
