//! `cifs-wgpu train`: a training run under the dataset's recipe and the settings given.

use std::path::PathBuf;

use clap::Args;

use cifs::distributed::{Collective, Parallel};
use cifs::training::config::{Adversary, Method, Settings, TrainConfig};
use cifs::training::events::{Events, Quiet};
use cifs::training::recipe::{Choices, Recipe};
use cifs::training::resume::Resume;
use cifs::training::trainer::train;
use datasets::DatasetKind;

use crate::args::{images, milestones, non_negative, unit_interval, ModelArgs};
use crate::display;

/// The library's defaults of the settings no recipe decides, shown by `--help`.
const DEFAULT: Settings = Settings::DEFAULT;

#[derive(Args)]
pub struct TrainArgs {
    #[arg(value_enum)]
    pub dataset: DatasetKind,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub m: ModelArgs,
    /// Epochs of the main (adversarial) phase [default: 120; fashion-mnist: 60].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Clean warm-up epochs before adversarial training (see the README for why 15)
    /// [default: 15; fashion-mnist: 0].
    #[arg(long)]
    pub clean_epochs: Option<usize>,
    /// [default: 0.1; svhn and fashion-mnist: 0.01]
    #[arg(long, value_parser = non_negative)]
    pub lr: Option<f32>,
    #[arg(long, default_value_t = DEFAULT.momentum, value_parser = unit_interval)]
    pub momentum: f32,
    #[arg(long, default_value_t = DEFAULT.weight_decay, value_parser = non_negative)]
    pub weight_decay: f32,
    /// Main-phase epochs at which the lr drops 10x, comma-separated [default: 75,90;
    /// fashion-mnist: 37,45].
    #[arg(long)]
    pub milestones: Option<String>,
    /// How the main phase makes its training images.
    #[arg(long = "adv", value_enum, default_value_t = DEFAULT.adversary)]
    pub adversary: Adversary,
    /// The adversarial objective: pgd-at (the reference's) or trades (its KL attack takes
    /// --eps, --step-size and --attack-steps; the natural part is the joint loss for CIFS models);
    /// fgsm-rs or n-fgsm: one step from a random start (--eps only; step 1.25 eps, and eps).
    #[arg(long, value_enum, default_value_t = DEFAULT.method)]
    pub method: Method,
    /// TRADES's KL weight.
    #[arg(long, default_value_t = DEFAULT.trades_beta, value_parser = non_negative)]
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
    #[arg(long, default_value_t = DEFAULT.beta, value_parser = non_negative)]
    pub beta: f32,
    /// Evaluate (natural and PGD-20) every this many epochs, and after the last.
    #[arg(long, default_value_t = DEFAULT.eval_every as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub eval_every: u32,
    /// Test images used by those evaluations.
    #[arg(long, default_value_t = DEFAULT.eval_limit, value_parser = images)]
    pub eval_limit: usize,
    /// Train on N training images only (smoke runs): a fixed, class-balanced subset (classes
    /// taken in turn, each class's images in file order).
    #[arg(long, value_parser = images)]
    pub limit_train: Option<usize>,
    /// Use N test images only: a fixed, class-balanced subset, chosen as for --limit-train.
    #[arg(long, value_parser = images)]
    pub limit_test: Option<usize>,
    #[arg(long, default_value_t = DEFAULT.seed)]
    pub seed: u64,
    /// Hold out N training images (class-balanced, chosen by --seed), never trained on, evaluated
    /// each epoch (natural and PGD-20); best.safetensors is chosen on them. Without it the test
    /// images choose it, as in the reference.
    #[arg(long, value_parser = images)]
    pub val_split: Option<usize>,
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
    /// Keep an exponential moving average of the weights with this decay, in (0, 1) (e.g.
    /// 0.999): updated after every step, evaluated each epoch beside the weights, saved as
    /// OUT/ema.safetensors (batch-norm statistics averaged as the weights are).
    #[arg(long, value_name = "DECAY")]
    pub ema: Option<f32>,
}

impl TrainArgs {
    /// The dataset's recipe with the choices given over it.
    fn recipe(&self) -> Result<Recipe, String> {
        let choices = Choices {
            model: self.m.model,
            epochs: self.epochs,
            clean_epochs: self.clean_epochs,
            lr: self.lr,
            milestones: self.milestones.as_deref().map(milestones).transpose()?,
            eps: self.eps,
            step_size: self.step_size,
            attack_steps: self.attack_steps,
        };
        let recipe = Recipe::for_dataset(self.dataset).with(choices);
        recipe.model.check_depth(self.m.depth).map_err(|e| e.to_string())?;
        Ok(recipe)
    }

    /// The settings given that no recipe decides.
    fn settings(&self) -> Settings {
        Settings {
            width: self.m.width,
            depth: self.m.depth,
            batch_size: self.m.batch_size,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            adversary: self.adversary,
            method: self.method,
            trades_beta: self.trades_beta,
            beta: self.beta,
            eval_every: self.eval_every as usize,
            eval_limit: self.eval_limit,
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            seed: self.seed,
            init_from: self.init_from.as_ref().map(|p| p.display().to_string()),
            val_split: self.val_split,
            ema: self.ema,
        }
    }

    fn resume(&self) -> Resume {
        match (self.resume, self.allow_changes) {
            (false, _) => Resume::No,
            (true, false) => Resume::Same,
            (true, true) => Resume::AllowChanges,
        }
    }
}

/// One rank's part of a training run (the whole run on one process); rank 0 alone shows progress.
pub fn run(options: &engine::RuntimeOptions, a: TrainArgs, coll: &dyn Collective) -> Result<(), String> {
    let recipe = a.recipe()?;
    let width = a.m.width.unwrap_or(recipe.model.default_width());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}-w{}-s{}", a.dataset, recipe.model, width, a.seed)));
    if !a.resume && out.join("last.safetensors").is_file() {
        return Err(format!("{} already holds a run; pass --resume to continue it or choose another --out", out.display()));
    }
    let rt = crate::open::runtime(options, coll)?;
    let adapter = rt.adapter();
    cifs::say!("adapter: {} ({}), precision {} on {}", adapter.name, adapter.backend, rt.precision(), rt.gemm_kernels());
    let (splits, dir) = crate::open::dataset(coll, a.dataset, a.data_dir.as_deref(), a.no_download)?;
    let cfg = TrainConfig::new(&a.dataset.to_string(), &dir.display().to_string(), recipe, a.settings(), rt.precision(), rt.gemm_kernels());
    cifs::say!("writing to {}", out.display());
    let events: &mut dyn Events = if coll.rank() == 0 { &mut display::TrainDisplay::default() } else { &mut Quiet };
    // With one rank, synchronised and per-rank statistics are the same thing: recorded as off.
    let par = Parallel { coll, sync_bn: a.sync_bn && coll.size() > 1 };
    let history = train(&rt, &cfg, splits, &out, a.resume(), events, par).map_err(|e| e.to_string())?;
    if let Some(m) = history.last().filter(|_| coll.rank() == 0) {
        println!("done: {} epochs; checkpoints in {}", m.epoch, out.display());
    }
    Ok(())
}
