//! PGD's element-wise step: sign, step, eps-ball projection and the [0, 1] box.

use crate::common::*;
use engine::ops::attack::{pgd_project, pgd_step};
use engine::{reference as cpu, Tensor};

#[test]
fn pgd_step_and_projection_match_reference() {
    let rt = rt();
    let mut r = rng(111);
    let n = 777;
    let eps = 8.0 / 255.0;
    let x: Vec<f32> = (0..n).map(|i| if i % 7 == 0 { 0.0 } else if i % 11 == 0 { 1.0 } else { r.uniform(0.0, 1.0) as f32 }).collect();
    let d0 = r.uniform_vec(n, -2.0 * eps, 2.0 * eps);
    let mut g = r.uniform_vec(n, -1.0, 1.0);
    g[3] = 0.0; // sign(0) = 0
    let xt = Tensor::from_f32(&rt, &[n], &x).unwrap();
    let dt = Tensor::from_f32(&rt, &[n], &d0).unwrap();
    let adv0 = pgd_project(&rt, &xt, &dt, eps as f32).unwrap();
    let mut dc = to_f64(&d0);
    cpu::pgd_step(&to_f64(&x), &vec![0.0; n], &mut dc, eps, 0.0);
    assert_close("projected delta", &dt.to_vec(&rt).unwrap(), &dc, tol::FWD);
    let want0: Vec<f64> = x.iter().zip(&dc).map(|(a, b)| *a as f64 + b).collect();
    assert_close("x_adv after projection", &adv0.to_vec(&rt).unwrap(), &want0, tol::FWD);

    let adv = pgd_step(&rt, &xt, &Tensor::from_f32(&rt, &[n], &g).unwrap(), &dt, eps as f32, 2.0 / 255.0).unwrap();
    cpu::pgd_step(&to_f64(&x), &to_f64(&g), &mut dc, eps, 2.0 / 255.0);
    let want: Vec<f64> = x.iter().zip(&dc).map(|(a, b)| *a as f64 + b).collect();
    let got = adv.to_vec(&rt).unwrap();
    assert_close("x_adv after a step", &got, &want, tol::FWD);
    for (i, v) in got.iter().enumerate() {
        assert!((0.0..=1.0).contains(v) && (v - x[i]).abs() <= eps as f32 + 1e-6, "pixel {i}: {v} from {}", x[i]);
    }
}
