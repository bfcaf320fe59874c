//! `cifs-wgpu tune`: time the convolution tiles at every shape of a model's steps now and print
//! the choices.

use clap::Args;

use cifs::distributed::Single;
use engine::RuntimeOptions;

use crate::args::ModelArgs;
use crate::display;

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub m: ModelArgs,
}

/// `options` tune (`main` refuses `--no-tune tune`).
pub fn run(options: &RuntimeOptions, a: TuneArgs) -> Result<(), String> {
    let rt = crate::open::runtime(options, &Single)?;
    let (before, _, path) = rt.tuning();
    let config = a.m.config()?;
    println!("tuning {} width {}, batch {} on {}", config.kind, config.width, a.m.batch_size, rt.adapter().name);
    let spinner = display::bar(0, "{spinner} {pos} shapes timed  {msg}");
    let shown = spinner.clone();
    rt.observe_tuning(move |key, choice| {
        shown.inc(1);
        shown.set_message(format!("{key}: {}", choice.tile.name()));
    });
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    cifs::training::bench::bench_steps(&rt, config, a.m.batch_size, 1, 0, |kind, _| spinner.set_message(kind.to_string()))
        .map_err(|e| e.to_string())?;
    spinner.finish_and_clear();
    let (after, warnings, _) = rt.tuning();
    for w in warnings {
        cifs::say!("warning: {w}");
    }
    // A column per configuration timed (the SIMT tiles in their order, then tensor-core tiles).
    let mut names: Vec<String> = engine::tune::Tile::ALL.iter().map(|t| t.name()).collect();
    let timed: std::collections::BTreeSet<String> = after.values().flat_map(|c| c.ms.keys().cloned()).collect();
    names.extend(timed.into_iter().filter(|n| engine::tune::Tile::parse(n).is_none()));
    names.retain(|n| after.values().any(|c| c.ms.contains_key(n)));
    let w = names.iter().map(|n| n.len() + 1).max().unwrap_or(9).max(9);
    println!("{:<18} {:<52} {:>8}  {}", "kernel", "shape", "tile", names.iter().map(|n| format!("{n:>w$}")).collect::<String>());
    for (key, c) in &after {
        let (kernel, shape) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        let ms: String =
            names.iter().map(|n| c.ms.get(n).map(|v| format!("{v:>w$.3}")).unwrap_or_else(|| format!("{:>w$}", "-"))).collect();
        let new = if before.contains_key(key) { "" } else { "  (new)" };
        println!("{kernel:<18} {shape:<52} {:>8}  {ms}{new}", c.tile.name());
    }
    println!(
        "times in ms per run; {} shapes, {} newly timed; cache: {}",
        after.len(),
        after.len() - before.len(),
        path.map(|p| p.display().to_string()).unwrap_or_else(|| "none (no cache directory)".into())
    );
    Ok(())
}
