//! Composite gradient checks: a ResNet BasicBlock in train mode, end to end, with the identity
//! shortcut and with the 1x1-conv + BN shortcut (stride 2, channels change).
//! out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
//!
//! A whole block has hundreds of ReLUs fed by batch statistics that every input moves, so an f32
//! central difference almost always crosses some kink. The numeric gradient is therefore taken
//! in float64 on the CPU composition of the reference ops (step 1e-6, no kink in reach), after
//! checking that this composition computes what the GPU block computes; the GPU's analytic
//! gradient (our backward) must match it.

use crate::common::*;
use engine::ops::{
    activation::relu,
    arith::add,
    batchnorm::{batchnorm2d, RunningStats},
    conv2d::conv2d,
};
use engine::{autodiff, Result, Runtime, Tensor};
use engine_reference as cpu;

fn bn(rt: &Runtime, x: &Tensor, g: &Tensor, b: &Tensor) -> Result<Tensor> {
    let c = x.shape()[1];
    let rm = Tensor::zeros(rt, &[c])?;
    let rv = Tensor::from_f32(rt, &[c], &vec![1.0; c])?;
    batchnorm2d(rt, x, g, b, RunningStats { mean: &rm, var: &rv }, true)
}

fn block(rt: &Runtime, t: &[Tensor], stride: u32) -> Result<Tensor> {
    let h = relu(rt, &bn(rt, &conv2d(rt, &t[0], &t[1], stride, 1)?, &t[2], &t[3])?)?;
    let h = bn(rt, &conv2d(rt, &h, &t[4], 1, 1)?, &t[5], &t[6])?;
    let short = if t.len() > 7 { bn(rt, &conv2d(rt, &t[0], &t[7], stride, 0)?, &t[8], &t[9])? } else { t[0].clone() };
    relu(rt, &add(rt, &h, &short)?)
}

fn inputs(seed: u64, cin: usize, cout: usize, shortcut: bool) -> Vec<(Vec<usize>, Vec<f32>)> {
    let mut r = rng(seed);
    let mut v = vec![
        (vec![2, cin, 6, 6], r.uniform_vec(2 * cin * 36, -1.0, 1.0)),
        (vec![cout, cin, 3, 3], r.uniform_vec(cout * cin * 9, -0.4, 0.4)),
        (vec![cout], r.uniform_vec(cout, 0.5, 1.5)),
        (vec![cout], r.uniform_vec(cout, -0.3, 0.3)),
        (vec![cout, cout, 3, 3], r.uniform_vec(cout * cout * 9, -0.4, 0.4)),
        (vec![cout], r.uniform_vec(cout, 0.5, 1.5)),
        (vec![cout], r.uniform_vec(cout, -0.3, 0.3)),
    ];
    if shortcut {
        v.push((vec![cout, cin, 1, 1], r.uniform_vec(cout * cin, -0.5, 0.5)));
        v.push((vec![cout], r.uniform_vec(cout, 0.5, 1.5)));
        v.push((vec![cout], r.uniform_vec(cout, -0.3, 0.3)));
    }
    v
}

fn cpu_bn(x: &[f64], xs: [usize; 4], g: &[f64], b: &[f64]) -> Vec<f64> {
    let (mean, var) = cpu::channel_stats(x, xs);
    cpu::batchnorm(x, xs, &mean, &var, g, b, 1e-5)
}

fn cpu_block(v: &[Vec<f64>], cin: usize, cout: usize, stride: usize) -> Vec<f64> {
    let xs = [2, cin, 6, 6];
    let o = cpu::conv_out(6, 3, stride, 1);
    let hs = [2, cout, o, o];
    let h = cpu::relu(&cpu_bn(&cpu::conv2d(&v[0], xs, &v[1], [cout, cin, 3, 3], stride, 1), hs, &v[2], &v[3]));
    let h = cpu_bn(&cpu::conv2d(&h, hs, &v[4], [cout, cout, 3, 3], 1, 1), hs, &v[5], &v[6]);
    let short =
        if v.len() > 7 { cpu_bn(&cpu::conv2d(&v[0], xs, &v[7], [cout, cin, 1, 1], stride, 0), hs, &v[8], &v[9]) } else { v[0].clone() };
    cpu::relu(&h.iter().zip(&short).map(|(a, b)| a + b).collect::<Vec<_>>())
}

fn check(seed: u64, cin: usize, cout: usize, stride: u32) {
    let rt = rt();
    let ins = inputs(seed, cin, cout, cin != cout);
    let leaves: Vec<Tensor> = ins.iter().map(|(s, d)| Tensor::leaf(&rt, s, d).unwrap()).collect();
    let y = block(&rt, &leaves, stride).unwrap();
    let v: Vec<Vec<f64>> = ins.iter().map(|(_, d)| to_f64(d)).collect();
    let f = |v: &[Vec<f64>]| cpu_block(v, cin, cout, stride as usize);
    assert_close("block forward", &y.to_vec(&rt).unwrap(), &f(&v), tol::COMPOSITE);
    let mut r = rng(seed + 1);
    let weights = r.uniform_vec(y.numel(), -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &weights).unwrap()).unwrap();
    let loss = |v: &[Vec<f64>]| f(v).iter().zip(&weights).map(|(a, b)| a * *b as f64).sum::<f64>();
    for (k, (shape, data)) in ins.iter().enumerate() {
        let analytic = grads.get(&leaves[k]).unwrap().to_vec(&rt).unwrap();
        let (mut got, mut want) = (vec![], vec![]);
        for _ in 0..12 {
            let j = r.below(data.len() as u64) as usize;
            let h = 1e-6;
            let mut w = v.clone();
            w[k][j] += h;
            let plus = loss(&w);
            w[k][j] -= 2.0 * h;
            let minus = loss(&w);
            got.push(analytic[j]);
            want.push((plus - minus) / (2.0 * h));
        }
        assert_close(&format!("block gradient, input {k} {shape:?}"), &got, &want, tol::COMPOSITE);
    }
}

#[test]
fn basic_block_identity_shortcut_gradient() {
    check(120, 3, 3, 1);
}

#[test]
fn basic_block_conv_shortcut_gradient() {
    check(122, 2, 4, 2);
}
