//! The CLI on several ranks (the `mpi` build): the small training run the MPI and Slurm tests
//! launch, `mpirun`, waiting for a launch with a time limit, a checkpoint's training state and
//! the distance between two, and the process of one rank.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cifs::checkpoint::load_training;
use cifs::models::resnet::RESNET18_CIFS;
use cifs::training::optim::Sgd;
use cifs::{Model, ModelConfig};
use engine::{Runtime, Tensor};

pub const SEED: u64 = 3;
pub const WIDTH: usize = 4;
pub const BATCH: usize = 5;
/// 12 images in batches of 5: 5, 5, 2 (shares 3 + 2, 3 + 2, 1 + 1).
pub const TRAIN: usize = 12;
pub const ATTACK_STEPS: usize = 2;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cifs-wgpu")
}

/// `mpirun` with what running as root in a container needs; `ranks` is the MPMD command line
/// after it (e.g. `-n 2 cifs-wgpu train ...`).
pub fn mpirun(ranks: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--allow-run-as-root", "--oversubscribe", "--bind-to", "none"]).args(ranks).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    c
}

/// The small run's settings after `--out` (a width-4 ResNet18-CIFS, 12 images in batches of 5,
/// PGD with 2 steps): what the MPI and Slurm tests train.
pub fn settings() -> Vec<String> {
    let (w, b, t, s, a) = (WIDTH.to_string(), BATCH.to_string(), TRAIN.to_string(), SEED.to_string(), ATTACK_STEPS.to_string());
    let base = [
        "--width",
        &w,
        "--batch-size",
        &b,
        "--limit-train",
        &t,
        "--seed",
        &s,
        "--attack-steps",
        &a,
        "--clean-epochs",
        "0",
        "--eval-limit",
        "6",
        "--milestones",
        "9",
    ];
    base.iter().map(|s| s.to_string()).collect()
}

/// `train` of the small run on the folder dataset at `data` into `out`, then `extra`.
pub fn train_args(data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--no-tune", "train", "folder", "--data-dir"].iter().map(|s| s.to_string()).collect();
    v.extend([data.display().to_string(), "--out".into(), out.display().to_string()]);
    v.extend(settings());
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn show(what: &str, out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("$ {what}\n{text}");
    text
}

/// Waits for `child` at most `limit`; kills it and fails the test if it is still running.
pub fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            // The launcher and its ranks: the whole process group `spawn` made.
            let _ = Command::new("kill").args(["-9", "--", &format!("-{}", child.id())]).status();
            let out = child.wait_with_output().unwrap();
            show(what, &out);
            panic!("{what} still ran after {limit:?}: a rank hangs");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Starts `c` in a process group of its own (so that a hung run can be ended whole).
pub fn spawn(mut c: Command) -> Child {
    use std::os::unix::process::CommandExt;
    let program = c.get_program().to_string_lossy().into_owned();
    c.process_group(0).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Every f32 value of a training state: weights, momentum, running statistics, in a fixed order.
pub fn state(rt: &Runtime, model: &Model, sgd: &Sgd) -> Vec<(String, Vec<f32>)> {
    let mut named: Vec<(String, &Tensor)> = model.params().into_iter().map(|p| (p.name.clone(), p.leaf())).collect();
    named.extend(model.params().into_iter().zip(&sgd.velocity).map(|(p, v)| (format!("{} momentum", p.name), v)));
    for bn in model.batchnorms() {
        named.extend([(format!("{}.running_mean", bn.name), &bn.running_mean), (format!("{}.running_var", bn.name), &bn.running_var)]);
    }
    let values = Tensor::read_all(rt, &named.iter().map(|(_, t)| *t).collect::<Vec<_>>()).unwrap();
    named.into_iter().map(|(n, _)| n).zip(values).collect()
}

/// The largest relative norm error over the tensors of two states, and the tensor it is in.
pub fn worst(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> (f64, String) {
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let mut w = (0.0, String::new());
    for ((name, x), (_, y)) in a.iter().zip(b) {
        let d = norm(&mut x.iter().zip(y).map(|(p, q)| (p - q) as f64));
        let scale = norm(&mut x.iter().map(|&p| p as f64)).max(norm(&mut y.iter().map(|&q| q as f64))).max(1e-12);
        if d / scale > w.0 {
            w = (d / scale, name.clone());
        }
    }
    w
}

/// The small run's model (initialised from its seed) and optimizer.
pub fn new_model(rt: &Runtime) -> (Model, Sgd) {
    let model = Model::new(rt, ModelConfig::new(RESNET18_CIFS, WIDTH, 3), &mut engine::Rng::new(SEED)).unwrap();
    let sgd = Sgd::new(rt, &model, 0.1, 0.9, 2e-4).unwrap();
    (model, sgd)
}

pub fn checkpoint_state(rt: &Runtime, path: &Path) -> Vec<(String, Vec<f32>)> {
    let (model, sgd) = new_model(rt);
    load_training(rt, &model, &sgd, path).unwrap();
    state(rt, &model, &sgd)
}

/// The first running process for which `matches(pid, environment)` holds (the environment as
/// its `KEY=value` entries).
pub fn find_process(matches: impl Fn(u32, &[&[u8]]) -> bool) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if matches(pid, &environ.split(|&b| b == 0).collect::<Vec<_>>()) {
            return Some(pid);
        }
    }
    None
}

/// The pid of the process of `rank` among the descendants of `launcher` (`mpirun`).
pub fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
    };
    let descends = |pid: u32| {
        let mut p = pid;
        for _ in 0..8 {
            match parent(p) {
                Some(q) if q == launcher => return true,
                Some(q) if q > 1 => p = q,
                _ => return false,
            }
        }
        false
    };
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    find_process(|pid, environ| descends(pid) && environ.contains(&want.as_bytes()))
}
