//! `cifs-wgpu eval`: a checkpoint under a list of attacks, as a table (and JSON).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use cifs::attacks::attack::{Attack, EvalSettings};
use cifs::attacks::evaluate::AttackResult;
use cifs::attacks::registry;
use cifs::distributed::Collective;
use cifs::Model;
use datasets::Dataset;
use engine::Runtime;

use crate::args::{images, AttackArgs, Trained};
use crate::display;

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub trained: Trained,
    /// Comma-separated: natural, fgsm, pgd<steps>, cw<steps>, apgd-ce, apgd-dlr, apgd-t, fab-t,
    /// square, autoattack (APGD-CE, then APGD-T, then FAB-T, then Square, each on the images
    /// still robust).
    #[arg(long, value_delimiter = ',', default_value = "natural,fgsm,pgd20,pgd100,cw30", value_parser = registry::parse)]
    pub attacks: Vec<Arc<dyn Attack>>,
    /// Evaluate N test images only: a fixed, class-balanced subset (classes taken in turn, each
    /// class's images in file order).
    #[arg(long, value_parser = images)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub settings: AttackArgs,
    /// Also write the table as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Every rank evaluates its part of the test images; rank 0 prints the whole table.
pub fn run(options: &engine::RuntimeOptions, a: EvalArgs, coll: &dyn Collective) -> Result<(), String> {
    let (rt, model, splits) = a.trained.open(options, coll)?;
    let test = Arc::new(match a.limit {
        Some(n) => splits.test.balanced(n),
        None => splits.test,
    });
    let results = evaluate(&rt, coll, &model, &test, &a.attacks, a.settings.settings())?;
    if coll.rank() > 0 {
        return Ok(());
    }
    print_results(&results);
    if let Some(path) = a.json {
        let text = serde_json::to_string_pretty(&results).expect("results serialise");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// `attacks` on the images of `test`, with a progress bar (`eval`, `card`).
pub fn evaluate(
    rt: &Runtime,
    coll: &dyn Collective,
    model: &Model,
    test: &Arc<Dataset>,
    attacks: &[Arc<dyn Attack>],
    settings: EvalSettings,
) -> Result<Vec<AttackResult>, String> {
    let bar = display::bar(test.len() as u64, "evaluating [{bar:25}] {pos}/{len} images ETA {eta}");
    let results = cifs::distributed::evaluate(rt, coll, model, test, attacks, settings, |d, _| bar.set_position(d as u64))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    Ok(results)
}

/// The table of an evaluation: each attack's accuracy and loss, then accuracy per class.
pub fn print_results(results: &[AttackResult]) {
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
