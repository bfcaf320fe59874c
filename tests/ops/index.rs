//! gather_rows (and its scatter-add backward) and top2.

use crate::common::*;
use engine::ops::index::{gather_rows, top2};
use engine::{autodiff, Tensor};
use engine_reference as cpu;

#[test]
fn gather_rows_matches_reference() {
    let rt = rt();
    let mut r = rng(91);
    let (rows, cols, n) = (10, 37, 23);
    let table = r.uniform_vec(rows * cols, -1.0, 1.0);
    let idx: Vec<u32> = (0..n).map(|_| r.below(rows as u64) as u32).collect();
    let tt = Tensor::leaf(&rt, &[rows, cols], &table).unwrap();
    let it = Tensor::from_u32(&rt, &[n], &idx).unwrap();
    let y = gather_rows(&rt, &tt, &it).unwrap();
    assert_close("gather_rows", &y.to_vec(&rt).unwrap(), &cpu::gather_rows(&to_f64(&table), cols, &idx), tol::FWD);
    let g = r.uniform_vec(n * cols, -1.0, 1.0);
    let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, y.shape(), &g).unwrap()).unwrap();
    let mut want = vec![0.0; rows * cols];
    for (k, &row) in idx.iter().enumerate() {
        for c in 0..cols {
            want[row as usize * cols + c] += g[k * cols + c] as f64;
        }
    }
    assert_close("gather_rows backward", &grads.get(&tt).unwrap().to_vec(&rt).unwrap(), &want, tol::BWD);
    grad_check(&rt, 92, &[(vec![4, 3], r.uniform_vec(12, -1.0, 1.0))], 8, |g, t| {
        let idx = Tensor::from_u32(g, &[5], &[3, 0, 3, 1, 3])?;
        gather_rows(g, &t[0], &idx)
    });
}

#[test]
fn top2_matches_reference_including_ties() {
    let rt = rt();
    let mut r = rng(93);
    let (n, c) = (101, 10);
    let mut x = r.uniform_vec(n * c, -1.0, 1.0);
    // Row 0: a tie for first place; row 1: the maximum at index 0.
    x[2] = 5.0;
    x[7] = 5.0;
    x[10] = 9.0;
    let (f, s) = top2(&rt, &Tensor::from_f32(&rt, &[n, c], &x).unwrap()).unwrap();
    let (wf, ws) = cpu::top2(&to_f64(&x), c);
    assert_eq!(f.to_vec_u32(&rt).unwrap(), wf);
    assert_eq!(s.to_vec_u32(&rt).unwrap(), ws);
    assert_eq!((wf[0], ws[0]), (2, 7));
    assert_eq!(wf[1], 0);
}
