//! What the subcommands share: value parsers for numbers the command line accepts (fractions
//! such as `8/255`, counts of images), and the argument groups of the model, the checkpoint
//! and dataset, and the attack settings.

use std::path::PathBuf;

use clap::Args;

use cifs::attacks::attack::EvalSettings;
use cifs::attacks::pgd::AttackLoss;
use cifs::training::config::Settings;
use cifs::training::recipe::Recipe;
use cifs::{ModelConfig, ModelKind};
use datasets::DatasetKind;
use engine::{Runtime, RuntimeOptions};

use cifs::distributed::Collective;

/// A float, or a fraction like `8/255`.
pub fn fraction(s: &str) -> Result<f32, String> {
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
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not finite"))
    }
}

/// A fraction that is at least 0 (radii, steps, rates, weights).
pub fn non_negative(s: &str) -> Result<f32, String> {
    let v = fraction(s)?;
    if v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("`{s}` is negative; this setting must be at least 0"))
    }
}

/// A fraction in [0, 1) (momentum).
pub fn unit_interval(s: &str) -> Result<f32, String> {
    let v = fraction(s)?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` is outside [0, 1)"))
    }
}

/// A count of images to select: 0 would select none (and evaluate or train on nothing).
pub fn images(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("0 selects no images; give at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a number of images")),
    }
}

pub fn milestones(s: &str) -> Result<Vec<usize>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|t| t.trim().parse::<usize>().map_err(|_| format!("`{t}` in `{s}` is not an epoch number"))).collect()
}

/// `--model`'s values: every architecture of every family (`cifs::models::FAMILIES`), each with
/// its help line.
fn model_kind() -> impl clap::builder::TypedValueParser<Value = ModelKind> {
    use clap::builder::TypedValueParser;
    let values = ModelKind::all().map(|k| clap::builder::PossibleValue::new(k.name()).help(k.about()));
    clap::builder::PossibleValuesParser::new(values).map(|name| ModelKind::named(&name).expect("a possible value names a model"))
}

/// The model and its batch (`train`, `bench`, `tune`).
#[derive(Args)]
pub struct ModelArgs {
    /// [default: resnet18-cifs; train fashion-mnist: resnet10-cifs]
    #[arg(long, value_parser = model_kind())]
    pub model: Option<ModelKind>,
    /// ResNets: channels of the first stage [default: 64]; WideResNet: the widen factor
    /// [default: 10] (alias --widen).
    #[arg(long, visible_alias = "widen")]
    pub width: Option<usize>,
    /// WideResNet depth, 6 n + 4 [default: 28].
    #[arg(long)]
    pub depth: Option<usize>,
    #[arg(long, default_value_t = Settings::DEFAULT.batch_size)]
    pub batch_size: usize,
}

impl ModelArgs {
    /// The model asked for, or the reference's (`bench`, `tune`).
    pub fn kind(&self) -> ModelKind {
        self.model.unwrap_or(Recipe::cifar10().model)
    }

    /// The model a benchmark or a tuning run builds (10 classes).
    pub fn config(&self) -> Result<ModelConfig, String> {
        ModelConfig::resolve(self.kind(), self.width, self.depth, 10).map_err(|e| e.to_string())
    }
}

/// The loss FGSM, PGD and APGD-CE ascend.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum LossChoice {
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
pub struct Trained {
    /// A model checkpoint: ours, or a safetensors state dict of the reference code.
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[arg(value_enum)]
    pub dataset: DatasetKind,
    /// Where the dataset is (or is downloaded to). Default: data/<dataset>.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Never download missing dataset files.
    #[arg(long)]
    pub no_download: bool,
}

impl Trained {
    /// The runtime, the checkpoint's model and the dataset, checked to have as many classes.
    pub fn open(&self, options: &RuntimeOptions, coll: &dyn Collective) -> Result<(Runtime, cifs::Model, datasets::Splits), String> {
        let rt = crate::open::runtime(options, coll)?;
        let model = cifs::checkpoint::load_model(&rt, &self.checkpoint).map_err(|e| e.to_string())?;
        cifs::say!("model: {} width {} from {}", model.config.kind, model.config.width, self.checkpoint.display());
        let (splits, _) = crate::open::dataset(coll, self.dataset, self.data_dir.as_deref(), self.no_download)?;
        if splits.test.classes.len() != model.config.classes {
            return Err(format!("the checkpoint has {} classes, the dataset {}", model.config.classes, splits.test.classes.len()));
        }
        Ok((rt, model, splits))
    }
}

/// Attack settings shared by `eval` and `analyze`.
#[derive(Args)]
pub struct AttackArgs {
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[arg(long, default_value = "8/255", value_parser = non_negative)]
    pub eps: f32,
    /// The loss FGSM, PGD and APGD-CE ascend (the README says why joint is the default).
    #[arg(long, value_enum, default_value = "joint")]
    pub attack_loss: LossChoice,
    /// Weight of the probe losses in the joint attack loss (the reference used 2 and 1000).
    #[arg(long, alias = "beta", default_value = "2", value_parser = non_negative)]
    pub attack_beta: f32,
    /// APGD's and FAB-T's iterations per restart.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// APGD's and FAB-T's restarts (per target class for APGD-T and FAB-T).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub restarts: u32,
    /// Square's queries.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queries: u32,
    /// Seeds every random start and Square's squares (runs with one seed are reproducible).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl AttackArgs {
    pub fn settings(&self) -> EvalSettings {
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
