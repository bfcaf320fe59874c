//! What a [`crate::Runtime`] is opened with: the adapter, how GEMM tiles are chosen, and how the
//! kernels compute. One value, handed to [`crate::Runtime::new`] and fixed for the runtime's life;
//! the environment variables below are read here and nowhere else, as the defaults a caller (the
//! command line, the tests) starts from and overrides.
//!
//! | variable | field | meaning |
//! |---|---|---|
//! | `CIFS_WGPU_ADAPTER` | [`RuntimeOptions::adapter`] | an index from `cifs-wgpu info`, a device type or part of a name |
//! | `CIFS_WGPU_LIMITS=webgpu` | [`RuntimeOptions::limits`] | the device opened with WebGPU's default limits ([`Limits::WebGpu`]) |
//! | `CIFS_WGPU_TUNE_CACHE` | [`TuneCache::File`] | the tuning cache file, instead of the per-adapter one |
//! | `CIFS_WGPU_ZERO_INIT_WORKGROUP=1` | [`KernelOptions::zero_init_workgroup_memory`] | wgpu zeroes workgroup memory |
//! | `CIFS_WGPU_SUBGROUP_REDUCE=1` | [`KernelOptions::subgroup_reductions`] | batch norm's sums on subgroup operations |

use std::path::PathBuf;

use crate::error::{EngineError, Result};
use crate::gpu::ADAPTER_ENV;
use crate::pipelines::{switch_on, ZERO_INIT_ENV};
use crate::precision::Precision;
use crate::tune::GemmTile;

/// `CIFS_WGPU_SUBGROUP_REDUCE=1`: batch norm's sums on subgroup operations where the adapter has
/// them (see [`KernelOptions::subgroup_reductions`]).
pub const SUBGROUP_REDUCE_ENV: &str = "CIFS_WGPU_SUBGROUP_REDUCE";

/// `CIFS_WGPU_TUNE_CACHE=FILE`: the tuning cache file (see [`TuneCache`]).
pub const TUNE_CACHE_ENV: &str = "CIFS_WGPU_TUNE_CACHE";

/// `CIFS_WGPU_LIMITS=webgpu|adapter`: the limits the device is opened with (see [`Limits`]).
pub const LIMITS_ENV: &str = "CIFS_WGPU_LIMITS";

/// Everything a runtime is opened with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuntimeOptions {
    /// The adapter: an index from `cifs-wgpu info`, a device type (`discrete`, `integrated`,
    /// `cpu`, `virtual`) or a case-insensitive part of its name; `None`: the best one present.
    pub adapter: Option<String>,
    /// The limits the device is opened with.
    pub limits: Limits,
    /// How each GEMM's tile configuration is chosen.
    pub tuning: Tuning,
    /// How the kernels compute.
    pub kernels: KernelOptions,
}

/// The limits a device is opened with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limits {
    /// Everything the adapter offers (`adapter`, the default).
    #[default]
    Adapter,
    /// WebGPU's defaults (`webgpu`; `wgpu::Limits::default()`: 16 KiB of workgroup memory, 256
    /// invocations per workgroup, 8 storage buffers per stage, 128 MiB per binding), the baseline
    /// every WebGPU device offers and many integrated and mobile GPUs sit near, so a run here
    /// shows what such a device runs. Either way the immediate data is the adapter's (up to 128
    /// bytes: the kernels' parameters; WebGPU's default has none).
    WebGpu,
}

impl Limits {
    /// `webgpu` or `adapter` (surrounding spaces ignored); unset or empty is `adapter`.
    pub fn parse(value: Option<&str>) -> Result<Limits> {
        match value.map(str::trim).unwrap_or("") {
            "" | "adapter" => Ok(Limits::Adapter),
            "webgpu" => Ok(Limits::WebGpu),
            other => Err(EngineError::Setting { variable: LIMITS_ENV, value: other.to_string(), expected: "`webgpu` or `adapter`" }),
        }
    }
}

/// How a GEMM's tile configuration is chosen (`crate::tune`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tuning {
    /// A rule from the shape alone (`--no-tune`; the library's default).
    #[default]
    Heuristic,
    /// Every candidate timed at the first use of a shape, the fastest kept in `cache`.
    Tune { cache: TuneCache },
}

/// Where tuned choices are remembered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TuneCache {
    /// In memory only.
    #[default]
    None,
    /// This file.
    File(PathBuf),
    /// The adapter's file in the user's cache directory ([`crate::tune::default_cache_path`]);
    /// with a `tag`, a file of its own beside it (`tune-<adapter>.<tag>.json`), so that several
    /// processes on one machine never write one file.
    PerAdapter { tag: Option<String> },
}

/// How the kernels compute: settings that change which kernel runs or how it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelOptions {
    /// The GEMMs' precision; `Auto` is resolved for the adapter when the runtime opens.
    pub precision: Precision,
    /// Pipelines compiled with wgpu's zero-initialisation of workgroup memory (off: every kernel
    /// writes before it reads; see `CIFS_WGPU_ZERO_INIT_WORKGROUP`).
    pub zero_init_workgroup_memory: bool,
    /// Batch norm's per-channel sums on subgroup operations where the adapter has them (off: a
    /// tree in workgroup memory). Off by default until a GPU run shows the step faster with it;
    /// the sums differ from the tree's in rounding only.
    pub subgroup_reductions: bool,
    /// Every GEMM on this tile configuration, whatever `tuning` says (tests and benches that
    /// sweep the configurations): a SIMT tile (which runs f16 on the SIMT emulation even where
    /// tensor cores would run it) or a tensor-core one (then a GEMM in f32, or on an adapter
    /// whose tensor-core kernels do not run it, is an error). A tile that cannot run here
    /// (workgroup memory, workgroup size, matrix size) is an error at its first use.
    pub tile: Option<GemmTile>,
}

impl Default for KernelOptions {
    /// f32, the library's defaults for the switches, tiles chosen by the runtime's tuning.
    fn default() -> KernelOptions {
        KernelOptions { precision: Precision::F32, zero_init_workgroup_memory: false, subgroup_reductions: false, tile: None }
    }
}

impl RuntimeOptions {
    /// The library's defaults with the environment's choices over them: the adapter, the limits,
    /// the two kernel switches. Tuning stays the rule from the shape and precision f32 (the
    /// command line sets both from its flags). An unknown `CIFS_WGPU_LIMITS` is an error.
    pub fn from_env() -> Result<RuntimeOptions> {
        Ok(RuntimeOptions {
            adapter: std::env::var(ADAPTER_ENV).ok().filter(|a| !a.trim().is_empty()),
            limits: Limits::parse(std::env::var(LIMITS_ENV).ok().as_deref())?,
            tuning: Tuning::Heuristic,
            kernels: KernelOptions {
                zero_init_workgroup_memory: switch_on(ZERO_INIT_ENV),
                subgroup_reductions: switch_on(SUBGROUP_REDUCE_ENV),
                ..KernelOptions::default()
            },
        })
    }
}

impl TuneCache {
    /// `CIFS_WGPU_TUNE_CACHE` if set, else the adapter's file (see [`TuneCache::PerAdapter`]).
    pub fn from_env() -> TuneCache {
        match std::env::var_os(TUNE_CACHE_ENV) {
            Some(p) if !p.is_empty() => TuneCache::File(PathBuf::from(p)),
            _ => TuneCache::PerAdapter { tag: None },
        }
    }

    /// A file of its own beside this one, told apart by `tag` (`tune-<adapter>.<tag>.json`): for
    /// one of several processes that would otherwise write one file.
    pub fn tagged(self, tag: &str) -> TuneCache {
        match self {
            TuneCache::None => TuneCache::None,
            TuneCache::File(p) => TuneCache::File(p.with_extension(format!("{tag}.json"))),
            TuneCache::PerAdapter { .. } => TuneCache::PerAdapter { tag: Some(tag.to_string()) },
        }
    }

    /// The file for the adapter named `adapter`, if any.
    pub(crate) fn path(&self, adapter: &str) -> Option<PathBuf> {
        match self {
            TuneCache::None => None,
            TuneCache::File(p) => Some(p.clone()),
            TuneCache::PerAdapter { tag: None } => crate::tune::default_cache_path(adapter),
            TuneCache::PerAdapter { tag: Some(tag) } => {
                crate::tune::default_cache_path(adapter).map(|p| p.with_extension(format!("{tag}.json")))
            }
        }
    }
}
