//! FGSM-RS and N-FGSM against their papers' own arithmetic, recorded in float64 by
//! `tests/reference/single_step_fixtures.py` (`tests/fixtures/single_step/`) on a width-8
//! ResNet18-CIFS and a plain ResNet-18 with 4 images each. For every fixture:
//!
//! - the settings the library derives from eps (noise, step, radius) are the fixture's;
//! - the random start drawn on the GPU from the fixture's generator seed is its `input.delta0`,
//!   up to one rounding (a GPU may fuse the generator's multiply-add);
//! - the adversarial images of `SingleStep::attack` from that seed: every pixel within
//!   `PIXEL_MATCH` of the reference's, except the pixels whose input-gradient entry is under 4x
//!   the largest error float32 makes in that gradient (listed by the script, from float32
//!   PyTorch at the same start: 0 or 1 per fixture), whose sign float32 may flip; those may
//!   differ by up to 2 steps;
//! - the training step on the reference's adversarial images: train-mode logits, probes and
//!   joint loss within `FWD_TOL`, every parameter gradient within `GRAD_TOL` (relative norm
//!   errors), with the ReLU inputs within 1e-4 of the kink put on the reference's side as the
//!   parity test does (`parity/kinks.rs`), and the running statistics after it within `FWD_TOL`;
//! - `training::single_step::train_step` from the same seed returns the reference's loss
//!   (`FWD_TOL`) and leaves the model exactly (bit for bit) as the checked parts do when run by
//!   hand: the attack, the train-mode forward, the joint loss, backward and one SGD step.
//!
//! Tolerances are the parity test's for float32 (the same kernels on the same kind of model).

#[path = "common/mod.rs"]
mod common;
#[path = "parity/kinks.rs"]
mod kinks;

use std::path::{Path, PathBuf};

use cifs::attacks::pgd::{AttackLoss, Start};
use cifs::attacks::single_step::SingleStep;
use cifs::checkpoint::state::{load_state_dict, read_f32, read_i64};
use cifs::loss::joint_loss;
use cifs::models::resnet::{RESNET18, RESNET18_CIFS};
use cifs::training::optim::Sgd;
use cifs::{Mode, Model, ModelConfig};
use common::{rel_err, rt};
use engine::{autodiff, Rng, Runtime, Tensor};
use safetensors::SafeTensors;

/// Relative norm error of forward values (logits, probe logits, loss, running statistics).
const FWD_TOL: f64 = 1e-4;
/// Relative norm error of gradients.
const GRAD_TOL: f64 = 1e-3;
/// An adversarial pixel matches the reference's within this: float32 rounding of `x + delta`,
/// a few ulps of values up to 1.
const PIXEL_MATCH: f64 = 2e-7;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn f64s(st: &SafeTensors, key: &str) -> Vec<f64> {
    let t = st.tensor(key).unwrap_or_else(|_| panic!("no `{key}`"));
    assert_eq!(t.dtype(), safetensors::Dtype::F64, "{key}");
    t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect()
}

/// One fixture: its settings, its numbers, the base fixture's model and batch.
struct Fixture {
    name: String,
    doc: serde_json::Value,
    bytes: Vec<u8>,
    base: Vec<u8>,
    config: ModelConfig,
    sides: kinks::Sides,
}

impl Fixture {
    fn open(path: &Path) -> Fixture {
        let doc = json(&path.with_extension("json"));
        let base_path = fixtures_dir().join(doc["base"].as_str().unwrap());
        let base_meta = json(&base_path.with_extension("json"));
        let kind = if base_meta["cifs"].as_bool().unwrap() { RESNET18_CIFS } else { RESNET18 };
        Fixture {
            name: path.file_stem().unwrap().to_string_lossy().into(),
            bytes: std::fs::read(path).unwrap(),
            base: std::fs::read(&base_path).unwrap(),
            config: ModelConfig::new(kind, base_meta["width"].as_u64().unwrap() as usize, 10),
            sides: kinks::Sides::open(path),
            doc,
        }
    }
    fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).unwrap()
    }
    fn want(&self, key: &str) -> Vec<f64> {
        f64s(&self.st(), key)
    }
    fn setting(&self, key: &str) -> f32 {
        self.doc[key].as_f64().unwrap_or_else(|| panic!("{}: no setting `{key}`", self.name)) as f32
    }
    /// A fresh model with the base fixture's parameters.
    fn model(&self, rt: &Runtime) -> Model {
        let model = Model::new(rt, self.config, &mut Rng::new(0)).unwrap();
        load_state_dict(rt, &model, &self.base, "param.", &self.name).unwrap();
        model
    }
    /// The base fixture's images and labels.
    fn batch(&self, rt: &Runtime) -> (Tensor, Tensor) {
        let st = SafeTensors::deserialize(&self.base).unwrap();
        let (shape, x) = read_f32(&st, "input.x", &self.name).unwrap();
        let y: Vec<u32> = read_i64(&st, "input.y", &self.name).unwrap().iter().map(|&v| v as u32).collect();
        (Tensor::from_f32(rt, &shape, &x).unwrap(), Tensor::from_u32(rt, &[y.len()], &y).unwrap())
    }
    /// The attack as the library builds it for the fixture's method and eps.
    fn attack(&self) -> SingleStep {
        let (eps, loss) = (self.setting("eps"), AttackLoss::Joint { beta: self.setting("beta") });
        match self.doc["method"].as_str().unwrap() {
            "fgsm_rs" => SingleStep::fgsm_rs(eps, loss),
            "n_fgsm" => SingleStep::n_fgsm(eps, loss),
            other => panic!("{}: unknown method {other}", self.name),
        }
    }
    fn rng(&self) -> Rng {
        Rng::new(self.doc["rng_seed"].as_u64().unwrap())
    }
}

fn fixture_files() -> Vec<PathBuf> {
    let dir = fixtures_dir().join("single_step");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} unreadable ({e})", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "two models x two methods in {}", dir.display());
    files
}

/// Compares norm-wise, printing the error either way.
fn check(fx: &str, what: &str, got: &[f32], want: &[f64], tol: f64, failures: &mut Vec<String>) {
    let e = rel_err(got, want);
    println!("  {fx} {what}: rel err {e:.2e} (tol {tol:.0e}) {}", if e <= tol { "ok" } else { "FAIL" });
    if e > tol {
        failures.push(format!("{fx} {what}: {e:.3e} > {tol:.0e}"));
    }
}

/// The library's noise, step and radius against the fixture's.
fn check_settings(fx: &Fixture, failures: &mut Vec<String>) {
    let a = fx.attack();
    let radius = fx.doc["radius"].as_f64().map(|r| r as f32);
    let want = (fx.setting("noise"), fx.setting("step"), radius);
    if (a.noise, a.step, a.radius) != want {
        failures.push(format!("{}: noise, step, radius {:?} != the fixture's {want:?}", fx.name, (a.noise, a.step, a.radius)));
    }
}

/// The GPU's random start from the fixture's seed against `input.delta0`, up to one rounding.
fn check_start(rt: &Runtime, fx: &Fixture, x: &Tensor, failures: &mut Vec<String>) {
    let a = fx.attack();
    let got = a.random_start(rt, x.shape(), &mut fx.rng()).unwrap().to_vec(rt).unwrap();
    let want = fx.want("input.delta0");
    let ulp = (f32::EPSILON * a.noise) as f64;
    let off = got.iter().zip(&want).filter(|(g, w)| (**g as f64 - **w).abs() > ulp).count();
    println!("  {} start: {off} of {} values differ by over one rounding ({ulp:.1e})", fx.name, want.len());
    if off > 0 {
        failures.push(format!("{}: {off} start values are not the fixture's", fx.name));
    }
}

/// Our adversarial images from the fixture's seed against the reference's, pixel by pixel.
fn check_pixels(fx: &Fixture, adv: &[f32], failures: &mut Vec<String>) {
    let want = fx.want("attack.x_adv");
    let step = fx.setting("step") as f64;
    let most = 2.0 * step + PIXEL_MATCH;
    let diff: Vec<(usize, f64)> = adv.iter().zip(&want).map(|(a, w)| (*a as f64 - w).abs()).enumerate().collect();
    let close = diff.iter().map(|d| d.1).filter(|&d| d <= PIXEL_MATCH).fold(0.0, f64::max);
    let differ: Vec<&(usize, f64)> = diff.iter().filter(|d| d.1 > PIXEL_MATCH).collect();
    println!(
        "  {} x_adv: {} of {} pixels differ by over {PIXEL_MATCH:.0e} (the rest by up to {close:.1e}); allowed: the {} whose gradient sign float32 may flip, by up to {most:.4}",
        fx.name,
        differ.len(),
        want.len(),
        fx.sides.pgd_undecided.len()
    );
    let wrong: Vec<String> =
        differ.iter().filter(|(i, d)| !fx.sides.pgd_undecided.contains(i) || *d > most).map(|(i, d)| format!("{i} by {d:.3e}")).collect();
    if !wrong.is_empty() {
        failures.push(format!(
            "{} x_adv: {} pixels differ, e.g. pixel {}",
            fx.name,
            wrong.len(),
            wrong[..wrong.len().min(3)].join(", pixel ")
        ));
    }
}

/// The train-mode pass on the reference's adversarial images: outputs, loss, every gradient
/// (ReLU inputs at the kink on the reference's side), running statistics after it.
fn check_training_pass(rt: &Runtime, fx: &Fixture, y: &Tensor, failures: &mut Vec<String>) {
    let name = fx.name.as_str();
    let (shape, _) = read_f32(&SafeTensors::deserialize(&fx.base).unwrap(), "input.x", name).unwrap();
    let adv: Vec<f32> = fx.want("attack.x_adv").iter().map(|&v| v as f32).collect();
    let model = fx.model(rt);
    let out = model.forward(rt, &Tensor::from_f32(rt, &shape, &adv).unwrap(), Some(y), Mode::Train).unwrap();
    let loss = joint_loss(rt, &out, y, fx.setting("beta")).unwrap();
    check(name, "train.logits", &out.logits.to_vec(rt).unwrap(), &fx.want("train.logits"), FWD_TOL, failures);
    for (k, p) in out.probes.iter().enumerate() {
        check(name, &format!("train.probe{k}"), &p.to_vec(rt).unwrap(), &fx.want(&format!("train.probe{k}")), FWD_TOL, failures);
    }
    check(name, "train.loss", &loss.to_vec(rt).unwrap(), &fx.want("train.loss"), FWD_TOL, failures);
    let grads = kinks::backward(rt, &model, &loss, &fx.sides, "train", name, failures);
    for p in model.params() {
        let g = grads.get(p.leaf()).unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name)).to_vec(rt).unwrap();
        check(name, &format!("train.grad.{}", p.name), &g, &fx.want(&format!("train.grad.{}", p.name)), GRAD_TOL, failures);
    }
    for bn in model.batchnorms() {
        for (stat, t) in [("running_mean", &bn.running_mean), ("running_var", &bn.running_var)] {
            let key = format!("train.after.{}.{stat}", bn.name);
            check(name, &key, &t.to_vec(rt).unwrap(), &fx.want(&key), FWD_TOL, failures);
        }
    }
}

/// Every parameter and running statistic of a model, read back.
fn state(rt: &Runtime, model: &Model) -> Vec<(String, Vec<f32>)> {
    let mut s: Vec<(String, Vec<f32>)> = model.params().iter().map(|p| (p.name.clone(), p.leaf().to_vec(rt).unwrap())).collect();
    for bn in model.batchnorms() {
        s.push((format!("{}.running_mean", bn.name), bn.running_mean.to_vec(rt).unwrap()));
        s.push((format!("{}.running_var", bn.name), bn.running_var.to_vec(rt).unwrap()));
    }
    s
}

/// The library's training step from the fixture's seed: the reference's loss, and the model
/// the checked parts leave when run by hand (bit for bit).
fn check_train_step(rt: &Runtime, fx: &Fixture, x: &Tensor, y: &Tensor, adv: &Tensor, failures: &mut Vec<String>) {
    let (name, beta) = (fx.name.as_str(), fx.setting("beta"));
    let sgd_of = |model: &Model| Sgd::new(rt, model, 0.1, 0.9, 2e-4).unwrap();
    let stepped = fx.model(rt);
    let result = cifs::training::single_step::train_step(rt, &stepped, &sgd_of(&stepped), x, y, &fx.attack(), beta, &mut fx.rng()).unwrap();
    check(name, "train_step loss", &result.loss.to_vec(rt).unwrap(), &fx.want("train.loss"), FWD_TOL, failures);

    let by_hand = fx.model(rt);
    let out = by_hand.forward(rt, adv, Some(y), Mode::Train).unwrap();
    let loss = joint_loss(rt, &out, y, beta).unwrap();
    sgd_of(&by_hand).step(rt, &by_hand, &autodiff::backward(rt, &loss).unwrap()).unwrap();
    if result.loss.to_vec(rt).unwrap() != loss.to_vec(rt).unwrap() {
        failures.push(format!("{name}: train_step's loss is not that of the attack's images"));
    }
    let differ: Vec<String> =
        state(rt, &stepped).into_iter().zip(state(rt, &by_hand)).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0).collect();
    println!("  {name} train_step: {} tensors differ from the step by hand", differ.len());
    if !differ.is_empty() {
        failures.push(format!(
            "{name}: after train_step {} tensors differ from the step run by hand, e.g. {:?}",
            differ.len(),
            &differ[..differ.len().min(3)]
        ));
    }
}

#[test]
fn single_step_methods_match_their_papers_code() {
    let rt = rt();
    let mut failures = Vec::new();
    for path in fixture_files() {
        let fx = Fixture::open(&path);
        println!("{} ({}):", fx.name, fx.doc["made_by"].as_str().unwrap_or("?"));
        let (x, y) = fx.batch(&rt);
        check_settings(&fx, &mut failures);
        check_start(&rt, &fx, &x, &mut failures);
        let adv = fx.attack().attack(&rt, &fx.model(&rt), &x, &y, Start::Random(&mut fx.rng())).unwrap();
        check_pixels(&fx, &adv.to_vec(&rt).unwrap(), &mut failures);
        check_training_pass(&rt, &fx, &y, &mut failures);
        check_train_step(&rt, &fx, &x, &y, &adv, &mut failures);
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
