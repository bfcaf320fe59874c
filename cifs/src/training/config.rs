//! A training run's settings (`config.json`): what the dataset's recipe decides, what the caller
//! chose over it, and the schedule they make (docs/DESIGN.md, section 5). [`TrainConfig::new`]
//! is the one way to make one.

use engine::{GemmKernels, Precision};
use serde::{Deserialize, Serialize};

use crate::attacks::pgd::{AttackLoss, Pgd};
use crate::attacks::single_step::SingleStep;
use crate::error::{check_setting, Result};
use crate::models::ModelKind;
use crate::training::recipe::Recipe;
use crate::training::trades::Trades;

/// How the training images of the main phase are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Adversary {
    /// The training method's attack (PGD on the joint loss with a random start for pgd-at).
    Pgd,
    /// No attack: clean training.
    None,
}

/// The adversarial training method of the main phase. Each is an [`crate::training::objective::Objective`];
/// `training::methods::objective` is the one place that maps a method to it.
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
    /// FGSM with a random start (Wong et al. 2020): U(-eps, eps) start, one step of 1.25 eps.
    #[serde(rename = "fgsm-rs")]
    #[cfg_attr(feature = "cli", value(name = "fgsm-rs"))]
    FgsmRs,
    /// N-FGSM (de Jorge et al. 2022): U(-2 eps, 2 eps) start, one step of eps, no projection.
    #[serde(rename = "n-fgsm")]
    #[cfg_attr(feature = "cli", value(name = "n-fgsm"))]
    NFgsm,
}

/// What an epoch trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Clean warm-up before adversarial training.
    Warmup,
    Adversarial,
    /// Main phase without attack (`--adv none`).
    Clean,
}

/// The settings of a run that no recipe decides, as a caller gives them; [`Settings::DEFAULT`]
/// holds the library's defaults (the command line shows them in `--help`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// ResNets: channels of the first stage; WideResNet: the widen factor (`None`: the model's).
    pub width: Option<usize>,
    /// WideResNet depth (`None`: the model's default).
    pub depth: Option<usize>,
    pub batch_size: usize,
    pub momentum: f32,
    pub weight_decay: f32,
    pub adversary: Adversary,
    pub method: Method,
    pub trades_beta: f32,
    pub beta: f32,
    pub eval_every: usize,
    pub eval_limit: usize,
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    pub seed: u64,
    pub init_from: Option<String>,
    /// Training images held out to choose the best model (`training::validation`).
    pub val_split: Option<usize>,
    /// The decay of the weight average kept beside the weights (`training::ema`); `None`: none.
    pub ema: Option<f32>,
}

impl Settings {
    pub const DEFAULT: Settings = Settings {
        width: None,
        depth: None,
        batch_size: 128,
        momentum: 0.9,
        weight_decay: 2e-4,
        adversary: Adversary::Pgd,
        method: Method::PgdAt,
        trades_beta: 6.0,
        beta: 2.0,
        eval_every: 1,
        eval_limit: 1000,
        limit_train: None,
        limit_test: None,
        seed: 0,
        init_from: None,
        val_split: None,
        ema: None,
    };
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
    /// Precision the convolutions and dense layers ran in (`f32` or `f16`, `auto` resolved), by
    /// its name; runs recorded before there was a choice ran in f32.
    #[serde(default = "f32_precision", with = "by_name")]
    pub precision: Precision,
    /// What ran those GEMMs (`simt`, or `tensor cores 8x8x8 f16 x f16 -> f32`), by its name;
    /// runs recorded before there was a choice ran the SIMT tiles.
    #[serde(default = "simt", with = "by_name")]
    pub gemm_kernels: GemmKernels,
    /// Training images held out, never trained on, whose PGD-20 accuracy chooses the best model
    /// (`training::validation`); none: the test images choose it, as in the reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_split: Option<usize>,
    /// The decay of the exponential moving average of the weights (`--ema`, `training::ema`),
    /// written only when one is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<f32>,
}

fn yes() -> bool {
    true
}

fn f32_precision() -> Precision {
    Precision::F32
}

fn simt() -> GemmKernels {
    GemmKernels::Simt
}

/// [`Precision`] and [`GemmKernels`] in `config.json`: their names (`"f32"`, `"simt"`), as the
/// command line and the log spell them.
mod by_name {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(value)
    }

    pub fn deserialize<'de, T: FromStr, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>
    where
        T::Err: Display,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl TrainConfig {
    /// The run a `recipe` (a dataset's, with the caller's choices over it) and the caller's other
    /// `settings` make on `dataset` from `data_dir`, its GEMMs in `precision` (as the runtime
    /// resolved it) on `gemm_kernels`.
    pub fn new(
        dataset: &str,
        data_dir: &str,
        recipe: Recipe,
        settings: Settings,
        precision: Precision,
        gemm_kernels: GemmKernels,
    ) -> TrainConfig {
        TrainConfig {
            dataset: dataset.to_string(),
            data_dir: data_dir.to_string(),
            model: recipe.model,
            width: settings.width.unwrap_or(recipe.model.default_width()),
            depth: settings.depth,
            epochs: recipe.epochs,
            clean_epochs: recipe.clean_epochs,
            batch_size: settings.batch_size,
            lr: recipe.lr,
            momentum: settings.momentum,
            weight_decay: settings.weight_decay,
            milestones: recipe.milestones,
            adversary: settings.adversary,
            method: settings.method,
            trades_beta: settings.trades_beta,
            eps: recipe.eps,
            step_size: recipe.step_size,
            attack_steps: recipe.attack_steps as usize,
            beta: settings.beta,
            eval_every: settings.eval_every,
            eval_limit: settings.eval_limit,
            limit_train: settings.limit_train,
            limit_test: settings.limit_test,
            seed: settings.seed,
            init_from: settings.init_from,
            augment: recipe.augment,
            precision,
            gemm_kernels,
            val_split: settings.val_split,
            ema: settings.ema,
        }
    }

    /// The attack of the main phase (whether or not it is used), as configured.
    pub fn attack(&self) -> Pgd {
        Pgd { eps: self.eps, step: self.step_size, steps: self.attack_steps, loss: AttackLoss::Joint { beta: self.beta } }
    }

    /// The single-step attack of `fgsm-rs` or `n-fgsm` at the configured eps, on the joint loss
    /// (`None` for the multi-step methods).
    pub fn single_step(&self) -> Option<SingleStep> {
        let loss = AttackLoss::Joint { beta: self.beta };
        match self.method {
            Method::FgsmRs => Some(SingleStep::fgsm_rs(self.eps, loss)),
            Method::NFgsm => Some(SingleStep::n_fgsm(self.eps, loss)),
            Method::PgdAt | Method::Trades => None,
        }
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
        check_setting(self.val_split != Some(0), "val split", 0, "must be at least 1: 0 holds out no training images")?;
        check_setting(self.lr.is_finite() && self.lr >= 0.0, "lr", self.lr, "the learning rate must be finite and at least 0")?;
        check_setting(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum), "momentum", self.momentum, "must be in [0, 1)")?;
        check_setting(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "weight decay",
            self.weight_decay,
            "must be finite and at least 0",
        )?;
        if let Some(d) = self.ema {
            check_setting(d > 0.0 && d < 1.0, "ema", d, "the weight average's decay must be in (0, 1), e.g. 0.999")?;
        }
        self.attack().validate()?;
        self.single_step().map_or(Ok(()), |a| a.validate())?;
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

    /// Whether epoch `e` (0-based) ends with an evaluation: every `eval_every` epochs and the last.
    pub fn evaluates_after(&self, e: usize) -> bool {
        (e + 1).is_multiple_of(self.eval_every) || e + 1 == self.total_epochs()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datasets::DatasetKind;

    /// The reference's CIFAR-10 run: 15 warm-up epochs, then 120 main-phase epochs with the lr
    /// 10x smaller from main-phase epoch 75 and again from 90.
    pub(crate) fn reference() -> TrainConfig {
        TrainConfig::new("cifar10", "data", Recipe::for_dataset(DatasetKind::Cifar10), Settings::DEFAULT, Precision::F32, GemmKernels::Simt)
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

    #[test]
    fn the_recipe_and_the_settings_make_the_config() {
        let cfg = reference();
        assert_eq!((cfg.width, cfg.epochs, cfg.clean_epochs, cfg.milestones.as_slice()), (64, 120, 15, &[75, 90][..]));
        assert_eq!((cfg.batch_size, cfg.eval_limit, cfg.attack_steps, cfg.augment), (128, 1000, 10, true));
        let fashion = Recipe::for_dataset(DatasetKind::FashionMnist);
        let chosen = Settings { width: Some(8), seed: 4, ..Settings::DEFAULT };
        let cfg = TrainConfig::new("fashion-mnist", "d", fashion, chosen, Precision::F16, GemmKernels::TensorCores { size: 8 });
        assert_eq!((cfg.model.name(), cfg.width, cfg.seed, cfg.attack_steps, cfg.augment), ("resnet10-cifs", 8, 4, 40, false));
    }

    #[test]
    fn precision_is_recorded_by_name_and_old_records_read_as_f32() {
        let cfg = TrainConfig { precision: Precision::F16, ..reference() };
        let json: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["precision"], "f16");
        assert_eq!(serde_json::from_value::<TrainConfig>(json.clone()).unwrap(), cfg);
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("precision");
        assert_eq!(serde_json::from_value::<TrainConfig>(old).unwrap().precision, Precision::F32);
        let mut bad = json;
        bad["precision"] = "tf32".into();
        assert!(serde_json::from_value::<TrainConfig>(bad).unwrap_err().to_string().contains("f32, f16 or auto"));
    }

    #[test]
    fn gemm_kernels_are_recorded_by_name_and_old_records_read_as_simt() {
        let cfg = TrainConfig { precision: Precision::F16, gemm_kernels: GemmKernels::TensorCores { size: 8 }, ..reference() };
        let json: serde_json::Value = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["gemm_kernels"], "tensor cores 8x8x8 f16 x f16 -> f32");
        assert_eq!(serde_json::from_value::<TrainConfig>(json.clone()).unwrap(), cfg);
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("gemm_kernels");
        assert_eq!(serde_json::from_value::<TrainConfig>(old).unwrap().gemm_kernels, GemmKernels::Simt);
        let mut bad = json;
        bad["gemm_kernels"] = "tensor cores 4x4x4 f16 x f16 -> f32".into();
        assert!(serde_json::from_value::<TrainConfig>(bad).unwrap_err().to_string().contains("expected `simt`"));
    }
}
