//! `cifs-wgpu analyze`: the paper's channel analysis of a checkpoint, as figures and tables.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use cifs::attacks::attack::Attack;
use cifs::attacks::registry;

use crate::args::{images, AttackArgs, Trained};
use crate::display;

#[derive(Args)]
pub struct AnalyzeArgs {
    #[command(flatten)]
    pub trained: Trained,
    /// The class to analyse (its folder or dataset name), or `all`.
    #[arg(long, default_value = "all")]
    pub class: String,
    /// The attack that makes the adversarial images (any of `eval --attacks` but natural).
    #[arg(long = "attack", default_value = "pgd20", value_parser = registry::parse)]
    pub attack_kind: Arc<dyn Attack>,
    /// Use N test images only: a fixed, class-balanced subset, as `eval --limit`.
    #[arg(long, value_parser = images)]
    pub limit: Option<usize>,
    /// Output directory. Default: runs/analyze-<checkpoint name>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub settings: AttackArgs,
}

pub fn run(options: &engine::RuntimeOptions, a: AnalyzeArgs) -> Result<(), String> {
    if a.attack_kind.name() == "natural" {
        return Err("--attack natural makes no adversarial images; choose an attack (pgd20, apgd-ce, autoattack, ...)".into());
    }
    let (rt, model, splits) = a.trained.open(options, &cifs::distributed::Single)?;
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
        cifs::say!(
            "note: the figures order channels by the classifier's weights; the masks of {} (other channel counts) are not drawn",
            skipped.join(", ")
        );
    }
    if probed.is_empty() {
        cifs::say!("note: {model_name} has no CIFS block: the mask figures and the NR shares without the mask are skipped");
    }
    let test = Arc::new(match a.limit {
        Some(n) => splits.test.balanced(n),
        None => splits.test,
    });
    let out = a.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(format!("analyze-{}", a.trained.checkpoint.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default()))
    });
    let bar = display::bar(0, "analysing [{bar:25}] {pos}/{len} images ETA {eta}");
    let analysis = cifs::analysis::analyze(&rt, &model, &test, &classes, a.attack_kind.as_ref(), a.settings.settings(), |d, t| {
        bar.set_length(t as u64);
        bar.set_position(d as u64);
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    let files = cifs::analysis::write(&analysis, &out, &model_name).map_err(|e| e.to_string())?;
    println!("share of activation mass on negatively relevant channels (natural / {}):", a.attack_kind.name());
    println!("{:<14} {:>6} {:>8} {:>8} {:>18} {:>18}", "class", "images", "natural", "robust", "NR share, masked", "NR share, unmasked");
    for s in &analysis.classes {
        let ((n, v), without) = s.nr_shares();
        let unmasked = without.map(|(a, b)| format!("{:.3} / {:.3}", a, b)).unwrap_or_else(|| "n/a".into());
        let acc = |c: usize| 100.0 * c as f64 / s.images.max(1) as f64;
        println!(
            "{:<14} {:>6} {:>7.2}% {:>7.2}% {:>18} {:>18}",
            s.class,
            s.images,
            acc(s.natural_correct),
            acc(s.robust_correct),
            format!("{n:.3} / {v:.3}"),
            unmasked
        );
    }
    println!("{} files in {}", files.len(), out.display());
    Ok(())
}
