//! The `cifs-wgpu` command line. Only argument parsing and printing live here (with the terminal
//! display and the HTTP downloader beside it); the work is in the `engine`, `cifs` and `datasets`
//! crates.

mod display;
mod http;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use cifs::attacks::pgd::AttackLoss;
use cifs::attacks::evaluate::{evaluate, Attack, AttackResult, EvalSettings};
use cifs::training::run::{Adversary, Method, TrainConfig};
use cifs::{ModelConfig, ModelKind};
use datasets::DatasetKind;
use engine::Runtime;

#[derive(Parser)]
#[command(name = "cifs-wgpu", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CIFS_WGPU_COMMIT"), ")"), args_override_self = true)]
#[command(about = "Adversarial training of CNNs with CIFS on any GPU wgpu reaches")]
struct Cli {
    /// GPU adapter: an index from `info`, a type (discrete, integrated, cpu) or part of its name.
    /// Overrides the CIFS_WGPU_ADAPTER environment variable.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Use the built-in tile rule for the convolution kernels instead of timing the candidates
    /// at each new shape (and remembering the fastest in the tuning cache; see `tune`).
    #[arg(long, global = true)]
    no_tune: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter, the one that would be used, and its key limits.
    Info,
    /// Train a model (default: the reference recipe, ResNet18-CIFS with PGD-10 AT after a clean warm-up).
    Train(TrainArgs),
    /// Evaluate a checkpoint under attacks.
    Eval(EvalArgs),
    /// The paper's channel analysis of a checkpoint: per class, layer4's channel activations
    /// (and, for CIFS models, each mask) on natural and adversarial images, sorted by relevance;
    /// negatively-relevant activation shares; accuracy per class. SVG, PNG and CSV.
    Analyze(AnalyzeArgs),
    /// Per-step wall-clock and GPU time, dispatches and submits of the PGD-10 AT step, the clean
    /// training step and the eval forward.
    Bench(BenchArgs),
    /// Time every tile configuration of the convolution kernels at each shape of a model's
    /// training and evaluation steps on this GPU, keep the fastest in the tuning cache
    /// ($XDG_CACHE_HOME/cifs-wgpu/tune-<adapter>.json, or $CIFS_WGPU_TUNE_CACHE), and print the
    /// choices. `train`, `eval` and `bench` otherwise tune each shape at its first use.
    Tune(TuneArgs),
}

/// The model and batch a benchmark or a tuning run builds.
#[derive(Args)]
struct ModelArgs {
    #[arg(long, value_enum, default_value_t = ModelKind::ResNet18Cifs)]
    model: ModelKind,
    /// ResNets: channels of the first stage [default: 64]; WideResNet: the widen factor
    /// [default: 10] (alias --widen).
    #[arg(long, visible_alias = "widen")]
    width: Option<usize>,
    /// WideResNet depth, 6 n + 4 [default: 28].
    #[arg(long)]
    depth: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
}

impl ModelArgs {
    fn config(&self) -> Result<ModelConfig, String> {
        model_config(self.model, self.width, self.depth, 10)
    }
}

#[derive(Args)]
struct TuneArgs {
    #[command(flatten)]
    m: ModelArgs,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Timed steps of each kind (after the warm-up ones).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A float, or a fraction like `8/255`.
fn fraction(s: &str) -> Result<f32, String> {
    let parse = |t: &str| t.trim().parse::<f32>().map_err(|_| format!("`{s}` is not a number or a fraction like 8/255"));
    let v = match s.split_once('/') {
        Some((a, b)) => {
            let d = parse(b)?;
            if d == 0.0 {
                return Err(format!("`{s}` divides by zero"));
            }
            parse(a)? / d
        }
        None => parse(s)?,
    };
    if v.is_finite() { Ok(v) } else { Err(format!("`{s}` is not finite")) }
}

/// A fraction that is at least 0 (radii, steps, rates, weights).
fn non_negative(s: &str) -> Result<f32, String> {
    let v = fraction(s)?;
    if v >= 0.0 { Ok(v) } else { Err(format!("`{s}` is negative; this setting must be at least 0")) }
}

/// A fraction in [0, 1) (momentum).
fn unit_interval(s: &str) -> Result<f32, String> {
    let v = fraction(s)?;
    if (0.0..1.0).contains(&v) { Ok(v) } else { Err(format!("`{s}` is outside [0, 1)")) }
}

/// A count of images to select: 0 would select none (and evaluate or train on nothing).
fn images(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 selects no images; give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of images")),
    }
}

fn milestones(s: &str) -> Result<Vec<usize>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|t| t.trim().parse::<usize>().map_err(|_| format!("`{t}` in `{s}` is not an epoch number"))).collect()
}

#[derive(Args)]
struct TrainArgs {
    #[arg(value_enum)]
    dataset: DatasetKind,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// [default: resnet18-cifs; fashion-mnist: resnet10-cifs]
    #[arg(long, value_enum)]
    model: Option<ModelKind>,
    /// ResNets: channels of the first stage [default: 64]; WideResNet: the widen factor
    /// [default: 10] (alias --widen).
    #[arg(long, visible_alias = "widen")]
    width: Option<usize>,
    /// WideResNet depth, 6 n + 4 [default: 28].
    #[arg(long)]
    depth: Option<usize>,
    /// Epochs of the main (adversarial) phase [default: 120; fashion-mnist: 60].
    #[arg(long)]
    epochs: Option<usize>,
    /// Clean warm-up epochs before adversarial training (see the README for why 15)
    /// [default: 15; fashion-mnist: 0].
    #[arg(long)]
    clean_epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// [default: 0.1; svhn and fashion-mnist: 0.01]
    #[arg(long, value_parser = non_negative)]
    lr: Option<f32>,
    #[arg(long, default_value = "0.9", value_parser = unit_interval)]
    momentum: f32,
    #[arg(long, default_value = "2e-4", value_parser = non_negative)]
    weight_decay: f32,
    /// Main-phase epochs at which the lr drops 10x, comma-separated [default: 75,90;
    /// fashion-mnist: 37,45].
    #[arg(long)]
    milestones: Option<String>,
    /// How the main phase makes its training images.
    #[arg(long = "adv", value_enum, default_value_t = Adversary::Pgd)]
    adversary: Adversary,
    /// The adversarial objective: pgd-at (the reference's) or trades (its KL attack takes
    /// --eps, --step-size and --attack-steps; the natural part is the joint loss for CIFS models).
    #[arg(long, value_enum, default_value_t = Method::PgdAt)]
    method: Method,
    /// TRADES's KL weight.
    #[arg(long, default_value = "6", value_parser = non_negative)]
    trades_beta: f32,
    /// [default: 8/255; fashion-mnist: 0.1]
    #[arg(long, value_parser = non_negative)]
    eps: Option<f32>,
    /// [default: 2/255; fashion-mnist: 0.01]
    #[arg(long, value_parser = non_negative)]
    step_size: Option<f32>,
    /// [default: 10; fashion-mnist: 40]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    attack_steps: Option<u32>,
    /// Weight of the CIFS probe losses in the joint loss.
    #[arg(long, default_value = "2", value_parser = non_negative)]
    beta: f32,
    /// Evaluate (natural and PGD-20) every this many epochs, and after the last.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    eval_every: u32,
    /// Test images used by those evaluations.
    #[arg(long, default_value_t = 1000, value_parser = images)]
    eval_limit: usize,
    /// Train on N training images only (smoke runs): a fixed, class-balanced subset (classes
    /// taken in turn, each class's images in file order).
    #[arg(long, value_parser = images)]
    limit_train: Option<usize>,
    /// Use N test images only: a fixed, class-balanced subset, chosen as for --limit-train.
    #[arg(long, value_parser = images)]
    limit_test: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory. Default: runs/<dataset>-<model>-w<width>-s<seed>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from OUT/last.safetensors, under the run's settings: only --epochs, --eval-every,
    /// --eval-limit and --limit-test may change (recorded in OUT/config.json's history).
    #[arg(long)]
    resume: bool,
    /// With --resume: continue even though other settings changed (each change is recorded in
    /// OUT/config.json's history).
    #[arg(long, requires = "resume")]
    allow_changes: bool,
    /// Start from these weights (ours or the reference's safetensors).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Never download missing dataset files.
    #[arg(long)]
    no_download: bool,
}

/// The loss FGSM, PGD and APGD-CE ascend.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LossChoice {
    /// Cross-entropy of the final logits (standard AutoAttack).
    Ce,
    /// The joint loss of the final logits and the CIFS probes, weighted by --attack-beta (the
    /// reference evaluation's; plain cross-entropy for a model without probes).
    Joint,
    /// The Carlini-Wagner margin of the final logits (confidence 50).
    Cw,
    /// The DLR margin ratio of the final logits.
    Dlr,
}

/// A checkpoint and the dataset whose test split it is run on (`eval`, `analyze`).
#[derive(Args)]
struct Trained {
    /// A model checkpoint: ours, or a safetensors state dict of the reference code.
    #[arg(long)]
    checkpoint: PathBuf,
    #[arg(value_enum)]
    dataset: DatasetKind,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Never download missing dataset files.
    #[arg(long)]
    no_download: bool,
}

impl Trained {
    /// The runtime, the checkpoint's model and the dataset, checked to have as many classes.
    fn open(&self, adapter: Option<&str>, tune: bool) -> Result<(Runtime, cifs::Model, datasets::Splits), String> {
        let rt = open_runtime(adapter, tune)?;
        let model = cifs::checkpoint::load_model(&rt, &self.checkpoint).map_err(|e| e.to_string())?;
        eprintln!("model: {} width {} from {}", model.config.kind, model.config.width, self.checkpoint.display());
        let (splits, _) = load_data(self.dataset, self.data_dir.as_deref(), self.no_download)?;
        if splits.test.classes.len() != model.config.classes {
            return Err(format!("the checkpoint has {} classes, the dataset {}", model.config.classes, splits.test.classes.len()));
        }
        Ok((rt, model, splits))
    }
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    trained: Trained,
    /// Comma-separated: natural, fgsm, pgd<steps>, cw<steps>, apgd-ce, apgd-dlr, apgd-t, square,
    /// autoattack (APGD-CE, then APGD-T, then Square, each on the images still robust).
    #[arg(long, value_delimiter = ',', default_value = "natural,fgsm,pgd20,pgd100,cw30")]
    attacks: Vec<Attack>,
    /// Evaluate N test images only: a fixed, class-balanced subset (classes taken in turn, each
    /// class's images in file order).
    #[arg(long, value_parser = images)]
    limit: Option<usize>,
    #[command(flatten)]
    settings: AttackArgs,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct AnalyzeArgs {
    #[command(flatten)]
    trained: Trained,
    /// The class to analyse (its folder or dataset name), or `all`.
    #[arg(long, default_value = "all")]
    class: String,
    /// The attack that makes the adversarial images (any of `eval --attacks` but natural).
    #[arg(long = "attack", default_value = "pgd20")]
    attack_kind: Attack,
    /// Use N test images only: a fixed, class-balanced subset, as `eval --limit`.
    #[arg(long, value_parser = images)]
    limit: Option<usize>,
    /// Output directory. Default: runs/analyze-<checkpoint name>.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    settings: AttackArgs,
}

/// Attack settings shared by `eval` and `analyze`.
#[derive(Args)]
struct AttackArgs {
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    batch_size: u32,
    #[arg(long, default_value = "8/255", value_parser = non_negative)]
    eps: f32,
    /// The loss FGSM, PGD and APGD-CE ascend (the README says why joint is the default).
    #[arg(long, value_enum, default_value = "joint")]
    attack_loss: LossChoice,
    /// Weight of the probe losses in the joint attack loss (the reference used 2 and 1000).
    #[arg(long, alias = "beta", default_value = "2", value_parser = non_negative)]
    attack_beta: f32,
    /// APGD iterations per restart.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// APGD restarts (per target class for APGD-T).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    restarts: u32,
    /// Square's queries.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    queries: u32,
    /// Seeds every random start and Square's squares (runs with one seed are reproducible).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl AttackArgs {
    fn settings(&self) -> EvalSettings {
        let loss = match self.attack_loss {
            LossChoice::Ce => AttackLoss::Ce,
            LossChoice::Joint => AttackLoss::Joint { beta: self.attack_beta },
            LossChoice::Cw => AttackLoss::CwMargin { confidence: 50.0 },
            LossChoice::Dlr => AttackLoss::Dlr,
        };
        EvalSettings {
            loss,
            iterations: self.iterations as usize,
            restarts: self.restarts as usize,
            queries: self.queries as usize,
            seed: self.seed,
            ..EvalSettings::reference(self.eps, self.batch_size as usize)
        }
    }
}

/// The model the command line describes: width and depth default by kind.
fn model_config(kind: ModelKind, width: Option<usize>, depth: Option<usize>, classes: usize) -> Result<ModelConfig, String> {
    check_depth(kind, depth)?;
    Ok(ModelConfig { kind, width: width.unwrap_or(kind.default_width()), classes, depth: depth.unwrap_or(kind.default_depth()) })
}

/// `--depth` only means something for the WideResNet; a ResNet's depth is its kind.
fn check_depth(kind: ModelKind, depth: Option<usize>) -> Result<(), String> {
    match depth {
        Some(d) if !kind.is_wrn() => Err(format!("--depth {d}: only the WideResNet (wrn, wrn-cifs) takes a depth; {kind} has a fixed one")),
        _ => Ok(()),
    }
}

/// The runtime on the chosen adapter; with tuning on, its tile choices are timed at first use
/// and remembered in the adapter's tuning cache.
fn open_runtime(adapter: Option<&str>, tune: bool) -> Result<Runtime, String> {
    let pref = adapter.map(str::to_string).or_else(|| std::env::var(engine::gpu::ADAPTER_ENV).ok());
    let rt = Runtime::with_preference(pref.as_deref()).map_err(|e| e.to_string())?;
    if tune {
        for w in rt.enable_tuning(engine::tune::default_cache_path(&rt.adapter().name)) {
            eprintln!("warning: {w}");
        }
    }
    Ok(rt)
}

fn tune(adapter: Option<&str>, a: TuneArgs) -> Result<(), String> {
    let rt = open_runtime(adapter, true)?;
    let (before, _, path) = rt.tuning();
    let config = a.m.config()?;
    println!("tuning {} width {}, batch {} on {}", a.m.model, config.width, a.m.batch_size, rt.adapter().name);
    let spinner = display::bar(0, "{spinner} {pos} shapes timed  {msg}");
    let shown = spinner.clone();
    rt.observe_tuning(move |key, choice| {
        shown.inc(1);
        shown.set_message(format!("{key}: {}", choice.tile.name()));
    });
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    cifs::training::bench::bench_steps(&rt, config, a.m.batch_size, 1, 0, |kind, _| spinner.set_message(kind.to_string())).map_err(|e| e.to_string())?;
    spinner.finish_and_clear();
    let (after, warnings, _) = rt.tuning();
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let names: Vec<String> = engine::tune::Tile::ALL.iter().map(|t| t.name()).collect();
    println!("{:<18} {:<52} {:>8}  {}", "kernel", "shape", "tile", names.iter().map(|n| format!("{n:>9}")).collect::<String>());
    for (key, c) in &after {
        let (kernel, shape) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        let ms: String = names.iter().map(|n| c.ms.get(n).map(|v| format!("{v:>9.3}")).unwrap_or_else(|| format!("{:>9}", "-"))).collect();
        let new = if before.contains_key(key) { "" } else { "  (new)" };
        println!("{kernel:<18} {shape:<52} {:>8}  {ms}{new}", c.tile.name());
    }
    println!("times in ms per run; {} shapes, {} newly timed; cache: {}", after.len(), after.len() - before.len(), path.map(|p| p.display().to_string()).unwrap_or_else(|| "none (no cache directory)".into()));
    Ok(())
}

fn info(adapter: Option<&str>) -> Result<(), String> {
    let all = engine::gpu::list_adapters();
    println!("adapters ({}):", all.len());
    for a in &all {
        println!("  [{}] {} ({}, {}) driver: {} {}", a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let rt = open_runtime(adapter, true)?;
    let s = rt.adapter();
    let l = rt.limits();
    println!("chosen: {} ({}, {})", s.name, s.backend, s.device_type);
    println!("  max storage buffer binding: {} MiB", l.max_binding_bytes >> 20);
    println!("  max buffer size: {} MiB", l.max_buffer_bytes >> 20);
    println!("  max storage buffers per stage: {}", l.max_storage_buffers_per_stage);
    println!("  max workgroup invocations: {}, workgroup storage: {} KiB", l.max_workgroup_invocations, l.max_workgroup_memory >> 10);
    println!("  max workgroups per dimension: {}", l.max_workgroups_per_dimension);
    println!("  immediate data: {} bytes; timestamp queries: {}", l.max_immediate_bytes, l.timestamps);
    let (choices, _, path) = rt.tuning();
    match path {
        Some(p) => println!("tuning cache: {} ({} shapes tuned)", p.display(), choices.len()),
        None => println!("tuning cache: none (neither XDG_CACHE_HOME nor HOME is set)"),
    }
    Ok(())
}

fn load_data(kind: DatasetKind, dir: Option<&Path>, no_download: bool) -> Result<(datasets::Splits, PathBuf), String> {
    let dir = match (dir, kind) {
        (Some(d), _) => d.to_path_buf(),
        (None, DatasetKind::Folder) => return Err("the folder dataset needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)".into()),
        (None, _) => PathBuf::from("data").join(kind.name()),
    };
    eprintln!("loading {kind} from {}", dir.display());
    let mut http = http::Http::default();
    let net: Option<&mut dyn datasets::Downloader> = if no_download { None } else { Some(&mut http) };
    let splits = datasets::load(kind, &dir, net).map_err(|e| e.to_string())?;
    eprintln!("{} training and {} test images, {} classes", splits.train.len(), splits.test.len(), splits.train.classes.len());
    Ok((splits, dir))
}

fn train(adapter: Option<&str>, tune: bool, a: TrainArgs) -> Result<(), String> {
    let model = a.model.unwrap_or(cifs::training::recipe::Recipe::for_dataset(a.dataset).model);
    check_depth(model, a.depth)?;
    let width = a.width.unwrap_or(model.default_width());
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}-w{}-s{}", a.dataset, model, width, a.seed)));
    if !a.resume && out.join("last.safetensors").is_file() {
        return Err(format!("{} already holds a run; pass --resume to continue it or choose another --out", out.display()));
    }
    let rt = open_runtime(adapter, tune)?;
    let adapter = rt.adapter();
    eprintln!("adapter: {} ({})", adapter.name, adapter.backend);
    let (splits, dir) = load_data(a.dataset, a.data_dir.as_deref(), a.no_download)?;
    let recipe = cifs::training::recipe::Recipe::for_dataset(a.dataset);
    let (channels, side) = model.input();
    if splits.train.shape != (datasets::ImageShape { channels, side }) {
        return Err(format!("{model} takes {channels}x{side}x{side} images and {} has {}; choose another --model", a.dataset, splits.train.shape));
    }
    let cfg = TrainConfig {
        dataset: a.dataset.to_string(),
        data_dir: dir.display().to_string(),
        model,
        width,
        depth: a.depth,
        epochs: a.epochs.unwrap_or(recipe.epochs),
        clean_epochs: a.clean_epochs.unwrap_or(recipe.clean_epochs),
        batch_size: a.batch_size,
        lr: a.lr.unwrap_or(recipe.lr),
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        milestones: match &a.milestones { Some(m) => milestones(m)?, None => recipe.milestones.clone() },
        adversary: a.adversary,
        method: a.method,
        trades_beta: a.trades_beta,
        eps: a.eps.unwrap_or(recipe.eps),
        step_size: a.step_size.unwrap_or(recipe.step_size),
        attack_steps: a.attack_steps.unwrap_or(recipe.attack_steps) as usize,
        beta: a.beta,
        eval_every: a.eval_every as usize,
        eval_limit: a.eval_limit,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        seed: a.seed,
        init_from: a.init_from.map(|p| p.display().to_string()),
        augment: recipe.augment,
    };
    eprintln!("writing to {}", out.display());
    let resume = match (a.resume, a.allow_changes) {
        (false, _) => cifs::training::resume::Resume::No,
        (true, false) => cifs::training::resume::Resume::Same,
        (true, true) => cifs::training::resume::Resume::AllowChanges,
    };
    let history = cifs::training::run::run(&rt, &cfg, splits, &out, resume, &mut display::TrainDisplay::default()).map_err(|e| e.to_string())?;
    if let Some(m) = history.last() {
        println!("done: {} epochs; checkpoints in {}", m.epoch, out.display());
    }
    Ok(())
}

fn eval(adapter: Option<&str>, tune: bool, a: EvalArgs) -> Result<(), String> {
    let (rt, model, splits) = a.trained.open(adapter, tune)?;
    let test = Arc::new(match a.limit { Some(n) => splits.test.balanced(n), None => splits.test });
    let bar = display::bar(test.len() as u64, "evaluating [{bar:25}] {pos}/{len} images ETA {eta}");
    let results = evaluate(&rt, &model, &test, &a.attacks, a.settings.settings(), |d, _| bar.set_position(d as u64)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    print_results(&results);
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialise");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn analyze(adapter: Option<&str>, tune: bool, a: AnalyzeArgs) -> Result<(), String> {
    if a.attack_kind == Attack::Natural {
        return Err("--attack natural makes no adversarial images; choose an attack (pgd20, apgd-ce, autoattack, ...)".into());
    }
    let (rt, model, splits) = a.trained.open(adapter, tune)?;
    let model_name = format!("{} width {}", model.config.kind, model.config.width);
    let classes: Vec<usize> = if a.class == "all" {
        (0..model.config.classes).collect()
    } else {
        match splits.test.classes.iter().position(|c| *c == a.class) {
            Some(i) => vec![i],
            None => return Err(format!("no class `{}` in this dataset; its classes are: {}", a.class, splits.test.classes.join(", "))),
        }
    };
    let features = model.classifier().weight.leaf().numel() / model.config.classes;
    let (_, shown) = cifs::analysis::analysed_blocks(&model, features);
    let probed = model.probed_blocks();
    let skipped: Vec<&str> = probed.iter().filter(|b| !shown.contains(&b.name)).map(|b| b.name.as_str()).collect();
    if !skipped.is_empty() {
        eprintln!("note: the figures order channels by the classifier's weights; the masks of {} (other channel counts) are not drawn", skipped.join(", "));
    }
    if probed.is_empty() {
        eprintln!("note: {model_name} has no CIFS block: the mask figures and the NR shares without the mask are skipped");
    }
    let test = Arc::new(match a.limit { Some(n) => splits.test.balanced(n), None => splits.test });
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("analyze-{}", a.trained.checkpoint.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default())));
    let bar = display::bar(0, "analysing [{bar:25}] {pos}/{len} images ETA {eta}");
    let analysis = cifs::analysis::analyze(&rt, &model, &test, &classes, a.attack_kind, a.settings.settings(), |d, t| {
        bar.set_length(t as u64);
        bar.set_position(d as u64);
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let files = cifs::analysis::write(&analysis, &out, &model_name).map_err(|e| e.to_string())?;
    println!("share of activation mass on negatively relevant channels (natural / {}):", a.attack_kind);
    println!("{:<14} {:>6} {:>8} {:>8} {:>18} {:>18}", "class", "images", "natural", "robust", "NR share, masked", "NR share, unmasked");
    for s in &analysis.classes {
        let ((n, v), without) = s.nr_shares();
        let unmasked = without.map(|(a, b)| format!("{:.3} / {:.3}", a, b)).unwrap_or_else(|| "n/a".into());
        let acc = |c: usize| 100.0 * c as f64 / s.images.max(1) as f64;
        println!("{:<14} {:>6} {:>7.2}% {:>7.2}% {:>18} {:>18}", s.class, s.images, acc(s.natural_correct), acc(s.robust_correct), format!("{n:.3} / {v:.3}"), unmasked);
    }
    println!("{} files in {}", files.len(), out.display());
    Ok(())
}

/// The table of an evaluation: each attack's accuracy and loss, then accuracy per class.
fn print_results(results: &[AttackResult]) {
    let width = results.iter().map(|r| r.attack.len()).max().unwrap_or(6).max(6);
    println!("{:<width$} {:>9} {:>8}  loss", "attack", "accuracy", "images");
    for r in results {
        println!("{:<width$} {:>8.2}% {:>8}  {}", r.attack, 100.0 * r.accuracy, r.images, r.loss);
    }
    let Some(first) = results.first() else { return };
    println!("\naccuracy per class (%):");
    let cw = first.per_class.iter().map(|c| c.class.len()).max().unwrap_or(5).max(5);
    print!("{:<cw$} {:>6}", "class", "images");
    for r in results {
        print!(" {:>w$}", r.attack, w = r.attack.len().max(7));
    }
    println!();
    for (k, c) in first.per_class.iter().enumerate() {
        print!("{:<cw$} {:>6}", c.class, c.images);
        for r in results {
            print!(" {:>w$.2}", 100.0 * r.per_class[k].accuracy, w = r.attack.len().max(7));
        }
        println!();
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (civil-from-days, Howard Hinnant).
fn utc_date() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!("{y:04}-{m:02}-{d:02}")
}

fn bench(adapter: Option<&str>, tune: bool, a: BenchArgs) -> Result<(), String> {
    let rt = open_runtime(adapter, tune)?;
    let config = a.m.config()?;
    let info = rt.adapter();
    println!("adapter: {} ({}, {}), driver {} {}", info.name, info.backend, info.device_type, info.driver, info.driver_info);
    println!("{} width {}, batch {}, {} warm-up + {} timed steps each", a.m.model, config.width, a.m.batch_size, a.warmup, a.steps);
    let bar = display::bar(((a.warmup + a.steps.max(1)) * cifs::training::bench::STEPS.len()) as u64, "[{bar:25}] {pos}/{len} {msg}");
    let mut done = 0;
    let results = cifs::training::bench::bench_steps(&rt, config, a.m.batch_size, a.steps, a.warmup, |kind, _| {
        done += 1;
        bar.set_position(done);
        bar.set_message(kind.to_string());
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!("{:<18} {:>12} {:>11} {:>9} {:>11} {:>8}", "step", "wall ms", "GPU ms", "img/s", "dispatches", "submits");
    for r in &results {
        let gpu = r.gpu_median_ms.map(|g| format!("{g:.2}")).unwrap_or_else(|| "n/a".into());
        println!("{:<18} {:>12.2} {:>11} {:>9.0} {:>11} {:>8}", r.step, r.wall_median_ms, gpu, r.images_per_s, r.dispatches_per_step, r.submits_per_step);
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({
            "tool": "cifs-wgpu bench",
            "adapter": info.name, "backend": info.backend, "device_type": info.device_type,
            "driver": info.driver, "driver_info": info.driver_info,
            "date": utc_date(), "commit": env!("CIFS_WGPU_COMMIT"),
            "model": a.m.model, "width": config.width, "depth": config.depth, "batch_size": a.m.batch_size, "warmup": a.warmup,
            "results": results,
            "tuning": if tune { "on" } else { "off (--no-tune)" },
            "tiles": rt.tuning().0.into_iter().map(|(k, c)| (k, c.tile.name())).collect::<std::collections::BTreeMap<_, _>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("JSON serialises")).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let adapter = cli.adapter.as_deref();
    let result = match cli.command {
        Command::Info => info(adapter),
        Command::Train(a) => train(adapter, !cli.no_tune, a),
        Command::Eval(a) => eval(adapter, !cli.no_tune, a),
        Command::Analyze(a) => analyze(adapter, !cli.no_tune, a),
        Command::Bench(a) => bench(adapter, !cli.no_tune, a),
        Command::Tune(a) if cli.no_tune => Err(format!("`tune --no-tune` has nothing to do (model {})", a.m.model)),
        Command::Tune(a) => tune(adapter, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
