//! Precision of the GEMMs (every convolution, forward and both gradients, and the dense layers).
//!
//! `F32`: f32 operands and accumulation. `F16`: each operand is scaled by a power of two chosen on
//! the GPU from its largest magnitude, rounded to f16 (nearest, ties to even), multiplied with
//! f32 accumulation, and the output scaled back exactly: the numerics of f16 tensor cores with
//! f32 accumulators. This build runs `F16` in the SIMT tiles of `shaders/conv2d.wgsl` on every
//! adapter (the f32 math of those tiles on f16-rounded operands); `Auto` takes f16 only where
//! tensor-core kernels can run it, and otherwise f32.

use std::fmt;
use std::str::FromStr;

use crate::gpu::Gpu;

/// What the user asks for; [`Precision::resolve`] turns `Auto` into one of the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    F32,
    F16,
    #[default]
    Auto,
}

/// Whether this build has GEMM kernels on cooperative matrices (tensor cores). Until it does,
/// `Auto` resolves to f32 everywhere: the f16 emulation is for checking numerics, not speed.
pub const TENSOR_CORE_KERNELS: bool = false;

/// The cooperative-matrix configuration f16 tensor-core GEMMs use: 16x16x16, f16 x f16 -> f32.
pub fn lists_f16_tensor_cores(configs: &[wgpu::CooperativeMatrixProperties]) -> bool {
    use wgpu::CooperativeScalarType as T;
    configs.iter().any(|c| (c.m_size, c.n_size, c.k_size) == (16, 16, 16) && c.ab_type == T::F16 && c.cr_type == T::F32)
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Auto];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Auto => "auto",
        }
    }

    /// The precision `self` runs with on an adapter listing `configs`, in a build with tensor-core
    /// kernels or not: `F32` or `F16`, never `Auto`.
    pub fn resolve_for(self, configs: &[wgpu::CooperativeMatrixProperties], tensor_core_kernels: bool) -> Precision {
        match self {
            Precision::Auto if tensor_core_kernels && lists_f16_tensor_cores(configs) => Precision::F16,
            Precision::Auto => Precision::F32,
            p => p,
        }
    }

    /// The precision `self` runs with on `gpu` in this build.
    pub(crate) fn resolve(self, gpu: &Gpu) -> Precision {
        self.resolve_for(&gpu.cooperative_matrices, TENSOR_CORE_KERNELS)
    }
}

/// What an adapter offers the GEMMs' precision, as `cifs-wgpu info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionSupport {
    /// The subgroup (warp, wave) sizes the adapter reports, least and most.
    pub subgroup_sizes: (u32, u32),
    /// Whether shaders may do f16 arithmetic (`SHADER_F16`; the f16 mode of this build does not
    /// need it).
    pub shader_f16: bool,
    /// Each cooperative-matrix (tensor-core) configuration: `MxNxK, A/B type -> C type`.
    pub cooperative_matrices: Vec<String>,
    /// What `Auto` runs as on this adapter in this build.
    pub auto: Precision,
}

/// The [`PrecisionSupport`] of `gpu`.
pub(crate) fn support(gpu: &Gpu) -> PrecisionSupport {
    let describe = |c: &wgpu::CooperativeMatrixProperties| {
        let sat = if c.saturating_accumulation { ", saturating" } else { "" };
        format!("{}x{}x{}, {:?} x {:?} -> {:?}{sat}", c.m_size, c.n_size, c.k_size, c.ab_type, c.ab_type, c.cr_type)
    };
    PrecisionSupport {
        subgroup_sizes: (gpu.info.subgroup_min_size, gpu.info.subgroup_max_size),
        shader_f16: gpu.shader_f16,
        cooperative_matrices: gpu.cooperative_matrices.iter().map(describe).collect(),
        auto: Precision::Auto.resolve(gpu),
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A precision name that is none of `f32`, `f16`, `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (expected f32, f16 or auto)")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Precision::ALL.into_iter().find(|p| p.name() == s.trim().to_ascii_lowercase()).ok_or_else(|| UnknownPrecision(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::CooperativeScalarType as T;

    fn config(m: u32, ab: T, cr: T) -> wgpu::CooperativeMatrixProperties {
        wgpu::CooperativeMatrixProperties { m_size: m, n_size: m, k_size: m, ab_type: ab, cr_type: cr, saturating_accumulation: false }
    }

    #[test]
    fn auto_takes_f16_only_with_16x16x16_f16_to_f32_and_tensor_core_kernels() {
        let tensor_cores = [config(16, T::F16, T::F16), config(16, T::F16, T::F32)];
        assert_eq!(Precision::Auto.resolve_for(&tensor_cores, true), Precision::F16);
        assert_eq!(Precision::Auto.resolve_for(&tensor_cores, false), Precision::F32, "no kernels in the build");
        assert_eq!(Precision::Auto.resolve_for(&[config(16, T::F16, T::F16)], true), Precision::F32, "f16 accumulation only");
        assert_eq!(Precision::Auto.resolve_for(&[config(8, T::F16, T::F32)], true), Precision::F32, "8x8x8 only");
        assert_eq!(Precision::Auto.resolve_for(&[], true), Precision::F32);
        for p in [Precision::F32, Precision::F16] {
            assert_eq!(p.resolve_for(&[], false), p, "explicit choices stand");
        }
    }

    #[test]
    fn names_round_trip_and_bad_names_are_errors() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        assert_eq!("F16".parse::<Precision>(), Ok(Precision::F16));
        assert!("tf32".parse::<Precision>().unwrap_err().to_string().contains("f32, f16 or auto"));
    }
}
