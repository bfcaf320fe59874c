//! Image folders: `ROOT/train/<class>/*` and `ROOT/test/<class>/*`, PNG or JPEG,
//! 32x32. A class's index is the position of its folder name in sorted order (as torchvision's
//! ImageFolder does); files are read in sorted order too, so a run is reproducible. Decoding runs
//! on every core.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, ImageShape, Splits, IMAGE_BYTES, SIDE};
use crate::error::{corrupt, io_err, DatasetError, Result};

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).map_err(io_err(dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Decodes one image file to CHW bytes; it must be 32x32.
pub fn decode(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let img = image::load_from_memory(&bytes).map_err(|e| corrupt(path, format!("cannot decode image: {e}")))?.to_rgb8();
    if img.width() as usize != SIDE || img.height() as usize != SIDE {
        return Err(corrupt(path, format!("image is {}x{}, expected 32x32", img.width(), img.height())));
    }
    let mut out = vec![0u8; IMAGE_BYTES];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * SIDE * SIDE + y as usize * SIDE + x as usize] = px[c];
        }
    }
    Ok(out)
}

fn read_split(root: &Path, split: &str, classes: &[String]) -> Result<Dataset> {
    let dir = root.join(split);
    let mut files = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        if !cdir.is_dir() {
            return Err(DatasetError::Missing {
                what: format!("class folder `{class}`"),
                dir: dir.clone(),
                hint: " (train and test must have the same classes)".into(),
            });
        }
        for f in sorted_entries(&cdir)?.into_iter().filter(|p| is_image(p)) {
            files.push((f, label as u8));
        }
    }
    if files.is_empty() {
        return Err(DatasetError::Missing { what: "PNG or JPEG images".into(), dir, hint: String::new() });
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(16);
    let chunk = files.len().div_ceil(threads);
    let decoded: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> =
            files.chunks(chunk).map(|part| s.spawn(move || part.iter().map(|(p, _)| decode(p)).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().expect("decoder thread panicked")).collect()
    });
    let mut images = Vec::with_capacity(files.len() * IMAGE_BYTES);
    for d in decoded {
        images.extend(d?);
    }
    Ok(Dataset { images, labels: files.iter().map(|(_, l)| *l).collect(), classes: classes.to_vec(), shape: ImageShape::RGB32 })
}

/// Loads `root/train` and `root/test`; the classes are the sorted sub-folders of `root/train`.
pub fn load(root: &Path) -> Result<Splits> {
    let train_dir = root.join("train");
    if !train_dir.is_dir() {
        return Err(DatasetError::Missing {
            what: "a `train` folder".into(),
            dir: root.to_path_buf(),
            hint: " (expected ROOT/train/<class>/*.png|jpg and ROOT/test/<class>/*)".into(),
        });
    }
    let classes: Vec<String> = sorted_entries(&train_dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .collect();
    if classes.len() < 2 {
        return Err(DatasetError::Missing {
            what: "at least two class folders".into(),
            dir: train_dir,
            hint: format!(" (found {})", classes.len()),
        });
    }
    if classes.len() > 256 {
        return Err(DatasetError::Invalid(format!("{}: {} classes; at most 256 are supported", train_dir.display(), classes.len())));
    }
    Ok(Splits { train: read_split(root, "train", &classes)?, test: read_split(root, "test", &classes)? })
}
