//! SGD with momentum and weight decay in PyTorch semantics, two steps against the CPU; the EMA
//! update against the float64 reference and bit for bit against its f32 formula.

use crate::common::*;
use engine::ops::optim::{ema_update, sgd_step};
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

/// The f32 results WGSL allows for `decay * e + c * w` with `c = 1 - decay` (the shader's
/// order): both products rounded, then the sum; or one product fused into the sum (a fused
/// multiply-add, which a GPU compiler may form from a product and an add).
fn ema_evaluations(e: f32, w: f32, decay: f32) -> [f32; 3] {
    let c = 1.0 - decay;
    [decay * e + c * w, decay.mul_add(e, c * w), c.mul_add(w, decay * e)]
}

const EVALUATIONS: [&str; 3] = ["unfused (both products rounded)", "decay * ema fused into the sum", "(1 - decay) * w fused into the sum"];

#[test]
fn ema_matches_the_float64_reference() {
    let rt = rt();
    let mut r = rng(102);
    let n = 1003;
    let e0 = r.uniform_vec(n, -1.0, 1.0);
    let ema = Tensor::from_f32(&rt, &[n], &e0).unwrap();
    let mut want = to_f64(&e0);
    for decay in [0.999f32, 0.9, 0.5] {
        let w = r.uniform_vec(n, -2.0, 2.0);
        ema_update(&rt, &ema, &Tensor::from_f32(&rt, &[n], &w).unwrap(), decay).unwrap();
        cpu::ema_update(&mut want, &to_f64(&w), decay as f64);
    }
    assert_close("ema", &ema.to_vec(&rt).unwrap(), &want, tol::FWD);
}

/// Bit for bit: every element of each update is one of the evaluations WGSL allows for the
/// shader's formula, computed on the host in f32 from the GPU's own previous state, and all
/// elements of an update use the same one (one compiled instruction sequence). The inputs make
/// the evaluations differ on many elements, so the test sees which one the adapter used.
#[test]
fn ema_update_is_bit_exact_to_the_f32_formula() {
    let rt = rt();
    let mut r = rng(103);
    let n = 4099;
    let ema = Tensor::from_f32(&rt, &[n], &r.uniform_vec(n, -1.0, 1.0)).unwrap();
    for decay in [0.999f32, 0.99, 0.7] {
        let before = ema.to_vec(&rt).unwrap();
        let w = r.uniform_vec(n, -1.0, 1.0);
        ema_update(&rt, &ema, &Tensor::from_f32(&rt, &[n], &w).unwrap(), decay).unwrap();
        let got = ema.to_vec(&rt).unwrap();
        let candidates: Vec<[f32; 3]> = before.iter().zip(&w).map(|(&e, &w)| ema_evaluations(e, w, decay)).collect();
        let differ = candidates.iter().filter(|c| c[0] != c[1] || c[0] != c[2]).count();
        assert!(differ > n / 10, "decay {decay}: the evaluations differ on only {differ} of {n} elements");
        let used: Vec<usize> = (0..3).filter(|&k| got.iter().zip(&candidates).all(|(g, c)| g.to_bits() == c[k].to_bits())).collect();
        let off = got.iter().zip(&candidates).position(|(g, c)| c.iter().all(|v| v.to_bits() != g.to_bits()));
        assert!(
            off.is_none(),
            "decay {decay}: element {off:?} is no allowed evaluation: {:?} vs {:?}",
            off.map(|i| got[i]),
            off.map(|i| candidates[i])
        );
        assert!(!used.is_empty(), "decay {decay}: the elements mix evaluations");
        println!("ema decay {decay}: bit-exact, {} ({differ} of {n} elements tell the evaluations apart)", EVALUATIONS[used[0]]);
    }
}

#[test]
fn ema_with_decay_one_keeps_and_zero_copies() {
    let rt = rt();
    let mut r = rng(104);
    let n = 517;
    let (e0, w) = (r.uniform_vec(n, -1.0, 1.0), r.uniform_vec(n, -1.0, 1.0));
    let (ema, wt) = (Tensor::from_f32(&rt, &[n], &e0).unwrap(), Tensor::from_f32(&rt, &[n], &w).unwrap());
    ema_update(&rt, &ema, &wt, 1.0).unwrap();
    assert_eq!(ema.to_vec(&rt).unwrap(), e0, "decay 1 leaves the average as it is");
    ema_update(&rt, &ema, &wt, 0.0).unwrap();
    assert_eq!(ema.to_vec(&rt).unwrap(), w, "decay 0 makes it the weight");
    assert!(ema_update(&rt, &ema, &Tensor::zeros(&rt, &[n + 1]).unwrap(), 0.5).is_err(), "shapes must agree");
}
