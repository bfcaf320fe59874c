//! The training run (docs/DESIGN.md, section 5): an optional clean warm-up phase at constant lr,
//! then the main phase (PGD-10 adversarial training by default) with a fresh optimizer and the
//! lr milestones; evaluation every few epochs; the run's files ([`crate::training::files`]).
//!
//! The [`Trainer`] is a few parts: starting (or resuming) a run, then per epoch the training pass
//! (`training::epoch`, one `training::step` per batch), the evaluation and the checkpoint. One
//! process and each rank of a data-parallel run go through the same code; the ranks differ only
//! in the share of each batch they take, the all-reduce inside the step, and rank 0 alone
//! writing the files (`crate::distributed`).
//!
//! Reproducibility: the model is initialised from the seed; each epoch's order, augmentation and
//! random starts come from generators derived from (seed, epoch) alone, and every kernel is
//! deterministic, so a run killed at any point and resumed ends with the numbers of an
//! uninterrupted one.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datasets::{Dataset, Splits};
use engine::{Rng, Runtime};

use crate::attacks::attack::{Attack, EvalSettings};
use crate::attacks::loss::AttackLoss;
use crate::attacks::natural::Natural;
use crate::attacks::pgd::PgdAttack;
use crate::checkpoint::{load_training, load_weights_into, save_model, save_training, RunState};
use crate::distributed::exchange::Exchange;
use crate::distributed::run::agree_on_start;
use crate::distributed::shard::check_batches;
use crate::distributed::{DistributedError, Parallel};
use crate::error::{CifsError, Result};
use crate::models::{Model, ModelConfig, ModelKind};
use crate::training::config::{Adversary, Method, TrainConfig};
use crate::training::ema::WeightAverage;
use crate::training::epoch::{train_epoch, EpochPlan};
use crate::training::events::{EpochMetrics, Events};
use crate::training::files::RunFiles;
use crate::training::methods::objective;
use crate::training::optim::Sgd;
use crate::training::overfitting::CollapseRule;
use crate::training::resume::{check_ranks, resumed, Resume, RunRecord};
use crate::training::step::Learner;
use crate::training::validation;

/// Runs (or, with `resume`, continues) training `cfg` on `splits` into `out`, as one process
/// (`Parallel::single()`) or one rank of several: every rank returns the same metrics of every
/// epoch; rank 0 alone writes the output directory.
pub fn train(
    rt: &Runtime,
    cfg: &TrainConfig,
    splits: Splits,
    out: &Path,
    resume: Resume,
    events: &mut dyn Events,
    par: Parallel,
) -> Result<Vec<EpochMetrics>> {
    let mut trainer = Trainer::start(rt, cfg, splits, out, resume, par)?;
    for epoch in trainer.state.epoch..cfg.total_epochs() {
        trainer.epoch(epoch, events)?;
    }
    let _ = std::io::stdout().flush();
    Ok(trainer.history)
}

/// A run under way: its model and optimizer, its data, where it stands and its files.
pub struct Trainer<'a> {
    rt: &'a Runtime,
    cfg: &'a TrainConfig,
    par: Parallel<'a>,
    model: Model,
    sgd: Sgd,
    train: Arc<Dataset>,
    /// The test images of the per-epoch evaluation.
    test: Arc<Dataset>,
    /// The held-out training images (`--val-split`) and their indices in the training split.
    val: Option<(Arc<Dataset>, Vec<usize>)>,
    files: RunFiles,
    state: RunState,
    history: Vec<EpochMetrics>,
    exchange: Exchange,
    /// The weight average of `--ema` (every rank keeps the same one: the weights it averages
    /// are the same on every rank after each step's all-reduce).
    average: Option<WeightAverage>,
}

/// The held-out training images of `val_split` (and their indices), then the data a run trains
/// and evaluates on: the rest of the training split with `limit_train` and the test split with
/// the evaluation's limits applied as class-balanced subsets. Refuses an empty split.
type RunData = (Arc<Dataset>, Option<(Arc<Dataset>, Vec<usize>)>, Arc<Dataset>);
fn run_data(cfg: &TrainConfig, mut splits: Splits) -> Result<RunData> {
    let val = match cfg.val_split {
        Some(n) => {
            let (rest, val, indices) = validation::split_off(splits.train, n, cfg.seed);
            splits.train = rest;
            Some((Arc::new(val), indices))
        }
        None => None,
    };
    let train = match cfg.limit_train {
        Some(n) => splits.train.balanced(n),
        None => splits.train,
    };
    let test = splits.test.balanced(cfg.limit_test.unwrap_or(usize::MAX).min(cfg.eval_limit));
    if train.is_empty() {
        return Err(CifsError::EmptySplit { split: "training" });
    }
    if test.is_empty() {
        return Err(CifsError::EmptySplit { split: "test" });
    }
    Ok((Arc::new(train), val, Arc::new(test)))
}

/// Refuses, before any work, what cannot run on these ranks: a method whose random draws are
/// not split over ranks yet, a batch that would leave a rank without images.
fn check_ranks_can_run(cfg: &TrainConfig, train_len: usize, par: &Parallel) -> Result<()> {
    if par.coll.size() > 1 && cfg.method == Method::Trades && cfg.adversary == Adversary::Pgd {
        return Err(DistributedError::Unsupported("TRADES (--method trades)").into());
    }
    Ok(check_batches(train_len, cfg.batch_size, par.coll.size())?)
}

/// Refuses a dataset whose images are not the ones `model` is built for, before any work.
pub fn check_images_fit(model: ModelKind, dataset: &str, shape: datasets::ImageShape) -> Result<()> {
    let (channels, side) = model.input();
    if shape != (datasets::ImageShape { channels, side }) {
        return Err(CifsError::ImagesDoNotFit {
            model: model.to_string(),
            takes: format!("{channels}x{side}x{side}"),
            dataset: dataset.to_string(),
            has: shape.to_string(),
        });
    }
    Ok(())
}

/// Refuses a batch whose largest activation (the first stage: N x channels x side x side floats)
/// exceeds what the adapter can bind, before any work starts.
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

impl<'a> Trainer<'a> {
    /// Checks the settings and the data, builds the model, restores the run to resume (or the
    /// initial weights asked for) and writes the run's record.
    fn start(rt: &'a Runtime, cfg: &'a TrainConfig, splits: Splits, out: &Path, resume: Resume, par: Parallel<'a>) -> Result<Self> {
        cfg.validate()?;
        let classes = splits.train.classes.len();
        let config = ModelConfig::resolve(cfg.model, Some(cfg.width), cfg.depth, classes)?;
        check_batch_fits(rt, cfg.batch_size, &config)?;
        check_images_fit(cfg.model, &cfg.dataset, splits.train.shape)?;
        let (train, val, test) = run_data(cfg, splits)?;
        check_ranks_can_run(cfg, train.len(), &par)?;
        let model = Model::new(rt, config, &mut Rng::new(cfg.seed))?;
        let sgd = Sgd::new(rt, &model, cfg.lr, cfg.momentum, cfg.weight_decay)?;
        let files = RunFiles::create(out)?;
        let state = RunState { epoch: 0, best_pgd20: -1.0 };
        let history = Vec::new();
        let mut t =
            Trainer { rt, cfg, par, model, sgd, train, test, val, files, state, history, exchange: Exchange::default(), average: None };
        let resuming = t.resumes(resume);
        let record = t.restore(resume)?;
        t.average = t.start_average(resuming, resume)?;
        t.begin(record)?;
        Ok(t)
    }

    /// Whether `resume` continues a run: one asked for, with a checkpoint to continue from.
    fn resumes(&self, resume: Resume) -> bool {
        resume != Resume::No && self.files.last().is_file()
    }

    /// Loads `last.safetensors` when resuming a run that has one (checking the run's record
    /// allows it), else the initial weights of `init_from`, if any. Returns the run's record.
    fn restore(&mut self, resume: Resume) -> Result<RunRecord> {
        let (rt, cfg) = (self.rt, self.cfg);
        if !self.resumes(resume) {
            if let Some(init) = &cfg.init_from {
                load_weights_into(rt, &self.model, Path::new(init))?;
            }
            return Ok(RunRecord::new(cfg.clone()));
        }
        let old = RunRecord::read(&self.files.config());
        if let Ok(old) = &old {
            check_ranks(old, &self.files.out, &self.par)?;
        }
        self.state = load_training(rt, &self.model, &self.sgd, &self.files.last())?;
        // With changes allowed, a missing or unreadable record is no obstacle.
        match old {
            Ok(old) => resumed(old, cfg, self.state.epoch, resume),
            Err(_) if resume == Resume::AllowChanges => Ok(RunRecord::new(cfg.clone())),
            Err(e) => Err(CifsError::Invalid(format!("cannot check the settings of the run to resume: {e}"))),
        }
    }

    /// The weight average of `--ema`, if asked for: when `resuming`, the one the run's checkpoint
    /// holds (with `--allow-changes`, a run that kept none starts one here), else a copy of the
    /// weights as the run starts. Its decay warms up (`WeightAverage::next_decay`).
    fn start_average(&self, resuming: bool, resume: Resume) -> Result<Option<WeightAverage>> {
        let Some(decay) = self.cfg.ema else { return Ok(None) };
        let mut average = WeightAverage::new(self.rt, &self.model, decay, true)?;
        if resuming && !average.restore(self.rt, &self.model, &self.files.last())? && resume != Resume::AllowChanges {
            let last = self.files.last().display().to_string();
            return Err(CifsError::Invalid(format!("{last} holds no weight average: the run was trained without --ema")));
        }
        Ok(Some(average))
    }

    /// Every rank agrees on the record and the starting state; rank 0 writes the record and the
    /// metrics of the epochs kept.
    fn begin(&mut self, mut record: RunRecord) -> Result<()> {
        (record.ranks, record.sync_bn) = (self.par.coll.size(), self.par.sync_bn);
        let val_len = self.val.as_ref().map_or(0, |v| v.0.len());
        record.best_chosen_on = validation::best_chosen_on(self.cfg, val_len, self.test.len());
        record.validation_images = self.val.as_ref().map(|v| v.1.clone()).unwrap_or_default();
        let json = record.to_json();
        agree_on_start(self.rt, self.par.coll, &json, self.state.epoch, &self.model, &self.sgd.velocity)?;
        self.history = self.files.read_metrics(self.state.epoch)?;
        if self.writes() {
            crate::say!("training on {} images; best.safetensors chosen by {}", self.train.len(), record.best_chosen_on);
            self.files.write_config(&json)?;
            self.files.write_metrics(&self.history)?;
        }
        Ok(())
    }

    /// Rank 0 (the only rank of one process) writes the run's files.
    fn writes(&self) -> bool {
        self.par.coll.rank() == 0
    }

    /// Epoch `epoch` (0-based): the training pass, the evaluation when it is due, the checkpoint.
    fn epoch(&mut self, epoch: usize, events: &mut dyn Events) -> Result<()> {
        let cfg = self.cfg;
        let (phase, lr) = cfg.schedule(epoch);
        if cfg.fresh_optimizer_at(epoch) {
            self.sgd = Sgd::new(self.rt, &self.model, cfg.lr, cfg.momentum, cfg.weight_decay)?;
        }
        self.sgd.lr = lr;
        let started = Instant::now();
        let objective = objective(cfg, phase);
        let plan = EpochPlan {
            epoch,
            total: cfg.total_epochs(),
            phase,
            lr,
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            augment: cfg.augment,
            objective: objective.as_ref(),
            classes: self.train.classes.len(),
        };
        let learner = Learner { rt: self.rt, model: &self.model, sgd: &self.sgd, par: self.par };
        let kept = || self.files.kept_on_divergence();
        let tally = train_epoch(&learner, &plan, &self.train, events, &mut self.exchange, &kept, self.average.as_mut())?;
        if self.writes() && self.exchange.steps > 0 {
            crate::say!("{}", std::mem::take(&mut self.exchange).summary());
        }
        let due = cfg.evaluates_after(epoch);
        let (natural, pgd20) = if due { self.evaluate(&self.model, &self.test, events)? } else { (None, None) };
        let (val_natural, val_pgd20) = match &self.val {
            Some((val, _)) if due => self.evaluate(&self.model, val, events)?,
            _ => (None, None),
        };
        let (ema_natural, ema_pgd20) = match &self.average {
            Some(a) if due => self.evaluate(&a.model, &self.test, events)?,
            _ => (None, None),
        };
        let m = EpochMetrics {
            epoch: epoch + 1,
            phase,
            lr,
            train_loss: tally.loss(),
            train_acc: tally.accuracy(),
            natural_acc: natural,
            pgd20_acc: pgd20,
            eval_images: if natural.is_some() { self.test.len() } else { 0 },
            val_natural_acc: val_natural,
            val_pgd20_acc: val_pgd20,
            val_images: if val_natural.is_some() { self.val.as_ref().map_or(0, |v| v.0.len()) } else { 0 },
            seconds: started.elapsed().as_secs_f64(),
            images_per_s: tally.images_per_s(),
            collapsed: false,
            ema_natural_acc: ema_natural,
            ema_pgd20_acc: ema_pgd20,
        };
        let pgd20: Vec<Option<f64>> = self.history.iter().map(|h| h.pgd20_acc).chain([m.pgd20_acc]).collect();
        let m = EpochMetrics { collapsed: CollapseRule::default().check(&pgd20).is_some(), ..m };
        self.checkpoint(m, events)
    }

    /// `model`'s (the weights' or their average's) natural and PGD-20 accuracy (the joint loss
    /// weighted as in training) on `data` (the test images or the held-out training images),
    /// sharded over the ranks.
    fn evaluate(&self, model: &Model, data: &Arc<Dataset>, events: &mut dyn Events) -> Result<(Option<f64>, Option<f64>)> {
        let cfg = self.cfg;
        let settings = EvalSettings { loss: AttackLoss::Joint { beta: cfg.beta }, ..EvalSettings::reference(cfg.eps, cfg.batch_size) };
        let attacks: [Arc<dyn Attack>; 2] = [Arc::new(Natural), Arc::new(PgdAttack { steps: 20 })];
        let res = crate::distributed::evaluate(self.rt, self.par.coll, model, data, &attacks, settings, |d, t| events.evaluating(d, t))?;
        Ok((Some(res[0].accuracy), Some(res[1].accuracy)))
    }

    /// The epoch's end: the best model when its PGD-20 accuracy (on the held-out training images
    /// with `--val-split`, else on the test images) is the best yet, the training checkpoint, the
    /// metrics and the curves (rank 0), then the caller is told.
    fn checkpoint(&mut self, m: EpochMetrics, events: &mut dyn Events) -> Result<()> {
        let rt = self.rt;
        self.state.epoch = m.epoch;
        let chooser = if self.val.is_some() { m.val_pgd20_acc } else { m.pgd20_acc };
        if let Some(p) = chooser.filter(|&p| p > self.state.best_pgd20) {
            self.state.best_pgd20 = p;
            if self.writes() {
                let on = if self.val.is_some() { "held-out training images" } else { "test images" };
                save_model(
                    rt,
                    &self.model,
                    &self.files.best(),
                    &[("epoch", self.state.epoch.to_string()), ("pgd20_acc", p.to_string()), ("chosen_on", on.into())],
                )?;
            }
        }
        self.history.push(m);
        if self.writes() {
            save_training(rt, &self.model, &self.sgd, &self.state, self.average.as_ref(), &self.files.last())?;
            if let Some(average) = &self.average {
                average.save(rt, &self.files.ema(), self.state.epoch)?;
            }
            self.files.write_metrics(&self.history)?;
            self.files.plot_curves(self.cfg, &self.history)?;
        }
        events.epoch_end(self.history.last().expect("just pushed"));
        Ok(())
    }
}
