//! The reference's side of the ReLU inputs that lie near the kink.
//!
//! A ReLU input within float32 rounding of zero may land on either side in a float32 run, and
//! the gradient upstream of it then changes by that element's whole contribution: the float64
//! fixture alone does not say what a float32 run must produce. `<fixture>.kinks.json`
//! (tests/reference/parity_fixture_kinks.py) lists, for each train-mode forward the fixture
//! records, every ReLU input whose float64 value is under its `threshold` (1e-4; float32 moves
//! inputs this close to zero by under 1e-5), with that value. [`backward`] puts each listed
//! element on the reference's side before the ReLU's backward pass reads it, and checks that
//! the listing fits this run: the run's own inputs at the listed elements are near the
//! reference's, and no input of the run lies near zero unlisted.
//!
//! Every ReLU of these models is fused into the batch norm before it (`batchnorm2d` nodes), and
//! the files name a ReLU by that batch norm and an element by its flat (N, C, H, W) index.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cifs::Model;
use engine::{autodiff, Runtime, Tensor};

/// One forward's listed inputs: batch norm name -> [(flat index, float64 input)]. Every batch
/// norm followed by a ReLU is a key, with an empty list if nothing is near zero.
pub type Pass = HashMap<String, Vec<(usize, f64)>>;

pub struct Sides {
    /// Inputs under this magnitude are listed.
    pub threshold: f64,
    passes: HashMap<String, Pass>,
    /// The pixels (flat indices of the input) whose input-gradient entry, at some step of the
    /// fixture's PGD, is under 4x the error float32 makes in that gradient (`pgd_steps`).
    pub pgd_undecided: HashSet<usize>,
}

impl Sides {
    /// The kink file beside the fixture `path` (`x.safetensors` -> `x.kinks.json`).
    pub fn open(path: &Path) -> Sides {
        let file = path.with_extension("kinks.json");
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{} unreadable ({e}): make it with tests/reference/parity_fixture_kinks.py", file.display()));
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let passes = doc["passes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(pass, bns)| {
                let bns = bns.as_object().unwrap().iter().map(|(bn, list)| {
                    let list = list.as_array().unwrap().iter().map(|e| (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap())).collect();
                    (bn.clone(), list)
                });
                (pass.clone(), bns.collect())
            })
            .collect();
        let pgd_undecided = doc["pgd_steps"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["undecided"].as_array().unwrap().iter().map(|e| e[0].as_u64().unwrap() as usize))
            .collect();
        Sides { threshold: doc["threshold"].as_f64().unwrap(), passes, pgd_undecided }
    }

    /// The pass named `pass` (`train`, `sgd_step1`, `sgd_step2`).
    pub fn pass(&self, pass: &str) -> &Pass {
        self.passes.get(pass).unwrap_or_else(|| panic!("the kink file has no pass `{pass}`"))
    }
}

/// How far from zero an input of this run may lie while the reference's is at least the
/// threshold away, and how far from the reference's a listed input may lie: half the threshold,
/// 5e-5, over 5x the error float32 makes at inputs this close to zero (under 9e-6 in PyTorch,
/// `float32_error` in the kink files; at most 3e-6 measured here on lavapipe).
fn slack(threshold: f64) -> f64 {
    threshold / 2.0
}

/// Back-propagates `loss` of a train-mode forward of `model` with the inputs `pass` lists on the
/// reference's side. Pushes onto `failures` what does not fit the listing (`what` names the
/// fixture and pass in the messages) and prints how many inputs were moved.
pub fn backward(
    rt: &Runtime,
    model: &Model,
    loss: &Tensor,
    sides: &Sides,
    pass: &str,
    what: &str,
    failures: &mut Vec<String>,
) -> autodiff::Gradients {
    let listed = sides.pass(pass);
    let slack = slack(sides.threshold);
    let names: HashMap<u64, &str> = model.batchnorms().into_iter().map(|bn| (bn.weight.leaf().id(), bn.name.as_str())).collect();
    let (mut seen, mut moved, mut worst) = (HashSet::new(), 0, 0.0f64);
    let seed = Tensor::from_f32(rt, loss.shape(), &[1.0]).unwrap();
    let grads = autodiff::backward_observed(rt, loss, seed, &mut |node| {
        match node.op {
            "batchnorm2d" => {}
            "relu" => panic!("{what}: a ReLU of its own; the kink files know only ReLUs fused into a batch norm"),
            _ => return Ok(()),
        }
        let inputs = node.inputs();
        let bn = names[&inputs[1].id()];
        let Some(here) = listed.get(bn) else { return Ok(()) }; // no ReLU after it (a shortcut's)
        seen.insert(bn);
        let pre = pre_activation(rt, &inputs);
        let mut y = node.value.to_vec(rt)?;
        let mut changed = false;
        for &(i, v) in here {
            worst = worst.max((pre[i] - v).abs());
            if (v > 0.0) != (y[i] > 0.0) {
                // The ReLU's backward passes the gradient where its output is positive.
                y[i] = if v > 0.0 { (v as f32).max(f32::MIN_POSITIVE) } else { 0.0 };
                changed = true;
                moved += 1;
            }
        }
        let here: HashSet<usize> = here.iter().map(|&(i, _)| i).collect();
        for (i, p) in pre.iter().enumerate().filter(|(i, p)| p.abs() < slack && !here.contains(i)) {
            failures.push(format!(
                "{what}: {bn} element {i}: input {p:.2e} here, but the reference's is at least {:.0e} from zero",
                sides.threshold
            ));
        }
        if changed {
            node.value.write_f32(rt, &y)?;
        }
        Ok(())
    })
    .unwrap();
    let count: usize = listed.values().map(Vec::len).sum();
    println!("  {what}: {count} ReLU inputs within {:.0e} of the kink, {moved} moved to the reference's side; here they lie within {worst:.1e} of the reference's", sides.threshold);
    if worst > slack {
        failures.push(format!("{what}: a listed ReLU input lies {worst:.2e} from the reference's (allowed {slack:.0e})"));
    }
    let unseen: Vec<&String> = listed.keys().filter(|k| !seen.contains(k.as_str())).collect();
    if !unseen.is_empty() {
        failures.push(format!("{what}: the reference's ReLUs after {unseen:?} are not in this model's backward pass"));
    }
    grads
}

/// The input of the ReLU fused into a train-mode batch norm node (inputs x, gamma, beta and the
/// residual if any), in float64 from the node's own inputs.
fn pre_activation(rt: &Runtime, inputs: &[&Tensor]) -> Vec<f64> {
    let read = |t: &Tensor| -> Vec<f64> { t.to_vec(rt).unwrap().iter().map(|&v| v as f64).collect() };
    let s = inputs[0].shape();
    let xs = [s[0], s[1], s[2], s[3]];
    let x = read(inputs[0]);
    let res = inputs.get(3).map(|r| read(r));
    let (mean, var) = engine_reference::channel_stats(&x, xs);
    let eps = engine::ops::batchnorm::EPS as f64;
    engine_reference::batchnorm_act(&x, xs, &mean, &var, &read(inputs[1]), &read(inputs[2]), res.as_deref(), false, eps)
}
