//! Every module the engine can compile (each family as written and each registered
//! specialisation: every conv tile in f32 and f16, batch norm with its tree or its subgroup sums),
//! checked for the backends no GPU here runs, one entry point at a time as wgpu compiles them:
//! - translated by naga's MSL writer (Metal), HLSL writer (DX12; not the tensor-core families:
//!   naga's HLSL writer has no cooperative matrices, and wgpu offers them on Vulkan and Metal
//!   only) and SPIR-V writer (Vulkan; SPIR-V 1.6 for the tensor-core families), with
//!   workgroup memory zero-initialised by naga's polyfill and without, binding maps laid out as
//!   wgpu lays them out (buffers by binding, then the immediate data), no missing binding faked;
//!   the SPIR-V checked by `spirv-val` from spirv-tools for Vulkan 1.1 (1.3 for the tensor-core
//!   families, which only a validator that knows cooperative matrices checks: CI runs trixie's);
//! - sized against WebGPU's default limits (`wgpu::Limits::default()`: 256 invocations per
//!   workgroup, 8 storage buffers per stage, 16 KiB of workgroup memory): every entry point fits,
//!   except the conv tiles whose workgroup memory exceeds it, which the tile rule and the tuner
//!   skip on such a device (`Runtime::tiles`) and the pipeline cache refuses.
//!
//! The MSL and HLSL are written, not compiled (no Metal compiler or DXC runs here): what is
//! checked is that naga accepts every kernel for those backends, with the options wgpu gives it.
//! Any failure names the module, the entry point and the backend. Without `spirv-val` on the
//! PATH the SPIR-V is written but not validated, and the test says so, unless
//! `CIFS_WGPU_REQUIRE_SPIRV_VAL=1` (set by CI), which makes a missing `spirv-val` a failure.

use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

use crate::kernels::Shader;
use crate::pipelines::specialise;
use crate::tune::{CoopTile, Tile};

/// The families compiled only for adapters with subgroup operations; every other family must
/// validate without them.
const SUBGROUP_FAMILIES: &[Shader] = &[Shader::BatchNormSubgroups, Shader::Conv2dCoop8, Shader::Conv2dCoop16];

/// The tensor-core families, compiled only for adapters listing cooperative matrices (with f16
/// and subgroups). wgpu exposes cooperative matrices on Vulkan and Metal only, and naga's HLSL
/// writer has none, so these are not written for DX12 (an adapter there runs `auto` in f32).
const TENSOR_CORE_FAMILIES: &[Shader] = &[Shader::Conv2dCoop8, Shader::Conv2dCoop16];

/// The environment variable that makes a missing `spirv-val` a failure (`1`), and with `all` also
/// one too old to know cooperative matrices (Debian 12's SPIRV-Tools 2023.1; CI validates the
/// tensor-core modules with trixie's, `.ci/lavapipe-coop.sh spirv-val`).
const REQUIRE_SPIRV_VAL: &str = "CIFS_WGPU_REQUIRE_SPIRV_VAL";

/// The validator command (words split on spaces), `spirv-val` unless set.
const SPIRV_VAL: &str = "CIFS_WGPU_SPIRV_VAL";

/// What `spirv-val` says of a capability it does not know: CooperativeMatrixKHR's number.
const UNKNOWN_COOPERATIVE_MATRIX: &str = "Invalid capability operand: 6022";

/// One specialised module, validated with the capabilities its family may use.
struct Variant {
    name: String,
    constants: Vec<(&'static str, u32)>,
    subgroups: bool,
    /// A tensor-core family (cooperative matrices): MSL 2.3, SPIR-V 1.6, no HLSL.
    tensor_cores: bool,
    module: naga::Module,
    info: ModuleInfo,
    /// Per entry point, as the pipeline cache checks it against the device.
    workgroup_bytes: std::collections::HashMap<String, u32>,
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    for &s in Shader::ALL {
        let subgroups = SUBGROUP_FAMILIES.contains(&s);
        let mut capabilities = Capabilities::IMMEDIATES | if subgroups { Capabilities::SUBGROUP } else { Capabilities::empty() };
        if TENSOR_CORE_FAMILIES.contains(&s) {
            capabilities |= Capabilities::SHADER_FLOAT16 | Capabilities::COOPERATIVE_MATRIX;
        }
        for constants in std::iter::once(Vec::new()).chain(s.specialisations()) {
            let name = format!("{s:?} ({}) {constants:?}", s.file_name());
            let v = specialise(s, &constants).unwrap_or_else(|e| panic!("{name}: {e}"));
            let info = Validator::new(ValidationFlags::all(), capabilities)
                .validate(&v.module)
                .unwrap_or_else(|e| panic!("{name} (subgroups allowed: {subgroups}): {}", e.emit_to_string(&v.source)));
            let workgroup_bytes = v.workgroup_bytes().unwrap_or_else(|e| panic!("{name}: {e}"));
            let tensor_cores = TENSOR_CORE_FAMILIES.contains(&s);
            out.push(Variant { name, constants, subgroups, tensor_cores, module: v.module, info, workgroup_bytes });
        }
    }
    out
}

/// The resource bindings entry point `ep` uses, in binding order, each with whether it writes.
fn used_bindings(v: &Variant, ep: usize) -> Vec<(naga::ResourceBinding, bool)> {
    let uses = v.info.get_entry_point(ep);
    let mut out: Vec<(naga::ResourceBinding, bool)> = v
        .module
        .global_variables
        .iter()
        .filter(|(h, _)| !uses[*h].is_empty())
        .filter_map(|(_, g)| {
            Some((g.binding?, matches!(g.space, naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE))))
        })
        .collect();
    out.sort_by_key(|(b, _)| (b.group, b.binding));
    out
}

fn bounds_checks() -> naga::proc::BoundsCheckPolicies {
    let restrict = naga::proc::BoundsCheckPolicy::Restrict;
    naga::proc::BoundsCheckPolicies { index: restrict, buffer: restrict, image_load: restrict, binding_array: restrict }
}

/// Metal: buffers in slots 0.. by binding, the immediate data after them, then the sizes of the
/// runtime-sized arrays (wgpu's Metal layout). MSL 2.1: the first with SIMD-group functions.
fn to_msl(v: &Variant, ep: usize, zero_init: bool) -> Result<String, String> {
    let entry = &v.module.entry_points[ep];
    let used = used_bindings(v, ep);
    let resources: msl::BindingMap = used
        .iter()
        .enumerate()
        .map(|(slot, &(b, mutable))| (b, msl::BindTarget { buffer: Some(slot as u8), mutable, ..Default::default() }))
        .collect();
    let after = used.len() as u8;
    let resources = msl::EntryPointResources { resources, immediates_buffer: Some(after), sizes_buffer: Some(after + 1) };
    let options = msl::Options {
        // Cooperative matrices (simdgroup matrices) need MSL 2.3.
        lang_version: if v.tensor_cores { (2, 3) } else { (2, 1) },
        per_entry_point_map: [(entry.name.clone(), resources)].into(),
        fake_missing_bindings: false,
        bounds_check_policies: bounds_checks(),
        zero_initialize_workgroup_memory: zero_init,
        force_loop_bounding: false,
        ..Default::default()
    };
    let pipeline = msl::PipelineOptions { entry_point: Some((entry.stage, entry.name.clone())), ..Default::default() };
    msl::write_string(&v.module, &v.info, &options, &pipeline).map(|(text, _)| text).map_err(|e| format!("{e:?}"))
}

/// DX12: each binding a register in its group's space, the immediate data a root constant
/// buffer (b0; no shader here has another constant buffer). Shader model 5.1 (FXC's last) for
/// every family but the subgroup one, which needs wave operations (6.0).
fn to_hlsl(v: &Variant, ep: usize, zero_init: bool) -> Result<String, String> {
    let entry = &v.module.entry_points[ep];
    let binding_map: hlsl::BindingMap = used_bindings(v, ep)
        .into_iter()
        .map(|(b, _)| (b, hlsl::BindTarget { space: b.group as u8, register: b.binding, ..Default::default() }))
        .collect();
    let options = hlsl::Options {
        shader_model: if v.subgroups { hlsl::ShaderModel::V6_0 } else { hlsl::ShaderModel::V5_1 },
        binding_map,
        fake_missing_bindings: false,
        immediates_target: Some(hlsl::BindTarget { space: 0, register: 0, ..Default::default() }),
        zero_initialize_workgroup_memory: zero_init,
        restrict_indexing: true,
        force_loop_bounding: false,
        ..Default::default()
    };
    let pipeline = hlsl::PipelineOptions { entry_point: Some((entry.stage, entry.name.clone())) };
    let mut text = String::new();
    hlsl::Writer::new(&mut text, &options, &pipeline).write(&v.module, &v.info, None).map_err(|e| format!("{e:?}"))?;
    Ok(text)
}

/// Vulkan: SPIR-V 1.3 (Vulkan 1.1, the first with subgroup operations), bindings as declared.
fn to_spirv(v: &Variant, ep: usize, zero_init: bool) -> Result<Vec<u32>, String> {
    let entry = &v.module.entry_points[ep];
    let options = spv::Options {
        // Cooperative matrices need SPIR-V 1.6 (Vulkan 1.3), as wgpu writes for such a device.
        lang_version: if v.tensor_cores { (1, 6) } else { (1, 3) },
        bounds_check_policies: bounds_checks(),
        zero_initialize_workgroup_memory: if zero_init {
            spv::ZeroInitializeWorkgroupMemoryMode::Polyfill
        } else {
            spv::ZeroInitializeWorkgroupMemoryMode::None
        },
        force_loop_bounding: false,
        ..Default::default()
    };
    let pipeline = spv::PipelineOptions { shader_stage: entry.stage, entry_point: entry.name.clone() };
    spv::write_vec(&v.module, &v.info, &options, Some(&pipeline)).map_err(|e| format!("{e:?}"))
}

/// `spirv-val`'s verdict on `words`: `None` when it accepts them, else its message.
fn spirv_val(words: &[u32], dir: &std::path::Path, file: &str, tensor_cores: bool) -> Option<String> {
    let path = dir.join(file);
    std::fs::write(&path, bytemuck::cast_slice::<u32, u8>(words)).expect("temporary SPIR-V file");
    let env = if tensor_cores { "vulkan1.3" } else { "vulkan1.1" };
    let out = spirv_val_command().args(["--target-env", env]).arg(&path).output().expect("spirv-val runs");
    let _ = std::fs::remove_file(&path);
    (!out.status.success())
        .then(|| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_string())
}

/// The validator, as [`SPIRV_VAL`] names it.
fn spirv_val_command() -> std::process::Command {
    let named = std::env::var(SPIRV_VAL).unwrap_or_else(|_| "spirv-val".into());
    let mut words = named.split_whitespace();
    let mut command = std::process::Command::new(words.next().unwrap_or("spirv-val"));
    command.args(words);
    command
}

/// Whether every module must be validated, those with cooperative matrices included.
fn spirv_val_required_for_all() -> bool {
    std::env::var(REQUIRE_SPIRV_VAL).is_ok_and(|v| v.trim() == "all")
}

/// Whether `spirv-val` can be run; a failure when it cannot and CI requires it.
fn spirv_val_present() -> bool {
    let present = spirv_val_command().arg("--version").output().is_ok_and(|o| o.status.success());
    let required = crate::pipelines::switch_on(REQUIRE_SPIRV_VAL) || spirv_val_required_for_all();
    assert!(present || !required, "{REQUIRE_SPIRV_VAL}=1 but `spirv-val` is not on the PATH (Debian: apt-get install spirv-tools)");
    if !present {
        eprintln!("note: `spirv-val` not found (Debian: spirv-tools); the SPIR-V is written but not validated");
    }
    present
}

#[test]
fn every_module_translates_to_msl_hlsl_and_valid_spirv() {
    let validate = spirv_val_present();
    let dir = std::env::temp_dir().join(format!("cifs-wgpu-spirv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut failures, mut translated, mut unknown) = (Vec::new(), 0, 0);
    for (i, v) in variants().iter().enumerate() {
        for (ep, entry) in v.module.entry_points.iter().enumerate() {
            for zero_init in [false, true] {
                let at = format!("{}::{} (zeroed workgroup memory: {zero_init})", v.name, entry.name);
                if let Err(e) = to_msl(v, ep, zero_init) {
                    failures.push(format!("{at}, MSL: {e}"));
                }
                if !v.tensor_cores {
                    if let Err(e) = to_hlsl(v, ep, zero_init) {
                        failures.push(format!("{at}, HLSL: {e}"));
                    }
                }
                match to_spirv(v, ep, zero_init) {
                    Err(e) => failures.push(format!("{at}, SPIR-V: {e}")),
                    Ok(words) if validate => match spirv_val(&words, &dir, &format!("{i}-{ep}-{zero_init}.spv"), v.tensor_cores) {
                        Some(e) if v.tensor_cores && e.contains(UNKNOWN_COOPERATIVE_MATRIX) => unknown += 1,
                        Some(e) => failures.push(format!("{at}, spirv-val: {e}")),
                        None => {}
                    },
                    Ok(_) => {}
                }
                translated += 1;
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    if unknown > 0 {
        let note = format!("{unknown} tensor-core modules not validated: this spirv-val predates cooperative matrices");
        assert!(!spirv_val_required_for_all(), "{REQUIRE_SPIRV_VAL}=all but {note}");
        eprintln!("note: {note}");
    }
    assert!(failures.is_empty(), "{} of {translated} translations fail:\n{}", failures.len(), failures.join("\n"));
    // Every family and every registered specialisation was among them.
    let specialisations: usize = Shader::ALL.iter().map(|s| s.specialisations().len()).sum();
    assert_eq!(variants().len(), Shader::ALL.len() + specialisations);
}

/// Whether `v` is a tensor-core module the host never compiles under `limits`: the family as
/// written (the host compiles it only specialised to a tile), or a tile whose threads or
/// workgroup memory exceed them (as `CoopTile::fits` checks on the device).
fn coop_tile_skipped(v: &Variant, limits: &wgpu::Limits) -> bool {
    if v.tensor_cores && v.constants.is_empty() {
        return true;
    }
    let sizes = [8, 16].into_iter().flat_map(CoopTile::all);
    let tiles = sizes.flat_map(|t| crate::precision::SUBGROUP_SIZES.into_iter().filter(move |&sg| t.valid(sg)).map(move |sg| (t, sg)));
    tiles.filter(|(t, sg)| v.tensor_cores && v.constants.starts_with(&t.constants(*sg))).any(|(t, sg)| {
        t.threads(sg) > limits.max_compute_invocations_per_workgroup || t.workgroup_bytes() > limits.max_compute_workgroup_storage_size
    })
}

#[test]
fn every_entry_point_fits_webgpus_default_limits_but_the_tiles_the_tile_rule_skips() {
    let limits = wgpu::Limits::default();
    let mut failures = Vec::new();
    for v in variants() {
        for (ep, entry) in v.module.entry_points.iter().enumerate() {
            let at = format!("{}::{}", v.name, entry.name);
            let [x, y, z] = entry.workgroup_size;
            let max = [limits.max_compute_workgroup_size_x, limits.max_compute_workgroup_size_y, limits.max_compute_workgroup_size_z];
            let too_many = x * y * z > limits.max_compute_invocations_per_workgroup || [x, y, z].iter().zip(max).any(|(&d, m)| d > m);
            if too_many && !coop_tile_skipped(&v, &limits) {
                failures.push(format!("{at}: workgroup {x}x{y}x{z}"));
            }
            let storage = used_bindings(&v, ep).len() as u32;
            if storage > limits.max_storage_buffers_per_shader_stage {
                failures.push(format!("{at}: {storage} storage buffers"));
            }
            let bytes = v.workgroup_bytes[&entry.name];
            // A conv tile may exceed the workgroup memory only if the host knows it does (the
            // tile rule and the tuner filter on Tile::workgroup_bytes, checked against the
            // shader's own in shader_tests).
            let skipped = Tile::ALL
                .iter()
                .find(|t| v.constants.starts_with(&t.constants()))
                .is_some_and(|t| t.workgroup_bytes() > limits.max_compute_workgroup_storage_size);
            if bytes > limits.max_compute_workgroup_storage_size && !skipped && !coop_tile_skipped(&v, &limits) {
                failures.push(format!("{at}: {bytes} bytes of workgroup memory"));
            }
        }
    }
    assert!(failures.is_empty(), "over WebGPU's default limits:\n{}", failures.join("\n"));
}
