//! CIFAR-10 binary batches: `data_batch_1.bin` .. `data_batch_5.bin` and
//! `test_batch.bin`, each 10 000 records of 1 label byte + 3 072 pixel bytes (R, G, B planes,
//! 32x32 row-major). Read from `cifar-10-batches-bin/`, from the directory itself, or from the
//! official `cifar-10-binary.tar.gz`, which is downloaded when missing if a downloader is given.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, ImageShape, Splits, IMAGE_BYTES};
use crate::download::{download_verified, Downloader, Remote};
use crate::error::{corrupt, io_err, DatasetError, Result};

pub const RECORDS_PER_BATCH: usize = 10_000;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
const ARCHIVE: &str = "cifar-10-binary.tar.gz";
const INNER_DIR: &str = "cifar-10-batches-bin";
pub const REMOTE: Remote =
    Remote { url: "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", size: 170_052_171, md5: "c32a1d4ab5d03f1284b67883e8d87530" };
pub const CLASSES: [&str; 10] = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Parses one batch file's bytes: exactly 10 000 records, labels < 10.
pub fn parse_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let want = RECORDS_PER_BATCH * RECORD_BYTES;
    if bytes.len() != want {
        let what = if bytes.len() < want { "truncated" } else { "oversized" };
        return Err(corrupt(
            path,
            format!("{what} CIFAR-10 batch: {} bytes, expected {want} (10 000 records of 3 073 bytes)", bytes.len()),
        ));
    }
    let mut images = Vec::with_capacity(RECORDS_PER_BATCH * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(RECORDS_PER_BATCH);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        if rec[0] >= 10 {
            return Err(corrupt(path, format!("record {i} has label {}, CIFAR-10 labels are 0..9", rec[0])));
        }
        labels.push(rec[0]);
        images.extend_from_slice(&rec[1..]);
    }
    Ok((images, labels))
}

fn read_split(dir: &Path, files: &[String]) -> Result<Dataset> {
    let mut d = Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        shape: ImageShape::RGB32,
    };
    for f in files {
        let path = dir.join(f);
        let bytes = std::fs::read(&path).map_err(io_err(&path))?;
        let (im, lb) = parse_batch(&bytes, &path)?;
        d.images.extend(im);
        d.labels.extend(lb);
    }
    Ok(d)
}

fn batch_names() -> (Vec<String>, Vec<String>) {
    ((1..=5).map(|i| format!("data_batch_{i}.bin")).collect(), vec!["test_batch.bin".to_string()])
}

/// The directory holding the batch files, if `dir` or `dir/cifar-10-batches-bin` has them all.
fn batches_dir(dir: &Path) -> Option<PathBuf> {
    let (train, test) = batch_names();
    [dir.join(INNER_DIR), dir.to_path_buf()].into_iter().find(|d| train.iter().chain(&test).all(|f| d.join(f).is_file()))
}

/// Extracts the batch files of a CIFAR-10 `.tar.gz` into `dir` (as `cifar-10-batches-bin/`).
pub fn extract_archive(archive: &Path, dir: &Path) -> Result<()> {
    let file = std::fs::File::open(archive).map_err(io_err(archive))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    tar.unpack(dir).map_err(|e| corrupt(archive, format!("cannot extract: {e}")))
}

/// Loads CIFAR-10 from `dir`, extracting `cifar-10-binary.tar.gz` there, or downloading it
/// first through `net` (`None`: downloading is off).
pub fn load(dir: &Path, net: Option<&mut dyn Downloader>) -> Result<Splits> {
    load_from(dir, net, &REMOTE)
}

/// As [`load`], from a given remote (tests serve a small archive from memory).
pub fn load_from(dir: &Path, net: Option<&mut dyn Downloader>, remote: &Remote) -> Result<Splits> {
    if batches_dir(dir).is_none() {
        let archive = dir.join(ARCHIVE);
        if !archive.is_file() {
            let Some(net) = net else {
                return Err(DatasetError::Missing {
                    what: "CIFAR-10 batch files (data_batch_1.bin .. data_batch_5.bin, test_batch.bin)".into(),
                    dir: dir.to_path_buf(),
                    hint: format!(" and downloading is off (--no-download); get {} and put it there", REMOTE.url),
                });
            };
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
            download_verified(net, remote, &archive)
                .map_err(|e| crate::download::with_offline_hint(e, &format!("{ARCHIVE} (or its extracted {INNER_DIR}/)"), dir))?;
        } else {
            // An archive already there (a copy, or an earlier download) is checked like a fresh one.
            crate::download::verify(remote, &archive)?;
        }
        extract_archive(&archive, dir)?;
    }
    let bdir = batches_dir(dir).ok_or_else(|| DatasetError::Missing {
        what: "CIFAR-10 batch files".into(),
        dir: dir.to_path_buf(),
        hint: format!(" even after extracting {ARCHIVE}; is it the binary version?"),
    })?;
    let (train, test) = batch_names();
    Ok(Splits { train: read_split(&bdir, &train)?, test: read_split(&bdir, &test)? })
}
