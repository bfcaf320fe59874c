//! The kernel cache: each (shader, entry point, specialisation constants) is compiled once; bind
//! groups are cached per (pipeline, buffers), so a warm step creates neither.
//!
//! The workgroup size of every entry point is read from its WGSL with naga, never restated in
//! Rust: a 1-D dispatch sizes its grid from what the shader itself declares.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::kernels::Shader;
use crate::pool::GpuBuffer;

/// A compiled kernel: pipeline, the bind-group layout derived from its WGSL, and its workgroup
/// size (`None` where the shader sizes its workgroups with override constants).
pub struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    pub workgroup_size: Option<[u32; 3]>,
    id: u64,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct KernelKey {
    shader: Shader,
    entry: &'static str,
    /// Pipeline-overridable constants (the specialisation), as (name, value).
    constants: Vec<(&'static str, u32)>,
}

/// Bind groups kept at most; past this the cache is dropped and rebuilt (a guard against a
/// workload whose buffers never settle into fixed roles).
const MAX_CACHED_BIND_GROUPS: usize = 65_536;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    pub pipelines: u64,
    pub bind_groups_created: u64,
}

/// Workgroup size of each entry point of a shader (`None`: override-sized).
type EntrySizes = HashMap<String, Option<[u32; 3]>>;

/// A shader module: its source with the specialisation constants substituted.
type ModuleKey = (Shader, Vec<(&'static str, u32)>);

#[derive(Default)]
pub struct KernelCache {
    kernels: RefCell<HashMap<KernelKey, Rc<Kernel>>>,
    modules: RefCell<HashMap<ModuleKey, wgpu::ShaderModule>>,
    /// Workgroup sizes per entry point of each shader, read with naga.
    sizes: RefCell<HashMap<Shader, EntrySizes>>,
    bind_groups: RefCell<HashMap<(u64, Vec<u64>), wgpu::BindGroup>>,
    stats: Cell<KernelStats>,
}

/// Every compute entry point of `shader` with its literal workgroup size (None: override-sized).
pub fn workgroup_sizes(shader: Shader) -> Result<EntrySizes> {
    let module = naga::front::wgsl::parse_str(shader.source())
        .map_err(|e| EngineError::Shader { file: shader.file_name(), reason: e.emit_to_string(shader.source()) })?;
    Ok(module
        .entry_points
        .iter()
        .map(|e| (e.name.clone(), if e.workgroup_size_overrides.is_some() { None } else { Some(e.workgroup_size) }))
        .collect())
}

/// The source of `shader` with each `const NAME: u32 = ...;` named in `constants` rewritten to
/// the given value. Specialising the source (rather than through pipeline-overridable
/// constants) lets naga fold every expression of the constants, array sizes included, so the
/// driver compiles fixed loops and static register accesses for each variant.
pub fn specialise(shader: Shader, constants: &[(&'static str, u32)]) -> Result<String> {
    let mut source = shader.source().to_string();
    for (name, value) in constants {
        let decl = format!("const {name}: u32 = ");
        let start = source.find(&decl).ok_or_else(|| EngineError::Shader { file: shader.file_name(), reason: format!("no `{decl}...;` to specialise") })?;
        let end = start + source[start..].find(';').expect("a declaration ends with ;");
        source.replace_range(start..end, &format!("{decl}{value}u"));
    }
    Ok(source)
}

impl KernelCache {
    pub fn stats(&self) -> KernelStats {
        self.stats.get()
    }

    fn bump(&self, f: impl FnOnce(&mut KernelStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    fn workgroup_size(&self, shader: Shader, entry: &str) -> Result<Option<[u32; 3]>> {
        let mut sizes = self.sizes.borrow_mut();
        let sizes = match sizes.entry(shader) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(workgroup_sizes(shader)?),
        };
        sizes.get(entry).copied().ok_or(EngineError::NoEntryPoint { file: shader.file_name(), entry: entry.to_string() })
    }

    /// The compiled kernel for `shader::entry` specialised with `constants`.
    pub fn kernel(&self, device: &wgpu::Device, shader: Shader, entry: &'static str, constants: &[(&'static str, u32)]) -> Result<Rc<Kernel>> {
        let key = KernelKey { shader, entry, constants: constants.to_vec() };
        if let Some(k) = self.kernels.borrow().get(&key) {
            return Ok(k.clone());
        }
        let workgroup_size = self.workgroup_size(shader, entry)?;
        let mut modules = self.modules.borrow_mut();
        let module_key = (shader, constants.to_vec());
        if !modules.contains_key(&module_key) {
            let source = specialise(shader, constants)?;
            let desc = wgpu::ShaderModuleDescriptor { label: Some(shader.file_name()), source: wgpu::ShaderSource::Wgsl(source.into()) };
            // Without loop bounding: by default naga gives every loop a hidden 64-bit countdown and
            // an exit test per iteration (against infinite loops in untrusted shaders), which stands
            // in the way of unrolling the GEMMs' inner K loop. Buffer bounds and integer-division
            // checks stay on.
            let checks = wgpu::ShaderRuntimeChecks { force_loop_bounding: false, ..wgpu::ShaderRuntimeChecks::checked() };
            // SAFETY: `force_loop_bounding: false` requires that no shader loops forever. Every loop
            // in shaders/ runs over a counter bounded by a size from the host (tensor dimensions,
            // the K depth, a tree reduction halving to zero) and stops; none waits on other
            // invocations.
            let module = unsafe { device.create_shader_module_trusted(desc, checks) };
            modules.insert(module_key.clone(), module);
        }
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &modules[&module_key],
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &[], zero_initialize_workgroup_memory: false },
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let id = self.stats.get().pipelines + 1;
        let k = Rc::new(Kernel { pipeline, layout, workgroup_size, id });
        self.kernels.borrow_mut().insert(key, k.clone());
        self.bump(|s| s.pipelines += 1);
        Ok(k)
    }

    /// Runs `f` with the bind group of `kernel` over `buffers` (bound at 0..n), creating it once.
    pub fn with_bind_group<T>(&self, device: &wgpu::Device, kernel: &Kernel, buffers: &[&GpuBuffer], f: impl FnOnce(&wgpu::BindGroup) -> T) -> T {
        let key = (kernel.id, buffers.iter().map(|b| b.id()).collect::<Vec<_>>());
        let mut groups = self.bind_groups.borrow_mut();
        if groups.len() >= MAX_CACHED_BIND_GROUPS {
            groups.clear();
        }
        if !groups.contains_key(&key) {
            let entries: Vec<wgpu::BindGroupEntry> =
                buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.raw().as_entire_binding() }).collect();
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &kernel.layout, entries: &entries });
            groups.insert(key.clone(), group);
            self.bump(|s| s.bind_groups_created += 1);
        }
        f(&groups[&key])
    }
}
