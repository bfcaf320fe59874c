//! Which tile configuration a GEMM kernel runs with, per device and shape, and the timing loop
//! that decides it.
//!
//! The convolution GEMMs (`shaders/conv2d.wgsl`) take their register block, RM x RN outputs per
//! thread, and how each K slice is staged (loaded when needed, prefetched into registers, or
//! into double-buffered workgroup tiles) as constants written into the source before compiling:
//! one source, twelve compiled variants ([`Tile`]). The tensor-core GEMMs
//! (`shaders/conv2d_coop.wgsl`) take the layout of their subgroups and how many accumulators each
//! owns the same way ([`CoopTile`]). Which is fastest
//! depends on the GPU and on the shape (large tiles read workgroup memory less per multiply-add;
//! small ones make enough workgroups to fill the device for small layers), so the choice is made
//! per (adapter, driver, kernel, shape):
//! - [`TuneMode::Heuristic`] (the library's default, and `--no-tune`): a rule from the shape alone
//!   ([`Tile::heuristic`], [`CoopTile::heuristic`]).
//! - [`TuneMode::Tune`]: at the first use of a shape, every candidate is timed with GPU timestamps
//!   (on scratch copies of nothing: the op's own dispatches, which overwrite only their outputs)
//!   and the fastest kept, in memory and in a JSON file per adapter (versioned; a corrupt, stale or
//!   other-driver file is ignored with a warning and rewritten; safe to delete).
//! - A forced tile (`KernelOptions::tile`, SIMT or tensor cores) for tests and benchmarks that
//!   sweep the configurations. A forced SIMT tile also runs the f16 GEMMs on the SIMT emulation
//!   where tensor cores would run them.
//!
//! Which kind of kernel runs: the tensor-core GEMMs in f16 on an adapter where they run
//! ([`crate::precision::TensorCores`]), else the SIMT tiles. A cache key names the kernel, the
//! precision and, on tensor cores, the matrix size (`conv2d_fwd_f16_tc8 n=...`).
//!
//! Within one split of the depth K, every configuration adds an output's products in the same
//! order (K ascending). The number of splits (split-K, whose partial sums a separate pass adds)
//! follows from how many output tiles a configuration makes, so two configurations can group
//! the sum differently, and their register blocks may contract multiply-adds differently:
//! tuning changes results only by float reassociation (the op tests run under each configuration).
//! The tensor cores add in an order of their own within each matrix multiply-add.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::kernels::Shader;
use crate::precision::{Precision, TensorCores};
use crate::runtime::Runtime;

/// The GEMM kernels whose tiles are chosen here (the tuning cache's keys start with the entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gemm {
    ConvForward,
    ConvBackwardData,
    ConvBackwardWeight,
}

impl Gemm {
    /// The WGSL entry point that runs this GEMM on the SIMT tiles.
    pub fn entry(self) -> &'static str {
        match self {
            Gemm::ConvForward => "conv2d_fwd",
            Gemm::ConvBackwardData => "conv2d_bwd_data",
            Gemm::ConvBackwardWeight => "conv2d_bwd_weight",
        }
    }

    /// The WGSL entry point that runs this GEMM on tensor cores.
    pub fn tensor_core_entry(self) -> &'static str {
        match self {
            Gemm::ConvForward => "conv2d_fwd_coop",
            Gemm::ConvBackwardData => "conv2d_bwd_data_coop",
            Gemm::ConvBackwardWeight => "conv2d_bwd_weight_coop",
        }
    }
}

/// How a thread's K slice reaches the workgroup tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Staging {
    /// Loaded from global memory right before the slice's multiply-adds.
    Direct,
    /// The next slice's global loads issued before this slice's multiply-adds (their latency
    /// hidden behind the arithmetic, at the cost of RM + RN more registers per thread).
    Prefetch,
    /// Prefetched into one of two alternating workgroup tiles: one barrier per K step instead
    /// of two, twice the workgroup memory.
    Double,
}

impl Staging {
    /// The suffix of a tile name with this staging.
    fn suffix(self) -> &'static str {
        match self {
            Staging::Prefetch => "",
            Staging::Direct => "-np",
            Staging::Double => "-db",
        }
    }
}

/// The register block of one thread, `rm` rows by `rn` columns (4 or 8 each), and how its K
/// slices are staged; a workgroup of 16 x 16 threads covers a `16 rm` x `16 rn` output tile.
/// On the H200, prefetching or not was a near tie that went either way by shape
/// (docs/PERFORMANCE-HISTORY.md, run 6), hence a tuning dimension rather than a fixed choice.
/// Double buffering is not yet measured on a GPU, so the heuristic never picks it; tuning
/// times it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub rm: u32,
    pub rn: u32,
    pub staging: Staging,
}

impl Tile {
    pub const T64X64: Tile = Tile { rm: 4, rn: 4, staging: Staging::Prefetch };
    pub const T128X64: Tile = Tile { rm: 8, rn: 4, staging: Staging::Prefetch };
    pub const T64X128: Tile = Tile { rm: 4, rn: 8, staging: Staging::Prefetch };
    pub const T128X128: Tile = Tile { rm: 8, rn: 8, staging: Staging::Prefetch };
    /// Every configuration the kernels are compiled for: each register block with each
    /// staging. The order is only the order of display and timing; no choice depends on it.
    pub const ALL: [Tile; 12] = [
        Tile::T128X128,
        Tile::T128X64,
        Tile::T64X128,
        Tile::T64X64,
        Tile::T128X128.without_prefetch(),
        Tile::T128X64.without_prefetch(),
        Tile::T64X128.without_prefetch(),
        Tile::T64X64.without_prefetch(),
        Tile::T128X128.double_buffered(),
        Tile::T128X64.double_buffered(),
        Tile::T64X128.double_buffered(),
        Tile::T64X64.double_buffered(),
    ];

    pub const fn without_prefetch(self) -> Tile {
        Tile { staging: Staging::Direct, ..self }
    }

    pub const fn double_buffered(self) -> Tile {
        Tile { staging: Staging::Double, ..self }
    }

    pub fn rows(&self) -> u32 {
        16 * self.rm
    }

    pub fn cols(&self) -> u32 {
        16 * self.rn
    }

    /// The shader constants that select this configuration.
    pub fn constants(&self) -> [(&'static str, u32); 4] {
        let (prefetch, double) = match self.staging {
            Staging::Direct => (0, 0),
            Staging::Prefetch => (1, 0),
            Staging::Double => (1, 1),
        };
        [("RM", self.rm), ("RN", self.rn), ("PREFETCH", prefetch), ("DOUBLE", double)]
    }

    /// `128x64` (rows x columns of the output tile), `128x64-np` without the prefetch,
    /// `128x64-db` double-buffered.
    pub fn name(&self) -> String {
        format!("{}x{}{}", self.rows(), self.cols(), self.staging.suffix())
    }

    /// Bytes of workgroup memory the kernels take under this configuration (`shaders/conv2d.wgsl`:
    /// per tile, 16 depths of BM / 4 vec4s of A and of BN / 4 vec4s of B, padded by one vec4 per
    /// depth when single-buffered).
    pub fn workgroup_bytes(&self) -> u32 {
        let double = (self.staging == Staging::Double) as u32;
        let (a, b) = (16 * 4 * self.rm, 16 * (4 * self.rn + 1 - double));
        (a + b) * 16 * (1 + double)
    }

    /// Whether this configuration's workgroup memory fits `max_bytes` (a device's
    /// `max_compute_workgroup_storage_size`).
    pub fn fits(&self, max_bytes: u32) -> bool {
        self.workgroup_bytes() <= max_bytes
    }

    pub fn parse(s: &str) -> Option<Tile> {
        Tile::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Workgroups of a `gm` x `gn` GEMM, and the fraction of their outputs that lie inside it.
    pub fn cover(&self, gm: u32, gn: u32) -> (u64, f64) {
        cover(self.rows(), self.cols(), gm, gn)
    }

    /// The configurations worth timing for a `gm` x `gn` GEMM: those whose tiles spend at least a
    /// quarter of their outputs inside it (a tile mostly padding never wins: on the H200 the
    /// 64x64 tiles were fastest for every GEMM under 64 x 64), and the 64x64 pair always.
    pub fn candidates(gm: u32, gn: u32) -> Vec<Tile> {
        Tile::ALL.into_iter().filter(|t| t.rm == 4 && t.rn == 4 || t.cover(gm, gn).1 >= 0.25).collect()
    }

    /// The rule used without tuning (`--no-tune`), among the prefetching tiles (the measured
    /// kind): the largest (most outputs; of equal ones, the taller) that still makes
    /// `MIN_GROUPS` workgroups (two waves of a large GPU, counting `layers` independent GEMMs
    /// such as split-K slices or output phases) and wastes at most a quarter of its outputs on
    /// padding; else the 64x64 tile, which makes the most workgroups.
    pub fn heuristic(gm: u32, gn: u32, layers: u32) -> Tile {
        Tile::heuristic_within(gm, gn, layers, u32::MAX)
    }

    /// [`Tile::heuristic`] among the tiles that fit `max_bytes` of workgroup memory (the 64x64
    /// tile, 8.25 KiB, fits every WebGPU device).
    pub fn heuristic_within(gm: u32, gn: u32, layers: u32, max_bytes: u32) -> Tile {
        Tile::ALL
            .into_iter()
            .filter(|t| t.staging == Staging::Prefetch && t.fits(max_bytes))
            .filter(|t| {
                let (groups, used) = t.cover(gm, gn);
                groups * layers as u64 >= MIN_GROUPS && used >= 0.75
            })
            .max_by_key(|t| (t.rows() * t.cols(), t.rows()))
            .unwrap_or(Tile::T64X64)
    }
}

/// The tile of a tensor-core GEMM (`shaders/conv2d_coop.wgsl`): `warps.0 x warps.1` subgroups,
/// each owning `frags.0 x frags.1` accumulators of `size x size` outputs (cooperative matrices of
/// that side), so a workgroup computes a `warps.0 frags.0 size` x `warps.1 frags.1 size` tile;
/// its depth advances in slices of `2 size`, double-buffered. None is measured on a GPU yet:
/// the heuristic is a guess in the SIMT rule's image, tuning times them all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoopTile {
    pub size: u32,
    pub warps: (u32, u32),
    pub frags: (u32, u32),
}

impl CoopTile {
    /// The subgroup layouts (rows x columns of subgroups) the kernels are compiled for.
    const WARPS: [(u32, u32); 3] = [(2, 2), (2, 4), (4, 2)];
    /// The accumulator blocks of one subgroup (1, 2 or 4 each way; shaders/conv2d_coop.wgsl
    /// names up to 4 x 4).
    const FRAGS: [(u32, u32); 5] = [(1, 1), (2, 2), (4, 2), (2, 4), (4, 4)];

    /// Every tile of matrix side `size`, compiled or not (see [`CoopTile::valid`]).
    pub fn all(size: u32) -> Vec<CoopTile> {
        CoopTile::WARPS.iter().flat_map(|&warps| CoopTile::FRAGS.iter().map(move |&frags| CoopTile { size, warps, frags })).collect()
    }

    pub fn rows(&self) -> u32 {
        self.warps.0 * self.frags.0 * self.size
    }

    pub fn cols(&self) -> u32 {
        self.warps.1 * self.frags.1 * self.size
    }

    /// The depth of one staged slice (TK).
    pub fn depth(&self) -> u32 {
        2 * self.size
    }

    /// Threads per workgroup with subgroups of up to `subgroup` invocations.
    pub fn threads(&self, subgroup: u32) -> u32 {
        self.warps.0 * self.warps.1 * subgroup
    }

    /// Whether the kernel exists at this subgroup size: each thread gathers one row of A (and
    /// one column of B), and at least one value of each per slice.
    pub fn valid(&self, subgroup: u32) -> bool {
        let t = self.threads(subgroup);
        let (m, n, k) = (self.rows(), self.cols(), self.depth());
        m <= t && n <= t && k <= t && m * k >= t && n * k >= t
    }

    /// Whether it runs on `tc` within `limits`.
    fn fits(&self, tc: TensorCores, limits: &crate::gpu::DeviceLimits) -> bool {
        self.size == tc.size
            && self.valid(tc.subgroup)
            && self.threads(tc.subgroup) <= limits.max_workgroup_invocations
            && self.workgroup_bytes() <= limits.max_workgroup_memory
    }

    /// Bytes of workgroup memory (`shaders/conv2d_coop.wgsl`): two f16 tiles of A (a slice's
    /// depths, rows padded by 8), two of B (its larger layout), and one f32 accumulator of
    /// scratch per subgroup and one for the repeats.
    pub fn workgroup_bytes(&self) -> u32 {
        let (m, n, k) = (self.rows(), self.cols(), self.depth());
        let a = k * (m + 8);
        let b = (k * (n + 8)).max(n * (k + 8));
        2 * 2 * (a + b) + (self.warps.0 * self.warps.1 + 1) * self.size * self.size * 4
    }

    /// `64x32-tc8-4x2`: the output tile, the matrix side, the subgroups' layout.
    pub fn name(&self) -> String {
        format!("{}x{}-tc{}-{}x{}", self.rows(), self.cols(), self.size, self.warps.0, self.warps.1)
    }

    pub fn parse(s: &str) -> Option<CoopTile> {
        crate::precision::MATRIX_SIZES.into_iter().flat_map(CoopTile::all).find(|t| t.name() == s)
    }

    /// The shader constants that select this tile for subgroups of up to `subgroup`.
    pub(crate) fn constants(&self, subgroup: u32) -> [(&'static str, u32); 6] {
        let (wm, wn) = self.warps;
        let (fm, fn_) = self.frags;
        [("WM", wm), ("WN", wn), ("FM", fm), ("FN", fn_), ("SG", subgroup), ("F16", 1)]
    }

    /// The kernel family of this tile's matrix size.
    pub(crate) fn shader(&self) -> Shader {
        if self.size == 16 {
            Shader::Conv2dCoop16
        } else {
            Shader::Conv2dCoop8
        }
    }

    /// The tiles worth timing for a `gm` x `gn` GEMM on `tc`: those that spend at least a
    /// quarter of their outputs inside it, and the smallest always.
    pub fn candidates(tc: TensorCores, gm: u32, gn: u32) -> Vec<CoopTile> {
        let valid: Vec<CoopTile> = CoopTile::all(tc.size).into_iter().filter(|t| t.valid(tc.subgroup)).collect();
        let least = valid.iter().map(|t| t.rows() * t.cols()).min().unwrap_or(0);
        valid.into_iter().filter(|t| t.rows() * t.cols() == least || cover(t.rows(), t.cols(), gm, gn).1 >= 0.25).collect()
    }

    /// The rule without tuning, that of [`Tile::heuristic`], among the tiles that exist on `tc`
    /// and that `fits` (the adapter's limits): the largest (of equal ones, the taller, then the
    /// one with more subgroup rows) that makes `MIN_GROUPS` workgroups counting `layers` and
    /// wastes at most a quarter of its outputs; else the smallest. None if none fits.
    pub fn heuristic(tc: TensorCores, gm: u32, gn: u32, layers: u32, fits: impl Fn(&CoopTile) -> bool) -> Option<CoopTile> {
        let valid: Vec<CoopTile> = CoopTile::all(tc.size).into_iter().filter(|t| t.valid(tc.subgroup) && fits(t)).collect();
        let key = |t: &CoopTile| (t.rows() * t.cols(), t.rows(), t.warps.0);
        let big = valid.iter().filter(|t| {
            let (groups, used) = cover(t.rows(), t.cols(), gm, gn);
            groups * layers as u64 >= MIN_GROUPS && used >= 0.75
        });
        let smallest = || valid.iter().min_by_key(|t| (t.rows() * t.cols(), t.warps));
        big.max_by_key(|t| key(t)).or_else(smallest).copied()
    }
}

/// Workgroups of a `gm` x `gn` GEMM in `rows` x `cols` tiles, and the fraction of their outputs
/// inside it.
fn cover(rows: u32, cols: u32, gm: u32, gn: u32) -> (u64, f64) {
    let (tm, tn) = (gm.div_ceil(rows) as u64, gn.div_ceil(cols) as u64);
    let used = gm as f64 * gn as f64 / ((tm * rows as u64) as f64 * (tn * cols as u64) as f64);
    (tm * tn, used)
}

/// Workgroups the heuristics want at least: two waves of a large GPU.
const MIN_GROUPS: u64 = 256;

/// The tile of one GEMM dispatch: SIMT (f32, and f16 emulated) or tensor cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GemmTile {
    Simt(Tile),
    TensorCores(CoopTile),
}

impl GemmTile {
    pub fn name(&self) -> String {
        match self {
            GemmTile::Simt(t) => t.name(),
            GemmTile::TensorCores(t) => t.name(),
        }
    }

    pub fn parse(s: &str) -> Option<GemmTile> {
        Tile::parse(s).map(GemmTile::Simt).or_else(|| CoopTile::parse(s).map(GemmTile::TensorCores))
    }

    pub fn rows(&self) -> u32 {
        match self {
            GemmTile::Simt(t) => t.rows(),
            GemmTile::TensorCores(t) => t.rows(),
        }
    }

    pub fn cols(&self) -> u32 {
        match self {
            GemmTile::Simt(t) => t.cols(),
            GemmTile::TensorCores(t) => t.cols(),
        }
    }

    /// The depth of one staged slice (split-K cuts the depth into whole slices).
    pub fn depth(&self) -> u32 {
        match self {
            GemmTile::Simt(_) => crate::ops::conv2d::TILE_K,
            GemmTile::TensorCores(t) => t.depth(),
        }
    }

    /// Workgroups of a `gm` x `gn` GEMM, and the fraction of their outputs that lie inside it.
    pub fn cover(&self, gm: u32, gn: u32) -> (u64, f64) {
        cover(self.rows(), self.cols(), gm, gn)
    }
}

impl From<Tile> for GemmTile {
    fn from(t: Tile) -> GemmTile {
        GemmTile::Simt(t)
    }
}

impl From<CoopTile> for GemmTile {
    fn from(t: CoopTile) -> GemmTile {
        GemmTile::TensorCores(t)
    }
}

/// How tile configurations are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TuneMode {
    Heuristic,
    Tune,
}

/// One tuned choice: the tile and what each candidate measured (milliseconds per run).
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub tile: GemmTile,
    pub ms: BTreeMap<String, f64>,
}

/// The cache file's format version; a file with another is ignored.
pub const CACHE_VERSION: u64 = 4;

/// Choices per `kernel shape` key, for one adapter and driver, optionally backed by a file.
pub(crate) struct Tuner {
    mode: TuneMode,
    device: String,
    path: Option<PathBuf>,
    choices: BTreeMap<String, Choice>,
    /// Warnings about the cache file (read by the CLI); the tuner never prints.
    pub warnings: Vec<String>,
}

impl Tuner {
    /// The library default: the heuristic, no file.
    pub fn heuristic(device: &str) -> Tuner {
        Tuner { mode: TuneMode::Heuristic, device: device.to_string(), path: None, choices: BTreeMap::new(), warnings: Vec::new() }
    }

    /// Tuning at first use, remembered in `path` (loaded now if it exists and is valid).
    pub fn with_cache(device: &str, path: Option<PathBuf>) -> Tuner {
        let mut t = Tuner { mode: TuneMode::Tune, ..Tuner::heuristic(device) };
        if let Some(p) = &path {
            match std::fs::read_to_string(p) {
                Ok(text) => match parse_cache(&text, device) {
                    Ok(choices) => t.choices = choices,
                    Err(why) => t.warnings.push(format!("ignoring the tuning cache {}: {why}; it will be rewritten", p.display())),
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => t.warnings.push(format!("cannot read the tuning cache {}: {e}", p.display())),
            }
        }
        t.path = path;
        t
    }

    pub fn mode(&self) -> TuneMode {
        self.mode
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn choices(&self) -> &BTreeMap<String, Choice> {
        &self.choices
    }

    /// The remembered choice for `key`, if tuning is on and it was made.
    pub fn cached(&self, key: &str) -> Option<GemmTile> {
        (self.mode == TuneMode::Tune).then(|| self.choices.get(key).map(|c| c.tile)).flatten()
    }

    /// Records a tuned choice and rewrites the cache file (errors become warnings: a read-only
    /// cache directory costs re-tuning, not the run).
    pub fn record(&mut self, key: String, choice: Choice) {
        self.choices.insert(key, choice);
        if let Some(p) = self.path.clone() {
            if let Err(e) = self.save(&p) {
                self.warnings.push(format!("cannot write the tuning cache {}: {e}", p.display()));
            }
        }
    }

    fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let choices: serde_json::Map<String, serde_json::Value> =
            self.choices.iter().map(|(k, c)| (k.clone(), serde_json::json!({ "tile": c.tile.name(), "ms": c.ms }))).collect();
        let doc = serde_json::json!({ "version": CACHE_VERSION, "device": self.device, "choices": choices });
        // Written beside and renamed: an interrupted write leaves the old file, never half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc).expect("JSON of plain values"))?;
        std::fs::rename(&tmp, path)
    }
}

impl Runtime {
    /// The tile configurations this device's workgroup memory holds: every one on most adapters;
    /// at WebGPU's default 16 KiB (`Limits::WebGpu`) the 128x128 tiles and the 128-wide
    /// double-buffered ones drop out. Only these are chosen, timed or may be forced.
    pub fn tiles(&self) -> Vec<Tile> {
        let limit = self.limits().max_workgroup_memory;
        Tile::ALL.into_iter().filter(|t| t.fits(limit)).collect()
    }

    /// Calls `f` with each shape's key and choice as it is tuned.
    pub fn observe_tuning(&self, f: impl Fn(&str, &Choice) + 'static) {
        *self.tune_observer.borrow_mut() = Some(Box::new(f));
    }

    /// The tuned choices so far (with the cache's), warnings not yet taken, and the cache path.
    pub fn tuning(&self) -> (BTreeMap<String, Choice>, Vec<String>, Option<PathBuf>) {
        let mut t = self.tuner.borrow_mut();
        (t.choices().clone(), std::mem::take(&mut t.warnings), t.path().map(|p| p.to_path_buf()))
    }

    /// The tile for `gemm` at `shape`, an `m` x `n` GEMM repeated over `layers` (phases,
    /// splits): forced, remembered, or (tuning on) measured now by running `run` with each
    /// candidate, three timed runs each after one warm-up (which compiles the variant);
    /// otherwise the heuristic's. Tensor-core tiles where [`Runtime::tensor_cores`] says they
    /// run, SIMT tiles elsewhere. Only configurations that fit the adapter's workgroup memory
    /// (and, on tensor cores, its workgroup size) are timed or used (a forced one that does not
    /// is an error). `run` must only overwrite its outputs.
    pub(crate) fn tile_for(
        &self,
        gemm: Gemm,
        shape: &str,
        (m, n, layers): (u32, u32, u32),
        run: &dyn Fn(GemmTile) -> Result<()>,
    ) -> Result<GemmTile> {
        let limits = self.limits();
        let tc = self.tensor_cores();
        let fits = |t: &GemmTile| match (t, tc) {
            (GemmTile::Simt(s), _) => s.workgroup_bytes() <= limits.max_workgroup_memory,
            (GemmTile::TensorCores(c), Some(tc)) => c.fits(tc, &limits),
            (GemmTile::TensorCores(_), None) => false,
        };
        if let Some(tile) = self.kernels().tile {
            return if fits(&tile) {
                Ok(tile)
            } else {
                Err(EngineError::TileNotRunnable { tile: tile.name(), why: self.why_not_runnable(tile) })
            };
        }
        // Without a tensor-core tile that fits (an adapter with little workgroup memory), f16
        // runs on the SIMT emulation.
        let coop = tc.map(|tc| {
            let candidates = CoopTile::candidates(tc, m, n).into_iter().map(GemmTile::TensorCores).filter(fits).collect::<Vec<_>>();
            let heuristic = CoopTile::heuristic(tc, m, n, layers, |t| fits(&GemmTile::TensorCores(*t)));
            (tc, heuristic.map(GemmTile::TensorCores), candidates)
        });
        let (precision, heuristic, candidates) = match coop {
            Some((tc, Some(heuristic), candidates)) => (format!("_f16_tc{}", tc.size), heuristic, candidates),
            _ => {
                let simt = GemmTile::Simt(Tile::heuristic_within(m, n, layers, limits.max_workgroup_memory));
                let precision = if self.precision() == Precision::F16 { "_f16" } else { "" };
                (precision.to_string(), simt, Tile::candidates(m, n).into_iter().map(GemmTile::Simt).filter(fits).collect())
            }
        };
        // Each kind and precision is timed and cached apart (f16's staging does more per load).
        let key = format!("{}{precision} {shape}", gemm.entry());
        {
            let t = self.tuner.borrow();
            if let Some(tile) = t.cached(&key).filter(fits) {
                return Ok(tile);
            }
            if t.mode() == TuneMode::Heuristic {
                return Ok(heuristic);
            }
        }
        self.tune(key, heuristic, candidates, run)
    }

    /// Times each candidate with `run` and remembers the fastest under `key`.
    fn tune(&self, key: String, heuristic: GemmTile, candidates: Vec<GemmTile>, run: &dyn Fn(GemmTile) -> Result<()>) -> Result<GemmTile> {
        const RUNS: usize = 3;
        let mut ms = BTreeMap::new();
        let mut best = (f64::INFINITY, heuristic);
        for tile in candidates {
            run(tile)?;
            let (done, timing) = self.timed_both(|| (0..RUNS).try_for_each(|_| run(tile)))?;
            done?;
            let t = timing.gpu_s.unwrap_or(timing.wall_s) * 1e3 / RUNS as f64;
            ms.insert(tile.name(), t);
            if t < best.0 {
                best = (t, tile);
            }
        }
        let choice = Choice { tile: best.1, ms };
        if let Some(f) = self.tune_observer.borrow().as_ref() {
            f(&key, &choice);
        }
        self.tuner.borrow_mut().record(key, choice);
        Ok(best.1)
    }

    /// Why a forced `tile` cannot run here.
    fn why_not_runnable(&self, tile: GemmTile) -> String {
        let limits = self.limits();
        match (tile, self.tensor_cores()) {
            (GemmTile::TensorCores(_), None) => {
                format!("the GEMMs run in {} and this adapter's tensor-core kernels are {:?}", self.precision(), self.gpu.tensor_cores)
            }
            (GemmTile::TensorCores(c), Some(tc)) if c.size != tc.size => format!("this adapter's tensor cores are {}", tc.name()),
            (GemmTile::TensorCores(c), Some(tc)) if !c.valid(tc.subgroup) => format!("no kernel for subgroups of {}", tc.subgroup),
            (GemmTile::TensorCores(c), Some(tc)) if c.threads(tc.subgroup) > limits.max_workgroup_invocations => {
                format!("{} threads per workgroup; this adapter offers {}", c.threads(tc.subgroup), limits.max_workgroup_invocations)
            }
            (t, _) => format!(
                "{} bytes of workgroup memory; this adapter offers {}",
                match t {
                    GemmTile::Simt(s) => s.workgroup_bytes(),
                    GemmTile::TensorCores(c) => c.workgroup_bytes(),
                },
                limits.max_workgroup_memory
            ),
        }
    }
}

fn parse_cache(text: &str, device: &str) -> std::result::Result<BTreeMap<String, Choice>, String> {
    let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    let version = doc.get("version").and_then(|v| v.as_u64());
    if version != Some(CACHE_VERSION) {
        return Err(format!("format version {version:?}, this build writes {CACHE_VERSION}"));
    }
    let found = doc.get("device").and_then(|d| d.as_str()).unwrap_or("?");
    if found != device {
        return Err(format!("made for `{found}`, this is `{device}`"));
    }
    let entries = doc.get("choices").and_then(|c| c.as_object()).ok_or("no `choices` object")?;
    let mut out = BTreeMap::new();
    for (key, v) in entries {
        let tile = v.get("tile").and_then(|t| t.as_str()).and_then(GemmTile::parse).ok_or_else(|| format!("`{key}`: no known tile"))?;
        let ms = v
            .get("ms")
            .and_then(|m| m.as_object())
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
            .unwrap_or_default();
        out.insert(key.clone(), Choice { tile, ms });
    }
    Ok(out)
}

/// The cache file for an adapter: `$XDG_CACHE_HOME/cifs-wgpu/tune-<adapter>.json` (`~/.cache`
/// when XDG_CACHE_HOME is unset), or none when neither a cache directory nor a home is known
/// (`CIFS_WGPU_TUNE_CACHE` names another file: `crate::options::TuneCache`).
pub fn default_cache_path(adapter: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let name: String = adapter.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { ' ' }).collect();
    let name = name.split_whitespace().collect::<Vec<_>>().join("-");
    Some(base.join("cifs-wgpu").join(format!("tune-{name}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_cover_counts_padding() {
        for t in Tile::ALL {
            assert_eq!(Tile::parse(&t.name()), Some(t));
        }
        assert_eq!(Tile::T128X64.cover(256, 64), (2, 1.0));
        assert_eq!(Tile::T128X128.cover(128, 64), (1, 0.5));
        assert_eq!(Tile::T128X64.double_buffered().name(), "128x64-db");
        let mut names: Vec<String> = Tile::ALL.iter().map(Tile::name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Tile::ALL.len(), "every configuration once");
    }

    #[test]
    fn workgroup_memory_fits_lavapipe_and_doubles_with_double_buffering() {
        // lavapipe (and many GPUs) offer 32 KiB: every configuration must fit it.
        assert!(Tile::ALL.iter().all(|t| t.workgroup_bytes() <= 32768));
        assert_eq!(Tile::T128X128.double_buffered().workgroup_bytes(), 32768);
        assert_eq!(Tile::T128X128.workgroup_bytes(), (512 + 16 * 33) * 16);
        assert_eq!(Tile::T64X64.workgroup_bytes(), (256 + 16 * 17) * 16);
        // WebGPU's default 16 KiB holds the 64x64 tiles of every staging and the single-buffered
        // 128x64 and 64x128, not the 128x128 ones nor the 128-wide double-buffered ones.
        let fit: Vec<String> = Tile::ALL.iter().filter(|t| t.fits(16384)).map(Tile::name).collect();
        assert_eq!(fit, ["128x64", "64x128", "64x64", "128x64-np", "64x128-np", "64x64-np", "64x64-db"]);
    }

    #[test]
    fn tiles_mostly_padding_are_not_timed() {
        // A GEMM smaller than any tile: the three 64x64 kinds only.
        assert_eq!(Tile::candidates(10, 5), vec![Tile::T64X64, Tile::T64X64.without_prefetch(), Tile::T64X64.double_buffered()]);
        // layer1 forward at batch 128 (131072 x 64): 128-column tiles are half padding, still timed.
        assert_eq!(Tile::candidates(131072, 64).len(), Tile::ALL.len());
        // 64 x 20 columns: the 128-column tiles are 84% padding.
        assert!(Tile::candidates(4096, 20).iter().all(|t| t.rn == 4));
    }

    #[test]
    fn the_heuristic_keeps_big_tiles_for_big_layers_and_many_groups_for_small_ones() {
        // layer1 forward at batch 128: 131072 pixels x 64 channels.
        assert_eq!(Tile::heuristic(131072, 64, 1), Tile::T128X64);
        // layer4 forward at batch 128: 2048 pixels x 512 channels: 128x128 makes 64 groups.
        assert_eq!(Tile::heuristic(2048, 512, 1), Tile::T64X64);
        // with 4 output phases the same GEMM count is enough for a larger tile.
        assert_eq!(Tile::heuristic(2048, 512, 4), Tile::T128X128);
        // At WebGPU's 16 KiB of workgroup memory the 128x128 tile (16.25 KiB) is out: the next largest.
        assert_eq!(Tile::heuristic_within(2048, 512, 4, 16384), Tile::T128X64);
        assert_eq!(Tile::heuristic_within(131072, 64, 1, 16384), Tile::T128X64);
        assert_eq!(Tile::heuristic_within(2048, 512, 4, 12543), Tile::T64X64);
    }

    #[test]
    fn tensor_core_tiles_name_themselves_and_exist_where_each_thread_gathers_one_row() {
        for size in crate::precision::MATRIX_SIZES {
            for t in CoopTile::all(size) {
                assert_eq!(CoopTile::parse(&t.name()), Some(t));
                assert_eq!(GemmTile::parse(&t.name()), Some(GemmTile::TensorCores(t)));
            }
        }
        let t = CoopTile { size: 8, warps: (2, 4), frags: (4, 2) };
        assert_eq!((t.rows(), t.cols(), t.depth(), t.name()), (64, 64, 16, "64x64-tc8-2x4".to_string()));
        // lavapipe: subgroups of 8, so 4 subgroups gather at most 32 rows.
        assert!(t.valid(8) && !CoopTile { warps: (2, 2), ..t }.valid(8));
        let lavapipe = TensorCores { size: 8, subgroup: 8 };
        let valid: Vec<String> = CoopTile::all(8).into_iter().filter(|t| t.valid(8)).map(|t| t.name()).collect();
        assert_eq!(valid.len(), 8, "{valid:?}");
        // A GEMM smaller than every tile: the smallest tiles only.
        assert!(CoopTile::candidates(lavapipe, 5, 3).iter().all(|t| t.rows() * t.cols() == 256));
        // NVIDIA: 16x16x16 at subgroups of 32; the largest tiles fit 48 KiB of workgroup memory.
        let nvidia = TensorCores { size: 16, subgroup: 32 };
        let big = CoopTile { size: 16, warps: (2, 2), frags: (4, 4) };
        assert!(big.valid(32) && big.workgroup_bytes() <= 49152, "{}", big.workgroup_bytes());
        assert!(CoopTile::candidates(nvidia, 131072, 64).iter().all(|t| t.size == 16 && t.valid(32)));
    }

    #[test]
    fn the_tensor_core_heuristic_keeps_big_tiles_for_big_layers_and_many_groups_for_small_ones() {
        let nvidia = TensorCores { size: 16, subgroup: 32 };
        let all = |_: &CoopTile| true;
        let in_48k = |t: &CoopTile| t.workgroup_bytes() <= 49152;
        // layer1 forward at batch 128: 131072 pixels x 64 channels: 256x64 tiles make 512 groups,
        // but need 52 KiB; in 48 KiB the 128x64 ones (1024 groups).
        let t = CoopTile::heuristic(nvidia, 131072, 64, 1, all).unwrap();
        assert_eq!((t.rows(), t.cols()), (256, 64), "{}", t.name());
        let t = CoopTile::heuristic(nvidia, 131072, 64, 1, in_48k).unwrap();
        assert_eq!((t.rows(), t.cols()), (128, 64), "{}", t.name());
        // layer4 forward at batch 128: 2048 x 512; 256 groups need tiles of 4096 outputs.
        let t = CoopTile::heuristic(nvidia, 2048, 512, 1, in_48k).unwrap();
        assert_eq!(t.rows() * t.cols(), 4096, "{}", t.name());
        // A tiny GEMM: the smallest tile; nothing where nothing fits.
        let lavapipe = TensorCores { size: 8, subgroup: 8 };
        let t = CoopTile::heuristic(lavapipe, 10, 5, 1, all).unwrap();
        assert_eq!(t.rows() * t.cols(), 256);
        assert_eq!(CoopTile::heuristic(lavapipe, 10, 5, 1, |_| false), None);
        for (m, n, layers) in [(131072, 64, 1), (2048, 512, 4), (50, 128, 1)] {
            assert!(CoopTile::heuristic(lavapipe, m, n, layers, all).unwrap().valid(8));
        }
    }

    #[test]
    fn the_cache_round_trips_and_bad_files_are_ignored_with_a_warning() {
        let dir = std::env::temp_dir().join(format!("cifs-wgpu-tune-{}", std::process::id()));
        let path = dir.join("tune.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut t = Tuner::with_cache("gpu A / driver 1", Some(path.clone()));
        assert!(t.warnings.is_empty() && t.choices().is_empty());
        let ms = BTreeMap::from([("64x64".to_string(), 2.0), ("128x64".to_string(), 1.5)]);
        t.record("conv2d_fwd n=1".into(), Choice { tile: GemmTile::Simt(Tile::T128X64), ms: ms.clone() });
        let coop = CoopTile { size: 8, warps: (2, 4), frags: (4, 2) };
        t.record("conv2d_fwd_f16_tc8 n=1".into(), Choice { tile: GemmTile::TensorCores(coop), ms });
        let again = Tuner::with_cache("gpu A / driver 1", Some(path.clone()));
        assert_eq!(again.cached("conv2d_fwd n=1"), Some(GemmTile::Simt(Tile::T128X64)));
        assert_eq!(again.cached("conv2d_fwd_f16_tc8 n=1"), Some(GemmTile::TensorCores(coop)));
        assert_eq!(again.choices(), t.choices());

        let other = Tuner::with_cache("gpu B / driver 1", Some(path.clone()));
        assert!(other.cached("conv2d_fwd n=1").is_none() && other.warnings[0].contains("made for"), "{:?}", other.warnings);
        for bad in ["{ not json", r#"{"version": 99, "device": "gpu A / driver 1", "choices": {}}"#] {
            std::fs::write(&path, bad).unwrap();
            let t = Tuner::with_cache("gpu A / driver 1", Some(path.clone()));
            assert!(t.choices().is_empty() && t.warnings.len() == 1, "{bad}: {:?}", t.warnings);
        }
        assert!(Tuner::heuristic("x").cached("conv2d_fwd n=1").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
