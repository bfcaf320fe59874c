//! The `cifs-wgpu` command line. Only argument parsing and printing live here; the work is in
//! the `engine`, `cifs` and `datasets` crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cifs-wgpu", version, about = "Adversarial training of CNNs with CIFS on any GPU wgpu reaches")]
struct Cli {
    /// GPU adapter: an index from `info`, a type (discrete, integrated, cpu) or part of its name.
    /// Overrides the CIFS_WGPU_ADAPTER environment variable.
    #[arg(long, global = true)]
    adapter: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every GPU adapter, the one that would be used, and its key limits.
    Info,
}

fn info(adapter: Option<&str>) -> Result<(), String> {
    let all = engine::gpu::list_adapters();
    println!("adapters ({}):", all.len());
    for a in &all {
        println!("  [{}] {} ({}, {}) driver: {} {}", a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let pref = adapter.map(str::to_string).or_else(|| std::env::var(engine::gpu::ADAPTER_ENV).ok());
    let gpu = engine::Gpu::with_preference(pref.as_deref()).map_err(|e| e.to_string())?;
    let s = gpu.summary();
    let l = &gpu.limits;
    println!("chosen: {} ({}, {})", s.name, s.backend, s.device_type);
    println!("  max storage buffer binding: {} MiB", l.max_storage_buffer_binding_size as u64 >> 20);
    println!("  max buffer size: {} MiB", l.max_buffer_size >> 20);
    println!("  max storage buffers per stage: {}", l.max_storage_buffers_per_shader_stage);
    println!("  max workgroup invocations: {}, workgroup storage: {} KiB", l.max_compute_invocations_per_workgroup, l.max_compute_workgroup_storage_size >> 10);
    println!("  max workgroups per dimension: {}", l.max_compute_workgroups_per_dimension);
    println!("  immediate data: {} bytes; timestamp queries: {}", l.max_immediate_size, gpu.features.contains(wgpu_ts()));
    Ok(())
}

fn wgpu_ts() -> engine::gpu::Features {
    engine::gpu::Features::TIMESTAMP_QUERY
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(cli.adapter.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
