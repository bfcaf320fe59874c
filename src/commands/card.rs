//! `cifs-wgpu card`: a RobustBench model card of a checkpoint, from standard AutoAttack (and the
//! natural accuracy) on the whole test split, run here as `eval` runs it or read from an earlier
//! `eval --json`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use cifs::attacks::attack::EvalSettings;
use cifs::attacks::pgd::AttackLoss;
use cifs::attacks::registry;
use cifs::card::{Description, Row};
use cifs::distributed::Collective;

use crate::args::{images, non_negative, Trained};
use crate::commands::eval;

#[derive(Args)]
pub struct CardArgs {
    #[command(flatten)]
    pub trained: Trained,
    /// The card's `name` (the paper's title on RobustBench) [default: the checkpoint's file name].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value = "")]
    pub authors: String,
    #[arg(long, default_value = "")]
    pub link: String,
    #[arg(long, default_value = "")]
    pub venue: String,
    /// Clean accuracy the paper reports, in percent [default: the measured one].
    #[arg(long, requires = "reported_aa")]
    pub reported_clean: Option<f64>,
    /// AutoAttack accuracy the paper reports, in percent (the card's `reported`) [default: the
    /// measured one].
    #[arg(long, requires = "reported_clean")]
    pub reported_aa: Option<f64>,
    /// Read the accuracies from this `eval --json` file (of `--attacks natural,autoattack
    /// --attack-loss ce` on the whole test split) instead of evaluating; --eps, --iterations,
    /// --restarts and --queries then say what that evaluation used.
    #[arg(long)]
    pub eval_json: Option<PathBuf>,
    /// Refused: RobustBench's numbers are on the whole test split.
    #[arg(long, value_parser = images)]
    pub limit: Option<usize>,
    #[arg(long, default_value = "card.json")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[arg(long, default_value = "8/255", value_parser = non_negative)]
    pub eps: f32,
    /// APGD's and FAB-T's iterations per restart (standard: 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: u32,
    /// APGD's and FAB-T's restarts, per target class for APGD-T and FAB-T (standard: 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub restarts: u32,
    /// Square's queries (standard: 5000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub queries: u32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl CardArgs {
    /// Standard AutoAttack's settings: APGD-CE ascends cross-entropy.
    fn settings(&self) -> EvalSettings {
        EvalSettings {
            loss: AttackLoss::Ce,
            iterations: self.iterations as usize,
            restarts: self.restarts as usize,
            queries: self.queries as usize,
            seed: self.seed,
            ..EvalSettings::reference(self.eps, self.batch_size as usize)
        }
    }

    /// The tool, its commit and the attacks, and whether their settings are AutoAttack's standard ones.
    fn footnote(&self) -> String {
        let (it, r, q) = (self.iterations, self.restarts, self.queries);
        let kind = if (it, r, q) == (100, 1, 5000) { "standard" } else { "NOT standard" };
        format!(
            "Evaluated with cifs-wgpu {}, AutoAttack {kind}: APGD-CE, APGD-T, FAB-T ({it} iterations, {r} restart(s)), Square {q}",
            env!("CIFS_WGPU_COMMIT")
        )
    }

    fn description(&self) -> Description {
        let stem = self.trained.checkpoint.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
        Description {
            name: self.name.clone().unwrap_or(stem),
            authors: self.authors.clone(),
            link: self.link.clone(),
            venue: self.venue.clone(),
            dataset: self.trained.dataset.to_string(),
            eps: self.eps,
            reported: self.reported_clean.zip(self.reported_aa),
            footnote: self.footnote(),
        }
    }
}

/// The rows of an earlier `eval --json`.
fn read_rows(path: &std::path::Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not an `eval --json` file ({e})", path.display()))
}

/// Evaluates (or reads the evaluation), checks it covers the whole test split, writes the card.
pub fn run(options: &engine::RuntimeOptions, a: CardArgs, coll: &dyn Collective) -> Result<(), String> {
    if let Some(n) = a.limit {
        return Err(format!(
            "--limit {n} evaluates a subset; RobustBench's numbers are on the whole test set, so a card is only written for all of it"
        ));
    }
    let read = a.eval_json.as_deref().map(read_rows).transpose()?;
    let (rt, model, splits) = a.trained.open(options, coll)?;
    let test = Arc::new(splits.test);
    let rows = match read {
        Some(rows) => rows,
        None => {
            let attacks = ["natural", "autoattack"].map(|n| registry::parse(n).expect("a registered attack"));
            let results = eval::evaluate(&rt, coll, &model, &test, &attacks, a.settings())?;
            eval::print_results(&results);
            results.into_iter().map(|r| Row { attack: r.attack, loss: r.loss, correct: r.correct, images: r.images }).collect()
        }
    };
    let card = cifs::card::card(&model.config, &a.description(), &rows, test.len()).map_err(|e| e.to_string())?;
    let text = serde_json::to_string_pretty(&card).expect("a card serialises");
    std::fs::write(&a.out, text + "\n").map_err(|e| format!("{}: {e}", a.out.display()))?;
    cifs::say!(
        "card: clean {}%, AutoAttack {}% on {} test images, written to {}",
        card.clean_acc,
        card.autoattack_acc,
        test.len(),
        a.out.display()
    );
    Ok(())
}
