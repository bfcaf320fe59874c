//! Precision of the GEMMs (every convolution, forward and both gradients, and the dense layers).
//!
//! `F32`: f32 operands and accumulation. `F16`: each operand is scaled by a power of two chosen on
//! the GPU from its largest magnitude, rounded to f16 (nearest, ties to even), multiplied with
//! f32 accumulation, and the output scaled back exactly: the numerics of f16 tensor cores with
//! f32 accumulators. Where the adapter lists cooperative matrices (tensor cores) of a size the
//! kernels are written for ([`TensorCores`]), `F16` runs on them (`shaders/conv2d_coop.wgsl`);
//! elsewhere it is emulated in the SIMT tiles of `shaders/conv2d.wgsl` (the f32 math of those
//! tiles on the same f16-rounded operands). `Auto` takes f16 where the tensor-core kernels run,
//! and f32 elsewhere: the emulation is for checking numerics, not for speed.
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

/// The square cooperative-matrix sizes the tensor-core kernels are written for
/// (`shaders/coop16.wgsl`, `shaders/coop8.wgsl`), the preferred first.
pub const MATRIX_SIZES: [u32; 2] = [16, 8];

/// The largest subgroup sizes the tensor-core kernels are compiled for: their workgroups hold a
/// whole number of subgroups of the adapter's largest size (`shaders/conv2d_coop.wgsl`).
pub const SUBGROUP_SIZES: [u32; 4] = [8, 16, 32, 64];

/// What the tensor-core GEMMs run on: cooperative matrices of side `size` (M = N = K), f16 x f16
/// -> f32, in workgroups laid out for subgroups of up to `subgroup` invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorCores {
    pub size: u32,
    pub subgroup: u32,
}

impl TensorCores {
    /// The configuration for an adapter listing `configs` whose subgroups have up to
    /// `subgroup_max` invocations: the largest square f16 x f16 -> f32 one of a size in
    /// [`MATRIX_SIZES`], if the adapter lists one and the kernels are compiled for its subgroups.
    /// Only a listed size is ever used: a kernel of another size is undefined behaviour there,
    /// which neither wgpu nor the driver checks.
    pub fn choose(configs: &[wgpu::CooperativeMatrixProperties], subgroup_max: u32) -> Option<TensorCores> {
        use wgpu::CooperativeScalarType as T;
        if !SUBGROUP_SIZES.contains(&subgroup_max) {
            return None;
        }
        let listed = |s: u32| {
            configs.iter().any(|c| {
                (c.m_size, c.n_size, c.k_size) == (s, s, s) && c.ab_type == T::F16 && c.cr_type == T::F32 && !c.saturating_accumulation
            })
        };
        MATRIX_SIZES.into_iter().find(|&s| listed(s)).map(|size| TensorCores { size, subgroup: subgroup_max })
    }

    /// `8x8x8 f16 x f16 -> f32`.
    pub fn name(&self) -> String {
        matrix_name(self.size)
    }
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

    /// The precision `self` runs with where the tensor-core kernels run on `tensor_cores` (none:
    /// they do not run): `F32` or `F16`, never `Auto`.
    pub fn resolve_for(self, tensor_cores: Option<TensorCores>) -> Precision {
        match self {
            Precision::Auto if tensor_cores.is_some() => Precision::F16,
            Precision::Auto => Precision::F32,
            p => p,
        }
    }

    /// The precision `self` runs with on `gpu`.
    pub(crate) fn resolve(self, gpu: &Gpu) -> Precision {
        self.resolve_for(gpu.tensor_cores)
    }
}

/// What an adapter offers the GEMMs' precision, as `cifs-wgpu info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrecisionSupport {
    /// The subgroup (warp, wave) sizes the adapter reports, least and most.
    pub subgroup_sizes: (u32, u32),
    /// Whether shaders may do f16 arithmetic (`SHADER_F16`; the tensor-core kernels need it, the
    /// SIMT emulation of f16 does not).
    pub shader_f16: bool,
    /// Each cooperative-matrix (tensor-core) configuration: `MxNxK, A/B type -> C type`.
    pub cooperative_matrices: Vec<String>,
    /// What the tensor-core kernels run on here, if they run.
    pub tensor_cores: Option<TensorCores>,
    /// What `Auto` runs as on this adapter.
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
        tensor_cores: gpu.tensor_cores,
        auto: Precision::Auto.resolve(gpu),
    }
}

impl crate::runtime::Runtime {
    /// The tensor cores the GEMMs run on: in f16, on an adapter where the tensor-core kernels
    /// run, unless a SIMT tile is forced (`KernelOptions::tile`); else none, and the SIMT tiles
    /// run them.
    pub fn tensor_cores(&self) -> Option<TensorCores> {
        let simt_forced = matches!(self.kernels().tile, Some(crate::tune::GemmTile::Simt(_)));
        self.gpu.tensor_cores.filter(|_| self.precision() == Precision::F16 && !simt_forced)
    }

    /// What runs the GEMMs, as run records and benchmarks name it.
    pub fn gemm_kernels(&self) -> GemmKernels {
        match self.tensor_cores() {
            Some(tc) => GemmKernels::TensorCores { size: tc.size },
            None => GemmKernels::Simt,
        }
    }
}

/// `8x8x8 f16 x f16 -> f32`: the tensor-core configuration of side `s`.
fn matrix_name(s: u32) -> String {
    format!("{s}x{s}x{s} f16 x f16 -> f32")
}

/// What runs a runtime's GEMMs ([`crate::runtime::Runtime::gemm_kernels`]), named as run records
/// and benchmarks write it: `simt` or `tensor cores 8x8x8 f16 x f16 -> f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernels {
    /// The SIMT tiles (`shaders/conv2d.wgsl`): f32, or f16 emulated.
    Simt,
    /// The tensor-core kernels on cooperative matrices of side `size`, f16 x f16 -> f32.
    TensorCores { size: u32 },
}

impl fmt::Display for GemmKernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GemmKernels::Simt => f.write_str("simt"),
            GemmKernels::TensorCores { size } => write!(f, "tensor cores {}", matrix_name(*size)),
        }
    }
}

/// A name that is no [`GemmKernels`] of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown GEMM kernels `{0}` (expected `simt` or `tensor cores NxNxN f16 x f16 -> f32` with N 16 or 8)")]
pub struct UnknownGemmKernels(pub String);

impl FromStr for GemmKernels {
    type Err = UnknownGemmKernels;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let known = std::iter::once(GemmKernels::Simt).chain(MATRIX_SIZES.map(|size| GemmKernels::TensorCores { size }));
        known.into_iter().find(|k| k.to_string() == s.trim()).ok_or_else(|| UnknownGemmKernels(s.to_string()))
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
    fn tensor_cores_only_where_a_square_f16_to_f32_configuration_of_a_kernel_size_is_listed() {
        let nvidia = [config(16, T::F16, T::F16), config(16, T::F16, T::F32)];
        assert_eq!(TensorCores::choose(&nvidia, 32), Some(TensorCores { size: 16, subgroup: 32 }));
        let lavapipe = [config(8, T::F16, T::F16), config(8, T::F16, T::F32)];
        assert_eq!(TensorCores::choose(&lavapipe, 8), Some(TensorCores { size: 8, subgroup: 8 }));
        let both = [config(8, T::F16, T::F32), config(16, T::F16, T::F32)];
        assert_eq!(TensorCores::choose(&both, 32).map(|t| t.size), Some(16), "the larger size first");
        assert_eq!(TensorCores::choose(&[config(16, T::F16, T::F16)], 32), None, "f16 accumulation only");
        let wide = wgpu::CooperativeMatrixProperties { n_size: 8, ..config(16, T::F16, T::F32) };
        assert_eq!(TensorCores::choose(&[wide], 32), None, "16x8x16 is not square");
        assert_eq!(TensorCores::choose(&lavapipe, 128), None, "no kernels for subgroups of 128");
        assert_eq!(TensorCores::choose(&[], 32), None);
        let saturating = wgpu::CooperativeMatrixProperties { saturating_accumulation: true, ..config(16, T::F16, T::F32) };
        assert_eq!(TensorCores::choose(&[saturating], 32), None, "the kernels' multiply-add does not saturate");
    }

    #[test]
    fn auto_takes_f16_only_where_the_tensor_core_kernels_run() {
        let tc = Some(TensorCores { size: 8, subgroup: 8 });
        assert_eq!(Precision::Auto.resolve_for(tc), Precision::F16);
        assert_eq!(Precision::Auto.resolve_for(None), Precision::F32);
        for p in [Precision::F32, Precision::F16] {
            assert_eq!(p.resolve_for(None), p, "explicit choices stand");
            assert_eq!(p.resolve_for(tc), p, "explicit choices stand");
        }
    }

    #[test]
    fn gemm_kernels_are_named_as_records_write_them_and_read_back() {
        let lavapipe = GemmKernels::TensorCores { size: 8 };
        assert_eq!(lavapipe.to_string(), "tensor cores 8x8x8 f16 x f16 -> f32");
        assert_eq!(GemmKernels::Simt.to_string(), "simt");
        for k in [GemmKernels::Simt, lavapipe, GemmKernels::TensorCores { size: 16 }] {
            assert_eq!(k.to_string().parse::<GemmKernels>(), Ok(k));
        }
        assert!("tensor cores 4x4x4 f16 x f16 -> f32".parse::<GemmKernels>().unwrap_err().to_string().contains("expected `simt`"));
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
