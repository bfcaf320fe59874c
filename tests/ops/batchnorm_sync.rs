//! Synchronised batch norm (`engine::ops::batchnorm_sync`): replicas that each hold part of a
//! batch and sum through `Runtime::with_replica_sum` compute, part by part, the train-mode
//! forward, the running statistics and the backward of one batch norm over the whole batch
//! (the float64 reference). The replicas are two threads with a device each, summing through
//! shared memory; the parts are unequal, and one shape takes the multi-chunk reductions.

use std::sync::{Arc, Barrier, Mutex};

use crate::common::*;
use engine::ops::batchnorm::{batchnorm_act, Act, RunningStats, EPS, MOMENTUM};
use engine::{autodiff, Tensor};
use engine_reference as cpu;

/// An all-reduce between threads: each adds its buffer, all wait, all read the total.
struct ThreadSum {
    total: Mutex<Vec<f64>>,
    barrier: Barrier,
}

impl ThreadSum {
    fn sum(&self, buf: &mut [f64]) {
        {
            let mut t = self.total.lock().unwrap();
            t.resize(buf.len(), 0.0);
            t.iter_mut().zip(buf.iter()).for_each(|(t, b)| *t += b);
        }
        self.barrier.wait();
        buf.copy_from_slice(&self.total.lock().unwrap());
        if self.barrier.wait().is_leader() {
            self.total.lock().unwrap().clear();
        }
        self.barrier.wait();
    }
}

/// What one replica computes on images `lo..hi`: y, dx, dresidual, dgamma, dbeta, running mean
/// and variance.
type Part = [Vec<f32>; 7];

#[allow(clippy::too_many_arguments)]
fn replica(xs: [usize; 4], lo: usize, hi: usize, data: &[Vec<f32>; 7], relu: bool, sum: Arc<ThreadSum>) -> Part {
    let [x, res, gamma, beta, rm0, rv0, g] = data;
    let rt = rt();
    let per = xs[1] * xs[2] * xs[3];
    let ps = [hi - lo, xs[1], xs[2], xs[3]];
    let xt = Tensor::leaf(&rt, &ps, &x[lo * per..hi * per]).unwrap();
    let rest = Tensor::leaf(&rt, &ps, &res[lo * per..hi * per]).unwrap();
    let (gt, bt) = (Tensor::leaf(&rt, &[xs[1]], gamma).unwrap(), Tensor::leaf(&rt, &[xs[1]], beta).unwrap());
    let (rm, rv) = (Tensor::from_f32(&rt, &[xs[1]], rm0).unwrap(), Tensor::from_f32(&rt, &[xs[1]], rv0).unwrap());
    let f = sum.clone();
    let (y, grads) = rt.with_replica_sum(std::rc::Rc::new(move |b: &mut [f64]| f.sum(b)), || {
        let y = batchnorm_act(&rt, &xt, &gt, &bt, RunningStats { mean: &rm, var: &rv }, true, Act { residual: Some(&rest), relu }).unwrap();
        let grads = autodiff::backward_with(&rt, &y, Tensor::from_f32(&rt, &ps, &g[lo * per..hi * per]).unwrap()).unwrap();
        (y, grads)
    });
    let v = |t: &Tensor| t.to_vec(&rt).unwrap();
    [
        v(&y),
        v(grads.get(&xt).unwrap()),
        v(grads.get(&rest).unwrap()),
        v(grads.get(&gt).unwrap()),
        v(grads.get(&bt).unwrap()),
        v(&rm),
        v(&rv),
    ]
}

fn synced(xs: [usize; 4], split: usize, relu: bool, seed: u64) {
    let mut r = rng(seed);
    let (n, ch) = (xs.iter().product::<usize>(), xs[1]);
    let data = Arc::new([
        r.uniform_vec(n, -2.0, 3.0),
        r.uniform_vec(n, -1.5, 1.5),
        r.uniform_vec(ch, 0.5, 1.5),
        r.uniform_vec(ch, -0.5, 0.5),
        r.uniform_vec(ch, -0.2, 0.2),
        r.uniform_vec(ch, 0.5, 2.0),
        r.uniform_vec(n, -1.0, 1.0),
    ]);
    let sum = Arc::new(ThreadSum { total: Mutex::new(Vec::new()), barrier: Barrier::new(2) });
    let parts: Vec<Part> = [(0, split), (split, xs[0])]
        .into_iter()
        .map(|(lo, hi)| {
            let (data, sum) = (data.clone(), sum.clone());
            std::thread::spawn(move || replica(xs, lo, hi, &data, relu, sum))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let [x, res, gamma, beta, rm0, rv0, g] = &*data;
    let (mean, var) = cpu::channel_stats(&to_f64(x), xs);
    let res64 = to_f64(res);
    let y = cpu::batchnorm_act(&to_f64(x), xs, &mean, &var, &to_f64(gamma), &to_f64(beta), Some(&res64), relu, EPS as f64);
    let (dx, dgamma, dbeta, dres) =
        cpu::batchnorm_act_backward(&to_f64(x), xs, &mean, &var, &to_f64(gamma), EPS as f64, true, relu, &y, &to_f64(g));
    let m = (xs[0] * xs[2] * xs[3]) as f64;
    let mom = MOMENTUM as f64;
    let want_rm: Vec<f64> = (0..ch).map(|c| (1.0 - mom) * rm0[c] as f64 + mom * mean[c]).collect();
    let want_rv: Vec<f64> = (0..ch).map(|c| (1.0 - mom) * rv0[c] as f64 + mom * var[c] * m / (m - 1.0)).collect();
    let joined = |k: usize| -> Vec<f32> { parts.iter().flat_map(|p| p[k].clone()).collect() };
    let summed = |k: usize| -> Vec<f32> { (0..ch).map(|c| parts.iter().map(|p| p[k][c]).sum()).collect() };
    let what = format!("synced batch norm {xs:?} split at {split} (relu {relu})");
    assert_close(&format!("{what} forward"), &joined(0), &y, tol::FWD);
    assert_close(&format!("{what} dx"), &joined(1), &dx, tol::BWD);
    assert_close(&format!("{what} dresidual"), &joined(2), &dres, tol::BWD);
    assert_close(&format!("{what} dgamma (summed over replicas)"), &summed(3), &dgamma, tol::BWD);
    assert_close(&format!("{what} dbeta (summed over replicas)"), &summed(4), &dbeta, tol::BWD);
    for (k, p) in parts.iter().enumerate() {
        assert_close(&format!("{what} replica {k} running mean"), &p[5], &want_rm, tol::FWD);
        assert_close(&format!("{what} replica {k} running var"), &p[6], &want_rv, tol::FWD);
    }
}

#[test]
fn replicas_compute_the_batch_norm_of_the_whole_batch() {
    synced([5, 3, 4, 3], 3, true, 40);
    synced([5, 3, 4, 3], 1, false, 41);
    // Large enough for several reduction chunks per channel on both replicas.
    synced([7, 2, 64, 64], 4, true, 42);
}
