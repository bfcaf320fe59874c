//! Oracle parity: our ResNet-18 / ResNet18-CIFS, ResNet-10-CIFS (Fashion-MNIST, 1x28x28) and WRN-CIFS
//! against the reference PyTorch implementation's own float64 numbers (`tests/fixtures`, plus the
//! directory in CIFS_FIXTURES if set; a fixture's `arch` metadata names its model). For every
//! fixture, each check on every run:
//! - eval forward (logits, probe logits, joint loss) and its input gradient;
//! - 3 PGD steps from the given start: every pixel within `PGD_MATCH` of the reference's, except
//!   the pixels whose input-gradient entry, at some step of the reference's run, is under 4x the
//!   error float32 makes in that gradient (listed in the fixture's `.kinks.json`; 0 to 2 per
//!   fixture): float32 may flip such an entry's sign, which moves the pixel by 2 steps in that
//!   step, so each of those may differ by up to 2 x step x steps (6/255);
//! - train forward (logits, probes, loss), every parameter gradient, BN running statistics after
//!   it;
//! - two SGD steps: every parameter's and both running statistics' change (after minus before)
//!   against the reference's change, relative to that change's norm, and the batch counters.
//!
//! A ReLU input within float32 rounding of its kink leaves the float64 gradient undecided at
//! float32 precision: every backward of a train-mode forward (the train step and each SGD step,
//! one rule) puts the ReLU inputs the reference's `.kinks.json` lists (|input| < 1e-4) on the
//! reference's side (see `kinks`).
//!
//! Tolerances, relative norm errors: 1e-4 for forward values and 1e-3 for gradients (lavapipe:
//! 7e-7 and 4.2e-6 at most); `SGD_TOL` for the SGD changes, `PGD_MATCH` for PGD pixels.
//!
//! The same checks run with the GEMMs in f16 (on tensor cores where the adapter has them, else
//! the SIMT emulation), to tolerances measured for f16 (`F16`), except the eval-mode input
//! gradient and PGD, which are held to what the reference itself does in f16 on the same fixture
//! (its `.json`'s `f16_reference`, written by tests/reference/parity_fixture_f16.py): our f16
//! may depart from the float64 numbers by at most `F16_VS_REFERENCE` times as much, counts of
//! pixels by that factor plus `F16_COUNT_SIGMAS` standard deviations. A short training run in
//! f16 is held against f32.

#[path = "common/mod.rs"]
mod common;
#[path = "parity/kinks.rs"]
mod kinks;

use cifs::models::resnet::{RESNET10, RESNET10_CIFS, RESNET18, RESNET18_CIFS};
use cifs::models::wide_resnet::{WRN, WRN_CIFS};
use std::path::PathBuf;

use cifs::attacks::pgd::{AttackLoss, Pgd, Start};
use cifs::checkpoint::state::{load_state_dict, read_f32, read_i64};
use cifs::loss::joint_loss;
use cifs::training::optim::Sgd;
use cifs::{Mode, Model, ModelConfig, Output};
use common::{rel_err, rt, with_kernels};
use engine::{autodiff, Precision, Runtime, Tensor};
use safetensors::SafeTensors;

const FWD_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = 1e-3;
/// A PGD pixel matches the reference's within this: float32 rounding of `x + delta`, a few ulps
/// of values up to 1 (lavapipe: 4.5e-8 at most).
const PGD_MATCH: f64 = 2e-7;
/// A parameter's or running statistic's change over the two SGD steps matches the reference's
/// change within this fraction of its norm. Lavapipe: 8.3e-5 at most (WRN
/// `block3.layer.1.bn2.weight`, whose change is 4e-4 of its norm), under 3.6e-5 elsewhere.
const SGD_TOL: f64 = 5e-4;

/// How close each kind of quantity must come to the reference.
struct Tolerances {
    /// Relative norm error of forward values (logits, probe logits, losses, running stats).
    fwd: f64,
    /// Relative norm error of gradients.
    grad: f64,
    /// Relative error of the SGD changes (see `check_update`).
    sgd: f64,
    /// Whether the reference's listing of ReLU inputs at the kink applies (it describes float32
    /// rounding; f16's forward error moves many more inputs, so there it does not).
    kinks: bool,
    /// Whether the eval-mode input gradient and the PGD pixels are held to the reference's own
    /// f16 departure (`F16Reference`) instead of `grad` and float32's rule for PGD pixels (every
    /// pixel within `PGD_MATCH`, except those the reference lists as undecided).
    like_reference_f16: bool,
}

/// f32: the tolerances above.
const F32: Tolerances = Tolerances { fwd: FWD_TOL, grad: GRAD_TOL, sgd: SGD_TOL, kinks: true, like_reference_f16: false };

/// The fixture directories: the repository's own, and CIFS_FIXTURES's if set.
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")];
    dirs.extend(std::env::var_os("CIFS_FIXTURES").map(PathBuf::from));
    dirs
}

/// Every fixture file (`*.safetensors`), directory by directory, sorted within each.
fn fixture_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
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
    files
}

/// A fixture's settings: the safetensors metadata, and the `.json` beside it (which may hold
/// them too, or only), values as text (`True`/`False` for booleans, as PyTorch prints them).
fn fixture_meta(path: &std::path::Path, bytes: &[u8]) -> std::collections::HashMap<String, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = meta.metadata().clone().unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string(path.with_extension("json")) {
        let doc: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.with_extension("json").display()));
        for (k, v) in doc.as_object().unwrap().iter().filter(|(k, _)| *k != "tensors") {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => {
                    if *b {
                        "True".into()
                    } else {
                        "False".into()
                    }
                }
                other => other.to_string(),
            };
            meta.entry(k.clone()).or_insert(text);
        }
    }
    meta
}

struct Fixture<'a> {
    name: String,
    st: SafeTensors<'a>,
    meta: std::collections::HashMap<String, String>,
    /// The reference's side of the ReLU inputs near the kink, from the file beside the fixture.
    sides: kinks::Sides,
}

impl<'a> Fixture<'a> {
    /// The fixture stored in `path`, read from its contents `bytes`.
    fn open(path: &std::path::Path, bytes: &'a [u8]) -> Fixture<'a> {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        Fixture { name, st: SafeTensors::deserialize(bytes).unwrap(), meta: fixture_meta(path, bytes), sides: kinks::Sides::open(path) }
    }
    /// The model with the fixture's parameters, and the joint loss of its train-mode forward on
    /// the fixture's batch (not yet differentiated).
    fn train_loss(&self, rt: &Runtime, bytes: &[u8]) -> (Model, Tensor) {
        let model = self.model(rt, bytes);
        let y = self.labels(rt);
        let out = model.forward(rt, &self.tensor(rt, "input.x"), Some(&y), Mode::Train).unwrap();
        let loss = joint_loss(rt, &out, &y, self.meta_f32("beta")).unwrap();
        (model, loss)
    }
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
    /// The fixture's PGD: its eps, step and steps, the joint loss.
    fn pgd(&self) -> Pgd {
        Pgd {
            eps: self.meta_f32("eps"),
            step: self.meta_f32("step"),
            steps: self.meta["pgd_steps"].parse().unwrap(),
            loss: AttackLoss::Joint { beta: self.meta_f32("beta") },
        }
    }
    /// What the reference does in f16 on this fixture (its `.json`'s `f16_reference`).
    fn f16_reference(&self) -> F16Reference {
        let text = self.meta.get("f16_reference").unwrap_or_else(|| {
            panic!("{}: no f16_reference in its .json; run tests/reference/parity_fixture_f16.py on its directory", self.name)
        });
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let f = |k: &str| doc[k].as_f64().unwrap_or_else(|| panic!("{}: f16_reference.{k}", self.name));
        F16Reference {
            grad_x_rel_err: f("grad_x_rel_err"),
            grad_x_backward_only_rel_err: f("grad_x_backward_only_rel_err"),
            grad_x_sign_disagree: f("grad_x_sign_disagree") as usize,
            pgd_disagree: f("pgd_disagree") as usize,
            pgd_match: f("pgd_match"),
        }
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
            None if cifs => RESNET18_CIFS,
            None => RESNET18,
            Some("resnet10_gray_cifs") => RESNET10_CIFS,
            Some("resnet10_gray") => RESNET10,
            Some(a) if a.starts_with("wrn") => {
                if cifs {
                    WRN_CIFS
                } else {
                    WRN
                }
            }
            Some(other) => panic!("{}: fixture architecture `{other}` is not built in cifs-wgpu", self.name),
        };
        let meta = |k: &str| self.meta.get(k).map(|v| v.parse::<usize>().unwrap());
        let config = if kind == WRN_CIFS || kind == WRN {
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

/// The logits, the CIFS probes' outputs (CIFS models) and the loss of one forward pass (`mode`:
/// the fixture's key prefix, eval or train) against the fixture's.
fn check_forward(rt: &Runtime, fx: &Fixture, mode: &str, out: &Output, loss: &Tensor, tol: f64, failures: &mut Vec<String>) {
    let name = &fx.name;
    let mut fields = vec![("logits".to_string(), &out.logits)];
    if fx.meta["cifs"] == "True" {
        fields.extend((0..2).map(|k| (format!("probe{k}"), &out.probes[k])));
    }
    fields.push(("loss".to_string(), loss));
    for (field, t) in fields {
        let key = format!("{mode}.{field}");
        check(name, &key, &t.to_vec(rt).unwrap(), &fx.f64(&key), tol, failures);
    }
}

fn run_fixture(rt: &Runtime, fx: &Fixture, bytes: &[u8], tol: &Tolerances, failures: &mut Vec<String>) {
    let name = fx.name.as_str();
    let beta = fx.meta_f32("beta");
    let x = fx.tensor(rt, "input.x");
    let y = fx.labels(rt);

    // Eval forward and input gradient.
    let model = fx.model(rt, bytes);
    let xl = x.requiring_grad();
    let out = model.forward(rt, &xl, Some(&y), Mode::Eval).unwrap();
    let loss = joint_loss(rt, &out, &y, beta).unwrap();
    check_forward(rt, fx, "eval", &out, &loss, tol.fwd, failures);
    let grads = autodiff::backward(rt, &loss).unwrap();
    let grad_x = grads.get(&xl).unwrap().to_vec(rt).unwrap();
    if tol.like_reference_f16 {
        let reference = fx.f16_reference().grad_x_rel_err;
        let what = format!("eval.grad_x (the reference's f16: {reference:.1e})");
        check(name, &what, &grad_x, &fx.f64("eval.grad_x"), F16_VS_REFERENCE * reference, failures);
    } else {
        check(name, "eval.grad_x", &grad_x, &fx.f64("eval.grad_x"), tol.grad, failures);
    }
    check_pgd(rt, fx, &model, tol, failures);

    // Train forward, parameter gradients (the ReLU inputs near the kink on the reference's
    // side), running statistics after it.
    let model = fx.model(rt, bytes);
    let out = model.forward(rt, &x, Some(&y), Mode::Train).unwrap();
    let loss = joint_loss(rt, &out, &y, beta).unwrap();
    check_forward(rt, fx, "train", &out, &loss, tol.fwd, failures);
    let backward = |loss: &Tensor, model: &Model, pass: &str, failures: &mut Vec<String>| {
        if tol.kinks {
            kinks::backward(rt, model, loss, &fx.sides, pass, &format!("{name} {pass}"), failures)
        } else {
            autodiff::backward(rt, loss).unwrap()
        }
    };
    let grads = backward(&loss, &model, "train", failures);
    for p in model.params() {
        let g = grads.get(p.leaf()).unwrap_or_else(|| panic!("{name}: no gradient for {}", p.name));
        check(
            name,
            &format!("train.grad.{}", p.name),
            &g.to_vec(rt).unwrap(),
            &fx.f64(&format!("train.grad.{}", p.name)),
            tol.grad,
            failures,
        );
    }
    for bn in model.batchnorms() {
        for (stat, t) in [("running_mean", &bn.running_mean), ("running_var", &bn.running_var)] {
            let key = format!("train.after.{}.{stat}", bn.name);
            check(name, &key, &t.to_vec(rt).unwrap(), &fx.f64(&key), tol.fwd, failures);
        }
    }

    // Two SGD steps on the same batch, each backward with its own forward's kink sides; every
    // parameter's and running statistic's change against the reference's change.
    let model = fx.model(rt, bytes);
    let sgd = Sgd::new(rt, &model, fx.meta_f32("lr"), fx.meta_f32("momentum"), fx.meta_f32("weight_decay")).unwrap();
    let steps: usize = fx.meta["sgd_steps"].parse().unwrap();
    for step in 1..=steps {
        let out = model.forward(rt, &x, Some(&y), Mode::Train).unwrap();
        let loss = joint_loss(rt, &out, &y, beta).unwrap();
        let pass = format!("sgd_step{step}");
        let grads = backward(&loss, &model, &pass, failures);
        sgd.step(rt, &model, &grads).unwrap();
    }
    let mut moved: Vec<(String, &Tensor)> = model.params().iter().map(|p| (p.name.clone(), p.leaf())).collect();
    for bn in model.batchnorms() {
        moved.push((format!("{}.running_mean", bn.name), &bn.running_mean));
        moved.push((format!("{}.running_var", bn.name), &bn.running_var));
        let want = read_i64(&fx.st, &format!("sgd2.{}.num_batches_tracked", bn.name), name).unwrap()[0];
        if bn.num_batches_tracked.get() != want {
            failures.push(format!("{name} sgd2.{}.num_batches_tracked: {} != {want}", bn.name, bn.num_batches_tracked.get()));
        }
    }
    for (key, t) in moved {
        let before = fx.f64(&format!("param.{key}"));
        check_update(name, &format!("sgd2.{key}"), &t.to_vec(rt).unwrap(), &before, &fx.f64(&format!("sgd2.{key}")), tol.sgd, failures);
    }
}

/// The fixture's PGD from its start, pixel by pixel against the reference's: in f32 each within
/// `PGD_MATCH` except those the reference lists as undecided at float32 precision; like the
/// reference's f16, no more pixels off by over its `pgd_match` than [`f16_count_bound`] allows.
/// Either way none by more than PGD's largest move.
fn check_pgd(rt: &Runtime, fx: &Fixture, model: &Model, tol: &Tolerances, failures: &mut Vec<String>) {
    let name = &fx.name;
    let (x, y) = (fx.tensor(rt, "input.x"), fx.labels(rt));
    let pgd = fx.pgd();
    let adv = pgd.attack(rt, model, &x, &y, Start::Given(&fx.tensor(rt, "input.pgd_delta0"))).unwrap().to_vec(rt).unwrap();
    let want = fx.f64("pgd.x_adv");
    let matched = if tol.like_reference_f16 { fx.f16_reference().pgd_match } else { PGD_MATCH };
    let differ: Vec<(usize, f64)> =
        adv.iter().zip(&want).map(|(a, w)| (*a as f64 - w).abs()).enumerate().filter(|(_, d)| *d > matched).collect();
    let close = adv.iter().zip(&want).map(|(a, w)| (*a as f64 - w).abs()).filter(|d| *d <= matched).fold(0.0, f64::max);
    let most = 2.0 * pgd.step as f64 * pgd.steps as f64;
    let allowed = if tol.like_reference_f16 {
        let reference = fx.f16_reference().pgd_disagree;
        format!("{} (the reference's f16 moves {reference})", f16_count_bound(reference))
    } else {
        format!("the {} whose gradient sign float32 may flip", fx.sides.pgd_undecided.len())
    };
    println!(
        "  {name} pgd.x_adv: {} of {} pixels differ by over {matched:.0e} (the rest by up to {close:.1e}); allowed: {allowed}, by up to {most:.3}",
        differ.len(),
        want.len(),
    );
    if tol.like_reference_f16 && differ.len() > f16_count_bound(fx.f16_reference().pgd_disagree) {
        failures.push(format!("{name} pgd.x_adv: {} pixels differ, more than {allowed}", differ.len()));
    }
    for (i, d) in differ {
        if d > most + matched || (!tol.like_reference_f16 && !fx.sides.pgd_undecided.contains(&i)) {
            failures.push(format!("{name} pgd.x_adv: pixel {i} differs by {d:.3e}"));
        }
    }
}

/// Compares the change `got - before` with the reference's `want - before`, relative to the
/// norm of the reference's change (absolute if it is zero), printing the error either way.
fn check_update(fx: &str, what: &str, got: &[f32], before: &[f64], want: &[f64], tol: f64, failures: &mut Vec<String>) {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|d| d * d).sum::<f64>().sqrt();
    let diff = norm(&mut got.iter().zip(want).map(|(&g, w)| g as f64 - w));
    let change = norm(&mut want.iter().zip(before).map(|(w, b)| w - b));
    let e = if change < common::tol::ZERO { diff } else { diff / change };
    let verdict = if e <= tol { "ok" } else { "FAIL" };
    println!("  {fx} {what}: update rel err {e:.2e} (|update| {change:.1e}, tol {tol:.0e}) {verdict}");
    if e > tol {
        failures.push(format!("{fx} {what}: update off by {e:.3e} of its norm > {tol:.0e}"));
    }
}

#[test]
fn matches_reference_pytorch_fixtures() {
    let rt = rt();
    let mut failures = Vec::new();
    for path in &fixture_files() {
        let bytes = std::fs::read(path).unwrap();
        let fx = Fixture::open(path, &bytes);
        println!("fixture {}", fx.name);
        run_fixture(&rt, &fx, &bytes, &F32, &mut failures);
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// f16 (each GEMM's operands scaled by a power of two and rounded to f16, f32 accumulation; on
/// tensor cores where the adapter has them, else the emulation in the SIMT tiles): the same
/// checks against the same float64 reference. The eval-mode input gradient and PGD are held to
/// the reference's own f16 (`F16Reference`). The train-mode quantities keep tolerances from the
/// errors measured on lavapipe, worst over the four fixtures: forward values 1.3e-3 (train-mode
/// probe logits; eval logits 3e-4), running statistics 1.9e-4; gradients 0.40; the SGD changes
/// 0.66 of their norm (median 6.2e-2). The gradients miss by that much because f16's forward
/// error (about 2^-12) puts a few ReLU inputs on the other side of zero (far more than the
/// reference's float32 kink listing, which is therefore not applied), and in train mode the
/// batch norms of a batch of four cancel most of each gradient's sum: with the forward in f32 the
/// f16 backward alone stays within 7.4e-4. Tolerances: about twice those (the SGD changes, whose
/// error cannot pass 1 by much without the update pointing elsewhere, 0.8).
const F16: Tolerances = Tolerances { fwd: 3e-3, grad: 0.8, sgd: 0.8, kinks: false, like_reference_f16: true };

/// What the reference itself does with its GEMMs in f16 as ours run (operands scaled and
/// rounded to f16 the same way, f32 sums), against its float64 numbers on the same fixture:
/// written by tests/reference/parity_fixture_f16.py into the fixture's `.json`.
struct F16Reference {
    /// The eval-mode input gradient's relative error, all GEMMs in f16.
    grad_x_rel_err: f64,
    /// The same with the forward in float32 (the backward's GEMMs in f16).
    grad_x_backward_only_rel_err: f64,
    /// Pixels whose input-gradient sign differs from float64's.
    grad_x_sign_disagree: usize,
    /// Pixels where PGD ends more than `pgd_match` from float64's.
    pgd_disagree: usize,
    pgd_match: f64,
}

/// Our f16 may depart from the fixture's float64 numbers by this factor times the reference's
/// own f16 departure. Both round the same operands of the same GEMMs to f16 at the same scales
/// and add in f32; they differ in the order of the sums, in the other f32 operations, and so in
/// which near-zero quantities (ReLU inputs, gradient entries) land on which side: the same kind
/// of error, another draw of it. Measured on the fixtures (and a WRN-22-CIFS at batch 2), on
/// lavapipe's SIMT emulation and on Mesa 26's tensor cores: gradient errors at 0.84 to 1.04 times
/// the reference's, counts of pixels at 0.64 to 1.12 times (printed by
/// `f16_attack_departs_as_the_references_f16_does`).
const F16_VS_REFERENCE: f64 = 2.0;

/// A count of pixels (gradient signs, PGD results) that our f16 gets otherwise than float64 may
/// exceed [`F16_VS_REFERENCE`] times the reference's count by this many standard deviations of
/// the difference of two counts of that mean: each pixel crosses or not by chance (which side
/// the f16 error puts it on), so a count is a sum of independent trials, of variance at most its
/// mean, and two draws differ with a standard deviation of at most sqrt(2 (mean + 1)).
const F16_COUNT_SIGMAS: f64 = 5.0;

/// The most pixels our f16 may get otherwise than float64 where the reference's f16 gets
/// `reference` pixels otherwise.
fn f16_count_bound(reference: usize) -> usize {
    let r = reference as f64;
    (F16_VS_REFERENCE * r + F16_COUNT_SIGMAS * (2.0 * (r + 1.0)).sqrt()).ceil() as usize
}

/// A runtime with the GEMMs in f16: on tensor cores where the adapter has them (required with
/// `CIFS_WGPU_REQUIRE_TENSOR_CORES=1`), else the SIMT emulation; prints which.
fn f16_rt(test: &str) -> Runtime {
    let rt = with_kernels(&rt(), |k| k.precision = Precision::F16);
    assert_eq!(rt.precision(), Precision::F16);
    let required = std::env::var(common::REQUIRE_TENSOR_CORES_ENV).is_ok_and(|v| v.trim() == "1");
    assert!(!required || rt.tensor_cores().is_some(), "{test}: {}=1 and no tensor cores here", common::REQUIRE_TENSOR_CORES_ENV);
    println!("{test}: f16 GEMMs on {}", rt.gemm_kernels());
    rt
}

/// Where `CIFS_WGPU_REQUIRE_TENSOR_CORES=1`, the tensor-core entry points must have run.
fn assert_tensor_cores_ran(rt: &Runtime, test: &str) {
    let coop: u64 = rt.dispatches_by_entry().iter().filter(|(e, _)| e.ends_with("_coop")).map(|(_, n)| n).sum();
    println!("{test}: {coop} tensor-core dispatches");
    if rt.tensor_cores().is_some() {
        assert!(coop > 0, "{test}: tensor cores were there and did not run");
    }
}

#[test]
fn matches_reference_pytorch_fixtures_in_f16() {
    let rt = f16_rt("matches_reference_pytorch_fixtures_in_f16");
    let mut failures = Vec::new();
    for path in &fixture_files() {
        let bytes = std::fs::read(path).unwrap();
        let fx = Fixture::open(path, &bytes);
        println!("fixture {} (f16)", fx.name);
        run_fixture(&rt, &fx, &bytes, &F16, &mut failures);
    }
    assert_tensor_cores_ran(&rt, "matches_reference_pytorch_fixtures_in_f16");
    assert!(failures.is_empty(), "{} mismatches in f16:\n{}", failures.len(), failures.join("\n"));
}

/// The eval-mode input gradient of the joint loss (what PGD follows, by its sign), with the
/// forward's GEMMs in `forward` and the backward's in `backward`.
fn input_gradient(rt: &Runtime, fx: &Fixture, bytes: &[u8], forward: Precision, backward: Precision) -> Vec<f32> {
    let rt_backward = with_kernels(rt, |k| k.precision = backward);
    let rt = &with_kernels(rt, |k| k.precision = forward);
    let model = fx.model(rt, bytes);
    let (x, y) = (fx.tensor(rt, "input.x").requiring_grad(), fx.labels(rt));
    let loss = joint_loss(rt, &model.forward(rt, &x, Some(&y), Mode::Eval).unwrap(), &y, fx.meta_f32("beta")).unwrap();
    autodiff::backward(&rt_backward, &loss).unwrap().get(&x).unwrap().to_vec(rt).unwrap()
}

/// PGD from the fixture's start, in `precision`.
fn pgd_run(rt: &Runtime, fx: &Fixture, bytes: &[u8], precision: Precision) -> Vec<f32> {
    let rt = &with_kernels(rt, |k| k.precision = precision);
    let model = fx.model(rt, bytes);
    let (x, y) = (fx.tensor(rt, "input.x"), fx.labels(rt));
    fx.pgd().attack(rt, &model, &x, &y, Start::Given(&fx.tensor(rt, "input.pgd_delta0"))).unwrap().to_vec(rt).unwrap()
}

/// The attack in f16 departs from the float64 reference no more than the reference's own f16
/// does on the same fixture (`F16Reference`), by [`F16_VS_REFERENCE`] and [`f16_count_bound`]:
/// the input gradient with only the backward's GEMMs in f16, and all in f16; the pixels where
/// its sign differs; the pixels where PGD from the fixture's start ends elsewhere (by over the
/// reference's `pgd_match`). Prints ours beside the reference's, and what f32 does.
#[test]
fn f16_attack_departs_as_the_references_f16_does() {
    let test = "f16_attack_departs_as_the_references_f16_does";
    let rt = f16_rt(test);
    let mut failures = Vec::new();
    for path in fixture_files() {
        let bytes = std::fs::read(&path).unwrap();
        let fx = Fixture::open(&path, &bytes);
        let (name, reference) = (&fx.name, fx.f16_reference());
        let (want_g, want_adv) = (fx.f64("eval.grad_x"), fx.f64("pgd.x_adv"));
        let backward_only = rel_err(&input_gradient(&rt, &fx, &bytes, Precision::F32, Precision::F16), &want_g);
        let g16 = input_gradient(&rt, &fx, &bytes, Precision::F16, Precision::F16);
        let signs = g16.iter().zip(&want_g).filter(|(a, b)| (**a as f64).signum() != b.signum() || (**a == 0.0) != (**b == 0.0)).count();
        let adv16 = pgd_run(&rt, &fx, &bytes, Precision::F16);
        let moved = adv16.iter().zip(&want_adv).filter(|(a, b)| (**a as f64 - **b).abs() > reference.pgd_match).count();
        let ours = [rel_err(&g16, &want_g), backward_only, signs as f64, moved as f64];
        let theirs = [
            reference.grad_x_rel_err,
            reference.grad_x_backward_only_rel_err,
            reference.grad_x_sign_disagree as f64,
            reference.pgd_disagree as f64,
        ];
        println!(
            "{name} (of {} pixels), ours vs the reference's f16: input gradient {:.2e} vs {:.2e} (backward only {:.2e} vs {:.2e}); signs differ at {} vs {}; PGD pixels at {} vs {} (ratios {:.2}, {:.2}, {:.2}, {:.2})",
            want_g.len(),
            ours[0], theirs[0], ours[1], theirs[1], ours[2], theirs[2], ours[3], theirs[3],
            ours[0] / theirs[0], ours[1] / theirs[1], ours[2] / theirs[2].max(1.0), ours[3] / theirs[3].max(1.0)
        );
        let errors_ok = ours[0] <= F16_VS_REFERENCE * theirs[0] && ours[1] <= F16_VS_REFERENCE * theirs[1];
        let counts_ok = signs <= f16_count_bound(reference.grad_x_sign_disagree) && moved <= f16_count_bound(reference.pgd_disagree);
        if !errors_ok || !counts_ok {
            failures.push(format!("{name}: ours {ours:?} against the reference's f16 {theirs:?}"));
        }
    }
    assert_tensor_cores_ran(&rt, test);
    assert!(failures.is_empty(), "f16 attack departs from float64 more than the reference's f16: {}", failures.join("; "));
}

/// Relative departure of the f16 loss from the f32 loss allowed at each step of a short training
/// run (measured on lavapipe: 1.4e-2 at most, at the third step).
const F16_TRAIN_LOSS: f64 = 3e-2;

/// A short training run in f16 follows f32's: ten SGD steps (train mode, joint loss) on the
/// ResNet18-CIFS fixture's batch from its weights, the same in both precisions; at every step
/// the f16 loss is within F16_TRAIN_LOSS (relative) of the f32 loss, and both runs fit the batch.
#[test]
fn f16_training_loss_follows_f32() {
    let rt = f16_rt("f16_training_loss_follows_f32");
    let path = fixture_dirs()[0].join("cifs_w8_n4_seed0.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let fx = Fixture::open(&path, &bytes);
    let losses = |precision: Precision| -> Vec<f32> {
        let rt = with_kernels(&rt, |k| k.precision = precision);
        let model = fx.model(&rt, &bytes);
        let sgd = Sgd::new(&rt, &model, fx.meta_f32("lr"), fx.meta_f32("momentum"), fx.meta_f32("weight_decay")).unwrap();
        let (x, y) = (fx.tensor(&rt, "input.x"), fx.labels(&rt));
        (0..10)
            .map(|_| {
                let loss = joint_loss(&rt, &model.forward(&rt, &x, Some(&y), Mode::Train).unwrap(), &y, fx.meta_f32("beta")).unwrap();
                let grads = autodiff::backward(&rt, &loss).unwrap();
                sgd.step(&rt, &model, &grads).unwrap();
                loss.to_vec(&rt).unwrap()[0]
            })
            .collect()
    };
    let (l32, l16) = (losses(Precision::F32), losses(Precision::F16));
    assert_tensor_cores_ran(&rt, "f16_training_loss_follows_f32");
    let worst = l32.iter().zip(&l16).map(|(a, b)| ((a - b) / a).abs() as f64).fold(0.0, f64::max);
    println!("losses f32 {l32:?}\nlosses f16 {l16:?}\nworst relative departure {worst:.2e}");
    assert!(worst <= F16_TRAIN_LOSS, "f16 loss departs from f32's by {worst:.3e} > {F16_TRAIN_LOSS:.0e}");
    for l in [&l32, &l16] {
        assert!(l[9] < 0.5 * l[0], "ten steps on one batch must fit it: {l:?}");
    }
}

/// The gradients of the train step on the fixtures that carry them (every parameter, in order).
fn train_grads(rt: &Runtime, fx: &Fixture, bytes: &[u8]) -> Vec<(String, Vec<f32>)> {
    let (model, loss) = fx.train_loss(rt, bytes);
    let grads = autodiff::backward(rt, &loss).unwrap();
    model.params().iter().map(|p| (p.name.clone(), grads.get(p.leaf()).unwrap().to_vec(rt).unwrap())).collect()
}

/// The train-step gradients do not depend on the run or on the convolution tile configuration:
/// the same gradients twice in a row, and under every configuration the device holds, forced, the same to 1e-5
/// (within one split of the depth every configuration adds an output's products in the same
/// order, but the number of splits follows from its tile count, so the partial sums may be
/// grouped in a different order, and the compiler may contract multiply-adds differently: float
/// reassociation only; on lavapipe every configuration gives the same bits). Prints, per configuration, the worst parameter and its distance from the
/// reference, so that a device where one configuration misbehaves says which.
#[test]
fn train_gradients_repeat_and_hold_under_every_tile_configuration() {
    let rt = rt();
    let mut failures = Vec::new();
    for path in fixture_files() {
        let bytes = std::fs::read(&path).unwrap();
        let fx = Fixture::open(&path, &bytes);
        let name = &fx.name;
        let first = train_grads(&rt, &fx, &bytes);
        let again = train_grads(&rt, &fx, &bytes);
        let moved = first.iter().zip(&again).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0.clone()).collect::<Vec<_>>();
        println!("{name}: rerun changed {} of {} gradients {:?}", moved.len(), first.len(), moved.iter().take(4).collect::<Vec<_>>());
        if !moved.is_empty() {
            failures.push(format!("{name}: a rerun changed {} gradients", moved.len()));
        }
        for tile in rt.tiles() {
            let grads = train_grads(&with_kernels(&rt, |k| k.tile = Some(engine::tune::GemmTile::Simt(tile))), &fx, &bytes);
            let worst = |err: &dyn Fn(&str, &[f32]) -> f64| {
                grads
                    .iter()
                    .map(|(p, g)| (p.clone(), err(p, g)))
                    .fold((String::new(), 0.0), |acc, (p, e)| if e > acc.1 { (p, e) } else { acc })
            };
            let (p, e) = worst(&|p, g| {
                let base: Vec<f64> = first.iter().find(|(q, _)| q == p).unwrap().1.iter().map(|&v| v as f64).collect();
                rel_err(g, &base)
            });
            let (rp, re) = worst(&|p, g| rel_err(g, &fx.f64(&format!("train.grad.{p}"))));
            println!("{name} tile {}: worst departure from the default run {p} {e:.2e}; from the reference {rp} {re:.2e}", tile.name());
            if e > 1e-5 {
                failures.push(format!("{name} tile {}: {p} departs from the default configuration's gradient by {e:.3e}", tile.name()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Diagnostic, run by hand (`--ignored`): writes every node's value and gradient of the
/// fixture named by CIFS_TRACE_FIXTURE's train step, in backward order, to CIFS_TRACE_OUT
/// (safetensors, keys `NNNN.op.value` / `NNNN.op.grad`), so that traces from two devices can
/// be compared op by op (tests/reference/compare_traces.py).
#[test]
#[ignore]
fn trace_train_step() {
    let (Some(name), Some(out)) = (std::env::var_os("CIFS_TRACE_FIXTURE"), std::env::var_os("CIFS_TRACE_OUT")) else {
        panic!("set CIFS_TRACE_FIXTURE (a fixture's file stem) and CIFS_TRACE_OUT (the trace file to write)");
    };
    let name = name.to_string_lossy().to_string();
    let path = fixture_dirs().into_iter().map(|d| d.join(format!("{name}.safetensors"))).find(|p| p.exists()).expect("fixture not found");
    let bytes = std::fs::read(&path).unwrap();
    let fx = Fixture::open(&path, &bytes);
    let rt = rt();
    let (_model, loss) = fx.train_loss(&rt, &bytes);
    let mut trace: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    autodiff::backward_observed(&rt, &loss, Tensor::from_f32(&rt, loss.shape(), &[1.0]).unwrap(), &mut |node| {
        let (i, op) = (trace.len() / 2, node.op);
        trace.push((format!("{i:04}.{op}.value"), node.value.shape().to_vec(), node.value.to_vec(&rt)?));
        trace.push((format!("{i:04}.{op}.grad"), node.grad.shape().to_vec(), node.grad.to_vec(&rt)?));
        Ok(())
    })
    .unwrap();
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        trace.into_iter().map(|(k, s, v)| (k, s, v.iter().flat_map(|f| f.to_le_bytes()).collect())).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| (k.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, std::path::Path::new(&out)).unwrap();
    println!("{name}: {} nodes traced to {}", bytes.len() / 2, out.to_string_lossy());
}
