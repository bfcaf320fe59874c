//! SVHN cropped digits: `train_32x32.mat` and `test_32x32.mat`, MATLAB level 5.
//! `X` is uint8 of shape 32x32x3xN, column-major (row fastest, then column, channel, image);
//! `y` is Nx1 with labels 1..10, where 10 means the digit 0.

use std::path::Path;

use crate::dataset::{Dataset, ImageShape, Splits, IMAGE_BYTES, SIDE};
use crate::download::{download_verified, Downloader, Remote};
use crate::error::{corrupt, io_err, DatasetError, Result};
use crate::mat::read_mat;

pub const TRAIN: Remote =
    Remote { url: "http://ufldl.stanford.edu/housenumbers/train_32x32.mat", size: 182_040_794, md5: "e26dedcc434d2e4c54c9b2d4a06d8373" };
pub const TEST: Remote =
    Remote { url: "http://ufldl.stanford.edu/housenumbers/test_32x32.mat", size: 64_275_384, md5: "eb5a983be6a315427106f1b164d9cef3" };

/// Converts the bytes of one SVHN .mat file to a dataset in our CHW layout.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Dataset> {
    let vars = read_mat(bytes, path)?;
    let x = vars.get("X").ok_or_else(|| corrupt(path, "no variable `X` (the images)"))?;
    let y = vars.get("y").ok_or_else(|| corrupt(path, "no variable `y` (the labels)"))?;
    if x.dims.len() != 4 || x.dims[..3] != [SIDE, SIDE, 3] {
        return Err(corrupt(path, format!("`X` has shape {:?}, expected 32x32x3xN", x.dims)));
    }
    let n = x.dims[3];
    if y.numel() != n || y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(corrupt(path, format!("`y` has shape {:?}, expected {n}x1", y.dims)));
    }
    let raw = x.as_u8().ok_or_else(|| corrupt(path, "`X` is not stored as uint8"))?;
    if !x.is_complete() || !y.is_complete() {
        return Err(corrupt(path, "array data shorter than its dimensions (truncated file?)"));
    }
    let mut images = vec![0u8; n * IMAGE_BYTES];
    for img in 0..n {
        for ch in 0..3 {
            for col in 0..SIDE {
                for row in 0..SIDE {
                    images[img * IMAGE_BYTES + ch * SIDE * SIDE + row * SIDE + col] = raw[row + SIDE * (col + SIDE * (ch + 3 * img))];
                }
            }
        }
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.get(i).unwrap_or(f64::NAN);
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(corrupt(path, format!("label {i} is {v}, SVHN labels are 1..10")));
        }
        labels.push((v as u8) % 10);
    }
    Ok(Dataset { images, labels, classes: (0..10).map(|d| d.to_string()).collect(), shape: ImageShape::RGB32 })
}

fn load_file(dir: &Path, name: &str, remote: &Remote, net: Option<&mut dyn Downloader>) -> Result<Dataset> {
    let path = dir.join(name);
    if !path.is_file() {
        let Some(net) = net else {
            return Err(DatasetError::Missing {
                what: name.to_string(),
                dir: dir.to_path_buf(),
                hint: format!(" and downloading is off (--no-download); get {}", remote.url),
            });
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        download_verified(net, remote, &path).map_err(|e| crate::download::with_offline_hint(e, name, dir))?;
    }
    let bytes = std::fs::read(&path).map_err(io_err(&path))?;
    parse(&bytes, &path)
}

/// Loads SVHN's train and test files from `dir`, downloading missing ones through `net`.
pub fn load(dir: &Path, mut net: Option<&mut dyn Downloader>) -> Result<Splits> {
    let reborrow: Option<&mut dyn Downloader> = match &mut net {
        Some(n) => Some(&mut **n),
        None => None,
    };
    let train = load_file(dir, "train_32x32.mat", &TRAIN, reborrow)?;
    Ok(Splits { train, test: load_file(dir, "test_32x32.mat", &TEST, net)? })
}
