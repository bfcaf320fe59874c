//! `cifs-wgpu train`: a training run under the dataset's recipe and the settings given.

use std::path::PathBuf;

use clap::Args;

use cifs::distributed::{Collective, Parallel};
use cifs::training::recipe::{Choices, Recipe};
use cifs::training::run::{Adversary, Method, TrainConfig};
use cifs::ModelKind;
use datasets::DatasetKind;

use crate::args::{images, milestones, non_negative, unit_interval};
use crate::display;

#[derive(Args)]
pub struct TrainArgs {
    #[arg(value_enum)]
    pub dataset: DatasetKind,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// [default: resnet18-cifs; fashion-mnist: resnet10-cifs]
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// ResNets: channels of the first stage [default: 64]; WideResNet: the widen factor
    /// [default: 10] (alias --widen).
    #[arg(long, visible_alias = "widen")]
    pub width: Option<usize>,
    /// WideResNet depth, 6 n + 4 [default: 28].
    #[arg(long)]
    pub depth: Option<usize>,
    /// Epochs of the main (adversarial) phase [default: 120; fashion-mnist: 60].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Clean warm-up epochs before adversarial training (see the README for why 15)
    /// [default: 15; fashion-mnist: 0].
    #[arg(long)]
    pub clean_epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// [default: 0.1; svhn and fashion-mnist: 0.01]
    #[arg(long, value_parser = non_negative)]
    pub lr: Option<f32>,
    #[arg(long, default_value = "0.9", value_parser = unit_interval)]
    pub momentum: f32,
    #[arg(long, default_value = "2e-4", value_parser = non_negative)]
    pub weight_decay: f32,
    /// Main-phase epochs at which the lr drops 10x, comma-separated [default: 75,90;
    /// fashion-mnist: 37,45].
    #[arg(long)]
    pub milestones: Option<String>,
    /// How the main phase makes its training images.
    #[arg(long = "adv", value_enum, default_value_t = Adversary::Pgd)]
    pub adversary: Adversary,
    /// The adversarial objective: pgd-at (the reference's) or trades (its KL attack takes
    /// --eps, --step-size and --attack-steps; the natural part is the joint loss for CIFS models).
    #[arg(long, value_enum, default_value_t = Method::PgdAt)]
    pub method: Method,
    /// TRADES's KL weight.
    #[arg(long, default_value = "6", value_parser = non_negative)]
    pub trades_beta: f32,
    /// [default: 8/255; fashion-mnist: 0.1]
    #[arg(long, value_parser = non_negative)]
    pub eps: Option<f32>,
    /// [default: 2/255; fashion-mnist: 0.01]
    #[arg(long, value_parser = non_negative)]
    pub step_size: Option<f32>,
    /// [default: 10; fashion-mnist: 40]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub attack_steps: Option<u32>,
    /// Weight of the CIFS probe losses in the joint loss.
    #[arg(long, default_value = "2", value_parser = non_negative)]
    pub beta: f32,
    /// Evaluate (natural and PGD-20) every this many epochs, and after the last.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_every: u32,
    /// Test images used by those evaluations.
    #[arg(long, default_value_t = 1000, value_parser = images)]
    pub eval_limit: usize,
    /// Train on N training images only (smoke runs): a fixed, class-balanced subset (classes
    /// taken in turn, each class's images in file order).
    #[arg(long, value_parser = images)]
    pub limit_train: Option<usize>,
    /// Use N test images only: a fixed, class-balanced subset, chosen as for --limit-train.
    #[arg(long, value_parser = images)]
    pub limit_test: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory. Default: runs/<dataset>-<model>-w<width>-s<seed>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from OUT/last.safetensors, under the run's settings: only --epochs, --eval-every,
    /// --eval-limit and --limit-test may change (recorded in OUT/config.json's history).
    #[arg(long)]
    pub resume: bool,
    /// With --resume: continue even though other settings changed (each change is recorded in
    /// OUT/config.json's history).
    #[arg(long, requires = "resume")]
    pub allow_changes: bool,
    /// Start from these weights (ours or the reference's safetensors).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
    /// Never download missing dataset files.
    #[arg(long)]
    pub no_download: bool,
    /// On several ranks (`mpirun`/`srun`, built with `--features mpi`): batch-norm statistics
    /// over the global batch in the training forward and backward (one process's numbers);
    /// otherwise each rank's share has its own.
    #[arg(long)]
    pub sync_bn: bool,
}

/// One rank's part of a training run (the whole run on one process); rank 0 alone shows progress.
pub fn run(adapter: Option<&str>, tune: bool, a: TrainArgs, coll: &dyn Collective) -> Result<(), String> {
    let milestones = a.milestones.as_deref().map(milestones).transpose()?;
    let choices = Choices {
        model: a.model,
        epochs: a.epochs,
        clean_epochs: a.clean_epochs,
        lr: a.lr,
        milestones,
        eps: a.eps,
        step_size: a.step_size,
        attack_steps: a.attack_steps,
    };
    let recipe = Recipe::for_dataset(a.dataset).with(choices);
    let model = recipe.model;
    model.check_depth(a.depth).map_err(|e| e.to_string())?;
    let width = a.width.unwrap_or(model.default_width());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}-w{}-s{}", a.dataset, model, width, a.seed)));
    if !a.resume && out.join("last.safetensors").is_file() {
        return Err(format!("{} already holds a run; pass --resume to continue it or choose another --out", out.display()));
    }
    let rt = crate::distributed::open_runtime(adapter, tune, coll)?;
    let adapter = rt.adapter();
    eprintln!("adapter: {} ({}), precision {} on {}", adapter.name, adapter.backend, rt.precision(), rt.gemm_kernels());
    let (splits, dir) = crate::distributed::load_data(coll, a.dataset, a.data_dir.as_deref(), a.no_download)?;
    let cfg = TrainConfig {
        dataset: a.dataset.to_string(),
        data_dir: dir.display().to_string(),
        model,
        width,
        depth: a.depth,
        epochs: recipe.epochs,
        clean_epochs: recipe.clean_epochs,
        batch_size: a.batch_size,
        lr: recipe.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        milestones: recipe.milestones,
        adversary: a.adversary,
        method: a.method,
        trades_beta: a.trades_beta,
        eps: recipe.eps,
        step_size: recipe.step_size,
        attack_steps: recipe.attack_steps as usize,
        beta: a.beta,
        eval_every: a.eval_every as usize,
        eval_limit: a.eval_limit,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        seed: a.seed,
        init_from: a.init_from.map(|p| p.display().to_string()),
        augment: recipe.augment,
        precision: rt.precision().to_string(),
        gemm_kernels: rt.gemm_kernels(),
    };
    eprintln!("writing to {}", out.display());
    let resume = match (a.resume, a.allow_changes) {
        (false, _) => cifs::training::resume::Resume::No,
        (true, false) => cifs::training::resume::Resume::Same,
        (true, true) => cifs::training::resume::Resume::AllowChanges,
    };
    let events: &mut dyn cifs::training::run::Events =
        if coll.rank() == 0 { &mut display::TrainDisplay::default() } else { &mut crate::distributed::Quiet };
    // With one rank, synchronised and per-rank statistics are the same thing: recorded as off.
    let par = Parallel { coll, sync_bn: a.sync_bn && coll.size() > 1 };
    let history = cifs::training::run::run_on(&rt, &cfg, splits, &out, resume, events, &par).map_err(|e| e.to_string())?;
    if let Some(m) = history.last().filter(|_| coll.rank() == 0) {
        println!("done: {} epochs; checkpoints in {}", m.epoch, out.display());
    }
    Ok(())
}
