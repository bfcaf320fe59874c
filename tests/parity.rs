//! Oracle parity: our ResNet-18 / ResNet18-CIFS and ResNet-10-CIFS (Fashion-MNIST, 1x28x28)
//! against the reference PyTorch implementation's own float64 numbers (`tests/fixtures`, plus the
//! directory in CIFS_FIXTURES if set; a fixture's `arch` metadata names its model). For every
//! fixture: eval forward (logits, probe logits, joint loss) and input gradient; 3 PGD steps from
//! the given start; train forward, every parameter gradient, BN running stats after it; and all
//! parameters and buffers after two SGD steps.
//!
//! Tolerances (issue 3): relative norm error 1e-4 for forward values, 1e-3 for gradients and
//! updated parameters; PGD may differ only where a gradient sign flips (at most 0.5% of pixels).

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use cifs::attack::{AttackLoss, Pgd, Start};
use cifs::loss::joint_loss;
use cifs::optim::Sgd;
use cifs::state::{load_state_dict, read_f32, read_i64};
use cifs::{Mode, ModelConfig, ModelKind, Model};
use common::{rt, rel_err};
use engine::{autodiff, Runtime, Tensor};
use safetensors::SafeTensors;

const FWD_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = 1e-3;
const PGD_MAX_FLIPPED: f64 = 0.005;

/// The fixture directories: the repository's own, and CIFS_FIXTURES's if set.
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")];
    dirs.extend(std::env::var_os("CIFS_FIXTURES").map(PathBuf::from));
    dirs
}

struct Fixture<'a> {
    name: String,
    st: SafeTensors<'a>,
    meta: std::collections::HashMap<String, String>,
}

impl Fixture<'_> {
    fn f32(&self, key: &str) -> (Vec<usize>, Vec<f32>) {
        read_f32(&self.st, key, &self.name).unwrap()
    }
    fn f64(&self, key: &str) -> Vec<f64> {
        let t = self.st.tensor(key).unwrap_or_else(|_| panic!("{}: no `{key}`", self.name));
        assert_eq!(t.dtype(), safetensors::Dtype::F64);
        t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
    }
    fn meta_f32(&self, key: &str) -> f32 {
        self.meta[key].parse().unwrap()
    }
    fn tensor(&self, rt: &Runtime, key: &str) -> Tensor {
        let (s, v) = self.f32(key);
        Tensor::from_f32(rt, &s, &v).unwrap()
    }
    fn labels(&self, rt: &Runtime) -> Tensor {
        let y: Vec<u32> = read_i64(&self.st, "input.y", &self.name).unwrap().iter().map(|&v| v as u32).collect();
        Tensor::from_u32(rt, &[y.len()], &y).unwrap()
    }
    fn model(&self, rt: &Runtime, bytes: &[u8]) -> Model {
        // `arch` names the architecture; fixtures without it are the ResNet-18 pair.
        let cifs = self.meta["cifs"] == "True";
        let kind = match self.meta.get("arch").map(String::as_str) {
            None if cifs => ModelKind::ResNet18Cifs,
            None => ModelKind::ResNet18,
            Some("resnet10_gray_cifs") => ModelKind::ResNet10Cifs,
            Some("resnet10_gray") => ModelKind::ResNet10,
            Some(a) if a.starts_with("wrn") => if cifs { ModelKind::WrnCifs } else { ModelKind::Wrn },
            Some(other) => panic!("{}: fixture architecture `{other}` is not built in cifs-wgpu", self.name),
        };
        let meta = |k: &str| self.meta.get(k).map(|v| v.parse::<usize>().unwrap());
        let config = if kind.is_wrn() {
            ModelConfig { kind, width: meta("widen_factor").unwrap(), classes: 10, depth: meta("depth").unwrap() }
        } else {
            ModelConfig::new(kind, meta("width").unwrap(), 10)
        };
        let model = Model::new(rt, config, &mut engine::Rng::new(0)).unwrap();
        load_state_dict(rt, &model, bytes, "param.", &self.name).unwrap();
        model
    }
}

/// Compares, printing the error either way so a run shows how close each quantity is.
fn check(fx: &str, what: &str, got: &[f32], want: &[f64], tol: f64, failures: &mut Vec<String>) {
    let e = rel_err(got, want);
    let verdict = if e <= tol { "ok" } else { "FAIL" };
    println!("  {fx} {what}: rel err {e:.2e} (tol {tol:.0e}) {verdict}");
    if e > tol {
        failures.push(format!("{fx} {what}: {e:.3e} > {tol:.0e}"));
    }
}

fn run_fixture(rt: &Runtime, fx: &Fixture, bytes: &[u8], failures: &mut Vec<String>) {
    let name = fx.name.as_str();
    let beta = fx.meta_f32("beta");
    let x = fx.tensor(rt, "input.x");
    let y = fx.labels(rt);
    let cifs = fx.meta["cifs"] == "True";

    // Eval forward and input gradient.
    let model = fx.model(rt, bytes);
    let xl = x.requiring_grad();
    let out = model.forward(rt, &xl, Some(&y), Mode::Eval).unwrap();
    let loss = joint_loss(rt, &out, &y, beta).unwrap();
    check(name, "eval.logits", &out.logits.to_vec(rt).unwrap(), &fx.f64("eval.logits"), FWD_TOL, failures);
    if cifs {
        for k in 0..2 {
            check(name, &format!("eval.probe{k}"), &out.probes[k].to_vec(rt).unwrap(), &fx.f64(&format!("eval.probe{k}")), FWD_TOL, failures);
        }
    }
    check(name, "eval.loss", &loss.to_vec(rt).unwrap(), &fx.f64("eval.loss"), FWD_TOL, failures);
    let grads = autodiff::backward(rt, &loss).unwrap();
    check(name, "eval.grad_x", &grads.get(&xl).unwrap().to_vec(rt).unwrap(), &fx.f64("eval.grad_x"), GRAD_TOL, failures);

    // PGD from the given start.
    let delta0 = fx.tensor(rt, "input.pgd_delta0");
    let pgd = Pgd { eps: fx.meta_f32("eps"), step: fx.meta_f32("step"), steps: fx.meta["pgd_steps"].parse().unwrap(), loss: AttackLoss::Joint { beta } };
    let adv = pgd.attack(rt, &model, &x, &y, Start::Given(&delta0)).unwrap().to_vec(rt).unwrap();
    let want = fx.f64("pgd.x_adv");
    let flipped = adv.iter().zip(&want).filter(|(a, w)| !approx::abs_diff_eq!(**a as f64, **w, epsilon = 1e-5)).count() as f64 / want.len() as f64;
    println!("  {name} pgd.x_adv: {:.3}% of pixels differ (allowed {:.1}%)", 100.0 * flipped, 100.0 * PGD_MAX_FLIPPED);
    if flipped > PGD_MAX_FLIPPED {
        failures.push(format!("{name} pgd.x_adv: {:.3}% of pixels differ", 100.0 * flipped));
    }

    // Train forward, parameter gradients, running stats.
    let model = fx.model(rt, bytes);
    let out = model.forward(rt, &x, Some(&y), Mode::Train).unwrap();
    let loss = joint_loss(rt, &out, &y, beta).unwrap();
    check(name, "train.logits", &out.logits.to_vec(rt).unwrap(), &fx.f64("train.logits"), FWD_TOL, failures);
    if cifs {
        for k in 0..2 {
            check(name, &format!("train.probe{k}"), &out.probes[k].to_vec(rt).unwrap(), &fx.f64(&format!("train.probe{k}")), FWD_TOL, failures);
        }
    }
    check(name, "train.loss", &loss.to_vec(rt).unwrap(), &fx.f64("train.loss"), FWD_TOL, failures);
    let grads = autodiff::backward(rt, &loss).unwrap();
    for p in model.params() {
        let g = grads.get(p.leaf()).unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name));
        check(name, &format!("train.grad.{}", p.name), &g.to_vec(rt).unwrap(), &fx.f64(&format!("train.grad.{}", p.name)), GRAD_TOL, failures);
    }
    for bn in model.batchnorms() {
        check(name, &format!("train.after.{}.running_mean", bn.name), &bn.running_mean.to_vec(rt).unwrap(), &fx.f64(&format!("train.after.{}.running_mean", bn.name)), FWD_TOL, failures);
        check(name, &format!("train.after.{}.running_var", bn.name), &bn.running_var.to_vec(rt).unwrap(), &fx.f64(&format!("train.after.{}.running_var", bn.name)), FWD_TOL, failures);
    }

    // Two SGD steps on the same batch.
    let model = fx.model(rt, bytes);
    let sgd = Sgd::new(rt, &model, fx.meta_f32("lr"), fx.meta_f32("momentum"), fx.meta_f32("weight_decay")).unwrap();
    for _ in 0..fx.meta["sgd_steps"].parse().unwrap() {
        let out = model.forward(rt, &x, Some(&y), Mode::Train).unwrap();
        let loss = joint_loss(rt, &out, &y, beta).unwrap();
        let grads = autodiff::backward(rt, &loss).unwrap();
        sgd.step(rt, &model, &grads).unwrap();
    }
    for p in model.params() {
        check(name, &format!("sgd2.{}", p.name), &p.leaf().to_vec(rt).unwrap(), &fx.f64(&format!("sgd2.{}", p.name)), GRAD_TOL, failures);
    }
    for bn in model.batchnorms() {
        check(name, &format!("sgd2.{}.running_var", bn.name), &bn.running_var.to_vec(rt).unwrap(), &fx.f64(&format!("sgd2.{}.running_var", bn.name)), GRAD_TOL, failures);
        let want = read_i64(&fx.st, &format!("sgd2.{}.num_batches_tracked", bn.name), name).unwrap()[0];
        assert_eq!(bn.num_batches_tracked.get(), want, "{name}: {}.num_batches_tracked", bn.name);
    }
}

#[test]
fn matches_reference_pytorch_fixtures() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in fixture_dirs() {
        let mut here: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fixtures directory {} unreadable ({e})", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        assert!(!here.is_empty(), "no *.safetensors fixtures in {}", dir.display());
        here.sort();
        files.extend(here);
    }
    let rt = rt();
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        println!("fixture {name}");
        let bytes = std::fs::read(path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = meta.metadata().clone().unwrap_or_default();
        // The settings may also (or only) be in the `.json` beside the tensors.
        if let Ok(text) = std::fs::read_to_string(path.with_extension("json")) {
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}.json: {e}"));
            for (k, v) in doc.as_object().unwrap().iter().filter(|(k, _)| *k != "tensors") {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(b) => if *b { "True".into() } else { "False".into() },
                    other => other.to_string(),
                };
                meta.entry(k.clone()).or_insert(text);
            }
        }
        let st = SafeTensors::deserialize(&bytes).unwrap();
        run_fixture(&rt, &Fixture { name, st, meta }, &bytes, &mut failures);
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
