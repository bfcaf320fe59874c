//! The weight average over whole models (`cifs::training::ema`): it starts as an exact copy of
//! the live model; after each of three training steps its every parameter and running statistic
//! follows `avg = d avg + (1 - d) w` (the float64 recurrence on the live tensors read back, to
//! float32 precision) with the warm-up decays `min(decay, (1 + t) / (10 + t))`; the batch counters
//! are the live model's; an average of another configuration is refused.

#[path = "common/mod.rs"]
mod common;

use cifs::attacks::pgd::AttackLoss;
use cifs::attacks::single_step::SingleStep;
use cifs::models::resnet::{RESNET18, RESNET18_CIFS};
use cifs::models::wide_resnet::WRN_CIFS;
use cifs::training::ema::WeightAverage;
use cifs::training::optim::Sgd;
use cifs::{Model, ModelConfig};
use common::*;
use engine::{Rng, Runtime, Tensor};

/// Every parameter and running statistic, read back, in the average's order.
fn state(rt: &Runtime, model: &Model) -> Vec<(String, Vec<f32>)> {
    let mut s: Vec<(String, Vec<f32>)> = model.params().iter().map(|p| (p.name.clone(), p.leaf().to_vec(rt).unwrap())).collect();
    for bn in model.batchnorms() {
        s.push((format!("{}.running_mean", bn.name), bn.running_mean.to_vec(rt).unwrap()));
        s.push((format!("{}.running_var", bn.name), bn.running_var.to_vec(rt).unwrap()));
    }
    s
}

fn counters(model: &Model) -> Vec<i64> {
    model.batchnorms().iter().map(|bn| bn.num_batches_tracked.get()).collect()
}

#[test]
fn the_average_follows_every_tensor_with_the_warm_up_decay() {
    let rt = rt();
    for config in [ModelConfig::new(RESNET18_CIFS, 4, 10), ModelConfig { kind: WRN_CIFS, width: 1, classes: 10, depth: 10 }] {
        let live = Model::new(&rt, config, &mut Rng::new(1)).unwrap();
        let mut avg = WeightAverage::new(&rt, &live, 0.25, true).unwrap();
        assert_eq!(state(&rt, &avg.model), state(&rt, &live), "{config:?}: the average starts as a copy");
        let mut want: Vec<Vec<f64>> = state(&rt, &live).into_iter().map(|(_, v)| to_f64(&v)).collect();

        let sgd = Sgd::new(&rt, &live, 0.1, 0.9, 2e-4).unwrap();
        let attack = SingleStep::n_fgsm(8.0 / 255.0, AttackLoss::Joint { beta: 2.0 });
        let mut r = rng(7);
        let (x, y) = (
            Tensor::from_f32(&rt, &[4, 3, 32, 32], &r.uniform_vec(4 * 3 * 32 * 32, 0.0, 1.0)).unwrap(),
            Tensor::from_u32(&rt, &[4], &[1, 5, 9, 2]).unwrap(),
        );
        // The warm-up caps the decay at 1/10, 2/11, 3/12; the last is the decay itself.
        for (t, decay) in [0.1f32, 2.0 / 11.0, 0.25].into_iter().enumerate() {
            cifs::training::single_step::train_step(&rt, &live, &sgd, &x, &y, &attack, 2.0, &mut r).unwrap();
            assert_eq!(avg.next_decay(), decay, "update {t}");
            avg.update(&rt, &live).unwrap();
            for (e, (_, w)) in want.iter_mut().zip(state(&rt, &live)) {
                engine_reference::ema_update(e, &to_f64(&w), decay as f64);
            }
        }
        assert_eq!(avg.updates, 3);
        for ((name, got), want) in state(&rt, &avg.model).into_iter().zip(&want) {
            assert_close(&format!("{config:?} average of {name}"), &got, want, tol::FWD);
        }
        assert_eq!(counters(&avg.model), counters(&live), "the batch counters are the live model's");
        assert_eq!(counters(&live)[0], 3);

        let other = Model::new(&rt, ModelConfig::new(RESNET18, 4, 10), &mut Rng::new(1)).unwrap();
        assert!(avg.update(&rt, &other).is_err(), "an average of another model is refused");
    }
}

#[test]
fn without_warm_up_the_decay_is_constant_and_must_be_a_fraction() {
    let rt = rt();
    let live = Model::new(&rt, ModelConfig::new(RESNET18, 4, 10), &mut Rng::new(1)).unwrap();
    let mut avg = WeightAverage::new(&rt, &live, 0.999, false).unwrap();
    assert_eq!(avg.next_decay(), 0.999);
    avg.update(&rt, &live).unwrap();
    assert_eq!(avg.next_decay(), 0.999);
    assert!(WeightAverage::new(&rt, &live, 1.5, false).is_err());
    assert!(WeightAverage::new(&rt, &live, f32::NAN, false).is_err());
}
