//! The `cifs-wgpu` command line. Only argument parsing and printing live here; the work is in
//! the `engine`, `cifs` and `datasets` crates.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use cifs::evaluate::{evaluate, Attack, EvalSettings};
use cifs::run::{EpochMetrics, Events, Phase, TrainConfig};

#[derive(Parser)]
#[command(name = "cifs-wgpu", version, args_override_self = true, about = "Adversarial training of CNNs with CIFS on any GPU wgpu reaches")]
struct Cli {
    /// GPU adapter: an index from `info`, a type (discrete, integrated, cpu) or part of its name.
    /// Overrides the CIFS_WGPU_ADAPTER environment variable.
    #[arg(long, global = true)]
    adapter: Option<String>,
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
    /// Median ms/step and img/s of the PGD-10 AT step, the clean training step and the eval forward.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value = "resnet18-cifs", value_parser = ["resnet18-cifs", "resnet18"])]
    model: String,
    #[arg(long, default_value_t = 64)]
    width: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
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

fn milestones(s: &str) -> Result<Vec<usize>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|t| t.trim().parse::<usize>().map_err(|_| format!("`{t}` in `{s}` is not an epoch number"))).collect()
}

#[derive(Args)]
struct TrainArgs {
    /// cifar10, svhn, or folder (ROOT/train/<class>/*, ROOT/test/<class>/*).
    dataset: String,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long, default_value = "resnet18-cifs", value_parser = ["resnet18-cifs", "resnet18"])]
    model: String,
    /// Channels of the first stage (64 in the paper).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Epochs of the main (adversarial) phase.
    #[arg(long, default_value_t = 120)]
    epochs: usize,
    /// Clean warm-up epochs before adversarial training (see the README for why 15).
    #[arg(long, default_value_t = 15)]
    clean_epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value = "0.1", value_parser = fraction)]
    lr: f32,
    #[arg(long, default_value = "0.9", value_parser = fraction)]
    momentum: f32,
    #[arg(long, default_value = "2e-4", value_parser = fraction)]
    weight_decay: f32,
    /// Main-phase epochs at which the lr drops 10x, comma-separated.
    #[arg(long, default_value = "75,90")]
    milestones: String,
    /// Adversarial training attack: pgd, or none for clean training.
    #[arg(long, default_value = "pgd", value_parser = ["pgd", "none"])]
    adv: String,
    #[arg(long, default_value = "8/255", value_parser = fraction)]
    eps: f32,
    #[arg(long, default_value = "2/255", value_parser = fraction)]
    step_size: f32,
    #[arg(long, default_value_t = 10)]
    attack_steps: usize,
    /// Weight of the CIFS probe losses in the joint loss.
    #[arg(long, default_value = "2", value_parser = fraction)]
    beta: f32,
    /// Evaluate (natural and PGD-20) every this many epochs, and after the last.
    #[arg(long, default_value_t = 1)]
    eval_every: usize,
    /// Test images used by those evaluations.
    #[arg(long, default_value_t = 1000)]
    eval_limit: usize,
    /// Train on the first N training images only (smoke runs).
    #[arg(long)]
    limit_train: Option<usize>,
    /// Use the first N test images only.
    #[arg(long)]
    limit_test: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory. Default: runs/<dataset>-<model>-w<width>-s<seed>.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from OUT/last.safetensors.
    #[arg(long)]
    resume: bool,
    /// Start from these weights (ours or the reference's safetensors).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Never download missing dataset files.
    #[arg(long)]
    no_download: bool,
}

#[derive(Args)]
struct EvalArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    dataset: String,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Comma-separated: natural, fgsm, pgd<steps>, cw<steps>.
    #[arg(long, default_value = "natural,fgsm,pgd20,pgd100,cw30")]
    attacks: String,
    /// Evaluate the first N test images only.
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    #[arg(long, default_value = "8/255", value_parser = fraction)]
    eps: f32,
    #[arg(long, default_value = "2", value_parser = fraction)]
    beta: f32,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    no_download: bool,
}

fn open_gpu(adapter: Option<&str>) -> Result<engine::Gpu, String> {
    let pref = adapter.map(str::to_string).or_else(|| std::env::var(engine::gpu::ADAPTER_ENV).ok());
    engine::Gpu::with_preference(pref.as_deref()).map_err(|e| e.to_string())
}

fn info(adapter: Option<&str>) -> Result<(), String> {
    let all = engine::gpu::list_adapters();
    println!("adapters ({}):", all.len());
    for a in &all {
        println!("  [{}] {} ({}, {}) driver: {} {}", a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let gpu = open_gpu(adapter)?;
    let s = gpu.summary();
    let l = &gpu.limits;
    println!("chosen: {} ({}, {})", s.name, s.backend, s.device_type);
    println!("  max storage buffer binding: {} MiB", l.max_storage_buffer_binding_size >> 20);
    println!("  max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!("  max storage buffers per stage: {}", l.max_storage_buffers_per_shader_stage);
    println!("  max workgroup invocations: {}, workgroup storage: {} KiB", l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size >> 10);
    println!("  max workgroups per dimension: {}", l.max_compute_workgroups_per_dimension);
    println!("  immediate data: {} bytes; timestamp queries: {}", l.max_immediate_size, gpu.features.contains(engine::gpu::Features::TIMESTAMP_QUERY));
    Ok(())
}

fn load_data(dataset: &str, dir: Option<&Path>, no_download: bool) -> Result<(datasets::Splits, PathBuf), String> {
    let source = datasets::Source::parse(dataset).ok_or_else(|| format!("unknown dataset `{dataset}` (use cifar10, svhn or folder)"))?;
    let dir = match (dir, source) {
        (Some(d), _) => d.to_path_buf(),
        (None, datasets::Source::Folder) => return Err("the folder dataset needs --data-dir ROOT (with ROOT/train/<class>/ and ROOT/test/<class>/)".into()),
        (None, _) => PathBuf::from("data").join(dataset),
    };
    eprintln!("loading {dataset} from {}", dir.display());
    let splits = datasets::load(source, &dir, !no_download).map_err(|e| e.to_string())?;
    eprintln!("{} training and {} test images, {} classes", splits.train.len(), splits.test.len(), splits.train.classes.len());
    Ok((splits, dir))
}

/// Progress display: one bar per epoch, a summary line after it.
struct Display {
    bar: Option<ProgressBar>,
}

impl Events for Display {
    fn epoch_start(&mut self, epoch: usize, total: usize, phase: Phase, lr: f32, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(ProgressStyle::with_template("{prefix} [{bar:25}] {pos}/{len} {msg} ETA {eta}").unwrap().progress_chars("=> "));
        let phase = match phase {
            Phase::Warmup => "warm-up",
            Phase::Adversarial => "adversarial",
            Phase::Clean => "clean",
        };
        bar.set_prefix(format!("epoch {epoch}/{total} {phase} lr {lr:.4}"));
        self.bar = Some(bar);
    }

    fn batch(&mut self, done: usize, loss: f64, acc: f64, images_per_s: f64) {
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
            b.set_message(format!("loss {loss:.4} acc {:.1}% {images_per_s:.0} img/s", 100.0 * acc));
        }
    }

    fn evaluating(&mut self, done: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_message(format!("evaluating {done}/{total}"));
        }
    }

    fn epoch_end(&mut self, m: &EpochMetrics) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let eval = match (m.natural_acc, m.pgd20_acc) {
            (Some(n), Some(p)) => format!(" | test natural {:.2}% PGD-20 {:.2}% ({} images)", 100.0 * n, 100.0 * p, m.eval_images),
            _ => String::new(),
        };
        println!(
            "epoch {} {:?} lr {:.4}: loss {:.4} acc {:.2}%{eval} | {:.1} s, {:.0} img/s",
            m.epoch, m.phase, m.lr, m.train_loss, 100.0 * m.train_acc, m.seconds, m.images_per_s
        );
    }
}

fn train(adapter: Option<&str>, a: TrainArgs) -> Result<(), String> {
    let gpu = open_gpu(adapter)?;
    eprintln!("adapter: {} ({:?})", gpu.info.name, gpu.info.backend);
    let (splits, dir) = load_data(&a.dataset, a.data_dir.as_deref(), a.no_download)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-{}-w{}-s{}", a.dataset, a.model, a.width, a.seed)));
    if !a.resume && out.join("last.safetensors").is_file() {
        return Err(format!("{} already holds a run; pass --resume to continue it or choose another --out", out.display()));
    }
    let cfg = TrainConfig {
        dataset: a.dataset,
        data_dir: dir.display().to_string(),
        model: a.model,
        width: a.width,
        epochs: a.epochs,
        clean_epochs: a.clean_epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        milestones: milestones(&a.milestones)?,
        adv: a.adv == "pgd",
        eps: a.eps,
        step_size: a.step_size,
        attack_steps: a.attack_steps,
        beta: a.beta,
        eval_every: a.eval_every,
        eval_limit: a.eval_limit,
        limit_train: a.limit_train,
        limit_test: a.limit_test,
        seed: a.seed,
        init_from: a.init_from.map(|p| p.display().to_string()),
    };
    eprintln!("writing to {}", out.display());
    let history = cifs::run::run(&gpu, &cfg, splits, &out, a.resume, &mut Display { bar: None }).map_err(|e| e.to_string())?;
    if let Some(m) = history.last() {
        println!("done: {} epochs; checkpoints in {}", m.epoch, out.display());
    }
    Ok(())
}

fn eval(adapter: Option<&str>, a: EvalArgs) -> Result<(), String> {
    let attacks = a.attacks.split(',').map(|s| Attack::parse(s.trim())).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let gpu = open_gpu(adapter)?;
    let model = cifs::checkpoint::load_model(&gpu, &a.checkpoint).map_err(|e| e.to_string())?;
    eprintln!("model: {} width {} from {}", model.config.arch.name(), model.config.width, a.checkpoint.display());
    let (splits, _) = load_data(&a.dataset, a.data_dir.as_deref(), a.no_download)?;
    if splits.test.classes.len() != model.config.classes {
        return Err(format!("the checkpoint has {} classes, the dataset {}", model.config.classes, splits.test.classes.len()));
    }
    let test = Arc::new(match a.limit { Some(n) => splits.test.truncated(n), None => splits.test });
    let bar = ProgressBar::new(test.len() as u64);
    bar.set_style(ProgressStyle::with_template("evaluating [{bar:25}] {pos}/{len} images ETA {eta}").unwrap().progress_chars("=> "));
    let settings = EvalSettings { eps: a.eps, beta: a.beta, batch_size: a.batch_size.max(1), confidence: 50.0 };
    let results = evaluate(&gpu, &model, &test, &attacks, settings, |d, _| bar.set_position(d as u64)).map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!("{:<10} {:>9} {:>8}", "attack", "accuracy", "images");
    for r in &results {
        println!("{:<10} {:>8.2}% {:>8}", r.attack, 100.0 * r.accuracy, r.images);
    }
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn bench(adapter: Option<&str>, a: BenchArgs) -> Result<(), String> {
    let gpu = open_gpu(adapter)?;
    let arch = if a.model == "resnet18" { cifs::Arch::ResNet18 } else { cifs::Arch::ResNet18Cifs };
    let config = cifs::ModelConfig { arch, width: a.width, classes: 10 };
    println!("adapter: {} ({:?}, {:?}), driver {}", gpu.info.name, gpu.info.backend, gpu.info.device_type, gpu.info.driver_info);
    println!("{} width {}, batch {}, {} warm-up + {} timed steps each", a.model, a.width, a.batch_size, a.warmup, a.steps);
    let bar = ProgressBar::new(((a.warmup + a.steps) * 3) as u64);
    let mut done = 0;
    let results = cifs::bench::bench_steps(&gpu, config, a.batch_size, a.steps, a.warmup, |kind, _| {
        done += 1;
        bar.set_position(done);
        bar.set_message(kind.to_string());
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!("{:<18} {:>11} {:>9} {:>9}  clock", "step", "median ms", "min ms", "img/s");
    for r in &results {
        println!("{:<18} {:>11.2} {:>9.2} {:>9.0}  {}", r.step, r.median_ms, r.min_ms, r.images_per_s, r.clock);
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({ "adapter": gpu.info.name, "backend": format!("{:?}", gpu.info.backend), "driver": gpu.info.driver_info,
            "model": a.model, "width": a.width, "batch_size": a.batch_size, "results": results });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let adapter = cli.adapter.as_deref();
    let result = match cli.command {
        Command::Info => info(adapter),
        Command::Train(a) => train(adapter, a),
        Command::Eval(a) => eval(adapter, a),
        Command::Bench(a) => bench(adapter, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
