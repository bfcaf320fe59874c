//! SGD with momentum and weight decay in PyTorch semantics, two steps against the CPU.

use crate::common::*;
use engine::ops::optim::sgd_step;
use engine::Tensor;
use engine_reference as cpu;

#[test]
fn sgd_two_steps_match_reference() {
    let rt = rt();
    let mut r = rng(101);
    let n = 1000;
    let p0 = r.uniform_vec(n, -1.0, 1.0);
    let g1 = r.uniform_vec(n, -1.0, 1.0);
    let g2 = r.uniform_vec(n, -1.0, 1.0);
    let p = Tensor::from_f32(&rt, &[n], &p0).unwrap();
    let v = Tensor::zeros(&rt, &[n]).unwrap();
    let (mut pc, mut vc) = (to_f64(&p0), vec![0.0; n]);
    for g in [&g1, &g2] {
        sgd_step(&rt, &p, &v, &Tensor::from_f32(&rt, &[n], g).unwrap(), 0.1, 0.9, 2e-4).unwrap();
        cpu::sgd_step(&mut pc, &mut vc, &to_f64(g), 0.1, 0.9, 2e-4);
    }
    assert_close("sgd params", &p.to_vec(&rt).unwrap(), &pc, tol::FWD);
    assert_close("sgd momentum", &v.to_vec(&rt).unwrap(), &vc, tol::FWD);
}
