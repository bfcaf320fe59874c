//! FAB's L-inf step: the projection onto a hyperplane within the box against AutoAttack's sorted
//! search (the float64 reference), row by row, on every branch of it (plane within reach, closer
//! than any coordinate's room, out of reach, on the other side, sparse and zero weights, on the
//! plane) at a width below one workgroup and at CIFAR's 3x32x32; FAB's iteration and its
//! backward step against the reference.

use crate::common::*;
use engine::ops::fab::{fab_shrink, fab_step, project_linf, FabStep};
use engine::{Rng, Tensor};
use engine_reference as cpu;

/// The room of each coordinate towards the side of the box that lowers `sign <w, z>`.
fn rooms(t: &[f64], w: &[f64], sign: f64) -> Vec<f64> {
    t.iter().zip(w).map(|(&ti, &wi)| if sign * wi < 0.0 { 1.0 - ti } else { ti }).collect()
}

/// `sum_i |w_i| min(lam, room_i)`: how far a step of L-inf size lam can move `<w, z>`.
fn reach(t: &[f64], w: &[f64], sign: f64, lam: f64) -> f64 {
    rooms(t, w, sign).iter().zip(w).map(|(r, wi)| wi.abs() * lam.min(*r)).sum()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One row of each branch: (name, t, w, b).
fn cases(r: &mut Rng, cols: usize) -> Vec<(&'static str, Vec<f32>, Vec<f32>, f32)> {
    let grid =
        |r: &mut Rng, lo: f64, hi: f64| -> Vec<f32> { (0..cols).map(|_| (r.uniform(lo, hi) * 255.0).round() as f32 / 255.0).collect() };
    let with_b = |t: &[f32], w: &[f32], sign: f64, share: f64| -> f32 {
        let (t, w) = (to_f64(t), to_f64(w));
        (dot(&w, &t) - sign * share * reach(&t, &w, sign, f64::INFINITY)) as f32
    };
    let mut out = Vec::new();
    let (t, w) = (grid(r, 0.0, 1.0), r.uniform_vec(cols, -1.0, 1.0));
    out.push(("within reach", t.clone(), w.clone(), with_b(&t, &w, 1.0, 0.3)));
    out.push(("other side", t.clone(), w.clone(), with_b(&t, &w, -1.0, 0.6)));
    out.push(("out of reach", t.clone(), w.clone(), with_b(&t, &w, 1.0, 2.0)));
    let inner = grid(r, 0.2, 0.8);
    let closest: f64 = rooms(&to_f64(&inner), &to_f64(&w), 1.0).iter().fold(1.0, |m, &v| m.min(v));
    let w_l1: f64 = w.iter().map(|v| v.abs() as f64).sum();
    let b_near = (dot(&to_f64(&w), &to_f64(&inner)) - 0.5 * closest * w_l1) as f32;
    out.push(("closer than every room", inner, w.clone(), b_near));
    let sparse: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if i % 3 == 0 {
                v
            } else if i % 3 == 1 {
                0.0
            } else {
                -0.0
            }
        })
        .collect();
    out.push(("sparse weights", t.clone(), sparse.clone(), with_b(&t, &sparse, 1.0, 0.5)));
    out.push(("zero weights", t.clone(), vec![0.0; cols], -1.0));
    // Dyadic values: the dot product is exact in f32 too, so the point lies on the plane exactly.
    let t_dy: Vec<f32> = (0..cols).map(|_| r.below(257) as f32 / 256.0).collect();
    let w_dy: Vec<f32> = (0..cols).map(|_| (r.below(5) as f32 - 2.0) / 2.0).collect();
    let b_dy = dot(&to_f64(&t_dy), &to_f64(&w_dy)) as f32;
    out.push(("on the plane", t_dy, w_dy, b_dy));
    out
}

/// The reference's projection is the one its definition asks for: in the box, on the plane where
/// the plane is within reach (else every coordinate at its side), and no smaller L-inf step
/// reaches the plane (a step of size lam moves `<w, z>` by at most `reach(lam)`).
fn check_reference(name: &str, t: &[f64], w: &[f64], b: f64, d: &[f64]) {
    let moved: Vec<f64> = t.iter().zip(d).map(|(a, b)| a + b).collect();
    assert!(moved.iter().all(|v| (-1e-12..=1.0 + 1e-12).contains(v)), "{name}: reference leaves the box");
    let c = dot(w, t) - b;
    let sign = if c >= 0.0 { 1.0 } else { -1.0 };
    let size = d.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let scale = w.iter().map(|v| v.abs()).sum::<f64>().max(1.0);
    if c.abs() < reach(t, w, sign, f64::INFINITY) {
        assert!((dot(w, &moved) - b).abs() < 1e-9 * scale, "{name}: reference misses the plane");
        assert!((reach(t, w, sign, size) - c.abs()).abs() < 1e-9 * scale, "{name}: reference's step is not the smallest");
    } else {
        let corner: Vec<f64> =
            rooms(t, w, sign).iter().zip(w).map(|(r, wi)| if *wi == 0.0 { 0.0 } else { -(sign * wi).signum() * r }).collect();
        assert_eq!(d, corner.as_slice(), "{name}: out of reach, every coordinate goes to its side");
    }
}

#[test]
fn projection_matches_autoattacks_sorted_search() {
    let rt = rt();
    let mut r = rng(301);
    for cols in [189, 3 * 32 * 32] {
        let rows = cases(&mut r, cols);
        let t: Vec<f32> = rows.iter().flat_map(|c| c.1.clone()).collect();
        let w: Vec<f32> = rows.iter().flat_map(|c| c.2.clone()).collect();
        let b: Vec<f32> = rows.iter().map(|c| c.3).collect();
        let n = rows.len();
        let tt = Tensor::from_f32(&rt, &[n, 3, 1, cols / 3], &t).unwrap();
        let wt = Tensor::from_f32(&rt, &[n, 3, 1, cols / 3], &w).unwrap();
        let got = project_linf(&rt, &tt, &wt, &Tensor::from_f32(&rt, &[n], &b).unwrap()).unwrap().to_vec(&rt).unwrap();
        let want = cpu::projection_linf(&to_f64(&t), &to_f64(&w), &to_f64(&b), cols);
        for (k, (name, ..)) in rows.iter().enumerate() {
            let row = k * cols..(k + 1) * cols;
            check_reference(name, &to_f64(&t[row.clone()]), &to_f64(&w[row.clone()]), b[k] as f64, &want[row.clone()]);
            let size = want[row.clone()].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            println!("{cols} {name}: step size {size:.4}, relative error {:.2e}", rel_err(&got[row.clone()], &want[row.clone()]));
            assert_close(&format!("{cols} elements, {name}"), &got[row.clone()], &want[row], tol::FWD);
        }
    }
}

#[test]
fn fab_step_and_shrink_match_reference() {
    let rt = rt();
    let mut r = rng(302);
    let (n, shape, k) = (6, [3, 11, 9], 10);
    let cols: usize = shape.iter().product();
    let x0: Vec<f32> = (0..n * cols)
        .map(|i| {
            if i % 17 == 0 {
                0.0
            } else if i % 19 == 0 {
                1.0
            } else {
                (r.uniform(0.0, 1.0) * 255.0).round() as f32 / 255.0
            }
        })
        .collect();
    // Image 0 at its clean point (FAB's first iteration), the others moved away from it.
    let x1: Vec<f32> =
        x0.iter().enumerate().map(|(i, &v)| if i < cols { v } else { (v as f64 + r.uniform(-0.1, 0.1)).clamp(0.0, 1.0) as f32 }).collect();
    let mut g = r.uniform_vec(n * cols, -0.5, 0.5);
    g[cols + 5] = 0.0;
    g[4 * cols..5 * cols].fill(0.0); // image 4: no gradient, no move
    let logits = r.uniform_vec(n * k, -3.0, 3.0);
    let mut direction = vec![0f32; n * k];
    for img in 0..n {
        let label = r.below(k as u64) as usize;
        let target = (label + 1 + r.below(k as u64 - 1) as usize) % k;
        direction[img * k + label] = -1.0;
        direction[img * k + target] = 1.0;
    }
    let dims = [n, shape[0], shape[1], shape[2]];
    let t = |v: &[f32]| Tensor::from_f32(&rt, &dims, v).unwrap();
    let (x1t, x0t, gt) = (t(&x1), t(&x0), t(&g));
    let step = FabStep { eta: 1.05, alpha_max: 0.1 };
    let lt = Tensor::from_f32(&rt, &[n, k], &logits).unwrap();
    let dt = Tensor::from_f32(&rt, &[n, k], &direction).unwrap();
    let (next, norms) = fab_step(&rt, &x1t, &x0t, &gt, &lt, &dt, step).unwrap();
    let df: Vec<f64> = logits.chunks(k).zip(direction.chunks(k)).map(|(z, d)| dot(&to_f64(z), &to_f64(d))).collect();
    let (want, want_norms) = cpu::fab_step(&to_f64(&x1), &to_f64(&x0), &to_f64(&g), &df, cols, 1.05, 0.1);
    let got = next.to_vec(&rt).unwrap();
    for img in 0..n {
        let row = img * cols..(img + 1) * cols;
        assert_close(&format!("fab step, image {img}"), &got[row.clone()], &want[row], tol::FWD);
    }
    assert!(got.iter().all(|v| (0.0..=1.0).contains(v)), "the step stays in [0, 1]");
    assert_close("fab step norms", &norms.to_vec(&rt).unwrap(), &want_norms, tol::FWD);

    let mask = [1u32, 0, 0, 1, 1, 0];
    fab_shrink(&rt, &Tensor::from_u32(&rt, &[n], &mask).unwrap(), &x0t, &next, 0.9).unwrap();
    let mut shrunk = to_f64(&got);
    cpu::fab_shrink(&mask, &to_f64(&x0), &mut shrunk, 0.9);
    assert_close("fab shrink", &next.to_vec(&rt).unwrap(), &shrunk, tol::FWD);
}
