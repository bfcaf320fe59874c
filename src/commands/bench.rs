//! `cifs-wgpu bench`: wall-clock and GPU time, dispatches and submits of each step kind.

use std::path::PathBuf;

use clap::Args;

use cifs::distributed::Single;
use engine::{RuntimeOptions, Tuning};

use crate::args::ModelArgs;
use crate::display;

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Timed steps of each kind (after the warm-up ones).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(options: &RuntimeOptions, a: BenchArgs) -> Result<(), String> {
    let rt = crate::open::runtime(options, &Single)?;
    let config = a.m.config()?;
    let info = rt.adapter();
    println!("adapter: {} ({}, {}), driver {} {}", info.name, info.backend, info.device_type, info.driver, info.driver_info);
    println!("precision {} on {}, batch norm sums on {}", rt.precision(), rt.gemm_kernels(), bn_sums(&rt));
    println!("{} width {}, batch {}, {} warm-up + {} timed steps each", config.kind, config.width, a.m.batch_size, a.warmup, a.steps);
    let bar = display::bar(((a.warmup + a.steps.max(1)) * cifs::training::bench::STEPS.len()) as u64, "[{bar:25}] {pos}/{len} {msg}");
    let mut done = 0;
    let results = cifs::training::bench::bench_steps(&rt, config, a.m.batch_size, a.steps, a.warmup, |kind, _| {
        done += 1;
        bar.set_position(done);
        bar.set_message(kind.to_string());
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!("{:<18} {:>12} {:>11} {:>9} {:>11} {:>8}", "step", "wall ms", "GPU ms", "img/s", "dispatches", "submits");
    for r in &results {
        let gpu = r.gpu_median_ms.map(|g| format!("{g:.2}")).unwrap_or_else(|| "n/a".into());
        println!(
            "{:<18} {:>12.2} {:>11} {:>9.0} {:>11} {:>8}",
            r.step, r.wall_median_ms, gpu, r.images_per_s, r.dispatches_per_step, r.submits_per_step
        );
    }
    if let Some(path) = a.json {
        let doc = serde_json::json!({
            "tool": "cifs-wgpu bench",
            "adapter": info.name, "backend": info.backend, "device_type": info.device_type,
            "driver": info.driver, "driver_info": info.driver_info,
            "date": time::OffsetDateTime::now_utc().date().to_string(), "commit": env!("CIFS_WGPU_COMMIT"),
            "model": config.kind, "width": config.width, "depth": config.depth, "batch_size": a.m.batch_size, "warmup": a.warmup,
            "results": results,
            "tuning": if options.tuning == Tuning::Heuristic { "off (--no-tune)" } else { "on" },
            "precision": rt.precision().to_string(),
            "precision_requested": options.kernels.precision.to_string(),
            "gemm_kernels": rt.gemm_kernels().to_string(),
            "bn_sums": bn_sums(&rt),
            "tiles": rt.tuning().0.into_iter().map(|(k, c)| (k, c.tile.name())).collect::<std::collections::BTreeMap<_, _>>(),
        });
        std::fs::write(&path, serde_json::to_string_pretty(&doc).expect("JSON serialises"))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Where batch norm's per-channel sums run (`CIFS_WGPU_SUBGROUP_REDUCE=1` asks for subgroups).
pub fn bn_sums(rt: &engine::Runtime) -> &'static str {
    if rt.uses_subgroup_reductions() {
        "subgroups"
    } else {
        "tree"
    }
}
