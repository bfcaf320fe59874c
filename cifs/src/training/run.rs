//! The training run (docs/DESIGN.md, section 5): an optional clean warm-up phase at constant lr,
//! then the main phase (PGD-10 adversarial training by default) with a fresh optimizer and the
//! lr milestones; evaluation every few epochs; `metrics.jsonl`, `config.json`, `curves.svg|png`,
//! `last.safetensors` (resumable) and `best.safetensors` (best PGD-20) in the output directory.
//!
//! Reproducibility: the model is initialised from the seed; each epoch's order, augmentation and
//! PGD random starts come from generators derived from (seed, epoch) alone, and every kernel is
//! deterministic, so a run killed at any point and resumed ends with the numbers of an
//! uninterrupted one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use datasets::augment::Crop;
use datasets::loader::{batches, Pass};
use datasets::Splits;
use engine::{Rng, Runtime, Tensor};
use serde::{Deserialize, Serialize};

use crate::analysis::plots;
use crate::attacks::evaluate::{Attack, EvalSettings};
use crate::attacks::hostloss::predictions;
use crate::attacks::pgd::{AttackLoss, Pgd};
use crate::checkpoint::{load_training, load_weights_into, save_model, save_training, RunState};
use crate::distributed::exchange::Exchange;
use crate::distributed::step::{share_of, train_step_share};
use crate::distributed::{self, Parallel};
use crate::error::{check_setting, io, CifsError, Result};
use crate::models::{Model, ModelConfig, ModelKind};
use crate::training::optim::Sgd;
use crate::training::resume::{resumed, Resume, RunRecord};
use crate::training::step::train_step;
use crate::training::trades::Trades;

/// How the training images of the main phase are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Adversary {
    /// PGD on the joint loss with a random start (the reference's adversarial training).
    Pgd,
    /// No attack: clean training.
    None,
}

/// The adversarial training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Method {
    /// Madry et al.'s PGD adversarial training on the joint loss (the reference's).
    #[serde(rename = "pgd-at")]
    #[cfg_attr(feature = "cli", value(name = "pgd-at"))]
    PgdAt,
    /// TRADES: natural loss + trades-beta x KL(f(x) || f(x')), x' from PGD on that KL.
    #[serde(rename = "trades")]
    Trades,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// The dataset's name, for the record (`config.json`, plot titles).
    pub dataset: String,
    pub data_dir: String,
    pub model: ModelKind,
    /// ResNets: channels of the first stage; WideResNet: the widen factor.
    pub width: usize,
    /// WideResNet depth (None: the model's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Epochs of the main phase (adversarial unless `adversary` is none).
    pub epochs: usize,
    /// Clean warm-up epochs before the main phase, at constant lr, with their own optimizer.
    pub clean_epochs: usize,
    pub batch_size: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Main-phase epochs (0-based) from which the lr is 10x smaller, each.
    pub milestones: Vec<usize>,
    pub adversary: Adversary,
    pub method: Method,
    /// TRADES's KL weight.
    pub trades_beta: f32,
    pub eps: f32,
    pub step_size: f32,
    pub attack_steps: usize,
    pub beta: f32,
    pub eval_every: usize,
    pub eval_limit: usize,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub seed: u64,
    pub init_from: Option<String>,
    /// Random crop (padding 4) and horizontal flip of the training images (off for
    /// Fashion-MNIST, as its reference setting has no augmentation).
    #[serde(default = "yes")]
    pub augment: bool,
    /// Precision the convolutions and dense layers ran in (`f32` or `f16`, `auto` resolved);
    /// runs recorded before there was a choice ran in f32.
    #[serde(default = "f32_name")]
    pub precision: String,
    /// What ran those GEMMs (`engine::Runtime::gemm_kernels`): `simt`, or on tensor cores
    /// `tensor cores 8x8x8 f16 x f16 -> f32`; runs recorded before there was a choice ran `simt`.
    #[serde(default = "simt_name")]
    pub gemm_kernels: String,
}

fn yes() -> bool {
    true
}

fn f32_name() -> String {
    "f32".into()
}

fn simt_name() -> String {
    "simt".into()
}

impl TrainConfig {
    /// The attack of the main phase (whether or not it is used), as configured.
    pub fn attack(&self) -> Pgd {
        Pgd { eps: self.eps, step: self.step_size, steps: self.attack_steps, loss: AttackLoss::Joint { beta: self.beta } }
    }

    /// TRADES with the configured attack settings.
    pub fn trades(&self) -> Trades {
        Trades { eps: self.eps, step: self.step_size, steps: self.attack_steps, beta: self.trades_beta }
    }

    /// Refuses settings that would run but mean nothing (negative or non-finite rates, weights
    /// or attack settings; empty batches), naming the setting.
    pub fn validate(&self) -> Result<()> {
        check_setting(self.width >= 1, "width", self.width, "must be at least 1")?;
        check_setting(self.batch_size >= 1, "batch size", self.batch_size, "must be at least 1")?;
        check_setting(self.eval_every >= 1, "eval every", self.eval_every, "must be at least 1")?;
        check_setting(self.eval_limit >= 1, "eval limit", self.eval_limit, "must be at least 1: 0 selects no test images")?;
        check_setting(self.limit_train != Some(0), "limit train", 0, "must be at least 1: 0 selects no training images")?;
        check_setting(self.limit_test != Some(0), "limit test", 0, "must be at least 1: 0 selects no test images")?;
        check_setting(self.lr.is_finite() && self.lr >= 0.0, "lr", self.lr, "the learning rate must be finite and at least 0")?;
        check_setting(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum), "momentum", self.momentum, "must be in [0, 1)")?;
        check_setting(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight decay",
            self.weight_decay,
            "must be finite and at least 0",
        )?;
        self.attack().validate()?;
        self.trades().validate()
    }

    pub fn total_epochs(&self) -> usize {
        self.clean_epochs + self.epochs
    }

    /// Phase and learning rate of epoch `e` (0-based over both phases).
    pub fn schedule(&self, e: usize) -> (Phase, f32) {
        if e < self.clean_epochs {
            return (Phase::Warmup, self.lr);
        }
        let k = e - self.clean_epochs;
        let drops = self.milestones.iter().filter(|&&m| k >= m).count() as i32;
        let phase = match self.adversary {
            Adversary::Pgd => Phase::Adversarial,
            Adversary::None => Phase::Clean,
        };
        (phase, self.lr * 0.1f32.powi(drops))
    }

    /// Whether epoch `e` (0-based over both phases) starts with a fresh optimizer (zero momentum):
    /// the first epoch of the main phase after a warm-up, so that the warm-up's momentum does not
    /// carry into adversarial training. (Epoch 0 starts with a new one anyway.)
    pub fn fresh_optimizer_at(&self, e: usize) -> bool {
        self.clean_epochs > 0 && e == self.clean_epochs
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Clean warm-up before adversarial training.
    Warmup,
    Adversarial,
    /// Main phase without attack (`--adv none`).
    Clean,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based, over both phases.
    pub epoch: usize,
    pub phase: Phase,
    pub lr: f32,
    pub train_loss: f64,
    pub train_acc: f64,
    pub natural_acc: Option<f64>,
    pub pgd20_acc: Option<f64>,
    pub eval_images: usize,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// What the caller shows while a run goes on.
pub trait Events {
    fn epoch_start(&mut self, epoch: usize, total: usize, phase: Phase, lr: f32, batches: usize);
    fn batch(&mut self, done: usize, loss: f64, acc: f64, images_per_s: f64);
    fn evaluating(&mut self, done: usize, total: usize);
    fn epoch_end(&mut self, m: &EpochMetrics);
}

/// A training step whose loss and logits are still on their way back.
struct InFlight {
    reads: Vec<engine::PendingRead>,
    labels: Vec<u32>,
    step: usize,
}

/// Generator for one purpose of one epoch, from the seed alone (0: order and augmentation,
/// 1: attack starts).
pub fn epoch_rng(seed: u64, epoch: usize, purpose: u64) -> Rng {
    Rng::new(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Refuses a batch whose largest activation (layer1: N x width x 32 x 32 floats) exceeds what
/// the adapter can bind, before any work starts.
fn check_batch_fits(rt: &Runtime, batch: usize, config: &ModelConfig) -> Result<()> {
    let per_image = config.widest_map() as u64 * 4;
    let need = batch as u64 * per_image;
    let limit = rt.limits().max_binding_bytes;
    if need > limit {
        return Err(CifsError::BatchTooLarge {
            batch,
            max: (limit / per_image) as usize,
            need_mib: need >> 20,
            limit_mib: limit >> 20,
            adapter: rt.adapter().name,
        });
    }
    Ok(())
}

/// One training pass over `n` examples: a shuffled order and (with `augment`) a random crop and
/// flip for each, all drawn from `seed`, so an epoch replays exactly.
pub fn train_pass(n: usize, batch_size: usize, seed: u64, augment: bool) -> Pass {
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let span = 2 * datasets::augment::PAD as u64 + 1;
    let crops = order.iter().map(|_| Crop::from_draws(rng.below(span), rng.below(span), rng.below(2))).collect();
    Pass { batch_size, order, crops: augment.then_some(crops) }
}

pub struct RunPaths {
    pub out: PathBuf,
}

impl RunPaths {
    pub fn last(&self) -> PathBuf {
        self.out.join("last.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.out.join("best.safetensors")
    }
    pub fn metrics(&self) -> PathBuf {
        self.out.join("metrics.jsonl")
    }
    pub fn config(&self) -> PathBuf {
        self.out.join("config.json")
    }
    /// `curves.svg` and `curves.png`.
    pub fn curves(&self) -> PathBuf {
        self.out.join("curves")
    }
}

fn read_metrics(path: &Path, upto_epoch: usize) -> Result<Vec<EpochMetrics>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let mut v = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let m: EpochMetrics =
            serde_json::from_str(line).map_err(|e| CifsError::Invalid(format!("{}: not a metrics line ({e})", path.display())))?;
        if m.epoch <= upto_epoch {
            v.push(m);
        }
    }
    Ok(v)
}

fn write_metrics(path: &Path, all: &[EpochMetrics]) -> Result<()> {
    let text: String = all.iter().map(|m| serde_json::to_string(m).unwrap() + "\n").collect();
    crate::checkpoint::state::write_atomic(path, text.as_bytes()).map_err(io(path))
}

/// The settings record of a run that resumes after `epoch` epochs, from `old`, its `config.json`
/// as read (see [`crate::training::resume`]). With changes allowed, a missing or unreadable file is
/// no obstacle.
fn resumed_record(old: Result<RunRecord>, cfg: &TrainConfig, epoch: usize, resume: Resume) -> Result<RunRecord> {
    match old {
        Ok(old) => resumed(old, cfg, epoch, resume),
        Err(_) if resume == Resume::AllowChanges => Ok(RunRecord::new(cfg.clone())),
        Err(e) => Err(CifsError::Invalid(format!("cannot check the settings of the run to resume: {e}"))),
    }
}

/// Runs (or, with `resume`, continues) training. Returns the metrics of every epoch.
pub fn run(
    rt: &Runtime,
    cfg: &TrainConfig,
    splits: Splits,
    out: &Path,
    resume: Resume,
    events: &mut dyn Events,
) -> Result<Vec<EpochMetrics>> {
    run_on(rt, cfg, splits, out, resume, events, &Parallel::single())
}

/// [`run`] as one rank of a data-parallel run (`crate::distributed`): every rank returns the same
/// metrics; rank 0 alone writes the output directory.
#[allow(clippy::too_many_arguments)]
pub fn run_on(
    rt: &Runtime,
    cfg: &TrainConfig,
    splits: Splits,
    out: &Path,
    resume: Resume,
    events: &mut dyn Events,
    par: &Parallel,
) -> Result<Vec<EpochMetrics>> {
    let coll = par.coll;
    cfg.validate()?;
    let classes = splits.train.classes.len();
    let config = ModelConfig::resolve(cfg.model, Some(cfg.width), cfg.depth, classes)?;
    check_batch_fits(rt, cfg.batch_size, &config)?;
    super::check_images_fit(cfg.model, &cfg.dataset, splits.train.shape)?;
    let train = Arc::new(match cfg.limit_train {
        Some(n) => splits.train.balanced(n),
        None => splits.train,
    });
    let test_n = cfg.limit_test.unwrap_or(usize::MAX).min(cfg.eval_limit);
    let test = Arc::new(splits.test.balanced(test_n));
    if train.is_empty() {
        return Err(CifsError::EmptySplit { split: "training" });
    }
    if test.is_empty() {
        return Err(CifsError::EmptySplit { split: "test" });
    }
    distributed::run::check_settings(cfg, train.len(), coll)?;
    let writer = coll.rank() == 0;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let paths = RunPaths { out: out.to_path_buf() };

    let model = Model::new(rt, config, &mut Rng::new(cfg.seed))?;
    let new_sgd = || Sgd::new(rt, &model, cfg.lr, cfg.momentum, cfg.weight_decay);
    let mut sgd = new_sgd()?;
    let mut state = RunState { epoch: 0, best_pgd20: -1.0 };
    let mut record = RunRecord::new(cfg.clone());
    if resume != Resume::No && paths.last().is_file() {
        let old = RunRecord::read(&paths.config());
        if let Ok(old) = &old {
            distributed::run::check_resume(old, out, par)?;
        }
        state = load_training(rt, &model, &sgd, &paths.last())?;
        record = resumed_record(old, cfg, state.epoch, resume)?;
    } else if let Some(init) = &cfg.init_from {
        load_weights_into(rt, &model, Path::new(init))?;
    }
    (record.ranks, record.sync_bn) = (coll.size(), par.sync_bn);
    let json = record.to_json();
    distributed::run::agree_on_start(rt, coll, &json, state.epoch, &model, &sgd.velocity)?;
    let mut history = read_metrics(&paths.metrics(), state.epoch)?;
    if writer {
        crate::checkpoint::state::write_atomic(&paths.config(), json.as_bytes()).map_err(io(&paths.config()))?;
        write_metrics(&paths.metrics(), &history)?;
    }
    let mut exchange = Exchange::default();

    let settings = EvalSettings { loss: AttackLoss::Joint { beta: cfg.beta }, ..EvalSettings::reference(cfg.eps, cfg.batch_size) };
    for epoch in state.epoch..cfg.total_epochs() {
        let (phase, lr) = cfg.schedule(epoch);
        if cfg.fresh_optimizer_at(epoch) {
            sgd = new_sgd()?;
        }
        sgd.lr = lr;
        let attack = (phase == Phase::Adversarial).then(|| cfg.attack());
        let pass = batches(train.clone(), train_pass(train.len(), cfg.batch_size, epoch_rng(cfg.seed, epoch, 0).next_u64(), cfg.augment))?;
        events.epoch_start(epoch + 1, cfg.total_epochs(), phase, lr, pass.count);
        let mut attack_rng = epoch_rng(cfg.seed, epoch, 1);
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        // Step i's loss and logits are read while step i+1 runs: the host records the next step
        // instead of waiting for the GPU (one step of delay in the progress display).
        let mut in_flight: Option<InFlight> = None;
        let mut settle = |f: InFlight| -> Result<()> {
            let mut reads = f.reads.into_iter();
            let mut next = || -> Result<Vec<f32>> { Ok(rt.finish_read_f32(reads.next().expect("loss and logits"))?) };
            let loss = next()?[0];
            if !loss.is_finite() {
                let kept = if paths.last().is_file() {
                    format!("the last good checkpoint ({}) is kept", paths.last().display())
                } else {
                    "no checkpoint was written yet".into()
                };
                return Err(CifsError::Diverged { loss, epoch: epoch + 1, step: f.step + 1, kept });
            }
            correct += predictions(&next()?, classes).iter().zip(&f.labels).filter(|(p, l)| **p == **l as usize).count();
            loss_sum += loss as f64 * f.labels.len() as f64;
            seen += f.labels.len();
            events.batch(f.step + 1, loss_sum / seen as f64, correct as f64 / seen as f64, seen as f64 / started.elapsed().as_secs_f64());
            Ok(())
        };
        for (step, batch) in pass.enumerate() {
            let batch = batch?;
            let (batch, share) = share_of(batch, coll);
            let n = batch.len();
            let x = Tensor::from_f32(rt, &batch.dims(), &batch.images)?;
            let y = Tensor::from_u32(rt, &[n], &batch.labels)?;
            let r = match (&attack, cfg.method) {
                (Some(_), Method::Trades) => cfg.trades().train_step(rt, &model, &sgd, &x, &y, cfg.beta, &mut attack_rng)?,
                _ if coll.size() > 1 => {
                    train_step_share(rt, par, &model, &sgd, &x, &y, &share, attack.as_ref(), cfg.beta, &mut attack_rng, &mut exchange)?
                }
                _ => train_step(rt, &model, &sgd, &x, &y, attack.as_ref(), cfg.beta, &mut attack_rng)?,
            };
            let reads = rt.read_later(&[&r.loss, &r.output.logits])?;
            if let Some(previous) = in_flight.replace(InFlight { reads, labels: batch.labels, step }) {
                settle(previous)?;
            }
        }
        if let Some(last) = in_flight.take() {
            settle(last)?;
        }
        distributed::run::reduce_epoch(coll, &mut loss_sum, &mut correct, &mut seen);
        if writer && exchange.steps > 0 {
            eprintln!("{}", std::mem::take(&mut exchange).summary());
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let evaluate_now = (epoch + 1) % cfg.eval_every == 0 || epoch + 1 == cfg.total_epochs();
        let (natural, pgd20) = if evaluate_now && !test.is_empty() {
            let res = distributed::evaluate(rt, coll, &model, &test, &[Attack::Natural, Attack::Pgd(20)], settings, |d, t| {
                events.evaluating(d, t)
            })?;
            (Some(res[0].accuracy), Some(res[1].accuracy))
        } else {
            (None, None)
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            phase,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: correct as f64 / seen.max(1) as f64,
            natural_acc: natural,
            pgd20_acc: pgd20,
            eval_images: if natural.is_some() { test.len() } else { 0 },
            seconds: started.elapsed().as_secs_f64(),
            images_per_s: seen as f64 / train_seconds,
        };
        state.epoch = epoch + 1;
        if let Some(p) = pgd20.filter(|&p| p > state.best_pgd20) {
            state.best_pgd20 = p;
            if writer {
                save_model(rt, &model, &paths.best(), &[("epoch", state.epoch.to_string()), ("pgd20_acc", p.to_string())])?;
            }
        }
        history.push(m.clone());
        if !writer {
            events.epoch_end(&m);
            continue;
        }
        save_training(rt, &model, &sgd, &state, &paths.last())?;
        write_metrics(&paths.metrics(), &history)?;
        let points: Vec<plots::CurvePoint> = history
            .iter()
            .map(|h| plots::CurvePoint {
                epoch: h.epoch,
                loss: h.train_loss,
                natural: h.natural_acc,
                robust: h.pgd20_acc,
                adversarial: h.phase == Phase::Adversarial,
            })
            .collect();
        let title = format!("{} width {} on {}", cfg.model, cfg.width, cfg.dataset);
        plots::save(&plots::Curves { title, points: &points }, &paths.curves())?;
        events.epoch_end(&m);
    }
    let _ = std::io::stdout().flush();
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's CIFAR-10 schedule: 15 warm-up epochs, then 120 main-phase epochs with the lr
    /// 10x smaller from main-phase epoch 75 and again from 90.
    fn reference() -> TrainConfig {
        let r = crate::training::recipe::Recipe::cifar10();
        TrainConfig {
            dataset: "cifar10".into(),
            data_dir: "data".into(),
            model: r.model,
            width: 64,
            depth: None,
            epochs: r.epochs,
            clean_epochs: r.clean_epochs,
            batch_size: 128,
            lr: r.lr,
            momentum: 0.9,
            weight_decay: 2e-4,
            milestones: r.milestones,
            adversary: Adversary::Pgd,
            method: Method::PgdAt,
            trades_beta: 6.0,
            eps: r.eps,
            step_size: r.step_size,
            attack_steps: 10,
            beta: 2.0,
            eval_every: 1,
            eval_limit: 1000,
            limit_train: None,
            limit_test: None,
            seed: 0,
            init_from: None,
            augment: true,
            precision: "f32".into(),
            gemm_kernels: "simt".into(),
        }
    }

    #[test]
    fn the_lr_drops_tenfold_at_each_milestone_of_the_main_phase() {
        let cfg = reference();
        let lr = |e: usize| cfg.schedule(e).1;
        // Milestones count main-phase epochs: 15 + 75 = 90 and 15 + 90 = 105 overall.
        for (e, want) in [(0, 0.1), (14, 0.1), (15, 0.1), (89, 0.1), (90, 0.01), (104, 0.01), (105, 0.001), (134, 0.001)] {
            assert!((lr(e) - want).abs() <= 1e-6 * want, "epoch {e}: lr {} != {want}", lr(e));
        }
        // Without a warm-up the milestones count from the first epoch; unsorted ones still count.
        let cfg = TrainConfig { clean_epochs: 0, milestones: vec![3, 1], ..reference() };
        for (e, want) in [(0, 0.1), (1, 0.01), (2, 0.01), (3, 0.001), (4, 0.001)] {
            assert!((cfg.schedule(e).1 - want).abs() <= 1e-6 * want, "epoch {e}: lr {} != {want}", cfg.schedule(e).1);
        }
    }

    #[test]
    fn warm_up_epochs_are_clean_then_the_main_phase_attacks() {
        let cfg = reference();
        assert!((0..15).all(|e| cfg.schedule(e).0 == Phase::Warmup));
        assert!((15..cfg.total_epochs()).all(|e| cfg.schedule(e).0 == Phase::Adversarial));
        assert_eq!(cfg.total_epochs(), 135);
        let clean = TrainConfig { adversary: Adversary::None, ..reference() };
        assert_eq!((clean.schedule(14).0, clean.schedule(15).0), (Phase::Warmup, Phase::Clean));
        let none = TrainConfig { clean_epochs: 0, ..reference() };
        assert_eq!(none.schedule(0).0, Phase::Adversarial);
    }

    #[test]
    fn the_main_phase_starts_with_a_fresh_optimizer() {
        let cfg = reference();
        let fresh: Vec<usize> = (0..cfg.total_epochs()).filter(|&e| cfg.fresh_optimizer_at(e)).collect();
        assert_eq!(fresh, [15], "exactly the first adversarial epoch");
        let none = TrainConfig { clean_epochs: 0, ..reference() };
        assert!((0..none.total_epochs()).all(|e| !none.fresh_optimizer_at(e)), "no warm-up: the run's own optimizer is the fresh one");
    }

    #[test]
    fn empty_selections_are_refused() {
        for (cfg, name) in [
            (TrainConfig { eval_limit: 0, ..reference() }, "eval limit"),
            (TrainConfig { limit_train: Some(0), ..reference() }, "limit train"),
            (TrainConfig { limit_test: Some(0), ..reference() }, "limit test"),
        ] {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.starts_with(name) && e.contains("selects no"), "{e}");
        }
        reference().validate().unwrap();
    }
}
