//! Files the end-to-end tests make: a fresh folder per test and a tiny image-folder dataset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// An empty folder of its own for test `name` (the process id keeps test executables apart).
pub fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cifs-wgpu-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 3 classes of 32x32 PNGs, told apart by their dominant colour, with per-image noise.
pub fn make_folder(root: &Path) {
    let mut rng = engine::Rng::new(1);
    for (split, n) in [("train", 10), ("test", 4)] {
        for (c, class) in ["blue", "green", "red"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let img = image::RgbImage::from_fn(32, 32, |_, _| {
                    let mut px = [0u8; 3];
                    for (k, v) in px.iter_mut().enumerate() {
                        let base = if k == 2 - c { 180.0 } else { 40.0 };
                        *v = (base + rng.uniform(-40.0, 40.0)) as u8;
                    }
                    image::Rgb(px)
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// The JSON file at `path` (a run's config.json, an eval or bench report), parsed.
pub fn read_json<T: serde::de::DeserializeOwned>(path: impl AsRef<Path>) -> T {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
