//! The element-wise attack steps: PGD's sign step, eps-ball projection and [0, 1] box; APGD's
//! momentum step with per-image step sizes; per-image row selection.

use crate::common::*;
use engine::ops::attack::{apgd_step, pgd_project, pgd_step, select_rows};
use engine::Tensor;
use engine_reference as cpu;

#[test]
fn pgd_step_and_projection_match_reference() {
    let rt = rt();
    let mut r = rng(111);
    let n = 777;
    let eps = 8.0 / 255.0;
    let x: Vec<f32> = (0..n)
        .map(|i| {
            if i % 7 == 0 {
                0.0
            } else if i % 11 == 0 {
                1.0
            } else {
                r.uniform(0.0, 1.0) as f32
            }
        })
        .collect();
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
    assert_eq!(in_eps_ball(&got, &x, eps as f32), None);
}

#[test]
fn apgd_step_and_row_selection_match_reference() {
    let rt = rt();
    let mut r = rng(112);
    let (imgs, per) = (5, 67);
    let n = imgs * per;
    let eps = 8.0 / 255.0;
    let x: Vec<f32> = (0..n)
        .map(|i| {
            if i % 9 == 0 {
                0.0
            } else if i % 13 == 0 {
                1.0
            } else {
                r.uniform(0.0, 1.0) as f32
            }
        })
        .collect();
    let start: Vec<f32> = x.iter().map(|&v| (v as f64 + r.uniform(-eps, eps)).clamp(0.0, 1.0) as f32).collect();
    let old: Vec<f32> = x.iter().map(|&v| (v as f64 + r.uniform(-eps, eps)).clamp(0.0, 1.0) as f32).collect();
    let mut g = r.uniform_vec(n, -1.0, 1.0);
    g[4] = 0.0;
    let steps = vec![2.0 * eps as f32, eps as f32, 0.5 * eps as f32, 0.25 * eps as f32, 3.0 * eps as f32];
    let t = |v: &[f32]| Tensor::from_f32(&rt, &[imgs, 1, 1, per], v).unwrap();
    let (xt, gt, adv, oldt) = (t(&x), t(&g), t(&start), t(&old));
    let st = Tensor::from_f32(&rt, &[imgs], &steps).unwrap();
    let (mut want_adv, mut want_old) = (to_f64(&start), to_f64(&old));
    for a in [1.0, 0.75] {
        apgd_step(&rt, &xt, &gt, &st, &adv, &oldt, eps as f32, a as f32).unwrap();
        cpu::apgd_step(&to_f64(&x), &to_f64(&g), &to_f64(&steps), &mut want_adv, &mut want_old, per, eps, a);
    }
    let got = adv.to_vec(&rt).unwrap();
    assert_close("apgd x_adv", &got, &want_adv, tol::FWD);
    assert_close("apgd x_old", &oldt.to_vec(&rt).unwrap(), &want_old, tol::FWD);
    assert_eq!(in_eps_ball(&got, &x, eps as f32), None);

    let mask = Tensor::from_u32(&rt, &[imgs], &[0, 1, 0, 0, 1]).unwrap();
    select_rows(&rt, &mask, &xt, &adv).unwrap();
    let after = adv.to_vec(&rt).unwrap();
    for img in 0..imgs {
        let row = img * per..(img + 1) * per;
        let want: &[f32] = if img == 1 || img == 4 { &x[row.clone()] } else { &got[row.clone()] };
        assert_eq!(&after[row], want, "image {img}");
    }
}
