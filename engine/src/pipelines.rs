//! The kernel cache: each (shader, entry point, specialisation constants) is compiled once; bind
//! groups are cached per (pipeline, buffers), so a warm step creates neither.
//!
//! The workgroup size of every entry point is read with naga from the module as compiled (after
//! specialisation), never restated in Rust: a 1-D dispatch sizes its grid from what the shader
//! itself declares.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::error::{EngineError, Result};
use crate::kernels::Shader;
use crate::pool::GpuBuffer;

/// A compiled kernel: pipeline, the bind-group layout derived from its WGSL, and its workgroup
/// size (`None` where the shader sizes its workgroups with override constants).
pub(crate) struct Kernel {
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
pub(crate) struct KernelStats {
    pub pipelines: u64,
    pub bind_groups_created: u64,
}

/// Workgroup size of each entry point of a shader (`None`: override-sized).
pub(crate) type EntrySizes = HashMap<String, Option<[u32; 3]>>;

/// Specialisation constants, as (name, value).
pub(crate) type Constants = Vec<(&'static str, u32)>;

/// A shader module: its source with the specialisation constants substituted.
type ModuleKey = (Shader, Constants);

/// A compiled module, the workgroup sizes of its entry points and the workgroup memory each uses.
struct Module {
    module: wgpu::ShaderModule,
    sizes: EntrySizes,
    workgroup_bytes: HashMap<String, u32>,
}

/// Environment variable: `1` turns wgpu's zero-initialisation of workgroup memory back on for
/// every pipeline. It is off by default because every kernel that has workgroup memory (the
/// convolution tiles, the batch-norm and loss reductions, the operand max-abs) writes each word
/// before any invocation reads it; the variable is the switch that measures what that saves on
/// a GPU, and the way back if a driver turns out to need it.
pub(crate) const ZERO_INIT_ENV: &str = "CIFS_WGPU_ZERO_INIT_WORKGROUP";

/// Whether the switch `name` (an environment variable) is set to `1`.
pub(crate) fn switch_on(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.trim() == "1")
}

#[derive(Default)]
pub(crate) struct KernelCache {
    /// Pipelines zero-initialise their workgroup memory (see [`ZERO_INIT_ENV`]).
    zero_init: Cell<bool>,
    kernels: RefCell<HashMap<KernelKey, Rc<Kernel>>>,
    modules: RefCell<HashMap<ModuleKey, Module>>,
    bind_groups: RefCell<HashMap<(u64, Vec<u64>), wgpu::BindGroup>>,
    stats: Cell<KernelStats>,
}

/// A shader's source as it is compiled, and the module naga reads from it.
pub(crate) struct Specialised {
    pub source: String,
    pub module: naga::Module,
}

impl Specialised {
    /// Every compute entry point with its literal workgroup size (`None`: override-sized).
    pub fn workgroup_sizes(&self) -> EntrySizes {
        let sized = |e: &naga::EntryPoint| if e.workgroup_size_overrides.is_some() { None } else { Some(e.workgroup_size) };
        self.module.entry_points.iter().map(|e| (e.name.clone(), sized(e))).collect()
    }

    /// Bytes of workgroup memory each entry point uses: what a device's
    /// `max_compute_workgroup_storage_size` bounds, and wgpu does not check.
    pub fn workgroup_bytes(&self) -> std::result::Result<HashMap<String, u32>, String> {
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        let info = Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&self.module)
            .map_err(|e| e.emit_to_string(&self.source))?;
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(self.module.to_ctx()).map_err(|e| e.to_string())?;
        let workgroup =
            |(h, g): &(naga::Handle<naga::GlobalVariable>, &naga::GlobalVariable)| (g.space == naga::AddressSpace::WorkGroup).then_some(*h);
        let bytes = |i: usize| -> u32 {
            let uses = info.get_entry_point(i);
            let used = self.module.global_variables.iter().filter_map(|g| workgroup(&g)).filter(|&h| !uses[h].is_empty());
            used.map(|h| layouter[self.module.global_variables[h].ty].size).sum()
        };
        Ok(self.module.entry_points.iter().enumerate().map(|(i, e)| (e.name.clone(), bytes(i))).collect())
    }

    /// The value of the module-scope `const NAME: u32`, as naga folded it.
    pub fn constant(&self, name: &str) -> Option<u32> {
        let (_, c) = self.module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(name))?;
        match self.module.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => Some(v),
            _ => None,
        }
    }
}

/// `shader` with each constant named in `constants` set to its value, parsed by naga.
///
/// Each constant must be declared exactly once, on a line of its own that starts with
/// `const NAME: u32 = ` and ends with `;` (so a comment, or a longer name with the same start,
/// is never rewritten); its value in the parsed module is then checked against the one asked
/// for, and only specialisations the shader registers ([`Shader::specialisations`], each
/// validated by a test) compile. Specialising the source (rather than through
/// pipeline-overridable constants) lets naga fold every expression of the constants, array
/// sizes included, so the driver compiles fixed loops and static register accesses.
pub(crate) fn specialise(shader: Shader, constants: &[(&'static str, u32)]) -> Result<Specialised> {
    if !constants.is_empty() && !shader.specialisations().iter().any(|s| s == constants) {
        let reason = format!("{constants:?} is not one of its registered specialisations");
        return Err(EngineError::Shader { file: shader.file_name(), reason });
    }
    specialise_text(shader.file_name(), shader.source(), constants)
}

/// [`specialise`] on any text (`file` names it in errors).
pub(crate) fn specialise_text(file: &'static str, text: &str, constants: &[(&'static str, u32)]) -> Result<Specialised> {
    let fail = |reason: String| EngineError::Shader { file, reason };
    let mut source = text.to_string();
    for (name, value) in constants {
        let decl = format!("const {name}: u32 = ");
        let mut at = 0;
        let mut found = Vec::new();
        for line in source.split_inclusive('\n') {
            if line.starts_with(&decl) {
                found.push((at, line.trim_end().len()));
            }
            at += line.len();
        }
        let [(start, len)] = found[..] else {
            return Err(fail(format!("`{decl}...;` must start exactly one line, it starts {}", found.len())));
        };
        if !source[start..start + len].ends_with(';') {
            return Err(fail(format!("the declaration of {name} must fit on its line and end with `;`")));
        }
        source.replace_range(start..start + len, &format!("{decl}{value}u;"));
    }
    let module = naga::front::wgsl::parse_str(&source).map_err(|e| fail(e.emit_to_string(&source)))?;
    let out = Specialised { source, module };
    for (name, value) in constants {
        if out.constant(name) != Some(*value) {
            return Err(fail(format!("specialised {name} to {value}, the module has {:?}", out.constant(name))));
        }
    }
    Ok(out)
}

impl KernelCache {
    pub(crate) fn stats(&self) -> KernelStats {
        self.stats.get()
    }

    /// Compiles later pipelines with zero-initialised workgroup memory or without; the pipelines
    /// (and their bind groups) compiled so far are dropped when this changes.
    pub(crate) fn set_zero_init(&self, on: bool) {
        if self.zero_init.replace(on) != on {
            self.kernels.borrow_mut().clear();
            self.bind_groups.borrow_mut().clear();
        }
    }

    fn bump(&self, f: impl FnOnce(&mut KernelStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// The compiled kernel for `shader::entry` specialised with `constants`.
    pub(crate) fn kernel(
        &self,
        device: &wgpu::Device,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, u32)],
    ) -> Result<Rc<Kernel>> {
        let key = KernelKey { shader, entry, constants: constants.to_vec() };
        if let Some(k) = self.kernels.borrow().get(&key) {
            return Ok(k.clone());
        }
        let mut modules = self.modules.borrow_mut();
        let module_key = (shader, constants.to_vec());
        if !modules.contains_key(&module_key) {
            let specialised = specialise(shader, constants)?;
            let sizes = specialised.workgroup_sizes();
            let workgroup_bytes =
                specialised.workgroup_bytes().map_err(|reason| EngineError::Shader { file: shader.file_name(), reason })?;
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(shader.file_name()),
                source: wgpu::ShaderSource::Wgsl(specialised.source.into()),
            };
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
            modules.insert(module_key.clone(), Module { module, sizes, workgroup_bytes });
        }
        let module = &modules[&module_key];
        let workgroup_size =
            *module.sizes.get(entry).ok_or(EngineError::NoEntryPoint { file: shader.file_name(), entry: entry.to_string() })?;
        let (bytes, limit) = (module.workgroup_bytes[entry], device.limits().max_compute_workgroup_storage_size);
        if bytes > limit {
            return Err(EngineError::WorkgroupMemory { file: shader.file_name(), entry: entry.to_string(), bytes, limit });
        }
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module: &module.module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &[],
                zero_initialize_workgroup_memory: self.zero_init.get(),
            },
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
    pub(crate) fn with_bind_group<T>(
        &self,
        device: &wgpu::Device,
        kernel: &Kernel,
        buffers: &[&GpuBuffer],
        f: impl FnOnce(&wgpu::BindGroup) -> T,
    ) -> T {
        let key = (kernel.id, buffers.iter().map(|b| b.id()).collect::<Vec<_>>());
        let mut groups = self.bind_groups.borrow_mut();
        if groups.len() >= MAX_CACHED_BIND_GROUPS {
            groups.clear();
        }
        if !groups.contains_key(&key) {
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.raw().as_entire_binding() })
                .collect();
            let group = device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &kernel.layout, entries: &entries });
            groups.insert(key.clone(), group);
            self.bump(|s| s.bind_groups_created += 1);
        }
        f(&groups[&key])
    }
}
