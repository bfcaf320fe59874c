//! One training pass over the training set: the epoch's order, augmentation and random starts
//! from (seed, epoch) alone, each global batch cut to this rank's share, one step per batch, and
//! the loss and accuracy counted as the steps' results come back.

use std::sync::Arc;
use std::time::Instant;

use datasets::augment::Crop;
use datasets::loader::{batches, Pass};
use datasets::Dataset;
use engine::{PendingRead, Rng, Tensor};

use crate::attacks::hostloss::predictions;
use crate::distributed::exchange::Exchange;
use crate::distributed::run::reduce_epoch;
use crate::distributed::shard::share_of;
use crate::error::{CifsError, Result};
use crate::training::batch::StepBatch;
use crate::training::config::Phase;
use crate::training::ema::WeightAverage;
use crate::training::events::Events;
use crate::training::objective::Objective;
use crate::training::step::Learner;

/// Generator for one purpose of one epoch, from the seed alone (0: order and augmentation,
/// 1: attack starts).
pub fn epoch_rng(seed: u64, epoch: usize, purpose: u64) -> Rng {
    Rng::new(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ purpose.wrapping_mul(0xD1B5_4A32_D192_ED03))
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

/// The epoch a pass trains: which one (0-based, of `total`), in which phase and at which lr, how.
pub struct EpochPlan<'a> {
    pub epoch: usize,
    pub total: usize,
    pub phase: Phase,
    pub lr: f32,
    pub seed: u64,
    pub batch_size: usize,
    pub augment: bool,
    pub objective: &'a dyn Objective,
    pub classes: usize,
}

/// The epoch's training loss (times images), correct answers and images over every rank, and
/// its seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
}

impl Tally {
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }
    pub fn images_per_s(&self) -> f64 {
        self.seen as f64 / self.seconds
    }
}

/// A step whose loss and logits are still on their way back.
struct InFlight {
    reads: Vec<PendingRead>,
    labels: Vec<u32>,
    step: usize,
}

/// Trains one pass of `plan` over `train`, updating `average` (if any) after every step. Step i's loss and logits are read while step i+1
/// runs: the host records the next step instead of waiting for the GPU (one step of delay in
/// the progress display). A loss that is not finite stops the pass; `kept` says what the run
/// keeps then.
pub fn train_epoch(
    learner: &Learner,
    plan: &EpochPlan,
    train: &Arc<Dataset>,
    events: &mut dyn Events,
    exchange: &mut Exchange,
    kept: &dyn Fn() -> String,
    mut average: Option<&mut WeightAverage>,
) -> Result<Tally> {
    let rt = learner.rt;
    let order = train_pass(train.len(), plan.batch_size, epoch_rng(plan.seed, plan.epoch, 0).next_u64(), plan.augment);
    let pass = batches(train.clone(), order)?;
    events.epoch_start(plan.epoch + 1, plan.total, plan.phase, plan.lr, pass.count);
    let mut attack_rng = epoch_rng(plan.seed, plan.epoch, 1);
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut settle = |f: InFlight| -> Result<()> {
        let mut values = f.reads.into_iter().map(|r| rt.finish_read_f32(r));
        let loss = values.next().expect("the loss")?[0];
        if !loss.is_finite() {
            return Err(CifsError::Diverged { loss, epoch: plan.epoch + 1, step: f.step + 1, kept: kept() });
        }
        let logits = values.next().expect("the logits")?;
        tally.correct += predictions(&logits, plan.classes).iter().zip(&f.labels).filter(|(p, l)| **p == **l as usize).count();
        tally.loss_sum += loss as f64 * f.labels.len() as f64;
        tally.seen += f.labels.len();
        let rate = tally.seen as f64 / started.elapsed().as_secs_f64();
        events.batch(f.step + 1, tally.loss(), tally.accuracy(), rate);
        Ok(())
    };
    let mut in_flight: Option<InFlight> = None;
    for (step, batch) in pass.enumerate() {
        let (batch, share) = share_of(batch?, learner.par.coll);
        let x = Tensor::from_f32(rt, &batch.dims(), &batch.images)?;
        let y = Tensor::from_u32(rt, &[batch.len()], &batch.labels)?;
        let r = learner.step(plan.objective, &StepBatch { x: &x, labels: &y, share }, &mut attack_rng, exchange)?;
        if let Some(average) = average.as_deref_mut() {
            average.update(rt, learner.model)?;
        }
        let reads = rt.read_later(&[&r.loss, &r.output.logits])?;
        if let Some(previous) = in_flight.replace(InFlight { reads, labels: batch.labels, step }) {
            settle(previous)?;
        }
    }
    if let Some(last) = in_flight.take() {
        settle(last)?;
    }
    reduce_epoch(learner.par.coll, &mut tally.loss_sum, &mut tally.correct, &mut tally.seen);
    tally.seconds = started.elapsed().as_secs_f64();
    Ok(tally)
}
