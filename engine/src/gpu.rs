//! Adapter choice and device setup: the one job of [`Gpu`].
//!
//! The default choice is a discrete GPU, then an integrated one, then a virtual one, then a CPU
//! implementation (Mesa's lavapipe). `CIFS_WGPU_ADAPTER` (or the CLI's `--adapter`) overrides it
//! with an index from `cifs-wgpu info`, a device type or part of the adapter's name. Everything
//! that records and runs work on the device lives in [`crate::runtime::Runtime`].

use crate::error::{EngineError, Result};
use crate::options::Limits;
use crate::precision::TensorCores;

/// Environment variable that picks the adapter: an index from `cifs-wgpu info`, a device type
/// (`discrete`, `integrated`, `cpu`, `virtual`) or a case-insensitive part of the adapter name.
pub const ADAPTER_ENV: &str = "CIFS_WGPU_ADAPTER";

/// What the tensor-core GEMMs need of a device: cooperative matrices (experimental in wgpu),
/// f16 in shaders, and subgroup builtins (their layout reads the subgroup id and size).
const TENSOR_CORE_FEATURES: wgpu::Features =
    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX.union(wgpu::Features::SHADER_F16).union(wgpu::Features::SUBGROUP);

/// The limits to request from an adapter offering `adapter`, as `choice` asks. Either way the
/// immediate data is the adapter's, up to 128 bytes (the kernels' parameters; WebGPU's default
/// has none, and the engine needs them).
pub(crate) fn requested_limits(choice: Limits, adapter: &wgpu::Limits) -> wgpu::Limits {
    let base = match choice {
        Limits::Adapter => adapter.clone(),
        Limits::WebGpu => wgpu::Limits::default(),
    };
    wgpu::Limits { max_immediate_size: adapter.max_immediate_size.min(128), ..base }
}

/// Description of one adapter, for `cifs-wgpu info` and errors.
#[derive(Debug, Clone)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

/// The limits of an open device that callers size their work by, and that `cifs-wgpu info`
/// shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Largest storage buffer one binding can see: the largest tensor, in bytes.
    pub max_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroup_invocations: u32,
    /// Bytes of workgroup memory one workgroup may use (what bounds the GEMM tiles).
    pub max_workgroup_memory: u32,
    pub max_workgroups_per_dimension: u32,
    /// Bytes of immediate data (push constants) a dispatch may carry.
    pub max_immediate_bytes: u32,
    /// Whether GPU timestamps can be written between commands (else timing uses the wall clock).
    pub timestamps: bool,
}

/// An open device: the adapter it came from, its queue, and the limits and features it was
/// opened with.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The cooperative-matrix (tensor-core) configurations the adapter lists (see
    /// [`crate::precision`]); empty where it has none.
    pub cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    /// Whether the adapter offers f16 arithmetic in shaders (`SHADER_F16`). The SIMT emulation of
    /// f16 does not need it (it rounds to f16 in f32 registers); the tensor-core kernels do.
    pub shader_f16: bool,
    /// What the tensor-core GEMMs run on, where the device was opened with what they need
    /// (cooperative matrices, f16, subgroups) and lists a configuration they have.
    pub tensor_cores: Option<TensorCores>,
}

fn device_type_name(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::DiscreteGpu => "discrete",
        wgpu::DeviceType::IntegratedGpu => "integrated",
        wgpu::DeviceType::VirtualGpu => "virtual",
        wgpu::DeviceType::Cpu => "cpu",
        wgpu::DeviceType::Other => "other",
    }
}

fn summarize(index: usize, info: &wgpu::AdapterInfo) -> AdapterSummary {
    AdapterSummary {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: device_type_name(info.device_type).to_string(),
        driver: info.driver.clone(),
        driver_info: info.driver_info.clone(),
    }
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    // GL has no compute-capable storage-buffer guarantees we rely on; Vulkan/Metal/DX12 only.
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(desc)
}

fn enumerate() -> Vec<wgpu::Adapter> {
    pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()))
}

/// Every adapter wgpu can see, in the order `info` prints (and `CIFS_WGPU_ADAPTER=<index>` uses).
pub fn list_adapters() -> Vec<AdapterSummary> {
    enumerate().iter().enumerate().map(|(i, a)| summarize(i, &a.get_info())).collect()
}

/// Rank for the default choice: discrete > integrated > virtual > cpu > other.
fn rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn choose(adapters: Vec<wgpu::Adapter>, preference: Option<&str>) -> Result<wgpu::Adapter> {
    let Some(best) = adapters.iter().map(|a| rank(a.get_info().device_type)).min() else {
        return Err(EngineError::NoAdapter);
    };
    let Some(pref) = preference.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(adapters.into_iter().find(|a| rank(a.get_info().device_type) == best).expect("the best rank exists"));
    };
    let available: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    let pos = if let Ok(i) = pref.parse::<usize>() {
        (i < adapters.len()).then_some(i)
    } else {
        let p = pref.to_lowercase();
        adapters.iter().position(|a| {
            let info = a.get_info();
            device_type_name(info.device_type) == p || info.name.to_lowercase().contains(&p)
        })
    };
    match pos {
        Some(i) => Ok(adapters.into_iter().nth(i).expect("position is in range")),
        None => Err(EngineError::AdapterNotFound { wanted: pref.to_string(), available }),
    }
}

impl Gpu {
    /// Opens the adapter matching `preference` (see [`ADAPTER_ENV`]), or the best one if `None`,
    /// with the limits `limits` asks for.
    pub fn open(preference: Option<&str>, limits: Limits) -> Result<Self> {
        let adapter = choose(enumerate(), preference)?;
        let info = adapter.get_info();
        let features = adapter.features();
        if !features.contains(wgpu::Features::IMMEDIATES) {
            return Err(EngineError::MissingFeature { adapter: info.name, feature: "IMMEDIATES (push constants)" });
        }
        let limits = requested_limits(limits, &adapter.limits());
        let mut wanted = features
            & (wgpu::Features::IMMEDIATES
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
                | wgpu::Features::SUBGROUP);
        let cooperative_matrices = adapter.cooperative_matrix_properties();
        let tensor_cores =
            TensorCores::choose(&cooperative_matrices, info.subgroup_max_size).filter(|_| features.contains(TENSOR_CORE_FEATURES));
        if tensor_cores.is_some() {
            wanted |= TENSOR_CORE_FEATURES;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cifs-wgpu"),
            required_features: wanted,
            required_limits: limits.clone(),
            // SAFETY: wgpu's experimental features are asked for only where the tensor-core
            // kernels will run, and those use cooperative matrices only in configurations the
            // adapter lists (`TensorCores::choose`), with in-bounds, 16-byte aligned workgroup
            // memory and in uniform control flow (shaders/conv2d_coop.wgsl).
            experimental_features: if tensor_cores.is_some() {
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| EngineError::RequestDevice(e.to_string()))?;
        let shader_f16 = features.contains(wgpu::Features::SHADER_F16);
        Ok(Gpu { device, queue, info, limits, features: wanted, cooperative_matrices, shader_f16, tensor_cores })
    }

    pub fn summary(&self) -> AdapterSummary {
        summarize(usize::MAX, &self.info)
    }

    pub fn device_limits(&self) -> DeviceLimits {
        let l = &self.limits;
        DeviceLimits {
            max_binding_bytes: l.max_storage_buffer_binding_size,
            max_buffer_bytes: l.max_buffer_size,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
            max_workgroup_invocations: l.max_compute_invocations_per_workgroup,
            max_workgroup_memory: l.max_compute_workgroup_storage_size,
            max_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
            max_immediate_bytes: l.max_immediate_size,
            timestamps: self.has_timestamps(),
        }
    }

    /// Whether shaders may use subgroup operations (batch norm's reductions can).
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP)
    }

    /// Whether GPU timestamps can be written between commands of an encoder.
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_the_adapters_or_webgpus_defaults_with_the_adapters_immediates() {
        let adapter = wgpu::Limits { max_compute_workgroup_storage_size: 32768, max_immediate_size: 256, ..wgpu::Limits::default() };
        for choice in [None, Some(""), Some("adapter")] {
            let l = requested_limits(Limits::parse(choice).unwrap(), &adapter);
            assert_eq!((l.max_compute_workgroup_storage_size, l.max_immediate_size), (32768, 128), "{choice:?}");
        }
        let l = requested_limits(Limits::parse(Some(" webgpu ")).unwrap(), &adapter);
        assert_eq!(l, wgpu::Limits { max_immediate_size: 128, ..wgpu::Limits::default() });
        assert_eq!((l.max_compute_workgroup_storage_size, l.max_storage_buffers_per_shader_stage), (16384, 8));
        let err = Limits::parse(Some("webgpu2")).unwrap_err().to_string();
        assert!(err.contains("CIFS_WGPU_LIMITS=`webgpu2`: expected `webgpu` or `adapter`"), "{err}");
    }
}
