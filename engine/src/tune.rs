//! Which tile configuration a GEMM kernel runs with, per device and shape, and the timing loop
//! that decides it.
//!
//! The convolution GEMMs (`shaders/conv2d.wgsl`) take their register block, RM x RN outputs per
//! thread, and how each K slice is staged (loaded when needed, prefetched into registers, or
//! into double-buffered workgroup tiles) as constants written into the source before compiling:
//! one source, twelve compiled variants. Which is fastest
//! depends on the GPU and on the shape (large tiles read workgroup memory less per multiply-add;
//! small ones make enough workgroups to fill the device for small layers), so the choice is made
//! per (adapter, driver, kernel, shape):
//! - [`TuneMode::Heuristic`] (the library's default, and `--no-tune`): a rule from the shape alone.
//! - [`TuneMode::Tune`]: at the first use of a shape, every candidate is timed with GPU timestamps
//!   (on scratch copies of nothing: the op's own dispatches, which overwrite only their outputs)
//!   and the fastest kept, in memory and in a JSON file per adapter (versioned; a corrupt, stale or
//!   other-driver file is ignored with a warning and rewritten; safe to delete).
//! - A forced tile ([`Runtime::force_tile`]) for tests and benchmarks that sweep the
//!   configurations.
//!
//! Within one split of the depth K, every configuration adds an output's products in the same
//! order (K ascending). The number of splits (split-K, whose partial sums a separate pass adds)
//! follows from how many output tiles a configuration makes, so two configurations can group
//! the sum differently, and their register blocks may contract multiply-adds differently:
//! tuning changes results only by float reassociation (the op tests run under each configuration).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::runtime::Runtime;

/// The GEMM kernels whose tiles are chosen here (the tuning cache's keys start with the entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Gemm {
    ConvForward,
    ConvBackwardData,
    ConvBackwardWeight,
}

impl Gemm {
    /// The WGSL entry point that runs this GEMM.
    pub fn entry(self) -> &'static str {
        match self {
            Gemm::ConvForward => "conv2d_fwd",
            Gemm::ConvBackwardData => "conv2d_bwd_data",
            Gemm::ConvBackwardWeight => "conv2d_bwd_weight",
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
        let (tm, tn) = (gm.div_ceil(self.rows()) as u64, gn.div_ceil(self.cols()) as u64);
        let used = gm as f64 * gn as f64 / ((tm * self.rows() as u64) as f64 * (tn * self.cols() as u64) as f64);
        (tm * tn, used)
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
        const MIN_GROUPS: u64 = 256;
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

/// How tile configurations are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TuneMode {
    Heuristic,
    Tune,
}

/// One tuned choice: the tile and what each candidate measured (milliseconds per run).
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub tile: Tile,
    pub ms: BTreeMap<String, f64>,
}

/// The cache file's format version; a file with another is ignored.
pub const CACHE_VERSION: u64 = 4;

/// Choices per `kernel shape` key, for one adapter and driver, optionally backed by a file.
pub(crate) struct Tuner {
    mode: TuneMode,
    forced: Option<Tile>,
    device: String,
    path: Option<PathBuf>,
    choices: BTreeMap<String, Choice>,
    /// Warnings about the cache file (read by the CLI); the tuner never prints.
    pub warnings: Vec<String>,
}

impl Tuner {
    /// The library default: the heuristic, no file.
    pub fn heuristic(device: &str) -> Tuner {
        Tuner {
            mode: TuneMode::Heuristic,
            forced: None,
            device: device.to_string(),
            path: None,
            choices: BTreeMap::new(),
            warnings: Vec::new(),
        }
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

    /// Every later choice is `tile` (or the heuristic again with `None`).
    pub fn force(&mut self, tile: Option<Tile>) {
        self.forced = tile;
    }

    pub fn forced(&self) -> Option<Tile> {
        self.forced
    }

    pub fn choices(&self) -> &BTreeMap<String, Choice> {
        &self.choices
    }

    /// The remembered choice for `key`, if tuning is on and it was made.
    pub fn cached(&self, key: &str) -> Option<Tile> {
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
    /// Times the GEMM tile configurations at each new shape and keeps the fastest, remembered
    /// in `cache` (see [`default_cache_path`]). Returns warnings about the file.
    pub fn enable_tuning(&self, cache: Option<PathBuf>) -> Vec<String> {
        let forced = self.tuner.borrow().forced();
        let mut t = Tuner::with_cache(&crate::runtime::device_key(&self.gpu), cache);
        t.force(forced);
        let warnings = std::mem::take(&mut t.warnings);
        *self.tuner.borrow_mut() = t;
        warnings
    }

    /// Runs every GEMM with `tile` (or goes back to choosing with `None`): tests and benches.
    pub fn force_tile(&self, tile: Option<Tile>) {
        self.tuner.borrow_mut().force(tile);
    }

    /// The tile configurations this device's workgroup memory holds: every one on most adapters;
    /// at WebGPU's default 16 KiB (`CIFS_WGPU_LIMITS=webgpu`) the 128x128 tiles and the 128-wide
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

    /// The tile for `gemm` at `shape`: forced, remembered, or (tuning on) measured now by
    /// running `run` with each of `candidates()` (asked only then), three timed runs each after
    /// one warm-up (which compiles the variant); otherwise `heuristic`. Only configurations that
    /// fit the adapter's workgroup memory are timed or used (a forced one that does not is an
    /// error). `run` must only overwrite its outputs.
    pub(crate) fn tile_for(
        &self,
        gemm: Gemm,
        shape: &str,
        heuristic: Tile,
        candidates: &dyn Fn() -> Vec<Tile>,
        run: &dyn Fn(Tile) -> Result<()>,
    ) -> Result<Tile> {
        // f16 tiles are timed and cached apart from f32's (their staging does more per load).
        let precision = if self.precision() == crate::precision::Precision::F16 { "_f16" } else { "" };
        let key = format!("{}{precision} {shape}", gemm.entry());
        let limit = self.limits().max_workgroup_memory;
        let fits = |t: &Tile| t.fits(limit);
        let heuristic = Some(heuristic).filter(fits).unwrap_or(Tile::T64X64);
        {
            let t = self.tuner.borrow();
            if let Some(tile) = t.forced() {
                return if fits(&tile) {
                    Ok(tile)
                } else {
                    Err(EngineError::TileTooLarge { tile: tile.name(), bytes: tile.workgroup_bytes(), limit })
                };
            }
            if let Some(tile) = t.cached(&key).filter(fits) {
                return Ok(tile);
            }
            if t.mode() == TuneMode::Heuristic {
                return Ok(heuristic);
            }
        }
        const RUNS: usize = 3;
        let mut ms = BTreeMap::new();
        let mut best = (f64::INFINITY, heuristic);
        for tile in candidates().into_iter().filter(fits) {
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
        let tile = v.get("tile").and_then(|t| t.as_str()).and_then(Tile::parse).ok_or_else(|| format!("`{key}`: no known tile"))?;
        let ms = v
            .get("ms")
            .and_then(|m| m.as_object())
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect())
            .unwrap_or_default();
        out.insert(key.clone(), Choice { tile, ms });
    }
    Ok(out)
}

/// The cache file for an adapter: `$CIFS_WGPU_TUNE_CACHE` if set, else
/// `$XDG_CACHE_HOME/cifs-wgpu/tune-<adapter>.json` (`~/.cache` when XDG_CACHE_HOME is unset), or
/// none when neither a cache directory nor a home is known.
pub fn default_cache_path(adapter: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CIFS_WGPU_TUNE_CACHE") {
        return Some(PathBuf::from(p));
    }
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
    fn the_cache_round_trips_and_bad_files_are_ignored_with_a_warning() {
        let dir = std::env::temp_dir().join(format!("cifs-wgpu-tune-{}", std::process::id()));
        let path = dir.join("tune.json");
        let _ = std::fs::remove_dir_all(&dir);
        let mut t = Tuner::with_cache("gpu A / driver 1", Some(path.clone()));
        assert!(t.warnings.is_empty() && t.choices().is_empty());
        let ms = BTreeMap::from([("64x64".to_string(), 2.0), ("128x64".to_string(), 1.5)]);
        t.record("conv2d_fwd n=1".into(), Choice { tile: Tile::T128X64, ms });
        let again = Tuner::with_cache("gpu A / driver 1", Some(path.clone()));
        assert_eq!(again.cached("conv2d_fwd n=1"), Some(Tile::T128X64));
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
