//! AutoAttack-grade attacks (issue 11) against the torchattacks implementation, whose numbers
//! `tests/reference/torchattacks_fixtures.py` recorded in `tests/fixtures/attacks/`:
//! the DLR loss and its gradient, Square's schedule of square sizes and APGD's step-size control
//! must match exactly; on a small trained model our APGD-CE, APGD-T and Square must break as many
//! images as torchattacks' within a stated tolerance. Plus the invariants on a small model: every
//! adversarial image in the eps-ball and in [0, 1], every image reported broken really
//! misclassified, autoattack's accuracy at most each of its attacks', and the same numbers from
//! the same seed.

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;

use cifs::apgd::{Apgd, ApgdLoss, Batch, StepControl};
use cifs::attack::AttackLoss;
use cifs::evaluate::{evaluate, Attack, EvalSettings};
use cifs::square::{p_selection, side, Square};
use cifs::{hostloss, Mode, ModelConfig, ModelKind, Model};
use common::*;
use engine::{autodiff, Runtime, Tensor};

fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attacks").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn ints(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn dlr_loss_and_gradient_match_torchattacks() {
    let rt = rt();
    let f = fixture("dlr");
    let k = f["classes"].as_u64().unwrap() as usize;
    let logits: Vec<f32> = floats(&f["logits"]).iter().map(|&v| v as f32).collect();
    let (labels, targets) = (ints(&f["labels"]), ints(&f["targets"]));
    let n = labels.len();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    let tt = Tensor::from_u32(&rt, &[n], &targets).unwrap();
    for (name, t) in [("untargeted", None), ("targeted", Some(&tt))] {
        let want_rows = floats(&f[name]);
        let host = hostloss::dlr(&logits, &labels, t.map(|_| targets.as_slice()), k);
        assert_close(&format!("{name} DLR per row (host)"), &host.iter().map(|&v| v as f32).collect::<Vec<_>>(), &want_rows, tol::FWD);
        let lt = Tensor::leaf(&rt, &[n, k], &logits).unwrap();
        let loss = engine::ops::dlr_loss::dlr_loss(&rt, &lt, &yt, t).unwrap();
        assert_close(&format!("{name} DLR sum (GPU)"), &loss.to_vec(&rt).unwrap(), &[want_rows.iter().sum()], tol::FWD);
        let grads = autodiff::backward(&rt, &loss).unwrap();
        assert_close(&format!("{name} DLR gradient (GPU)"), &grads.get(&lt).unwrap().to_vec(&rt).unwrap(), &floats(&f[format!("{name}_grad").as_str()]), tol::BWD);
    }
}

#[test]
fn square_schedule_matches_torchattacks() {
    let f = fixture("square_schedule");
    let queries = f["queries"].as_u64().unwrap() as usize;
    let p_init = f["p_init"].as_f64().unwrap();
    let (h, w) = (f["height"].as_u64().unwrap() as usize, f["width"].as_u64().unwrap() as usize);
    let (want_p, want_side) = (floats(&f["p"]), ints(&f["side"]));
    assert_eq!(want_p.len(), queries);
    for it in 0..queries {
        assert_eq!(p_selection(p_init, it, queries), want_p[it], "p at iteration {it}");
        assert_eq!(side(want_p[it], h, w), want_side[it] as usize, "side at iteration {it}");
    }
}

/// 2 eps / step, as a count of halvings.
fn halvings(step: f64, eps: f64) -> u32 {
    (2.0 * eps / step).log2().round() as u32
}

#[test]
fn apgd_step_size_control_matches_torchattacks() {
    let f = fixture("apgd_control");
    let eps = f["eps"].as_f64().unwrap();
    let iters = f["iterations"].as_u64().unwrap() as usize;
    let history: Vec<Vec<f64>> = f["history"].as_array().unwrap().iter().map(floats).collect();
    let mut control = StepControl::new(eps, iters, f["rho"].as_f64().unwrap(), &floats(&f["initial"]));
    let checkpoints = f["checkpoints"].as_array().unwrap();
    let mut next = 0;
    let mut total_halved = 0;
    for (i, losses) in history.iter().enumerate() {
        let before: Vec<u32> = control.step.iter().map(|&s| halvings(s, eps)).collect();
        let decision = control.record(i, losses);
        match decision.halved {
            Some(halved) => {
                let c = &checkpoints[next];
                assert_eq!(c["iteration"].as_u64().unwrap() as usize, i, "checkpoint {next} at another iteration");
                let want: Vec<u32> = floats(&c["step_before"]).iter().map(|&s| halvings(s, eps)).collect();
                assert_eq!(before, want, "step sizes going into checkpoint {next} (iteration {i})");
                total_halved += halved.iter().filter(|&&h| h).count();
                next += 1;
            }
            None => assert!(checkpoints.get(next).is_none_or(|c| c["iteration"].as_u64().unwrap() as usize != i), "missed the checkpoint at iteration {i}"),
        }
    }
    assert_eq!(next, checkpoints.len(), "every checkpoint taken");
    let final_want: Vec<u32> = floats(&f["final_step"]).iter().map(|&s| halvings(s, eps)).collect();
    assert_eq!(control.step.iter().map(|&s| halvings(s, eps)).collect::<Vec<_>>(), final_want, "final step sizes");
    assert!(total_halved > 0 && final_want.iter().any(|&h| h != final_want[0]), "the fixture should exercise halving decisions that differ by image");
}

/// A width-2 ResNet18-CIFS and `n` coloured images labelled with its own predictions (so every
/// image starts classified correctly and the attacks have something to break). A freshly
/// initialised network gives every image the same class by a margin no small perturbation moves,
/// so it is first trained a few clean steps to tell the images apart.
const STEPS: usize = 15;

fn setup(rt: &Runtime, n: usize) -> (Model, Vec<f32>, Vec<u32>) {
    let model = Model::new(rt, ModelConfig::new(ModelKind::ResNet18Cifs, 2, 10), &mut engine::Rng::new(31)).unwrap();
    // Each image a colour of its own plus noise: images that differ as a whole, as photos do.
    let mut r = rng(32);
    let colours: Vec<f64> = (0..n * 3).map(|_| r.uniform(0.15, 0.85)).collect();
    let x: Vec<f32> = (0..n * 3072).map(|i| ((colours[i / 1024] + r.uniform(-0.1, 0.1)) * 255.0).round() as f32 / 255.0).collect();
    let xt = Tensor::from_f32(rt, &[n, 3, 32, 32], &x).unwrap();
    let distinct = Tensor::from_u32(rt, &[n], &(0..n as u32).map(|i| i % 10).collect::<Vec<_>>()).unwrap();
    let sgd = cifs::optim::Sgd::new(rt, &model, 0.05, 0.9, 0.0).unwrap();
    for _ in 0..STEPS {
        cifs::train::train_step(rt, &model, &sgd, &xt, &distinct, None, 2.0, &mut engine::Rng::new(0)).unwrap();
    }
    let logits = engine::no_grad(|| model.forward(rt, &xt, None, Mode::Eval)).unwrap().logits.to_vec(rt).unwrap();
    let labels = hostloss::predictions(&logits, 10).iter().map(|&p| p as u32).collect();
    (model, x, labels)
}

#[test]
fn apgd_and_square_stay_in_the_box_and_break_what_they_report() {
    let rt = rt();
    let n = 6;
    let (model, x, labels) = setup(&rt, n);
    let xt = Tensor::from_f32(&rt, &[n, 3, 32, 32], &x).unwrap();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    let b = Batch { x: &xt, x_host: &x, labels: &yt, labels_host: &labels, ids: &ids };
    // A radius at which PGD breaks some but not all of these images.
    let eps = 32.0 / 255.0;
    let apgd = Apgd { eps, iterations: 5, restarts: 1, rho: 0.75, seed: 3 };
    let square = Square { eps, queries: 20, p_init: 0.8, seed: 3 };
    type Run<'a> = Box<dyn Fn(&mut [bool]) -> Vec<f32> + 'a>;
    let runs: Vec<(&str, Run)> = vec![
        ("apgd-ce", Box::new(|r: &mut [bool]| apgd.run(&rt, &model, &b, ApgdLoss::Untargeted(AttackLoss::Ce), r).unwrap())),
        ("apgd-joint", Box::new(|r: &mut [bool]| apgd.run(&rt, &model, &b, ApgdLoss::Untargeted(AttackLoss::Joint { beta: 2.0 }), r).unwrap())),
        ("apgd-dlr", Box::new(|r: &mut [bool]| apgd.run(&rt, &model, &b, ApgdLoss::Untargeted(AttackLoss::Dlr), r).unwrap())),
        ("apgd-t", Box::new(|r: &mut [bool]| apgd.run(&rt, &model, &b, ApgdLoss::Targeted { rank: 3 }, r).unwrap())),
        ("square", Box::new(|r: &mut [bool]| square.run(&rt, &model, &b, r).unwrap())),
    ];
    let mut broke_any = false;
    for (name, run) in runs {
        let mut robust = vec![true; n];
        let adv = run(&mut robust);
        if let Some(i) = in_eps_ball(&adv, &x, eps) {
            panic!("{name}: pixel {i} is {} from {}", adv[i], x[i]);
        }
        let at = Tensor::from_f32(&rt, &[n, 3, 32, 32], &adv).unwrap();
        let preds = hostloss::predictions(&engine::no_grad(|| model.forward(&rt, &at, None, Mode::Eval)).unwrap().logits.to_vec(&rt).unwrap(), 10);
        for i in 0..n {
            if !robust[i] {
                assert_ne!(preds[i], labels[i] as usize, "{name}: image {i} reported broken but its adversarial image is classified correctly");
                broke_any = true;
            }
        }
        println!("{name}: {} of {n} robust", robust.iter().filter(|&&r| r).count());
    }
    assert!(broke_any, "no attack broke any image");
}

#[test]
fn autoattack_is_at_most_each_of_its_attacks_and_reproducible() {
    let rt = rt();
    let n = 8;
    let (model, x, labels) = setup(&rt, n);
    let data = Arc::new(datasets::Dataset {
        images: x.iter().map(|&v| (v * 255.0).round() as u8).collect(),
        labels: labels.iter().map(|&l| l as u8).collect(),
        classes: (0..10).map(|c| format!("c{c}")).collect(),
        shape: datasets::ImageShape::RGB32,
    });
    // Small budgets (lavapipe): 4 APGD iterations, 2 target classes, 15 Square queries.
    let settings = EvalSettings { iterations: 4, target_classes: 2, queries: 15, seed: 5, ..EvalSettings::reference(16.0 / 255.0, 5) };
    let attacks = [Attack::Natural, Attack::ApgdCe, Attack::ApgdT, Attack::Square, Attack::AutoAttack];
    let results = evaluate(&rt, &model, &data, &attacks, settings, |_, _| {}).unwrap();
    println!("{:?}", results.iter().map(|r| (r.attack.clone(), r.correct)).collect::<Vec<_>>());
    let acc = |name: &str| results.iter().find(|r| r.attack == name).unwrap_or_else(|| panic!("no row {name}")).correct;
    assert_eq!(acc("natural"), n, "labels are the model's own predictions");
    for name in ["apgd-ce", "apgd-t", "square", "autoattack/apgd-ce", "autoattack/apgd-t", "autoattack/square"] {
        assert!(acc("autoattack") <= acc(name), "autoattack {} > {name} {}", acc("autoattack"), acc(name));
    }
    assert!(acc("autoattack/apgd-ce") >= acc("autoattack/apgd-t") && acc("autoattack/apgd-t") >= acc("autoattack/square"));
    assert_eq!(acc("autoattack/apgd-ce"), acc("apgd-ce"), "the first stage is APGD-CE on the same images with the same draws");
    for r in &results {
        assert_eq!(r.per_class.iter().map(|c| c.correct).sum::<usize>(), r.correct, "{}: per-class counts", r.attack);
        assert_eq!(r.per_class.iter().map(|c| c.images).sum::<usize>(), n);
    }
    assert!(results.iter().any(|r| r.loss.contains("joint")), "rows say which loss they used");
    let again = evaluate(&rt, &model, &data, &[Attack::AutoAttack], settings, |_, _| {}).unwrap();
    assert_eq!(&results[results.len() - 4..], &again[..], "the same seed gives the same numbers");
}




/// Robust counts of our attacks against torchattacks' on the same small trained ResNet18-CIFS,
/// the same 12 images and the same budgets (`success.json`: eps 16/255, APGD 10 iterations,
/// APGD-T 2 target classes, Square 50 queries).
///
/// Tolerance: 2 images of 12 for each attack. The two implementations run the same algorithm but
/// draw different random numbers (APGD's starting points, Square's squares), so an image whose
/// robustness is decided by the draw may go either way; the deterministic parts (losses, step
/// control, schedules) are checked exactly by the tests above. APGD's counts barely depend on the
/// draw here (ours and torchattacks' agree exactly at these settings). Square with few queries
/// does: its first squares cover most of the image, and one lucky draw breaks several images at
/// once (torchattacks' robust counts over seeds 0..2 are 7, 5, 6; on a 16-image variant of this
/// model both implementations gave 15 at most seeds and one outlier, 9 or 11), so for Square the
/// medians of three seeds are compared. A broken attack (one that never halves its step, a wrong
/// target, a wrong square schedule) misses by more.
#[test]
fn attack_success_matches_torchattacks_on_a_small_trained_model() {
    let rt = rt();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/attacks");
    let f = fixture("success");
    let model = cifs::checkpoint::load_model(&rt, &dir.join("success.safetensors")).unwrap();
    assert_eq!(model.config.kind, ModelKind::ResNet18Cifs);
    let bytes = std::fs::read(dir.join("success.safetensors")).unwrap();
    let st = cifs::state::open(&bytes, "success").unwrap();
    let (shape, x) = cifs::state::read_f32(&st, "input.x", "success").unwrap();
    let labels: Vec<u32> = cifs::state::read_i64(&st, "input.y", "success").unwrap().iter().map(|&v| v as u32).collect();
    let n = labels.len();
    let xt = Tensor::from_f32(&rt, &shape, &x).unwrap();
    let yt = Tensor::from_u32(&rt, &[n], &labels).unwrap();
    let ids: Vec<u64> = (0..n as u64).collect();
    let b = Batch { x: &xt, x_host: &x, labels: &yt, labels_host: &labels, ids: &ids };
    let eps = f["eps"].as_f64().unwrap() as f32;
    let apgd = Apgd { eps, iterations: f["apgd_iterations"].as_u64().unwrap() as usize, restarts: 1, rho: 0.75, seed: 0 };
    let square = Square { eps, queries: f["square_queries"].as_u64().unwrap() as usize, p_init: 0.8, seed: 0 };
    let rank = f["target_classes"].as_u64().unwrap() as usize + 1;
    let survivors = |run: &dyn Fn(&mut [bool])| -> i64 {
        let mut robust = vec![true; n];
        run(&mut robust);
        robust.iter().filter(|&&r| r).count() as i64
    };
    let median = |mut v: Vec<i64>| -> i64 {
        v.sort();
        v[v.len() / 2]
    };
    let ours = [
        ("apgd-ce", survivors(&|r| drop(apgd.run(&rt, &model, &b, ApgdLoss::Untargeted(AttackLoss::Ce), r).unwrap()))),
        ("apgd-t", survivors(&|r| drop(apgd.run(&rt, &model, &b, ApgdLoss::Targeted { rank }, r).unwrap()))),
        ("square", median((0..3).map(|seed| survivors(&|r| drop(Square { seed, ..square }.run(&rt, &model, &b, r).unwrap()))).collect())),
    ];
    let counts = &f["robust_counts"];
    let theirs = |name: &str| match name {
        "square" => median((0..3).map(|s| counts[format!("square-seed{s}").as_str()].as_i64().unwrap()).collect()),
        _ => counts[name].as_i64().unwrap(),
    };
    let report: Vec<String> = ours.iter().map(|(name, c)| format!("{name}: ours {c}, torchattacks {}", theirs(name))).collect();
    println!("{}", report.join("; "));
    for (name, c) in ours {
        assert!((c - theirs(name)).abs() <= 2, "{name}: {c} of {n} robust here, {} with torchattacks", theirs(name));
    }
}
