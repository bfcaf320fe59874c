//! `cifs-wgpu info`: the adapters wgpu sees, the one chosen and its limits, the tuning cache.

use cifs::distributed::Single;
use engine::{GemmKernels, RuntimeOptions, TuneCache, Tuning};

/// `options` with tuning on whatever the flags say, so that the tuning cache is shown.
pub fn run(options: &RuntimeOptions) -> Result<(), String> {
    let all = engine::gpu::list_adapters();
    println!("adapters ({}):", all.len());
    for a in &all {
        println!("  [{}] {} ({}, {}) driver: {} {}", a.index, a.name, a.backend, a.device_type, a.driver, a.driver_info);
    }
    let tuned = RuntimeOptions { tuning: Tuning::Tune { cache: TuneCache::from_env() }, ..options.clone() };
    let rt = crate::open::runtime(&tuned, &Single)?;
    let s = rt.adapter();
    let l = rt.limits();
    println!("chosen: {} ({}, {})", s.name, s.backend, s.device_type);
    println!("  max storage buffer binding: {} MiB", l.max_binding_bytes >> 20);
    println!("  max buffer size: {} MiB", l.max_buffer_bytes >> 20);
    println!("  max storage buffers per stage: {}", l.max_storage_buffers_per_stage);
    println!("  max workgroup invocations: {}, workgroup storage: {} KiB", l.max_workgroup_invocations, l.max_workgroup_memory >> 10);
    println!("  max workgroups per dimension: {}", l.max_workgroups_per_dimension);
    println!("  immediate data: {} bytes; timestamp queries: {}", l.max_immediate_bytes, l.timestamps);
    let p = rt.precision_support();
    let (lo, hi) = p.subgroup_sizes;
    println!("  subgroup size: {lo}..{hi}; shader f16 (SHADER_F16): {}", if p.shader_f16 { "yes" } else { "no" });
    let subgroups = if rt.has_subgroups() { "yes" } else { "no" };
    println!("  subgroup operations (SUBGROUP): {subgroups}; batch norm sums: {}", super::bench::bn_sums(&rt));
    if p.cooperative_matrices.is_empty() {
        println!("  cooperative matrices (tensor cores): none");
    }
    for c in &p.cooperative_matrices {
        println!("  cooperative matrix: {c}");
    }
    match p.tensor_cores {
        Some(tc) => println!("  tensor-core kernels: {} at subgroups of up to {}", tc.name(), tc.subgroup),
        None => println!("  tensor-core kernels: none here (f16 is emulated on the SIMT tiles)"),
    }
    let auto_kernels = p.tensor_cores.map_or(GemmKernels::Simt, |tc| GemmKernels::TensorCores { size: tc.size });
    println!(
        "  precision: {} runs as {} on {} (auto: {} on {auto_kernels})",
        options.kernels.precision,
        rt.precision(),
        rt.gemm_kernels(),
        p.auto
    );
    let (choices, _, path) = rt.tuning();
    match path {
        Some(p) => println!("tuning cache: {} ({} shapes tuned)", p.display(), choices.len()),
        None => println!("tuning cache: none (neither XDG_CACHE_HOME nor HOME is set)"),
    }
    Ok(())
}
