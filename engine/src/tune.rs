//! Which tile configuration a GEMM kernel runs with, per device and shape.
//!
//! The convolution GEMMs (`shaders/conv2d.wgsl`) take their register block, RM x RN outputs per
//! thread, whether the next K slice is prefetched into registers and whether the workgroup tiles
//! are double-buffered, as constants written into the source before compiling: one source,
//! twelve compiled variants. Which is fastest
//! depends on the GPU and on the shape (large tiles read workgroup memory less per multiply-add;
//! small ones make enough workgroups to fill the device for small layers), so the choice is made
//! per (adapter, driver, kernel, shape):
//! - [`TuneMode::Heuristic`] (the library's default, and `--no-tune`): a rule from the shape alone.
//! - [`TuneMode::Tune`]: at the first use of a shape, every candidate is timed with GPU timestamps
//!   (on scratch copies of nothing: the op's own dispatches, which overwrite only their outputs)
//!   and the fastest kept, in memory and in a JSON file per adapter (versioned; a corrupt, stale or
//!   other-driver file is ignored with a warning and rewritten; safe to delete).
//! - A forced tile ([`Tuner::force`]) for tests and benchmarks that sweep the configurations.
//!
//! Within one split of the depth K, every configuration adds an output's products in the same
//! order (K ascending). The number of splits (split-K, whose partial sums a separate pass adds)
//! follows from how many output tiles a configuration makes, so two configurations can group
//! the sum differently, and their register blocks may contract multiply-adds differently:
//! tuning changes results only by float reassociation (the op tests run under each configuration).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The register block of one thread: `rm` rows by `rn` columns (4 or 8 each); a workgroup of
/// 16 x 16 threads covers a `16 rm` x `16 rn` output tile. With `prefetch`, the next K slice's
/// global loads are issued before this slice's multiply-adds (their latency hidden behind the
/// arithmetic, at the cost of RM + RN more registers per thread). On the H200 with or without
/// was a near tie that went either way by shape (docs/PERFORMANCE.md, run 6), hence a tuning
/// dimension rather than a fixed choice. With `double` (which implies `prefetch`), two workgroup
/// tiles alternate: one barrier per K step instead of two, twice the workgroup memory. Not yet
/// measured on a GPU, so the heuristic never picks it; tuning times it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub rm: u32,
    pub rn: u32,
    pub prefetch: bool,
    pub double: bool,
}

impl Tile {
    pub const T64X64: Tile = Tile { rm: 4, rn: 4, prefetch: true, double: false };
    pub const T128X64: Tile = Tile { rm: 8, rn: 4, prefetch: true, double: false };
    pub const T64X128: Tile = Tile { rm: 4, rn: 8, prefetch: true, double: false };
    pub const T128X128: Tile = Tile { rm: 8, rn: 8, prefetch: true, double: false };
    /// Every configuration the kernels are compiled for, largest first: prefetching, then
    /// without prefetch, then double-buffered (last, so the heuristic, which takes the first
    /// that fits, picks only measured kinds).
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
        Tile { prefetch: false, double: false, ..self }
    }

    pub const fn double_buffered(self) -> Tile {
        Tile { prefetch: true, double: true, ..self }
    }

    pub fn rows(&self) -> u32 {
        16 * self.rm
    }

    pub fn cols(&self) -> u32 {
        16 * self.rn
    }

    /// The shader constants that select this configuration.
    pub fn constants(&self) -> [(&'static str, u32); 4] {
        [("RM", self.rm), ("RN", self.rn), ("PREFETCH", self.prefetch as u32), ("DOUBLE", self.double as u32)]
    }

    /// `128x64` (rows x columns of the output tile), `128x64-np` without the prefetch,
    /// `128x64-db` double-buffered.
    pub fn name(&self) -> String {
        let kind = match (self.prefetch, self.double) {
            (_, true) => "-db",
            (false, _) => "-np",
            _ => "",
        };
        format!("{}x{}{kind}", self.rows(), self.cols())
    }

    /// Bytes of workgroup memory the kernels take under this configuration (`shaders/conv2d.wgsl`:
    /// per tile, 16 depths of BM / 4 vec4s of A and of BN / 4 vec4s of B, padded by one vec4 per
    /// depth when single-buffered).
    pub fn workgroup_bytes(&self) -> u32 {
        let (a, b) = (16 * 4 * self.rm, 16 * (4 * self.rn + !self.double as u32));
        (a + b) * 16 * (1 + self.double as u32)
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

    /// The rule used without tuning: the largest tile that still makes `min_groups` workgroups
    /// (two waves of a large GPU, counting `layers` independent GEMMs such as split-K slices or
    /// output phases) and wastes at most a quarter of its outputs on padding; else the one that
    /// makes the most workgroups.
    pub fn heuristic(gm: u32, gn: u32, layers: u32) -> Tile {
        const MIN_GROUPS: u64 = 256;
        Tile::ALL
            .into_iter()
            .find(|t| {
                let (groups, used) = t.cover(gm, gn);
                groups * layers as u64 >= MIN_GROUPS && used >= 0.75
            })
            .unwrap_or(Tile::T64X64)
    }
}

/// How tile configurations are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuneMode {
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
pub struct Tuner {
    mode: TuneMode,
    forced: Option<Tile>,
    device: String,
    path: Option<PathBuf>,
    choices: BTreeMap<String, Choice>,
    /// Warnings about the cache file (read by the CLI); the tuner never prints.
    pub warnings: Vec<String>,
    /// How many shapes were timed in this process.
    pub tuned: usize,
}

impl Tuner {
    /// The library default: the heuristic, no file.
    pub fn heuristic(device: &str) -> Tuner {
        Tuner { mode: TuneMode::Heuristic, forced: None, device: device.to_string(), path: None, choices: BTreeMap::new(), warnings: Vec::new(), tuned: 0 }
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
        self.tuned += 1;
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
        let choices: serde_json::Map<String, serde_json::Value> = self
            .choices
            .iter()
            .map(|(k, c)| (k.clone(), serde_json::json!({ "tile": c.tile.name(), "ms": c.ms })))
            .collect();
        let doc = serde_json::json!({ "version": CACHE_VERSION, "device": self.device, "choices": choices });
        // Written beside and renamed: an interrupted write leaves the old file, never half a file.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&doc).expect("JSON of plain values"))?;
        std::fs::rename(&tmp, path)
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
    let base = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
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
        assert!(Tile::ALL.iter().all(|t| !t.double || t.prefetch), "double buffering loads ahead");
    }

    #[test]
    fn workgroup_memory_fits_lavapipe_and_doubles_with_double_buffering() {
        // lavapipe (and many GPUs) offer 32 KiB: every configuration must fit it.
        assert!(Tile::ALL.iter().all(|t| t.workgroup_bytes() <= 32768));
        assert_eq!(Tile::T128X128.double_buffered().workgroup_bytes(), 32768);
        assert_eq!(Tile::T128X128.workgroup_bytes(), (512 + 16 * 33) * 16);
        assert_eq!(Tile::T64X64.workgroup_bytes(), (256 + 16 * 17) * 16);
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
