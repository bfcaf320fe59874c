//! The weight average over whole models (`cifs::training::ema`): it starts as an exact copy of
//! the live model; after each of three training steps its every parameter and running statistic
//! follows `avg = d avg + (1 - d) w` (the float64 recurrence on the live tensors read back, to
//! float32 precision) with the warm-up decays `min(decay, (1 + t) / (10 + t))`; the batch counters
//! are the live model's; an average of another configuration is refused.
//!
//! Through the binary (`train --ema`): a run of a width-4 ResNet18-CIFS on a tiny image folder
//! (one warm-up and one PGD epoch) interrupted after its first epoch and resumed writes the
//! uninterrupted run's `ema.safetensors` byte for byte (tensors, update count and all), which is
//! not the weights themselves; each epoch's metrics carry the average's accuracies;
//! `eval --checkpoint ema.safetensors` runs; a decay outside (0, 1) and a changed `--ema` on
//! resume are refused.

#[path = "common/mod.rs"]
mod common;
#[path = "common/files.rs"]
mod files;

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

fn cli(args: &[&str]) -> std::process::Output {
    let tune = std::env::temp_dir().join(format!("cifs-wgpu-ema-tune-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cifs-wgpu"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .env("CIFS_WGPU_TUNE_CACHE", tune)
        .output()
        .unwrap();
    eprintln!("$ cifs-wgpu {}\n{}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(out.status.success(), "cifs-wgpu {} failed", args.join(" "));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let out = cli(args);
    assert!(!out.status.success(), "cifs-wgpu {} should fail", args.join(" "));
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The tensors of a safetensors file by name, as bytes.
fn tensors(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<u8>)> = st.tensors().into_iter().map(|(n, t)| (n, t.data().to_vec())).collect();
    v.sort();
    v
}

#[test]
fn a_resumed_run_continues_the_average_bit_for_bit_and_eval_loads_it() {
    let root = files::tmpdir("ema-run");
    let data = root.join("data");
    files::make_folder(&data);
    let d = data.to_str().unwrap();
    let run = |out: &std::path::Path, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "folder", "--data-dir", d, "--out", out.to_str().unwrap()].map(String::from).to_vec();
        let base = ["--width", "4", "--batch-size", "10", "--attack-steps", "2", "--eval-limit", "6", "--clean-epochs", "1", "--seed", "5"];
        v.extend(base.iter().chain(extra).map(|s| s.to_string()));
        v
    };
    let (a, b) = (root.join("a"), root.join("b"));

    let log = ok(&args(&run(&a, &["--epochs", "1", "--ema", "0.9"])));
    assert!(log.contains("| EMA natural"), "the epoch line shows the average's accuracies: {log}");
    let metrics: Vec<serde_json::Value> =
        std::fs::read_to_string(a.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for m in &metrics {
        for k in ["ema_natural_acc", "ema_pgd20_acc"] {
            assert!(m[k].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{k} in {m}");
        }
    }
    let config: serde_json::Value = files::read_json(a.join("config.json"));
    assert_eq!(config["ema"], 0.9);
    let live: std::collections::BTreeMap<String, Vec<u8>> = tensors(&a.join("best.safetensors")).into_iter().collect();
    let averaged = tensors(&a.join("ema.safetensors"));
    assert_eq!(averaged.iter().map(|(n, _)| n).collect::<Vec<_>>(), live.keys().collect::<Vec<_>>(), "the model's names");
    assert!(averaged.iter().any(|(n, t)| n.ends_with(".weight") && live[n] != *t), "the average is not the weights");

    // Interrupted after the warm-up epoch, then resumed.
    ok(&args(&run(&b, &["--epochs", "0", "--ema", "0.9"])));
    let e = fails(&args(&run(&b, &["--epochs", "1", "--ema", "0.8", "--resume"])));
    assert!(e.contains("ema 0.9 -> 0.8"), "{e}");
    ok(&args(&run(&b, &["--epochs", "1", "--ema", "0.9", "--resume"])));
    let same = std::fs::read(b.join("ema.safetensors")).unwrap() == std::fs::read(a.join("ema.safetensors")).unwrap();
    assert!(same, "the resumed run's ema.safetensors differs from the uninterrupted run's");
    assert_eq!(tensors(&b.join("last.safetensors")), tensors(&a.join("last.safetensors")));

    let ema = a.join("ema.safetensors");
    let table = ok(&["eval", "--checkpoint", ema.to_str().unwrap(), "folder", "--data-dir", d, "--attacks", "natural", "--limit", "6"]);
    assert!(table.contains("natural"), "{table}");

    for bad in ["0", "1", "1.5", "-0.1", "nan"] {
        let flag = format!("--ema={bad}");
        let e = fails(&args(&run(&root.join("c"), &["--epochs", "1", &flag])));
        assert!(e.contains("(0, 1)"), "--ema {bad}: {e}");
    }
}
