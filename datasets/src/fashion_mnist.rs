//! Fashion-MNIST: the official gzip IDX files, 60 000 training and 10 000
//! test images of 1x28x28 bytes with labels 0..9. Read from `dir` (gzipped or already
//! decompressed), downloaded there when missing if a downloader is given, each file verified by
//! size and MD5 before it is trusted.
//!
//! IDX: a big-endian header (magic 0x0000_0803 for images with dimensions n, 28, 28; 0x0000_0801
//! for labels with n), then the bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, ImageShape, Splits};
use crate::download::{download_verified, verify, Downloader, Remote};
use crate::error::{corrupt, io_err, DatasetError, Result};

pub const CLASSES: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const BASE: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// The four official files: training images and labels, test images and labels.
pub const REMOTES: [Remote; 4] = [
    Remote {
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
        size: 26_421_880,
        md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    },
    Remote {
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-labels-idx1-ubyte.gz",
        size: 29_515,
        md5: "25c81989df183df01b3e8a0aad5dffbe",
    },
    Remote {
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz",
        size: 4_422_102,
        md5: "bef4ecab320f06d8554ea6380940ec79",
    },
    Remote {
        url: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-labels-idx1-ubyte.gz",
        size: 5_148,
        md5: "bb300cfdad3c16e7a12a480ee83cd310",
    },
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

fn file_name(remote: &Remote) -> &str {
    remote.url.rsplit('/').next().unwrap_or(remote.url)
}

/// The bytes of one IDX file: `name` itself if present (decompressed), else `name.gz`
/// (downloaded through `net` when missing; an archive already there is verified like a fresh one).
fn fetch(dir: &Path, remote: &Remote, net: &mut Option<&mut dyn Downloader>) -> Result<(Vec<u8>, PathBuf)> {
    let gz = dir.join(file_name(remote));
    let raw = gz.with_extension("");
    if raw.is_file() {
        return Ok((std::fs::read(&raw).map_err(io_err(&raw))?, raw));
    }
    if gz.is_file() {
        verify(remote, &gz)?;
    } else {
        let Some(net) = net.as_deref_mut() else {
            return Err(DatasetError::Missing {
                what: format!("Fashion-MNIST file {}", file_name(remote)),
                dir: dir.to_path_buf(),
                hint: format!(" and downloading is off (--no-download); get the four files from {BASE} and put them there"),
            });
        };
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        download_verified(net, remote, &gz).map_err(|e| crate::download::with_offline_hint(e, file_name(remote), dir))?;
    }
    let file = std::fs::File::open(&gz).map_err(io_err(&gz))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut bytes).map_err(|e| corrupt(&gz, format!("cannot decompress: {e}")))?;
    Ok((bytes, gz))
}

/// Parses an IDX file with `magic` and the given trailing dimensions (`[28, 28]` for images, `[]`
/// for labels): its item count and its data.
pub fn parse_idx<'a>(bytes: &'a [u8], magic: u32, dims: &[u32], path: &Path) -> Result<(usize, &'a [u8])> {
    let word = |i: usize| -> Result<u32> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| corrupt(path, format!("truncated IDX header ({} bytes)", bytes.len())))
    };
    let found = word(0)?;
    if found != magic {
        return Err(corrupt(
            path,
            format!(
                "IDX magic {found:#010x}, expected {magic:#010x}: not a Fashion-MNIST {} file",
                if magic == IMAGES_MAGIC { "image" } else { "label" }
            ),
        ));
    }
    let n = word(1)? as usize;
    for (k, &d) in dims.iter().enumerate() {
        let got = word(2 + k)?;
        if got != d {
            return Err(corrupt(path, format!("IDX dimension {} is {got}, expected {d}", k + 1)));
        }
    }
    let header = 4 * (2 + dims.len());
    let item: usize = dims.iter().map(|&d| d as usize).product();
    let want = header + n * item;
    if bytes.len() != want {
        let what = if bytes.len() < want { "truncated" } else { "oversized" };
        return Err(corrupt(path, format!("{what} IDX file: {} bytes, expected {want} for {n} items", bytes.len())));
    }
    Ok((n, &bytes[header..]))
}

fn split(dir: &Path, images: &Remote, labels: &Remote, net: &mut Option<&mut dyn Downloader>) -> Result<Dataset> {
    let side = ImageShape::GRAY28.side as u32;
    let (ib, ip) = fetch(dir, images, net)?;
    let (lb, lp) = fetch(dir, labels, net)?;
    let (n, pixels) = parse_idx(&ib, IMAGES_MAGIC, &[side, side], &ip)?;
    let (m, labels) = parse_idx(&lb, LABELS_MAGIC, &[], &lp)?;
    if n != m {
        return Err(corrupt(&lp, format!("{m} labels for the {n} images of {}", ip.display())));
    }
    if let Some(i) = labels.iter().position(|&l| l >= 10) {
        return Err(corrupt(&lp, format!("label {} at item {i}; Fashion-MNIST labels are 0..9", labels[i])));
    }
    Ok(Dataset {
        images: pixels.to_vec(),
        labels: labels.to_vec(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        shape: ImageShape::GRAY28,
    })
}

/// Loads Fashion-MNIST from `dir`, downloading missing files through `net` (`None`: off).
pub fn load(dir: &Path, net: Option<&mut dyn Downloader>) -> Result<Splits> {
    load_from(dir, net, &REMOTES)
}

/// As [`load`], from given remotes (tests serve small files from memory).
pub fn load_from(dir: &Path, mut net: Option<&mut dyn Downloader>, remotes: &[Remote; 4]) -> Result<Splits> {
    let train = split(dir, &remotes[0], &remotes[1], &mut net)?;
    let test = split(dir, &remotes[2], &remotes[3], &mut net)?;
    Ok(Splits { train, test })
}
