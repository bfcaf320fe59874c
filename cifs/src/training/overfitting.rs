//! Catastrophic overfitting made visible. Single-step adversarial training can collapse: within an
//! epoch the model learns to defeat its one-step attack and its accuracy under a multi-step
//! attack falls to near zero (Wong, Rice and Kolter 2020; de Jorge et al. 2022).
//!
//! The rule: an evaluated epoch has collapsed when its PGD-20 accuracy is under `fraction` (0.5)
//! of the best PGD-20 accuracy of the epochs before it **and** at least `min_drop` (10 points)
//! under it. Both conditions: the ratio alone would fire on noise while accuracies are a few
//! percent (0.04 after a best of 0.09), the difference alone on robust overfitting, the slow
//! decline after a learning-rate drop (Rice, Wong and Kolter 2020), which over a long run can
//! exceed 10 points and is not a collapse. A collapse falls from tens of percent to a few.
//!
//! Wong et al. stopped early on a different signal: PGD-5 accuracy on one training minibatch
//! falling more than 20 points since the previous epoch. Against the best so far instead of the
//! previous epoch, a collapse spread over two evaluations (0.40, 0.27, 0.14) is caught too; the
//! evaluation images' PGD-20 accuracy is what the run already measures.

use crate::error::{check_setting, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollapseRule {
    /// An epoch under this fraction of the best before it may have collapsed.
    pub fraction: f64,
    /// ... if it is also at least this far (accuracy as a fraction) under the best.
    pub min_drop: f64,
}

impl Default for CollapseRule {
    fn default() -> CollapseRule {
        CollapseRule { fraction: 0.5, min_drop: 0.10 }
    }
}

/// A flagged epoch: its accuracy, and the best accuracy before it and the epoch of that best
/// (index into the history).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collapse {
    pub accuracy: f64,
    pub best: f64,
    pub best_epoch: usize,
}

impl CollapseRule {
    pub fn validate(&self) -> Result<()> {
        check_setting(
            (0.0..=1.0).contains(&self.fraction),
            "collapse fraction",
            self.fraction,
            "a fraction of the best accuracy, in [0, 1]",
        )?;
        check_setting((0.0..=1.0).contains(&self.min_drop), "collapse drop", self.min_drop, "an accuracy difference, in [0, 1]")
    }

    /// Whether the last epoch of `history` (per-epoch PGD-20 accuracies in [0, 1], `None` for
    /// an epoch that was not evaluated) has collapsed against the epochs before it. An epoch not
    /// evaluated is never flagged.
    pub fn check(&self, history: &[Option<f64>]) -> Option<Collapse> {
        let (last, before) = history.split_last()?;
        let accuracy = (*last)?;
        let (best_epoch, best) =
            before.iter().enumerate().filter_map(|(i, a)| a.map(|a| (i, a))).fold(None, |m: Option<(usize, f64)>, (i, a)| match m {
                Some((_, b)) if b >= a => m,
                _ => Some((i, a)),
            })?;
        let collapsed = accuracy < self.fraction * best && best - accuracy >= self.min_drop;
        collapsed.then_some(Collapse { accuracy, best, best_epoch })
    }

    /// [`check`](Self::check) for every epoch of `history`: which are flagged.
    pub fn flags(&self, history: &[Option<f64>]) -> Vec<bool> {
        (1..=history.len()).map(|n| self.check(&history[..n]).is_some()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluated(accs: &[f64]) -> Vec<Option<f64>> {
        accs.iter().map(|&a| Some(a)).collect()
    }

    /// Made-up numbers shaped like FGSM training that collapses, as Wong et al. describe it:
    /// robust accuracy climbing for some epochs, then near zero from one epoch to the next.
    #[test]
    fn fires_on_a_collapse_and_stays_on() {
        let run = evaluated(&[0.21, 0.30, 0.36, 0.40, 0.42, 0.03, 0.01, 0.00, 0.02]);
        let flags = CollapseRule::default().flags(&run);
        assert_eq!(flags, [false, false, false, false, false, true, true, true, true]);
        let c = CollapseRule::default().check(&run[..6]).unwrap();
        assert_eq!((c.accuracy, c.best, c.best_epoch), (0.03, 0.42, 4));
    }

    /// Made-up numbers shaped like a healthy PGD-AT run: a rise with noise, a jump at the
    /// learning-rate drop, then robust overfitting's slow decline, here by 11 points.
    #[test]
    fn quiet_on_a_healthy_run_with_robust_overfitting() {
        let run = evaluated(&[0.18, 0.27, 0.31, 0.30, 0.35, 0.34, 0.37, 0.36, 0.52, 0.51, 0.49, 0.47, 0.45, 0.43, 0.41]);
        assert!(CollapseRule::default().flags(&run).iter().all(|f| !f));
    }

    /// Over two evaluations: no drop from the previous epoch exceeds 20 points (Wong et al.'s
    /// rule stays quiet) nor halves the accuracy, but the second is under half the best.
    #[test]
    fn fires_on_a_collapse_spread_over_two_epochs() {
        let run = evaluated(&[0.30, 0.40, 0.27, 0.14]);
        assert_eq!(CollapseRule::default().flags(&run), [false, false, false, true]);
    }

    /// Low accuracies early in a run: half the best, but only a few points.
    #[test]
    fn quiet_on_small_numbers() {
        assert!(CollapseRule::default().flags(&evaluated(&[0.0, 0.09, 0.04, 0.0, 0.12, 0.03])).iter().all(|f| !f));
        // 10 points and under half: flagged, however early.
        assert_eq!(CollapseRule::default().flags(&evaluated(&[0.0, 0.16, 0.05])), [false, false, true]);
    }

    #[test]
    fn epochs_not_evaluated_are_skipped_and_never_flagged() {
        let run = [Some(0.40), None, None, Some(0.05), None];
        assert_eq!(CollapseRule::default().flags(&run), [false, false, false, true, false]);
        assert_eq!(CollapseRule::default().check(&run[..4]).unwrap().best_epoch, 0);
        assert_eq!(CollapseRule::default().check(&[None, Some(0.0)]), None, "nothing before it to fall from");
        assert_eq!(CollapseRule::default().check(&[]), None);
    }

    #[test]
    fn refuses_settings_outside_the_unit_interval() {
        assert!(CollapseRule::default().validate().is_ok());
        assert!(CollapseRule { fraction: 1.5, min_drop: 0.1 }.validate().is_err());
        assert!(CollapseRule { fraction: 0.5, min_drop: -0.1 }.validate().is_err());
        assert!(CollapseRule { fraction: f64::NAN, min_drop: 0.1 }.validate().is_err());
    }
}
