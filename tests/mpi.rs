//! Data-parallel training and evaluation with `mpirun -n 2` on lavapipe (built with the `mpi`
//! feature; Open MPI's `mpirun` on the PATH).
//!
//! - Two ranks without `--sync-bn` end an epoch of PGD training with the weights, momentum and
//!   running statistics of an in-process reference that runs each rank's share of every global
//!   batch separately (per-share batch norm) and combines the gradients and running statistics
//!   weighted by share size; the shares are unequal (3 + 2 images) in two of the three steps.
//!   The same reference with one share per batch (a one-process run) is far from both, so the
//!   comparison can tell the two apart.
//! - Sharded `eval` prints the table one process prints.
//! - A rank killed mid-run, or one that fails on its own, ends every rank within a timeout with
//!   a message naming the rank; the last checkpoint is intact, resumes with two ranks, and a
//!   resume with another number of ranks is refused.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cifs::attacks::pgd::{AttackLoss, Pgd, Start};
use cifs::checkpoint::load_training;
use cifs::loss::joint_loss;
use cifs::training::epoch::{epoch_rng, train_pass};
use cifs::Mode;
use datasets::loader::batches;
use datasets::DatasetKind;
use engine::{autodiff, Runtime, Tensor};

#[path = "common/files.rs"]
mod files;
use files::{make_folder, read_json, tmpdir};
#[path = "common/ranks.rs"]
mod ranks;
use ranks::*;

/// Two ranks with synchronised batch norm against one process after the epoch's three steps:
/// the statistics and gradient sums are combined in another order (and in float64), so the
/// weights agree to rounding, not bit for bit: measured 5.6e-5 (the worst tensor, a momentum
/// buffer, relative norm) on lavapipe; without the synchronisation the error is 1.7.
const SYNC_BN_TOL: f64 = 5e-4;

/// One epoch of the run the CLI makes of `train_args`, computed in this process with each global
/// batch cut into `shares(n)` (ranges), every share attacked and backpropagated on its own from
/// the same weights and running statistics (batch norm over the share), and the gradients and
/// running statistics combined weighted by share size before one SGD step.
fn reference(rt: &Runtime, data: &Path, shares: fn(usize) -> Vec<(usize, usize)>) -> Vec<(String, Vec<f32>)> {
    let splits = datasets::load(DatasetKind::Folder, data, None).unwrap();
    let train = Arc::new(splits.train.balanced(TRAIN));
    let (model, sgd) = new_model(rt);
    let pgd = Pgd { eps: 8.0 / 255.0, step: 2.0 / 255.0, steps: ATTACK_STEPS, loss: AttackLoss::Joint { beta: 2.0 } };
    let mut running: Vec<&Tensor> = Vec::new();
    for bn in model.batchnorms() {
        running.extend([&bn.running_mean, &bn.running_var]);
    }
    let mut attack_rng = epoch_rng(SEED, 0, 1);
    for batch in batches(train.clone(), train_pass(TRAIN, BATCH, epoch_rng(SEED, 0, 0).next_u64(), true)).unwrap() {
        let batch = batch.unwrap();
        let (n, per) = (batch.len(), batch.shape.bytes());
        // The one-process random start of the whole batch; each share keeps its rows.
        let start = engine::ops::random::uniform(rt, &[n, per], -pgd.eps, pgd.eps, attack_rng.next_u64()).unwrap().to_vec(rt).unwrap();
        let before = Tensor::read_all(rt, &running).unwrap();
        let mut grad_sum: Option<Vec<Vec<f32>>> = None;
        let mut running_sum: Vec<Vec<f32>> = before.iter().map(|v| vec![0.0; v.len()]).collect();
        let mut last = None;
        for (lo, hi) in shares(n) {
            for (t, v) in running.iter().zip(&before) {
                t.write_f32(rt, v).unwrap();
            }
            let dims = [hi - lo, batch.shape.channels, batch.shape.side, batch.shape.side];
            let x = Tensor::from_f32(rt, &dims, &batch.images[lo * per..hi * per]).unwrap();
            let y = Tensor::from_u32(rt, &[hi - lo], &batch.labels[lo..hi]).unwrap();
            let delta = Tensor::from_f32(rt, &dims, &start[lo * per..hi * per]).unwrap();
            let adv = pgd.attack(rt, &model, &x, &y, Start::Given(&delta)).unwrap();
            let out = model.forward(rt, &adv, Some(&y), Mode::Train).unwrap();
            let grads = autodiff::backward(rt, &joint_loss(rt, &out, &y, 2.0).unwrap()).unwrap();
            let w = (hi - lo) as f32 / n as f32;
            let g: Vec<&Tensor> = model.params().into_iter().map(|p| grads.get(p.leaf()).unwrap()).collect();
            let g = Tensor::read_all(rt, &g).unwrap();
            let sum = grad_sum.get_or_insert_with(|| g.iter().map(|v| vec![0.0; v.len()]).collect());
            for (s, v) in sum.iter_mut().zip(&g) {
                s.iter_mut().zip(v).for_each(|(s, v)| *s += w * v);
            }
            for (s, v) in running_sum.iter_mut().zip(&Tensor::read_all(rt, &running).unwrap()) {
                s.iter_mut().zip(v).for_each(|(s, v)| *s += w * v);
            }
            last = Some(grads);
        }
        let grads = last.unwrap();
        for (p, v) in model.params().into_iter().zip(grad_sum.unwrap()) {
            grads.get(p.leaf()).unwrap().write_f32(rt, &v).unwrap();
        }
        for (t, v) in running.iter().zip(&running_sum) {
            t.write_f32(rt, v).unwrap();
        }
        sgd.step(rt, &model, &grads).unwrap();
    }
    state(rt, &model, &sgd)
}

/// Two ranks: the first takes the extra image of an odd batch.
fn two_shares(n: usize) -> Vec<(usize, usize)> {
    vec![(0, n.div_ceil(2)), (n.div_ceil(2), n)]
}

fn one_share(n: usize) -> Vec<(usize, usize)> {
    vec![(0, n)]
}

#[test]
fn two_ranks_equal_the_reference_of_their_shares() {
    let root = tmpdir("shares");
    let (data, out) = (root.join("data"), root.join("run"));
    make_folder(&data);
    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(train_args(&data, &out, &["--epochs", "1"]));
    let res = wait_at_most(spawn(c), Duration::from_secs(600), "mpirun -n 2 train");
    let text = show("mpirun -n 2 train", &res);
    assert!(res.status.success(), "two-rank training failed");
    assert!(text.contains("all-reduce of"), "rank 0 reports the all-reduce's cost");
    let config: serde_json::Value = read_json(out.join("config.json"));
    assert_eq!(config["ranks"], 2);

    let rt = Runtime::new(engine::RuntimeOptions::from_env().expect("the environment's settings"))
        .expect("a Vulkan device (lavapipe is enough)");
    let ranks = checkpoint_state(&rt, &out.join("last.safetensors"));
    let (err, at) = worst(&ranks, &reference(&rt, &data, two_shares));
    let (apart, apart_at) = worst(&ranks, &reference(&rt, &data, one_share));
    eprintln!("two ranks vs the reference of their shares: {err:.3e} ({at}); vs one process: {apart:.3e} ({apart_at})");
    // Same kernels on the same shapes; the only other rounding is the order of the weighted sum.
    assert!(err <= 1e-6, "two ranks differ from the reference of their shares by {err:.3e} in {at}");
    assert!(apart > 1e-3, "the reference cannot tell two ranks from one process ({apart:.3e})");
}

#[test]
fn with_sync_bn_two_ranks_end_with_the_weights_of_one_process() {
    sync_bn_two_ranks_against_one_process("syncbn", &[]);
}

/// As above for `--method n-fgsm`: each rank draws its share's part of the one random start
/// (2 eps noise, no projection back to the eps-ball), so the two runs attack the same images.
#[test]
fn with_sync_bn_two_ranks_of_n_fgsm_end_with_the_weights_of_one_process() {
    let two = sync_bn_two_ranks_against_one_process("syncbn-nfgsm", &["--method", "n-fgsm"]);
    let config: serde_json::Value = read_json(two.join("config.json"));
    assert_eq!(config["method"], "n-fgsm");
}

/// With `--ema`, every rank updates its copy of the weight average from the same all-reduced
/// weights, and rank 0 writes it: the two-rank run's `ema.safetensors` holds one process's
/// average (every tensor within [`SYNC_BN_TOL`], as the weights are).
#[test]
fn with_sync_bn_two_ranks_keep_the_weight_average_of_one_process() {
    let two = sync_bn_two_ranks_against_one_process("syncbn-ema", &["--ema", "0.9"]);
    let one = two.parent().unwrap().join("one");
    let (a, b) = (safetensors_f32(&one.join("ema.safetensors")), safetensors_f32(&two.join("ema.safetensors")));
    assert!(!a.is_empty() && a.iter().map(|t| &t.0).eq(b.iter().map(|t| &t.0)), "the averages hold different tensors");
    let (err, at) = worst(&a, &b);
    eprintln!("the weight average, two ranks with --sync-bn vs one process: {err:.3e} ({at})");
    assert!(err <= SYNC_BN_TOL, "the two-rank weight average differs from one process's by {err:.3e} in {at}");
}

/// Every f32 tensor of a safetensors file, by name.
fn safetensors_f32(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut named: Vec<(String, Vec<f32>)> = file
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(n, t)| (n, t.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()))
        .collect();
    named.sort_by(|x, y| x.0.cmp(&y.0));
    named
}

/// One epoch of `train_args` plus `extra` in one process and on two ranks with `--sync-bn`; the
/// final weights agree within [`SYNC_BN_TOL`]. Returns the two-rank run's folder.
fn sync_bn_two_ranks_against_one_process(name: &str, extra: &[&str]) -> std::path::PathBuf {
    let root = tmpdir(name);
    let (data, one, two) = (root.join("data"), root.join("one"), root.join("two"));
    make_folder(&data);
    let args = |out: &Path, more: &[&str]| train_args(&data, out, &[&["--epochs", "1"], extra, more].concat());
    let single = Command::new(bin()).args(args(&one, &[])).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    show("train", &single);
    assert!(single.status.success());
    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(args(&two, &["--sync-bn"]));
    let res = wait_at_most(spawn(c), Duration::from_secs(600), "mpirun -n 2 train --sync-bn");
    show("mpirun -n 2 train --sync-bn", &res);
    assert!(res.status.success(), "two-rank training with --sync-bn failed");
    let config: serde_json::Value = read_json(two.join("config.json"));
    assert_eq!(config["sync_bn"], true);
    let rt = Runtime::new(engine::RuntimeOptions::from_env().expect("the environment's settings"))
        .expect("a Vulkan device (lavapipe is enough)");
    let (err, at) = worst(&checkpoint_state(&rt, &one.join("last.safetensors")), &checkpoint_state(&rt, &two.join("last.safetensors")));
    eprintln!("two ranks with --sync-bn {extra:?} vs one process: {err:.3e} ({at})");
    assert!(err <= SYNC_BN_TOL, "two ranks with --sync-bn {extra:?} differ from one process by {err:.3e} in {at}");
    two
}

#[test]
fn sharded_eval_prints_the_table_of_one_process() {
    let root = tmpdir("eval");
    let (data, out) = (root.join("data"), root.join("run"));
    make_folder(&data);
    let (d, o) = (data.display().to_string(), out.display().to_string());
    // A model that tells the classes apart and that the attacks below break on some images only
    // (natural 73%, the attacks 36-73% at eps 0.15), so that a wrong image or count shows.
    let train = [
        "--no-tune",
        "train",
        "folder",
        "--data-dir",
        &d,
        "--out",
        &o,
        "--width",
        "4",
        "--batch-size",
        "10",
        "--seed",
        "3",
        "--epochs",
        "4",
    ];
    let one = Command::new(bin())
        .args(train)
        .args(["--clean-epochs", "0", "--adv", "none", "--eval-limit", "1", "--eval-every", "4"])
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .unwrap();
    show("train", &one);
    assert!(one.status.success());
    let ckpt = out.join("last.safetensors").display().to_string();
    // 11 test images: shares of 6 and 5 in batches of 4. Square and APGD draw per image from its
    // index in the whole set.
    let args = |json: &Path| -> Vec<String> {
        let mut v: Vec<String> =
            ["--no-tune", "eval", "folder", "--data-dir", &d, "--checkpoint", &ckpt, "--limit", "11", "--batch-size", "4", "--eps", "0.15"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        v.extend(
            ["--attacks", "natural,fgsm,pgd3,apgd-ce,square", "--iterations", "3", "--queries", "20", "--json"]
                .iter()
                .map(|s| s.to_string()),
        );
        v.push(json.display().to_string());
        v
    };
    let single = Command::new(bin()).args(args(&root.join("one.json"))).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    show("eval", &single);
    assert!(single.status.success());
    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(args(&root.join("two.json")));
    let two = wait_at_most(spawn(c), Duration::from_secs(300), "mpirun -n 2 eval");
    show("mpirun -n 2 eval", &two);
    assert!(two.status.success());
    let read = |p: &str| -> serde_json::Value { read_json(root.join(p)) };
    let accuracies: Vec<f64> = read("one.json").as_array().unwrap().iter().map(|r| r["accuracy"].as_f64().unwrap()).collect();
    assert!(
        accuracies.iter().any(|&a| a != accuracies[0]),
        "every attack leaves the natural accuracy: the table cannot show a wrong image"
    );
    assert_eq!(read("one.json"), read("two.json"), "the sharded table differs from one process's");

    // Fewer test images than ranks: no rank is left with an empty share to fail on.
    let mut c = mpirun(&["-n", "2", bin()]);
    let few = root.join("few.json").display().to_string();
    c.args([
        "--no-tune",
        "eval",
        "folder",
        "--data-dir",
        &d,
        "--checkpoint",
        &ckpt,
        "--limit",
        "1",
        "--attacks",
        "natural",
        "--json",
        &few,
    ]);
    let two = wait_at_most(spawn(c), Duration::from_secs(300), "mpirun -n 2 eval --limit 1");
    show("mpirun -n 2 eval --limit 1", &two);
    assert!(two.status.success(), "two ranks could not evaluate one image");
    assert_eq!(read("few.json")[0]["images"].as_u64(), Some(1));
}

#[test]
fn a_killed_rank_stops_the_run_and_the_checkpoint_resumes() {
    let root = tmpdir("kill");
    let (data, out) = (root.join("data"), root.join("run"));
    make_folder(&data);
    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(train_args(&data, &out, &["--epochs", "30", "--adv", "none", "--eval-every", "30"]));
    let child = spawn(c);
    let launcher = child.id();
    let last = out.join("last.safetensors");
    let start = Instant::now();
    while !last.is_file() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = rank_pid(launcher, 1).expect("rank 1's process");
    // SAFETY-free: `kill` is a process of its own.
    assert!(Command::new("kill").args(["-9", &victim.to_string()]).status().unwrap().success());
    let killed_at = Instant::now();
    let res = wait_at_most(child, Duration::from_secs(60), "mpirun with a killed rank");
    let text = show("mpirun with a killed rank", &res);
    eprintln!("the run ended {:.1} s after rank 1 was killed", killed_at.elapsed().as_secs_f64());
    assert!(!res.status.success(), "a run with a killed rank must fail");
    assert!(text.contains("rank 1") && (text.contains("signal 9") || text.contains("Killed")), "no message names the killed rank");

    // The checkpoint is whole, and trained epochs are kept.
    let rt = Runtime::new(engine::RuntimeOptions::from_env().expect("the environment's settings"))
        .expect("a Vulkan device (lavapipe is enough)");
    let (model, sgd) = new_model(&rt);
    let state = load_training(&rt, &model, &sgd, &last).expect("the last checkpoint loads");
    assert!(state.epoch >= 1);
    drop((model, sgd, rt));

    // Another number of ranks is refused; the same number finishes the run.
    let resume = train_args(&data, &out, &["--epochs", &(state.epoch + 1).to_string(), "--adv", "none", "--eval-every", "30", "--resume"]);
    let single = Command::new(bin()).args(&resume).env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    let text = show("resume with one process", &single);
    assert!(!single.status.success());
    assert!(text.contains("trained with 2 rank(s) and this launch has 1"), "no clear refusal: {text}");
    let mut c = mpirun(&["-n", "2", bin()]);
    c.args(&resume);
    let res = wait_at_most(spawn(c), Duration::from_secs(300), "mpirun -n 2 --resume");
    show("mpirun -n 2 --resume", &res);
    assert!(res.status.success(), "resuming with two ranks failed");
    // Rank 0 wrote the resumed run's record: the ranks, and the accepted change in its history.
    let config: serde_json::Value = read_json(out.join("config.json"));
    assert_eq!(config["ranks"], 2);
    assert_eq!(config["epochs"], state.epoch + 1);
    let history = config["history"].as_array().expect("the resume's change is recorded");
    assert_eq!(history.len(), 1, "{config}");
    assert_eq!(history[0]["epoch"], state.epoch);
    assert_eq!(history[0]["changed"]["epochs"], serde_json::json!({"from": 30, "to": state.epoch + 1}));
}

#[test]
fn a_rank_that_fails_alone_stops_every_rank() {
    let root = tmpdir("fail");
    let (data, out) = (root.join("data"), root.join("run"));
    make_folder(&data);
    let args = train_args(&data, &out, &["--epochs", "1"]);
    // Rank 1 asks for an adapter that does not exist and fails before its first collective;
    // rank 0 waits in it.
    let mut c = mpirun(&["-n", "1", bin()]);
    c.args(&args).arg(":").args(["-n", "1", bin(), "--adapter", "no-such-gpu"]).args(&args);
    let res = wait_at_most(spawn(c), Duration::from_secs(120), "mpirun with a failing rank");
    let text = show("mpirun with a failing rank", &res);
    assert!(!res.status.success());
    assert!(text.contains("error (rank 1 of 2)") && text.contains("no-such-gpu"), "no message names the rank and its error: {text}");
}

#[test]
fn a_launch_whose_ranks_mpi_cannot_see_is_refused() {
    // The launcher's environment says two ranks, but this process was started alone (as when a
    // launcher's process manager does not match the binary's MPI): MPI's world is one.
    let out =
        Command::new(bin()).arg("info").env("MV2_COMM_WORLD_SIZE", "2").env("XDG_RUNTIME_DIR", std::env::temp_dir()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "ran as one of two ranks in a world of one: {err}");
    assert!(err.contains("the launcher started 2 ranks but MPI sees a world of 1"), "{err}");
}
