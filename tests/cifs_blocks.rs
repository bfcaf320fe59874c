//! The CIFS block and the joint loss on their own (finite differences of the GPU functions),
//! checkpoints in and out (reproducible bytes, malformed files as errors), the attacks' contracts
//! (eps ball, [0, 1] box, loss ascent, settings validated) and the training step's.

#[path = "common/mod.rs"]
mod common;

use cifs::models::resnet::{RESNET18, RESNET18_CAS, RESNET18_CIFS};
use cifs::models::wide_resnet::{WRN, WRN_CIFS};
use std::collections::BTreeMap;

use cifs::attacks::pgd::{cw_inf, fgsm, AttackLoss, Pgd, Start};
use cifs::checkpoint::state::{load_state_dict, to_safetensors};
use cifs::loss::joint_loss;
use cifs::models::probe::{PairRule, Probe};
use cifs::{CifsError, Mode, Model, ModelConfig, ModelKind, Output};
use common::*;
use engine::{autodiff, Runtime, Tensor};

/// Finite differences of `sum(masked * R1) + sum(probe_logits * R2)` w.r.t. z and every probe
/// parameter, against our backward. A step of 1e-2 never changes which class pair a sample uses
/// at these seeds (the pair is a discrete choice, not differentiable).
///
/// The reference's gradient holds the mask constant w.r.t. z (the relevance reads a detached copy
/// of the features). So the numeric derivative in z is taken of exactly that function: the mask
/// of the unperturbed z times the perturbed z, plus the probe logits of the perturbed z. With the
/// linear probe the mask does not depend on z at all; with the nonlinear one it does, and the
/// full function's derivative would (rightly) disagree with the reference's gradient.
fn probe_fd(kind: &str, train: bool, seed: u64) {
    let rt = rt();
    let mut r = rng(seed);
    let (n, c, classes) = (3, 6, 4);
    let probe = match kind {
        "nonlinear" => Probe::nonlinear(&rt, "b", c, cifs::models::probe::PROBE_HIDDEN, classes, &mut r),
        // ResNet-10-CIFS's probes: the mask scaled by 2.
        "nonlinear-x2" => Probe::nonlinear(&rt, "b", c, 7, classes, &mut r).map(|p| p.scaled(2.0)),
        "linear-x2" => Probe::linear(&rt, "b", c, classes, &mut r).map(|p| p.scaled(2.0)),
        "linear" => Probe::linear(&rt, "b", c, classes, &mut r),
        _ => Probe::cas(&rt, "b", c, classes, &mut r),
    }
    .unwrap();
    // Bounded away from 0 so the unperturbed mask can be read back as out / z.
    let z = r.uniform_vec(n * c * 4, 0.5, 2.0);
    let labels = Tensor::from_u32(&rt, &[n], &[0, 3, 1]).unwrap();
    let rule = if train { PairRule::Train(&labels) } else { PairRule::Eval };
    let w_out = r.uniform_vec(n * c * 4, -1.0, 1.0);
    let w_logit = r.uniform_vec(n * classes, -1.0, 1.0);
    let objective = |rt: &Runtime, zt: &Tensor| -> (f64, Output) {
        let cifs::models::probe::Masked { out, logits, .. } = probe.apply(rt, zt, rule, true).unwrap();
        let a: f64 = out.to_vec(rt).unwrap().iter().zip(&w_out).map(|(x, w)| *x as f64 * *w as f64).sum();
        let b: f64 = logits.to_vec(rt).unwrap().iter().zip(&w_logit).map(|(x, w)| *x as f64 * *w as f64).sum();
        (a + b, Output { logits: out, probes: vec![logits] })
    };
    let zt = Tensor::leaf(&rt, &[n, c, 2, 2], &z).unwrap();
    let (_, parts) = objective(&rt, &zt);
    // Seed both outputs at once: backward of sum(out * R1) + sum(logits * R2).
    let g1 = autodiff::backward_with(&rt, &parts.logits, Tensor::from_f32(&rt, parts.logits.shape(), &w_out).unwrap()).unwrap();
    let g2 = autodiff::backward_with(&rt, &parts.probes[0], Tensor::from_f32(&rt, parts.probes[0].shape(), &w_logit).unwrap()).unwrap();
    let total = |t: &Tensor| -> Vec<f32> {
        let a = g1.get(t).map(|g| g.to_vec(&rt).unwrap());
        let b = g2.get(t).map(|g| g.to_vec(&rt).unwrap());
        match (a, b) {
            (Some(a), Some(b)) => a.iter().zip(&b).map(|(x, y)| x + y).collect(),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => panic!("no gradient"),
        }
    };
    let out0 = parts.logits.to_vec(&rt).unwrap();
    let mask0: Vec<f64> = out0.iter().zip(&z).map(|(o, z)| *o as f64 / *z as f64).collect();
    let objective_z = |zt: &Tensor| -> f64 {
        let zv = zt.to_vec(&rt).unwrap();
        let logits = probe.apply(&rt, zt, rule, true).unwrap().logits;
        let a: f64 = zv.iter().zip(&mask0).zip(&w_out).map(|((z, m), w)| *z as f64 * m * *w as f64).sum();
        let b: f64 = logits.to_vec(&rt).unwrap().iter().zip(&w_logit).map(|(x, w)| *x as f64 * *w as f64).sum();
        a + b
    };
    let h = tol::FD_STEP as f32;
    let mut targets: Vec<(String, Tensor, Vec<f32>)> = vec![("z".into(), zt.clone(), z.clone())];
    for l in probe.linears() {
        for p in [&l.weight, &l.bias] {
            targets.push((p.name.clone(), p.leaf().clone(), p.leaf().to_vec(&rt).unwrap()));
        }
    }
    for (name, t, data) in targets {
        let analytic = total(&t);
        let (mut got, mut want) = (vec![], vec![]);
        for _ in 0..8 {
            let j = r.below(data.len() as u64) as usize;
            let mut d = data.clone();
            d[j] = data[j] + h;
            t.write_f32(&rt, &d).unwrap();
            let eval = || engine::no_grad(|| if name == "z" { objective_z(&zt) } else { objective(&rt, &zt).0 });
            let plus = eval();
            d[j] = data[j] - h;
            t.write_f32(&rt, &d).unwrap();
            let minus = eval();
            t.write_f32(&rt, &data).unwrap();
            got.push(analytic[j]);
            want.push((plus - minus) / ((data[j] + h) as f64 - (data[j] - h) as f64));
        }
        assert_close(&format!("{kind} probe block ({}) d/d{name}", if train { "train" } else { "eval" }), &got, &want, tol::FD);
    }
}

#[test]
fn cifs_linear_probe_block_finite_differences() {
    probe_fd("linear", true, 201);
    probe_fd("linear", false, 202);
}

#[test]
fn cifs_nonlinear_probe_block_finite_differences() {
    probe_fd("nonlinear", true, 203);
    probe_fd("nonlinear", false, 204);
}

#[test]
fn scaled_mask_probe_blocks_finite_differences() {
    probe_fd("nonlinear-x2", true, 207);
    probe_fd("linear-x2", false, 208);
}

/// CAS (the paper's baseline): the mask is the raw weight row of the label (train) or of the
/// predicted class (eval), not detached, so the probe's weights get gradients through the mask.
#[test]
fn cas_block_finite_differences() {
    probe_fd("cas", true, 205);
    probe_fd("cas", false, 206);
}

#[test]
fn joint_loss_matches_formula_and_finite_differences() {
    let rt = rt();
    let mut r = rng(211);
    let labels_v = [2u32, 0, 1];
    let labels = Tensor::from_u32(&rt, &[3], &labels_v).unwrap();
    let vals: Vec<Vec<f32>> = (0..3).map(|_| r.uniform_vec(12, -2.0, 2.0)).collect();
    let ts: Vec<Tensor> = vals.iter().map(|v| Tensor::from_f32(&rt, &[3, 4], v).unwrap()).collect();
    let loss = joint_loss(&rt, &Output { logits: ts[0].clone(), probes: vec![ts[1].clone(), ts[2].clone()] }, &labels, 2.0).unwrap();
    let ce = |v: &[f32]| engine_reference::cross_entropy(&to_f64(v), 4, &labels_v).0;
    // 3/(beta+1) * (CE + beta/K * sum CE_k), beta 2, K 2.
    let want = (ce(&vals[0]) + (ce(&vals[1]) + ce(&vals[2]))) * 3.0 / 3.0;
    assert_close("joint loss", &loss.to_vec(&rt).unwrap(), &[want], tol::FWD);
    let inputs: Vec<(Vec<usize>, Vec<f32>)> = vals.iter().map(|v| (vec![3, 4], v.clone())).collect();
    grad_check(&rt, 212, &inputs, 8, |g, t| {
        joint_loss(g, &Output { logits: t[0].clone(), probes: vec![t[1].clone(), t[2].clone()] }, &labels, 0.5).map_err(engine_err)
    });
}

/// The engine error inside a model-layer error (grad_check's functions return engine results).
fn engine_err(e: CifsError) -> engine::EngineError {
    match e {
        CifsError::Engine(e) => e,
        other => panic!("{other}"),
    }
}

fn small_model(rt: &Runtime, kind: ModelKind, width: usize, seed: u64) -> Model {
    Model::new(rt, ModelConfig::new(kind, width, 10), &mut engine::Rng::new(seed)).unwrap()
}

#[test]
fn checkpoint_round_trips_and_rejects_another_width() {
    let rt = rt();
    let a = small_model(&rt, RESNET18_CIFS, 4, 1);
    let bytes = to_safetensors(&rt, &a, vec![], BTreeMap::from([("arch".to_string(), "resnet18-cifs".to_string())])).unwrap();
    let b = small_model(&rt, RESNET18_CIFS, 4, 2);
    load_state_dict(&rt, &b, &bytes, "", "a.safetensors").unwrap();
    let x = Tensor::from_f32(&rt, &[2, 3, 32, 32], &rng(3).uniform_vec(6144, 0.0, 1.0)).unwrap();
    let la = a.forward(&rt, &x, None, Mode::Eval).unwrap().logits.to_vec(&rt).unwrap();
    let lb = b.forward(&rt, &x, None, Mode::Eval).unwrap().logits.to_vec(&rt).unwrap();
    assert_eq!(la, lb);
    let other = small_model(&rt, RESNET18_CIFS, 8, 1);
    let msg = load_state_dict(&rt, &other, &bytes, "", "a.safetensors").unwrap_err().to_string();
    assert!(msg.contains("a.safetensors") && msg.contains("shape"), "{msg}");
    let plain = small_model(&rt, RESNET18, 4, 1);
    let bytes_plain = to_safetensors(&rt, &plain, vec![], BTreeMap::new()).unwrap();
    let msg = load_state_dict(&rt, &a, &bytes_plain, "", "p.safetensors").unwrap_err().to_string();
    assert!(msg.contains("missing tensor") && msg.contains("Probe"), "{msg}");
    let msg = load_state_dict(&rt, &a, b"not a checkpoint", "", "junk.bin").unwrap_err().to_string();
    assert!(msg.contains("junk.bin"), "{msg}");
}

#[test]
fn attacks_stay_in_the_box_and_raise_their_loss() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 4, 5);
    let mut r = rng(6);
    let xv = r.uniform_vec(4 * 3072, 0.0, 1.0);
    let x = Tensor::from_f32(&rt, &[4, 3, 32, 32], &xv).unwrap();
    let y = Tensor::from_u32(&rt, &[4], &[1, 2, 3, 4]).unwrap();
    let eps = 8.0 / 255.0;
    let joint = |img: &Tensor| {
        engine::no_grad(|| joint_loss(&rt, &model.forward(&rt, img, None, Mode::Eval).unwrap(), &y, 2.0).unwrap().to_vec(&rt).unwrap()[0])
    };
    let margin = |img: &Tensor| {
        engine::no_grad(|| {
            engine::ops::margin_loss::margin_loss(&rt, &model.forward(&rt, img, None, Mode::Eval).unwrap().logits, &y, 50.0)
                .unwrap()
                .to_vec(&rt)
                .unwrap()[0]
        })
    };
    let mut start_rng = rng(7);
    let pgd = Pgd { eps, step: 2.0 / 255.0, steps: 5, loss: AttackLoss::Joint { beta: 2.0 } };
    let advs = [
        ("pgd", pgd.attack(&rt, &model, &x, &y, Start::Random(&mut start_rng)).unwrap()),
        ("fgsm", fgsm(&rt, &model, &x, &y, eps, AttackLoss::Joint { beta: 2.0 }).unwrap()),
        ("cw", cw_inf(&rt, &model, &x, &y, eps, 0.1 * eps, 5, 50.0).unwrap()),
    ];
    for (name, adv) in &advs {
        let v = adv.to_vec(&rt).unwrap();
        if let Some(i) = in_eps_ball(&v, &xv, eps) {
            panic!("{name} pixel {i}: {} from {}", v[i], xv[i]);
        }
    }
    assert!(joint(&advs[0].1) > joint(&x), "PGD did not raise the joint loss");
    assert!(joint(&advs[1].1) > joint(&x), "FGSM did not raise the joint loss");
    assert!(margin(&advs[2].1) > margin(&x), "CW did not raise the margin loss");
}

#[test]
fn pgd_training_steps_fit_a_fixed_batch() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 4, 9);
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(10);
    let x = Tensor::from_f32(&rt, &[8, 3, 32, 32], &r.uniform_vec(8 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[8], &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 2, loss: AttackLoss::Joint { beta: 2.0 } };
    let mut losses = Vec::new();
    for _ in 0..8 {
        let s = cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap();
        losses.push(s.loss.to_vec(&rt).unwrap()[0]);
    }
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[7] < losses[0], "adversarial training did not reduce the loss on a fixed batch: {losses:?}");
}

#[test]
fn a_warm_training_step_allocates_nothing_and_builds_nothing() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 4, 11);
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(12);
    let x = Tensor::from_f32(&rt, &[4, 3, 32, 32], &r.uniform_vec(4 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[4], &[0, 1, 2, 3]).unwrap();
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 1, loss: AttackLoss::Joint { beta: 2.0 } };
    let mut step = || {
        let s = cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap();
        s.loss.to_vec(&rt).unwrap();
    };
    step();
    step();
    let warm = rt.stats();
    step();
    step();
    let after = rt.stats();
    assert_eq!(after.buffer_allocations, warm.buffer_allocations, "buffers allocated by a warm step");
    assert_eq!(after.pipelines, warm.pipelines, "pipelines built by a warm step");
    assert_eq!(after.bind_groups_created, warm.bind_groups_created, "bind groups built by a warm step");
    println!("per step: {} dispatches, {} submits", (after.dispatches - warm.dispatches) / 2, (after.submits - warm.submits) / 2);
    // The whole step, attack included, goes to the GPU in one submit (the loss readback's).
    assert_eq!(after.submits - warm.submits, 2, "submits in two warm steps");
}

/// Safetensors bytes holding the given tensors (f32, any shapes) and no metadata.
fn safetensors_of(tensors: &[(&str, Vec<usize>)]) -> Vec<u8> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s)| (n.to_string(), s.clone(), vec![0u8; 4 * s.iter().product::<usize>()])).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn malformed_checkpoints_are_errors_not_panics() {
    let rt = rt();
    let dir = std::env::temp_dir().join(format!("cifs-wgpu-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (case, tensors) in [
        ("scalar-conv1", vec![("conv1.weight", vec![]), ("linear.weight", vec![10, 64])]),
        ("vector-conv1", vec![("conv1.weight", vec![8]), ("linear.weight", vec![10, 64])]),
        ("scalar-linear", vec![("conv1.weight", vec![8, 3, 3, 3]), ("linear.weight", vec![])]),
    ] {
        let path = dir.join(format!("{case}.safetensors"));
        std::fs::write(&path, safetensors_of(&tensors)).unwrap();
        let e = cifs::checkpoint::load_model(&rt, &path).err().unwrap_or_else(|| panic!("{case} loaded"));
        assert!(matches!(e, CifsError::UnknownModel { .. }), "{case}: {e}");
        assert!(e.to_string().contains(&format!("{case}.safetensors")), "{e}");
    }
}

#[test]
fn identical_models_give_identical_checkpoint_bytes() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 2, 21);
    // Every write builds its metadata anew; a HashMap-ordered header would differ between them.
    let first = cifs::checkpoint::model_bytes(&rt, &model, &[("epoch", "3".into()), ("pgd20_acc", "0.25".into())]).unwrap();
    for _ in 0..6 {
        let again = cifs::checkpoint::model_bytes(&rt, &model, &[("epoch", "3".into()), ("pgd20_acc", "0.25".into())]).unwrap();
        assert!(first == again, "two writes of the same model differ");
    }
    let meta = cifs::checkpoint::state::metadata(&first, "m").unwrap();
    assert_eq!(meta["arch"], "resnet18-cifs");
    assert_eq!(meta["epoch"], "3");
    let other = small_model(&rt, RESNET18_CIFS, 2, 21);
    cifs::checkpoint::state::load_state_dict(&rt, &other, &first, "", "m").unwrap();
}

#[test]
fn attacks_refuse_negative_or_non_finite_settings() {
    let rt = rt();
    let model = small_model(&rt, RESNET18, 2, 22);
    let x = Tensor::from_f32(&rt, &[1, 3, 32, 32], &vec![0.5; 3072]).unwrap();
    let y = Tensor::from_u32(&rt, &[1], &[0]).unwrap();
    let ok = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 1, loss: AttackLoss::Joint { beta: 2.0 } };
    for (what, pgd) in [
        ("eps", Pgd { eps: -1.0, ..ok }),
        ("eps", Pgd { eps: f32::NAN, ..ok }),
        ("step size", Pgd { step: -0.1, ..ok }),
        ("step size", Pgd { step: f32::INFINITY, ..ok }),
        ("attack steps", Pgd { steps: 0, ..ok }),
        ("beta", Pgd { loss: AttackLoss::Joint { beta: -2.0 }, ..ok }),
    ] {
        let e = pgd.attack(&rt, &model, &x, &y, Start::Zero).err().unwrap_or_else(|| panic!("{pgd:?} ran"));
        assert!(matches!(&e, CifsError::InvalidSetting { name, .. } if *name == what), "{pgd:?}: {e}");
    }
    ok.attack(&rt, &model, &x, &y, Start::Zero).unwrap();
}

#[test]
fn the_training_step_uses_the_attack_it_is_given() {
    // A training step with a CW-margin attack must train on CW images: it must end with the
    // weights of attack (CW) -> train-mode forward -> joint loss -> SGD done by hand.
    let rt = rt();
    let mut r = rng(23);
    let x = Tensor::from_f32(&rt, &[4, 3, 32, 32], &r.uniform_vec(4 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[4], &[0, 1, 2, 3]).unwrap();
    let cw = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 2, loss: AttackLoss::CwMargin { confidence: 50.0 } };
    let stepped = small_model(&rt, RESNET18_CIFS, 2, 24);
    let sgd = cifs::training::optim::Sgd::new(&rt, &stepped, 0.1, 0.9, 2e-4).unwrap();
    cifs::training::step::train_step(&rt, &stepped, &sgd, &x, &y, Some(&cw), 2.0, &mut engine::Rng::new(5)).unwrap();

    let by_hand = small_model(&rt, RESNET18_CIFS, 2, 24);
    let sgd2 = cifs::training::optim::Sgd::new(&rt, &by_hand, 0.1, 0.9, 2e-4).unwrap();
    let adv = cw.attack(&rt, &by_hand, &x, &y, Start::Random(&mut engine::Rng::new(5))).unwrap();
    let out = by_hand.forward(&rt, &adv, Some(&y), Mode::Train).unwrap();
    let grads = autodiff::backward(&rt, &joint_loss(&rt, &out, &y, 2.0).unwrap()).unwrap();
    sgd2.step(&rt, &by_hand, &grads).unwrap();
    for (a, b) in stepped.params().iter().zip(by_hand.params()) {
        assert_eq!(
            a.leaf().to_vec(&rt).unwrap(),
            b.leaf().to_vec(&rt).unwrap(),
            "{} differs: the step did not train on the given attack",
            a.name
        );
    }
}

/// Where a PGD-10 training step's dispatches go, counted by the runtime. Fusions hold: batch norm
/// carries the ReLU and the residual add (no `relu_fwd`/`relu_bwd`), eval-mode batch norm reads the
/// running statistics directly (no `bn_eval_stats`), dense layers add their bias in the GEMM
/// (no `add_row_bias`), the joint loss's weights sit in the cross-entropy kernels (no `scale`
/// outside the nonlinear probe's slope), the backward seed is a shared constant (no `fill`), and the
/// random start is generated on the GPU (one `uniform_fill`, no host upload). The count is 1645
/// here (2419 before these fusions); it includes one weight re-layout per weight and step
/// (`conv2d_flip_weights`, for the phase-split backward-data GEMM that runs several times faster
/// on a GPU) and the passes that add split-K partial sums (`sum_rows`, 15 here). Those sums are
/// the only part that depends on the batch: whether a convolution splits its depth follows from
/// its output tiles and its depth, and both grow with the batch.
#[test]
fn a_pgd10_step_costs_the_fused_dispatch_count() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 2, 11);
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(12);
    let x = Tensor::from_f32(&rt, &[2, 3, 32, 32], &r.uniform_vec(2 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[2], &[0, 1]).unwrap();
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 10, loss: AttackLoss::Joint { beta: 2.0 } };
    cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap();
    let before = rt.dispatches_by_entry();
    cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap();
    let step: std::collections::BTreeMap<&str, u64> =
        rt.dispatches_by_entry().into_iter().map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0))).filter(|e| e.1 > 0).collect();
    let total: u64 = step.values().sum();
    println!("{total} dispatches: {step:?}");
    for gone in ["relu_fwd", "relu_bwd", "bn_eval_stats", "add_row_bias", "fill"] {
        assert!(!step.contains_key(gone), "{gone} dispatched {} times", step[gone]);
    }
    // The nonlinear probe's slope sigmoid(5 u): its scale in each of the 11 forwards, and once in
    // the training backward (the attack's backward needs no gradient for the probe's weights).
    assert_eq!(step["scale"], 12, "only the nonlinear probe's slope scales");
    assert_eq!(step["uniform_fill"], 1, "the random start");
    // The weights change only at the optimizer step: each one is re-laid out for the
    // backward-data GEMM once per step, for the 10 attack backwards and the training backward
    // (the nonlinear probe's hidden layer runs twice in each pass, on one weight).
    assert_eq!(step["conv2d_bwd_data"] % 11, 0, "the same backward-data GEMMs in every pass");
    assert_eq!(step["conv2d_flip_weights"], step["conv2d_bwd_data"] / 11 - 1, "one re-layout per weight and step");
    assert!(total <= 1655, "{total} dispatches per PGD-10 step");
}

#[test]
fn trades_attack_stays_in_the_box_and_raises_the_kl() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 2, 25);
    let mut r = rng(26);
    let xv = r.uniform_vec(3 * 3072, 0.0, 1.0);
    let x = Tensor::from_f32(&rt, &[3, 3, 32, 32], &xv).unwrap();
    let eps = 8.0 / 255.0;
    let trades = cifs::training::trades::Trades { eps, step: 2.0 / 255.0, steps: 3, beta: 6.0 };
    let adv = trades.attack(&rt, &model, &x, &mut engine::Rng::new(1)).unwrap();
    let v = adv.to_vec(&rt).unwrap();
    assert_eq!(in_eps_ball(&v, &xv, eps), None);
    let kl = |img: &Tensor| {
        engine::no_grad(|| {
            let a = model.forward(&rt, &x, None, Mode::Eval).unwrap().logits;
            let b = model.forward(&rt, img, None, Mode::Eval).unwrap().logits;
            engine::ops::kl_div::kl_div(&rt, &a, &b).unwrap().to_vec(&rt).unwrap()[0]
        })
    };
    // A gradient ascent of the KL beats a random corner of the same eps-ball.
    let corner: Vec<f32> = xv.iter().map(|&v| (v + if r.below(2) == 1 { eps } else { -eps }).clamp(0.0, 1.0)).collect();
    let random = kl(&Tensor::from_f32(&rt, &[3, 3, 32, 32], &corner).unwrap());
    assert!(kl(&adv) > random, "KL after the attack {} <= at a random corner {random}", kl(&adv));
    assert!(trades.validate().is_ok() && cifs::training::trades::Trades { beta: -1.0, ..trades }.validate().is_err());
}

/// The TRADES loss's gradient w.r.t. the classifier's weights and bias (smooth in them: the
/// features are fixed, and CE and KL are smooth) against central differences of the loss itself,
/// through both the natural and the adversarial branch.
#[test]
fn trades_loss_gradient_matches_finite_differences() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CIFS, 2, 27);
    let mut r = rng(28);
    let x = Tensor::from_f32(&rt, &[3, 3, 32, 32], &r.uniform_vec(3 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[3], &[1, 4, 7]).unwrap();
    let trades = cifs::training::trades::Trades { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 2, beta: 6.0 };
    let adv = trades.attack(&rt, &model, &x, &mut engine::Rng::new(2)).unwrap();
    let loss_now = || engine::no_grad(|| trades.loss(&rt, &model, &x, &adv, &y, 2.0).unwrap().0.to_vec(&rt).unwrap()[0] as f64);
    let (loss, _) = trades.loss(&rt, &model, &x, &adv, &y, 2.0).unwrap();
    let grads = autodiff::backward(&rt, &loss).unwrap();
    for p in [&model.classifier().weight, &model.classifier().bias] {
        let analytic = grads.get(p.leaf()).unwrap().to_vec(&rt).unwrap();
        let data = p.leaf().to_vec(&rt).unwrap();
        let (mut got, mut want) = (vec![], vec![]);
        for j in (0..data.len()).step_by((data.len() / 6).max(1)) {
            let h = tol::FD_STEP as f32;
            let mut d = data.clone();
            d[j] = data[j] + h;
            p.leaf().write_f32(&rt, &d).unwrap();
            let plus = loss_now();
            d[j] = data[j] - h;
            p.leaf().write_f32(&rt, &d).unwrap();
            let minus = loss_now();
            p.leaf().write_f32(&rt, &data).unwrap();
            got.push(analytic[j]);
            want.push((plus - minus) / ((data[j] + h) as f64 - (data[j] - h) as f64));
        }
        assert_close(&format!("TRADES d/d{}", p.name), &got, &want, tol::FD);
    }
}

#[test]
fn trades_training_steps_fit_a_fixed_batch() {
    let rt = rt();
    let model = small_model(&rt, RESNET18, 4, 29);
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(30);
    let x = Tensor::from_f32(&rt, &[8, 3, 32, 32], &r.uniform_vec(8 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[8], &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let trades = cifs::training::trades::Trades { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 2, beta: 6.0 };
    let losses: Vec<f32> =
        (0..8).map(|_| trades.train_step(&rt, &model, &sgd, &x, &y, 2.0, &mut r).unwrap().loss.to_vec(&rt).unwrap()[0]).collect();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[7] < losses[0], "TRADES did not reduce its loss on a fixed batch: {losses:?}");
}

#[test]
fn cas_model_trains_and_its_checkpoint_is_recognised() {
    let rt = rt();
    let model = small_model(&rt, RESNET18_CAS, 4, 31);
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(32);
    let x = Tensor::from_f32(&rt, &[8, 3, 32, 32], &r.uniform_vec(8 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[8], &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 2, loss: AttackLoss::Joint { beta: 2.0 } };
    let losses: Vec<f32> = (0..6)
        .map(|_| cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap().loss.to_vec(&rt).unwrap()[0])
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()) && losses[5] < losses[0], "{losses:?}");
    let out = model.forward(&rt, &x, None, Mode::Eval).unwrap();
    assert_eq!(out.probes.len(), 2, "both layer4 blocks carry a CAS probe");
    let path = std::env::temp_dir().join(format!("cifs-wgpu-cas-{}.safetensors", std::process::id()));
    cifs::checkpoint::save_model(&rt, &model, &path, &[]).unwrap();
    let loaded = cifs::checkpoint::load_model(&rt, &path).unwrap();
    assert_eq!(loaded.config.kind, RESNET18_CAS);
    assert_eq!(loaded.forward(&rt, &x, None, Mode::Eval).unwrap().logits.to_vec(&rt).unwrap(), out.logits.to_vec(&rt).unwrap());
}

/// WRN-28-10 has the reference's parameter count (36 479 194 without CIFS; the CIFS probes add
/// 640 x 240 + 240 + 240 x 10 + 10 and 640 x 10 + 10), and a depth that is not 6 n + 4 is refused.
#[test]
fn wide_resnet_28_10_has_the_reference_parameter_count() {
    let rt = rt();
    let count = |kind| {
        Model::new(&rt, ModelConfig::new(kind, 10, 10), &mut engine::Rng::new(1))
            .unwrap()
            .params()
            .iter()
            .map(|p| p.leaf().numel())
            .sum::<usize>()
    };
    assert_eq!(count(WRN), 36_479_194);
    assert_eq!(count(WRN_CIFS), 36_479_194 + 640 * 240 + 240 + 2400 + 10 + 6410);
    let bad = Model::new(&rt, ModelConfig { kind: WRN, width: 1, classes: 10, depth: 20 }, &mut engine::Rng::new(1));
    assert!(bad.is_err_and(|e| e.to_string().contains("6 n + 4")));
}

/// Another depth and widen factor than the oracle fixture's (WRN-22-2 with CIFS): it trains on a
/// fixed batch, carries both probes, and its checkpoint is recognised with depth and width.
#[test]
fn wide_resnet_cifs_of_another_size_trains_and_its_checkpoint_is_recognised() {
    let rt = rt();
    let model = Model::new(&rt, ModelConfig { kind: WRN_CIFS, width: 2, classes: 10, depth: 22 }, &mut engine::Rng::new(41)).unwrap();
    let sgd = cifs::training::optim::Sgd::new(&rt, &model, 0.05, 0.9, 2e-4).unwrap();
    let mut r = rng(42);
    let x = Tensor::from_f32(&rt, &[4, 3, 32, 32], &r.uniform_vec(4 * 3072, 0.0, 1.0)).unwrap();
    let y = Tensor::from_u32(&rt, &[4], &[0, 1, 2, 3]).unwrap();
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: 1, loss: AttackLoss::Joint { beta: 2.0 } };
    let losses: Vec<f32> = (0..5)
        .map(|_| cifs::training::step::train_step(&rt, &model, &sgd, &x, &y, Some(&pgd), 2.0, &mut r).unwrap().loss.to_vec(&rt).unwrap()[0])
        .collect();
    assert!(losses.iter().all(|l| l.is_finite()) && losses[4] < losses[0], "{losses:?}");
    let out = model.forward(&rt, &x, None, Mode::Eval).unwrap();
    assert_eq!(out.probes.len(), 2, "block3's last block and the head carry probes");
    let path = std::env::temp_dir().join(format!("cifs-wgpu-wrn-{}.safetensors", std::process::id()));
    cifs::checkpoint::save_model(&rt, &model, &path, &[]).unwrap();
    let loaded = cifs::checkpoint::load_model(&rt, &path).unwrap();
    assert_eq!((loaded.config.kind, loaded.config.depth, loaded.config.width), (WRN_CIFS, 22, 2));
    assert_eq!(loaded.forward(&rt, &x, None, Mode::Eval).unwrap().logits.to_vec(&rt).unwrap(), out.logits.to_vec(&rt).unwrap());
    std::fs::remove_file(&path).unwrap();
    // With one block per group (depth 10) block3's only block is also its first: the probe
    // masks its 2k-wide activated input (the channels change in that block).
    let shallow = Model::new(&rt, ModelConfig { kind: WRN_CIFS, width: 1, classes: 10, depth: 10 }, &mut engine::Rng::new(43)).unwrap();
    assert_eq!(shallow.forward(&rt, &x, None, Mode::Eval).unwrap().probes.len(), 2);
}
